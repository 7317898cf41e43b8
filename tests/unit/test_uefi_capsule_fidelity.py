"""uefi_capsule against what the kernel and real firmware do (issue 14 items 2, 8, 10-13).

Each test names the kernel behaviour it checks; docs/kernel.md lists the sources.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import shlex
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import Internal, KernelError, NotSupported, PermissionDenied
from livefw.kernel import OpenFlags
from livefw.kernel.real import RealProvider
from livefw.kernel.sim.machine import DEFAULT_KERNEL, FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import (
    ESP_PARTUUID,
    ESP_SECTORS,
    ESP_START,
    SYSTEM_FW_CLASS,
    UefiCapsuleComponent,
    VarState,
)
from livefw.kernel.uapi import efi
from livefw.plugin import InstallOptions, Payload
from livefw.plugins.uefi_capsule import UefiCapsuleDevice, UefiCapsulePlugin
from livefw.plugins.uefi_capsule.efivars import EfiVars
from livefw.plugins.uefi_capsule.environment import detect

GLOBAL = efi.EFI_GLOBAL_VARIABLE_GUID
SYSTEM_KEY = f"uefi_capsule/{SYSTEM_FW_CLASS}"
REPO = Path(__file__).resolve().parents[2]


class Rig:
    """A simulated machine of one kernel release; engines come and go like daemons."""

    def __init__(
        self, tmp_path: Path, kernel: str = DEFAULT_KERNEL, profile: str = "default", **knobs: Any
    ) -> None:
        self.dir = tmp_path
        machine = SimMachine.create(str(tmp_path / "sim"), profile, kernel=kernel)
        component = machine.components["uefi_capsule"]
        for key, value in knobs.items():
            setattr(component.state, key, value)
        machine.save()
        self.machine = SimMachine.load(str(tmp_path / "sim"))
        self.engine: Engine | None = None

    @property
    def sim(self) -> UefiCapsuleComponent:
        component = self.machine.components["uefi_capsule"]
        assert isinstance(component, UefiCapsuleComponent)
        return component

    async def start(self) -> Engine:
        await self.stop()
        self.machine = SimMachine.load(str(self.dir / "sim"))
        self.engine = Engine(
            SimProvider(self.machine), Config(), str(self.dir), [UefiCapsulePlugin]
        )
        await self.engine.start()
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None and not self.engine.stopping:
            await self.engine.stop()
        self.engine = None

    async def reboot(self) -> None:
        await self.stop()
        machine = SimMachine.load(str(self.dir / "sim"))
        machine.reboot()
        machine.save()
        self.machine = machine

    def device(self) -> UefiCapsuleDevice:
        assert self.engine is not None
        (device,) = [d for d in self.engine.devices.values() if d.physical_id == SYSTEM_FW_CLASS]
        assert isinstance(device, UefiCapsuleDevice)
        return device

    def sample(self) -> Payload:
        return Payload(self.sim.sample(SYSTEM_KEY, None, None), "update.cap")

    async def install(self, payload: Payload) -> Any:
        assert self.engine is not None
        return await self.engine.install(self.device().id, payload, InstallOptions())

    def snapshot(self) -> tuple[dict[str, Any], dict[str, str]]:
        state = self.sim.state
        return (
            {name: var.model_dump() for name, var in state.variables.items()},
            dict(state.esp_files),
        )

    async def update_info(self) -> efi.UpdateInfo:
        raw = await EfiVars(SimProvider(self.machine)).get_data(
            efi.update_info_name(SYSTEM_FW_CLASS), efi.FWUPDATE_GUID
        )
        return efi.UpdateInfo.unpack(raw or b"")


# --------------------------------------------- 14.2: ESRT needs CAP_SYS_ADMIN before 6.5


@pytest.mark.parametrize(("kernel", "readable"), [("6.1", False), ("6.4", False), ("6.5", True)])
async def test_esrt_entries_need_cap_sys_admin_before_6_5(
    tmp_path: Path, kernel: str, readable: bool
) -> None:
    """esrt.c esre_attr_show(): EACCES without CAP_SYS_ADMIN until d0a1865cf7e2 (6.5)."""
    machine = SimMachine.create(str(tmp_path / "sim"), kernel=kernel)
    provider = SimProvider(machine)
    entry = f"{efi.ESRT_ENTRIES}/entry0/fw_version"
    # the top-level table attributes never had the check
    assert await provider.read_attr(f"{efi.ESRT_DIR}/fw_resource_count") == "2"
    if readable:
        assert await provider.read_attr(entry) == "65586"
    else:
        with pytest.raises(KernelError) as info:
            await provider.read_attr(entry)
        assert info.value.errno == errno.EACCES
        machine.components["uefi_capsule"].state.cap_sys_admin = True  # type: ignore[attr-defined]
        assert await provider.read_attr(entry) == "65586"


async def test_kernel_6_1_reads_the_units_esrt_copy_and_updates(tmp_path: Path) -> None:
    rig = Rig(tmp_path, kernel="6.1")
    await rig.start()
    device = rig.device()
    assert device.version == "65586"
    assert device.metadata["esrt-source"].startswith("/run/livefw/esrt")
    assert device.metadata["esrt-entry"].startswith("/run/livefw/esrt/entries/")
    entry = await rig.install(rig.sample())
    assert entry.state == "staged"
    await rig.reboot()
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
    assert rig.device().version == "65587"


async def test_kernel_6_1_without_the_copy_says_why(tmp_path: Path) -> None:
    rig = Rig(tmp_path, kernel="6.1", esrt_snapshot=False)
    engine = await rig.start()
    record = engine.plugins["uefi_capsule"]
    assert record.probe.result == "unsupported"
    reason = record.probe.reason
    assert "CAP_SYS_ADMIN" in reason
    assert "Linux 6.1" in reason
    assert "6.5" in reason
    assert "ExecStartPre" in reason
    assert engine.devices == {}


async def test_kernel_6_5_reads_sysfs(tmp_path: Path) -> None:
    rig = Rig(tmp_path, kernel="6.5", esrt_snapshot=False)
    await rig.start()
    assert rig.device().metadata["esrt-source"] == "sysfs"


def _exec_start_pre() -> list[str]:
    unit = (REPO / "systemd/livefwd.service").read_text()
    lines = [line for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    (line,) = lines
    command = line.removeprefix("ExecStartPre=")
    prefix, _, rest = command.partition("/")
    assert set(prefix) == {"-", "+"}, "full privileges (+), failure tolerated (-)"
    return shlex.split("/" + rest)


def _run_copy(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        arg.replace("/sys/firmware/efi/esrt", str(tmp_path / "sys/esrt")).replace(
            "/run/livefw", str(tmp_path / "run")
        )
        for arg in _exec_start_pre()
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def test_the_unit_copies_the_esrt_without_granting_cap_sys_admin(tmp_path: Path) -> None:
    unit = (REPO / "systemd/livefwd.service").read_text()
    bounding = [line for line in unit.splitlines() if line.startswith("CapabilityBoundingSet=")]
    assert all("CAP_SYS_ADMIN" not in line for line in bounding)
    assert "RuntimeDirectory=livefw" in unit.splitlines()
    (tmp_path / "run").mkdir()
    # no ESRT: nothing copied, and the step succeeds
    assert _run_copy(tmp_path).returncode == 0
    assert not (tmp_path / "run/esrt").exists()
    entry = tmp_path / "sys/esrt/entries/entry0"
    entry.mkdir(parents=True)
    (entry / "fw_class").write_text(SYSTEM_FW_CLASS + "\n")
    (tmp_path / "sys/esrt/fw_resource_count").write_text("1\n")
    stale = tmp_path / "run/esrt/entries/entry7"
    stale.mkdir(parents=True)
    result = _run_copy(tmp_path)
    assert result.returncode == 0, result.stderr
    copied = tmp_path / "run/esrt/entries/entry0/fw_class"
    assert copied.read_text() == SYSTEM_FW_CLASS + "\n"
    assert not stale.exists(), "a copy from an earlier start is replaced, not merged"
    assert not (tmp_path / "run/esrt.new").exists()


# ------------------------------------------------------------- 14.8: efivarfs errnos


def test_boot_names_with_trailing_characters_are_refused() -> None:
    """fs/efivarfs/vars.c validate_load_option(): 4 hex digits then more is refused."""
    option = efi.LoadOption(efi.LOAD_OPTION_ACTIVE, "x", [efi.FilePathNode("\\EFI\\x.efi")]).pack()
    assert efi.validate_global_var("Boot0001", option)
    assert not efi.validate_global_var("Boot0001X", option)
    assert not efi.validate_global_var("Driver00aa0", option)
    # not four hex digits: not a load option, so not validated as one
    assert efi.validate_global_var("BootXYZW", b"\x01")
    assert efi.load_option_name("Boot12") is None
    assert efi.parse_boot_var_name("Boot0001\n") is None
    assert efi.parse_boot_var_name("Boot0001X") is None
    with pytest.raises(ValueError, match="not an efivarfs"):
        efi.parse_var_filename(f"Boot0001-{GLOBAL}\n")


async def test_sim_efivarfs_errnos(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    provider = SimProvider(machine)
    option = efi.LoadOption(efi.LOAD_OPTION_ACTIVE, "x", [efi.FilePathNode("\\x.efi")]).pack()
    with pytest.raises(KernelError) as info:
        await provider.write_file(efi.var_path("Boot0001X", GLOBAL), efi.encode_var(7, option))
    assert info.value.errno == errno.EINVAL
    # SetVariable -> EFI_NOT_FOUND on a variable never written: EIO (efivarfs_file_write)
    handle = await provider.open(
        efi.var_path("Fresh", efi.FWUPDATE_GUID), OpenFlags.WRITE | OpenFlags.CREATE
    )
    with pytest.raises(KernelError) as info:
        await handle.write(struct.pack("<I", 7))
    await handle.close()
    assert info.value.errno == errno.EIO
    # a delete the firmware refuses: EINVAL whatever the EFI status (efivarfs_unlink)
    path = efi.var_path(efi.SECURE_BOOT, GLOBAL)
    await provider.set_immutable(path, False)
    with pytest.raises(KernelError) as info:
        await provider.unlink(path)
    assert info.value.errno == errno.EINVAL


async def test_plugin_explains_efivarfs_errnos(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    variables = EfiVars(SimProvider(machine))
    with pytest.raises(PermissionDenied, match="refused to delete the EFI variable SecureBoot"):
        await variables.delete(efi.SECURE_BOOT, GLOBAL)
    with pytest.raises(Internal, match="EFI_NOT_FOUND"):
        await variables.set("Fresh", efi.FWUPDATE_GUID, b"")
    assert await variables.get("Fresh", efi.FWUPDATE_GUID) is None, "no empty inode left"


async def test_a_firmware_boot_name_with_trailing_characters_is_not_a_boot_entry(
    tmp_path: Path,
) -> None:
    """A firmware-made ``Boot0003X`` does not take number 3 from the updater entry."""
    rig = Rig(tmp_path)
    junk = efi.LoadOption(efi.LOAD_OPTION_ACTIVE, "junk", [efi.FilePathNode("\\j.efi")]).pack()
    rig.sim.state.variables[efi.var_filename("Boot0003X", GLOBAL)] = VarState(
        content=base64.b64encode(efi.encode_var(7, junk)).decode()
    )
    rig.machine.save()
    await rig.start()
    await rig.install(rig.sample())
    data = await EfiVars(SimProvider(rig.machine)).get_data(efi.BOOT_NEXT, GLOBAL)
    assert data == struct.pack("<H", 3)


# -------------------------------------------------------------------- 14.10: Xen dom0


@pytest.mark.parametrize(
    ("kernel", "xen_esrt", "words"),
    [
        ("6.1", True, "kernels before 6.3 never expose the ESRT under Xen"),
        ("6.3", False, "the hypervisor did not preserve it"),
    ],
)
async def test_xen_dom0_says_which_case(
    tmp_path: Path, kernel: str, xen_esrt: bool, words: str
) -> None:
    rig = Rig(tmp_path, kernel=kernel, profile="xen-dom0", xen_esrt=xen_esrt)
    engine = await rig.start()
    record = engine.plugins["uefi_capsule"]
    assert record.probe.result == "unsupported"
    assert words in record.probe.reason
    assert f"Linux {kernel}" in record.probe.reason


async def test_xen_dom0_on_6_3_lists_the_esrt(tmp_path: Path) -> None:
    """01de145dc7fb "efi: Actually enable the ESRT under Xen" (6.3)."""
    rig = Rig(tmp_path, kernel="6.3", profile="xen-dom0")
    engine = await rig.start()
    assert engine.plugins["uefi_capsule"].probe.result == "ok"
    assert rig.device().version == "65586"


# ------------------------------------------------- 14.11: 4096-byte logical blocks


async def test_4kn_disk_hd_node_in_logical_blocks(tmp_path: Path) -> None:
    rig = Rig(tmp_path, logical_block_size=4096)
    await rig.start()
    assert rig.device().metadata["esp-logical-block-size"] == "4096"
    await rig.install(rig.sample())
    (hard,) = [n for n in (await rig.update_info()).device_path if isinstance(n, efi.HardDriveNode)]
    # sysfs says 2048 / 1048576 512-byte sectors; UEFI wants 4096-byte blocks
    assert (hard.partition_start, hard.partition_size) == (ESP_START // 8, ESP_SECTORS // 8)
    assert hard.partition_signature == ESP_PARTUUID
    await rig.reboot()
    assert rig.sim.state.last_boot_hang == ""
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason


async def test_unknown_logical_block_size_means_no_boot_entry(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.machine.udev_table[("block", 259, 1)].pop("ID_PART_ENTRY_DISK")
    env = await detect(SimProvider(rig.machine), {})
    assert env.method == "capsule-on-disk"
    assert any("logical block size" in reason for reason in env.reasons)


# ------------------------------------------- 14.12: fwupd-efi hangs; check before BootNext


async def test_firmware_hangs_on_a_wrong_hd_node(tmp_path: Path) -> None:
    """A 512-byte-unit HD() node on a 4Kn disk: the loader boots, then hangs."""
    rig = Rig(tmp_path, logical_block_size=4096)
    provider = SimProvider(rig.machine)
    variables = EfiVars(provider)
    capsule = rig.sim.sample(SYSTEM_KEY, None, None)
    await provider.makedirs("boot/efi/EFI/debian/fw")
    await provider.write_file(f"boot/efi/EFI/debian/fw/fwupd-{SYSTEM_FW_CLASS}.cap", capsule)
    loader = await provider.read_file("usr/libexec/fwupd/efi/fwupdx64.efi")
    await provider.write_file("boot/efi/EFI/debian/fwupdx64.efi", loader)
    wrong = efi.HardDriveNode(1, ESP_START, ESP_SECTORS, ESP_PARTUUID)  # 512-byte units
    info = efi.UpdateInfo(
        guid=SYSTEM_FW_CLASS,
        capsule_flags=0,
        device_path=[wrong, efi.FilePathNode(f"\\EFI\\debian\\fw\\fwupd-{SYSTEM_FW_CLASS}.cap")],
    )
    await variables.set(efi.update_info_name(SYSTEM_FW_CLASS), efi.FWUPDATE_GUID, info.pack())
    option = efi.LoadOption(
        efi.LOAD_OPTION_ACTIVE,
        efi.FWUPD_BOOT_DESCRIPTION,
        [wrong, efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")],
    )
    await variables.set("Boot0003", GLOBAL, option.pack())
    await variables.set(efi.BOOT_NEXT, GLOBAL, struct.pack("<H", 3))
    rig.machine.save()
    await rig.reboot()
    assert "hung" in rig.sim.state.last_boot_hang
    assert any("LOADER" in d.summary for d in rig.sim.devices())
    assert (await rig.update_info()).status == efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE
    assert rig.sim.state.entries[0].fw_version == 65586
    # the power cycle after the hang boots normally: BootNext was consumed
    assert await EfiVars(SimProvider(rig.machine)).get_data(efi.BOOT_NEXT, GLOBAL) is None


async def test_missing_capsule_hangs_and_livefw_names_both_causes(tmp_path: Path) -> None:
    """14.12 (the sim hangs) and 14.13 (the message says never ran *or* crashed)."""
    rig = Rig(tmp_path)
    await rig.start()
    await rig.install(rig.sample())
    await rig.stop()
    provider = SimProvider(SimMachine.load(str(tmp_path / "sim")))
    await provider.unlink(f"boot/efi/EFI/debian/fw/fwupd-{SYSTEM_FW_CLASS}.cap")
    provider.machine.save()
    await rig.reboot()
    assert "could not find or open" in rig.sim.state.last_boot_hang
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "never ran" in row.reason
    assert "crashed" in row.reason
    assert "Secure Boot" in row.reason
    assert "hung at boot" in row.reason


async def test_lost_capsule_write_is_caught_before_boot_next(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    rig.machine.add_fault(FaultSpec(component="uefi_capsule", kind="esp-write-lost"))
    with pytest.raises(NotSupported, match=r"refusing to schedule.*reads back as"):
        await rig.install(rig.sample())
    assert rig.snapshot() == before, "no variable, capsule or loader left behind"
    assert rig.engine is not None
    (row,) = rig.engine.history.entries()
    assert row.state == "failed"
    assert "needs-reboot" not in rig.device().flags


async def test_partition_changed_while_staging_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HD() node written must equal the ESP as the firmware will see it."""
    rig = Rig(tmp_path)
    await rig.start()
    before = rig.snapshot()
    original = EfiVars.set

    async def moving_set(self: EfiVars, name: str, *args: Any, **kwargs: Any) -> None:
        await original(self, name, *args, **kwargs)
        if name.startswith("Boot0"):
            rig.sim.state.logical_block_size = 4096  # e.g. the disk was swapped
            rig.machine.render()

    monkeypatch.setattr(EfiVars, "set", moving_set)
    with pytest.raises(NotSupported, match="partition changed while staging"):
        await rig.install(rig.sample())
    monkeypatch.setattr(EfiVars, "set", original)
    assert rig.snapshot() == before


