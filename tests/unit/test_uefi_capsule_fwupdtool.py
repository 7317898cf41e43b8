"""Independent check of the staged bytes with Debian's fwupdtool (skipped when absent).

``fwupdtool firmware-parse FILE efi-load-option|uefi-update-info`` decodes the
``Boot####`` entry and the UPDATE_INFO record livefw wrote into the simulated
efivarfs. fwupdtool runs with every FWUPD_* directory pointed into a temp dir and an
unreachable system bus, so it never reads or writes the real machine's firmware state.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import ESP_PARTUUID, SYSTEM_FW_CLASS
from livefw.kernel.uapi import efi
from livefw.plugin import InstallOptions, Payload
from livefw.plugins.uefi_capsule import UefiCapsulePlugin
from livefw.plugins.uefi_capsule.efivars import EfiVars

FWUPDTOOL = shutil.which("fwupdtool")
pytestmark = pytest.mark.skipif(FWUPDTOOL is None, reason="fwupdtool (Debian fwupd) not installed")


def _parse(tmp_path: Path, data: bytes, kind: str) -> str:
    assert FWUPDTOOL is not None
    sandbox = tmp_path / "fwupd"
    dirs = {name: sandbox / name for name in ("sysfs", "state", "conf", "proc", "dmi", "drv")}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    blob = tmp_path / f"{kind}.bin"
    blob.write_bytes(data)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(sandbox),
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sandbox}/no-bus",
        "FWUPD_SYSFSFWDIR": str(dirs["sysfs"]),
        "FWUPD_SYSFSFWATTRIBDIR": str(dirs["sysfs"]),
        "FWUPD_LOCALSTATEDIR": str(dirs["state"]),
        "FWUPD_SYSCONFDIR": str(dirs["conf"]),
        "FWUPD_PROCFS": str(dirs["proc"]),
        "FWUPD_SYSFSDMIDIR": str(dirs["dmi"]),
        "FWUPD_SYSFSDRIVERDIR": str(dirs["drv"]),
    }
    result = subprocess.run(
        [FWUPDTOOL, "firmware-parse", str(blob), kind],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"fwupdtool failed: {result.stdout}\n{result.stderr}")
    return result.stdout


def _field(xml: str, name: str) -> list[str]:
    return re.findall(rf"<{name}>([^<]*)</{name}>", xml)


async def test_fwupdtool_decodes_what_livefw_staged(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [UefiCapsulePlugin])
    await engine.start()
    try:
        device = next(d for d in engine.devices.values() if d.physical_id == SYSTEM_FW_CLASS)
        data = machine.components["uefi_capsule"].sample(
            f"uefi_capsule/{SYSTEM_FW_CLASS}", None, None
        )
        await engine.install(device.id, Payload(data), InstallOptions())
        variables = EfiVars(SimProvider(machine))
        boot_next = await variables.get_data("BootNext", efi.EFI_GLOBAL_VARIABLE_GUID)
        assert boot_next is not None
        number = int.from_bytes(boot_next, "little")
        option = await variables.get_data(efi.boot_var_name(number), efi.EFI_GLOBAL_VARIABLE_GUID)
        info = await variables.get_data(efi.update_info_name(SYSTEM_FW_CLASS), efi.FWUPDATE_GUID)
    finally:
        await engine.stop()
    assert option is not None
    assert info is not None

    xml = _parse(tmp_path, option, "efi-load-option")
    assert _field(xml, "id") == ["Linux Firmware Updater"]
    assert _field(xml, "attrs") == ["0x1"]
    assert _field(xml, "partition_number") == ["0x1"]
    assert _field(xml, "partition_start") == ["0x800"]
    assert _field(xml, "partition_signature") == [ESP_PARTUUID]
    assert _field(xml, "partition_format") == ["guid-partition-table"]
    assert _field(xml, "name") == ["/EFI/debian/fwupdx64.efi"]

    xml = _parse(tmp_path, info, "uefi-update-info")
    assert _field(xml, "version_raw") == ["0x7"]
    assert _field(xml, "guid") == [SYSTEM_FW_CLASS]
    assert _field(xml, "capsule_flags") == ["0x8010"]
    assert _field(xml, "status") == ["attempt-update"]
    assert _field(xml, "capsule_fn") == [f"/EFI/debian/fw/fwupd-{SYSTEM_FW_CLASS}.cap"]
