"""Reinstalling the running version, on every plugin that installs (issue 18 item 6).

A PFRU reinstall stages the version that already runs: re-reading the capability
must not take that for an activation (it left the update staged and never
activatable: history "staged", device pending, ``needs-activation`` cleared,
Activate answering "nothing staged").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import NotSupported
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.pfru import PfruComponent
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import SYSTEM_FW_CLASS, UefiCapsuleComponent
from livefw.plugin import InstallOptions, Payload
from livefw.plugins.lfa.plugin import LfaPlugin
from livefw.plugins.pfru import PfruPlugin
from livefw.plugins.uefi_capsule import UefiCapsulePlugin
from livefw.state import UpdateState

REINSTALL = InstallOptions(allow_reinstall=True)


def _component(engine: Engine, name: str) -> Any:
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    return provider.machine.components[name]


@pytest.mark.parametrize("key", ["pfru/code-injection", "pfru/driver-update"])
async def test_pfru_reinstall_stays_staged_and_activates(
    make_engine: Callable[..., Any], key: str
) -> None:
    engine = await make_engine([PfruPlugin])
    sim = _component(engine, "pfru")
    assert isinstance(sim, PfruComponent)
    kind = key.split("/")[1]
    device = next(d for d in engine.devices.values() if d.physical_id.endswith(kind))
    running = device.version
    entry = await engine.install(device.id, Payload(sim.sample(key, running, None)), REINSTALL)
    assert entry.state == "staged"
    await engine.refresh_device(device.id)  # what GetDevice and every client do
    assert "needs-activation" in device.flags
    assert device.version_pending == running
    assert device.update_state == UpdateState.PENDING
    done = await engine.activate(device.id)
    assert done.state == "success"
    assert "needs-activation" not in device.flags
    assert device.version == running
    (install,) = [e for e in engine.history.entries() if e.kind == "install"]
    assert install.state == "success"  # the activation settled the staged row


async def test_pfru_reinstall_survives_a_daemon_restart(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [PfruPlugin])
    await engine.start()
    sim = machine.components["pfru"]
    assert isinstance(sim, PfruComponent)
    device = next(d for d in engine.devices.values() if d.physical_id.endswith("code-injection"))
    data = sim.sample("pfru/code-injection", device.version, None)
    await engine.install(device.id, Payload(data), REINSTALL)
    await engine.stop()
    machine = SimMachine.load(str(tmp_path / "sim"))
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [PfruPlugin])
    await engine.start()
    device = engine.devices[device.id]
    assert "needs-activation" in device.flags
    assert (await engine.activate(device.id)).state == "success"
    await engine.stop()


async def test_uefi_capsule_reinstall_completes_at_the_next_boot(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [UefiCapsulePlugin])
    await engine.start()
    sim = machine.components["uefi_capsule"]
    assert isinstance(sim, UefiCapsuleComponent)
    device = next(d for d in engine.devices.values() if d.physical_id == SYSTEM_FW_CLASS)
    running = device.version
    data = sim.sample(f"uefi_capsule/{SYSTEM_FW_CLASS}", running, None)
    entry = await engine.install(device.id, Payload(data, "update.cap"), REINSTALL)
    assert entry.state == "staged"
    assert device.update_state == UpdateState.NEEDS_REBOOT
    await engine.stop()
    machine = SimMachine.load(str(tmp_path / "sim"))
    machine.reboot()
    machine.save()
    machine = SimMachine.load(str(tmp_path / "sim"))
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [UefiCapsulePlugin])
    await engine.start()
    (row,) = engine.history.entries()
    assert row.state == "success", row.reason
    assert engine.devices[device.id].version == running
    await engine.stop()


async def test_lfa_has_no_install_to_repeat(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([LfaPlugin])
    device = next(iter(engine.devices.values()))
    with pytest.raises(NotSupported):
        await engine.install(device.id, Payload(b"x" * 64), REINSTALL)
