"""Host facts for fwupd's API (issue 18): hardware IDs, machine id, HSI, inhibits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.errors import Busy
from livefw.hostinfo import (
    chid,
    host_security_id,
    load_host,
    report_metadata,
    security_attrs,
)
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugins.lfa.plugin import LfaPlugin
from livefw.plugins.pfru.plugin import PfruPlugin


def test_chid_matches_fwupds_test_vector() -> None:
    # fwupd's own self test (fu_hwids_func): Manufacturer "LENOVO" is HardwareID-14
    assert chid("LENOVO") == "6de5d951-d755-576b-bd09-c5cf66b27234"


async def test_hwids_from_the_simulated_smbios(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    info = await load_host(SimProvider(machine))
    pairs = dict(reversed(info.hwids()))  # "Manufacturer" is also HardwareID-14's key
    assert pairs["Manufacturer"] == "livefw"
    assert pairs["BiosMajorRelease"] == "01"
    assert pairs["EnclosureKind"] == "1"
    assert pairs["Manufacturer"] == info.vendor
    assert info.product == "Simulated machine"
    assert pairs["Manufacturer&ProductName"] == chid("livefw&Simulated machine")
    # fwupd_build_machine_id("fwupd"): SHA-256 of the salt and the file's bytes
    raw = (machine.state.machine_id + "\n").encode()
    assert info.machine_id == hashlib.sha256(b"fwupd" + raw).hexdigest()


async def test_no_smbios_gives_the_reason(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "empty")
    info = await load_host(SimProvider(machine))
    ((key, reason),) = info.hwids()
    assert key == "Error"
    assert "/sys/class/dmi/id" in reason
    assert (info.vendor, info.product) == ("Unknown Vendor", "Unknown Product")


async def test_report_metadata_names_the_kernel_and_versions(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), kernel="6.1")
    meta = await report_metadata(SimProvider(machine), "2.0.20", "0.1")
    assert meta["RuntimeVersion(org.freedesktop.fwupd)"] == "2.0.20"
    assert meta["KernelVersion"].startswith("6.1")
    assert meta["KernelName"] == "Linux"


async def test_security_attrs_follow_lockdown_and_fwctl_taint(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    provider = SimProvider(machine)
    attrs = {a.appstream_id: a for a in await security_attrs(provider, [])}
    assert attrs["org.fwupd.hsi.Kernel.Lockdown"].result == "not-enabled"
    assert attrs["org.fwupd.hsi.Kernel.Tainted"].result == "not-tainted"
    assert attrs["org.fwupd.hsi.Bios.CapsuleUpdates"].success
    assert "org.fwupd.hsi.Bios.RollbackProtection" not in attrs  # no PFRU device given
    assert host_security_id(list(attrs.values())) == "HSI:0!"  # lockdown none

    machine.state.lockdown = "integrity"
    machine.component("fwctl").state.tainted = True  # type: ignore[attr-defined]
    machine.render()
    attrs = {a.appstream_id: a for a in await security_attrs(provider, [])}
    assert attrs["org.fwupd.hsi.Kernel.Lockdown"].success
    tainted = attrs["org.fwupd.hsi.Kernel.Tainted"]
    assert (tainted.result, tainted.success) == ("tainted", False)
    assert "fwctl" in tainted.summary
    assert tainted.flags() & 1024  # runtime-issue


async def test_pending_activation_and_pfru_rollback(
    make_engine: Callable[..., Any],
) -> None:
    engine = await make_engine([PfruPlugin, LfaPlugin])
    attrs = {
        a.appstream_id: a
        for a in await security_attrs(engine.provider, list(engine.devices.values()))
    }
    assert attrs["org.fwupd.hsi.Bios.RollbackProtection"].success
    # the default machine's LFA image waits for activation
    pending = attrs["org.livefw.hsi.RuntimeActivation"]
    assert not pending.success
    assert "TF-A BL31 runtime" in pending.summary


async def test_an_inhibit_refuses_activations_until_dropped(
    make_engine: Callable[..., Any],
) -> None:
    engine = await make_engine([LfaPlugin])
    device = next(d for d in engine.devices.values() if "needs-activation" in d.flags)
    engine.set_inhibit("dbus-000001", "kernel upgrade")
    with pytest.raises(Busy, match="kernel upgrade"):
        await engine.activate(device.id)
    engine.set_inhibit("dbus-000001", None)
    await engine.activate(device.id)