def test_real_mountinfo_keeps_the_file_system_options(tmp_path: Path) -> None:
    """vfat's uid=/gid= are super options: the ESP search must see them."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "90 30 8:1 / /media/alice/STICK rw,nosuid,nodev,relatime shared:50 - vfat /dev/sda1 "
        "rw,uid=1000,gid=1000,fmask=0022\n"
    )
    (mount,) = asyncio.run(RealProvider(str(tmp_path)).mounts())
    assert "nosuid" in mount.options
    assert "uid=1000" in mount.options
    assert os.path.exists(tmp_path / "proc/self/mountinfo")


async def test_mbr_esp_gets_an_mbr_hd_node(tmp_path: Path) -> None:
    """An ESP of type 0xef on an MBR disk: signature type 1 with the disk signature."""
    rig = Rig(tmp_path, esp_mbr=True)
    await rig.start()
    assert rig.device().metadata["update-method"] == "nvram"
    assert rig.device().metadata["esp-partuuid"] == "8c2f41d7-01"
    await rig.install(rig.sample())
    (hard,) = [n for n in (await rig.update_info()).device_path if isinstance(n, efi.HardDriveNode)]
    assert (hard.partition_format, hard.signature_type) == (efi.PART_FORMAT_MBR, efi.SIGNATURE_MBR)
    assert hard.pack()[24:40] == bytes.fromhex("d7412f8c") + bytes(12)
    await rig.reboot()
    assert rig.sim.state.last_boot_hang == ""
    engine = await rig.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
