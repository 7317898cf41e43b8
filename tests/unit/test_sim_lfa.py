"""The simulated LFA agent and driver behave like the v3 posting (docs/kernel.md, Arm LFA)."""

import asyncio
import errno
from pathlib import Path

import pytest

from livefw.errors import KernelError
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import lfa

BL31 = "47d4086d-4cfe-9846-9b95-2950cbbd5a00"
RMM = "6c0762a6-12f2-4b56-92cb-ba8f633606d9"
BL33 = "d6d0eea7-fcea-d54b-9782-9934f234b6e4"


@pytest.fixture
def machine(tmp_path: Path) -> SimMachine:
    machine = SimMachine.create(str(tmp_path / "sim"))
    machine.components["lfa"].configure("activate_seconds", "0")
    return machine


@pytest.fixture
def provider(machine: SimMachine) -> SimProvider:
    return SimProvider(machine)


def attr(guid: str, name: str) -> str:
    return f"{lfa.LFA_SYSFS}/{guid}/{name}"


async def test_v3_tree_has_twelve_files_and_raw_guid_names(provider: SimProvider) -> None:
    assert await provider.listdir(lfa.LFA_SYSFS) == sorted([BL31, RMM, BL33])
    assert sorted(await provider.listdir(f"{lfa.LFA_SYSFS}/{BL31}")) == sorted(lfa.V3_ATTRS)
    assert await provider.read_attr(attr(BL31, "name")) == "TF-A BL31 runtime"
    assert await provider.read_attr(attr(BL31, "current_version")) == "2.13"
    assert await provider.read_attr(attr(BL31, "pending_version")) == "2.14"
    assert await provider.read_attr(attr(RMM, "pending_version")) == "N/A"
    assert await provider.read_attr(attr(RMM, "cpu_rendezvous")) == "0"
    assert await provider.read_attr(attr(BL33, "activation_capable")) == "0"


def test_guid_dirname_uses_raw_byte_order() -> None:
    # GET_INVENTORY's x1/x2 registers for BL31 as tf-a-tests has them; the driver
    # prints the GUID raw (lfa_fw.c update_fw_images_tree(): %pUb)
    assert lfa.guid_dirname(0x4698FE4C6D08D447, 0x005ABDCB5029959B) == BL31
    assert lfa.guid_dirname(0x564BF212A662076C, 0xD90636638FBACB92) == RMM


def test_version_codec() -> None:
    assert lfa.format_version((2 << 32) | 14) == "2.14"
    assert lfa.parse_version("2.14") == (2 << 32) | 14
    with pytest.raises(ValueError, match="range"):
        lfa.parse_version("4294967296.0")


async def test_activation_moves_pending_to_current_and_rerenders(provider: SimProvider) -> None:
    await provider.write_attr(attr(BL31, "activate"), "1")
    assert await provider.read_attr(attr(BL31, "current_version")) == "2.14"
    assert await provider.read_attr(attr(BL31, "activation_pending")) == "0"
    assert await provider.read_attr(attr(BL31, "pending_version")) == "N/A"


async def test_pending_is_live_but_flags_are_cached(
    provider: SimProvider, machine: SimMachine
) -> None:
    image = machine.components["lfa"].state.images[1]  # type: ignore[attr-defined]
    image.pending, image.pending_version, image.may_reset_cpu = True, "0.8", True
    # live: the kernel re-queries the agent on every read
    assert await provider.read_attr(attr(RMM, "activation_pending")) == "1"
    assert await provider.read_attr(attr(RMM, "pending_version")) == "0.8"
    # cached until the next enumeration
    assert await provider.read_attr(attr(RMM, "may_reset_cpu")) == "0"


@pytest.mark.parametrize("guid", [RMM, BL33])
async def test_activation_without_pending_or_capability_is_ecanceled(
    provider: SimProvider, guid: str
) -> None:
    with pytest.raises(KernelError) as info:
        await provider.write_attr(attr(guid, "activate"), "1")
    assert info.value.errno == errno.ECANCELED


@pytest.mark.parametrize("kind", ["auth-error", "activation-failed", "rendezvous-failure", "busy"])
async def test_agent_failures_all_reach_user_space_as_ecanceled(
    provider: SimProvider, machine: SimMachine, kind: str
) -> None:
    machine.components["lfa"].configure("retry_budget_seconds", "0")
    machine.add_fault(FaultSpec(component="lfa", kind=kind))
    with pytest.raises(KernelError) as info:
        await provider.write_attr(attr(BL31, "activate"), "1")
    assert info.value.errno == errno.ECANCELED
    assert await provider.read_attr(attr(BL31, "current_version")) == "2.13"
    assert await provider.read_attr(attr(BL31, "activation_pending")) == "1"
    # the fault fired once; the next activation succeeds
    await provider.write_attr(attr(BL31, "activate"), "1")
    assert await provider.read_attr(attr(BL31, "current_version")) == "2.14"


async def test_cancel_with_nothing_primed_is_einval(provider: SimProvider) -> None:
    with pytest.raises(KernelError) as info:
        await provider.write_attr(attr(BL31, "cancel"), "1")
    assert info.value.errno == errno.EINVAL


async def test_force_cpu_rendezvous_accepts_kstrtobool_only(provider: SimProvider) -> None:
    await provider.write_attr(attr(BL31, "force_cpu_rendezvous"), "off")
    assert await provider.read_attr(attr(BL31, "force_cpu_rendezvous")) == "0"
    with pytest.raises(KernelError) as info:
        await provider.write_attr(attr(BL31, "force_cpu_rendezvous"), "maybe")
    assert info.value.errno == errno.EINVAL


async def test_read_only_attributes_refuse_writes(provider: SimProvider) -> None:
    with pytest.raises(KernelError) as info:
        await provider.write_attr(attr(BL31, "current_version"), "9.9")
    assert info.value.errno == errno.EACCES


async def test_rfc_style_tree_has_seven_files_and_unknown_names(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "rfc")
    provider = SimProvider(machine)
    assert sorted(await provider.listdir(f"{lfa.LFA_SYSFS}/{BL31}")) == sorted(lfa.RFC_ATTRS)
    assert await provider.read_attr(attr(BL31, "name")) == "BL31 runtime"
    machine.components["lfa"].add_device({"guid": "11111111-2222-3333-4444-555555555555"})
    name = await provider.read_attr(attr("11111111-2222-3333-4444-555555555555", "name"))
    assert name == "(unknown)"


async def test_state_survives_reload(tmp_path: Path, provider: SimProvider) -> None:
    await provider.write_attr(attr(BL31, "activate"), "1")
    again = SimProvider(SimMachine.load(str(tmp_path / "sim")))
    assert await again.read_attr(attr(BL31, "current_version")) == "2.14"


async def test_empty_profile_has_no_lfa_directory(tmp_path: Path) -> None:
    provider = SimProvider(SimMachine.create(str(tmp_path / "sim"), "empty"))
    assert not await provider.exists(lfa.LFA_SYSFS)


async def _next_is_marker(machine: SimMachine, queue: "asyncio.Queue[UEvent]") -> None:
    """Nothing was emitted before this point: the sim delivers in order, so a marker
    emitted now is the next event unless something came before it."""
    machine.emit(UEvent("change", "marker"))
    assert (await queue.get()).devpath == "marker"


async def test_tree_changes_send_no_uevent(provider: SimProvider, machine: SimMachine) -> None:
    """lfa_fw.c never calls kobject_uevent(): hot-add, hot-remove and the re-enumeration
    after an activation change the tree silently (docs/kernel.md, Uevents)."""
    queue = machine.subscribe()
    new = "11111111-2222-3333-4444-555555555555"
    added = machine.components["lfa"].add_device({"guid": new})
    assert await provider.is_dir(f"{lfa.LFA_SYSFS}/{new}")
    machine.components["lfa"].remove_device(added.key)
    assert not await provider.exists(f"{lfa.LFA_SYSFS}/{new}")
    machine.components["lfa"].state.activated_remove = [RMM]  # type: ignore[attr-defined]
    await provider.write_attr(attr(BL31, "activate"), "1")
    assert not await provider.exists(f"{lfa.LFA_SYSFS}/{RMM}")
    await _next_is_marker(machine, queue)


async def test_module_reload_sends_the_module_events_and_resets_the_settings(
    provider: SimProvider, machine: SimMachine
) -> None:
    """kernel/module/main.c do_init_module(): ``add`` /module/lfa_fw after the init made
    the tree; unloading removes the tree, then ``remove``. New image objects start with
    force_cpu_rendezvous 1 (lfa_fw.c update_fw_image_node())."""
    await provider.write_attr(attr(RMM, "force_cpu_rendezvous"), "0")
    queue = machine.subscribe()
    component = machine.components["lfa"]
    with machine.lock:
        component.configure("module_loaded", "0")
    event = await queue.get()
    assert (event.action, event.devpath, event.subsystem) == ("remove", "module/lfa_fw", "module")
    assert not await provider.exists(lfa.LFA_SYSFS)
    with machine.lock:
        component.configure("module_loaded", "1")
    event = await queue.get()
    assert (event.action, event.devpath, event.subsystem) == ("add", "module/lfa_fw", "module")
    assert await provider.listdir(lfa.LFA_SYSFS) == sorted([BL31, RMM, BL33])
    assert await provider.read_attr(attr(RMM, "force_cpu_rendezvous")) == "1"
    await _next_is_marker(machine, queue)


async def test_module_load_without_an_agent_sends_nothing(tmp_path: Path) -> None:
    """lfa_init() / lfa_smccc_probe() fail without an agent: no tree, no module ``add``."""
    machine = SimMachine.create(str(tmp_path / "sim"), "empty")
    provider = SimProvider(machine)
    queue = machine.subscribe()
    with machine.lock:
        machine.components["lfa"].configure("module_loaded", "0")
        machine.components["lfa"].configure("module_loaded", "1")
    assert not await provider.exists(lfa.LFA_SYSFS)
    await _next_is_marker(machine, queue)


async def test_force_cpu_rendezvous_decides_stop_machine(
    provider: SimProvider, machine: SimMachine
) -> None:
    """ACTIVATE runs inside stop_machine() when cpu_rendezvous || force (issue 14.17)."""
    component = machine.components["lfa"]
    component.stage(f"lfa/{RMM}", {"version": "0.8"})
    # the default force 1: a rendezvous although the firmware does not require one
    await provider.write_attr(attr(RMM, "activate"), "1")
    image = component._image(RMM)  # type: ignore[attr-defined]
    assert image.last_rendezvous is True
    component.stage(f"lfa/{RMM}", {"version": "0.9"})
    await provider.write_attr(attr(RMM, "force_cpu_rendezvous"), "0")
    # no stop_machine(): a rendezvous failure cannot happen
    machine.add_fault(FaultSpec(component="lfa", target=f"lfa/{RMM}", kind="rendezvous-failure"))
    await provider.write_attr(attr(RMM, "activate"), "1")
    image = component._image(RMM)  # type: ignore[attr-defined]
    assert (image.last_rendezvous, image.current) == (False, "0.9")
    # BL31's firmware requires the rendezvous: force 0 changes nothing
    await provider.write_attr(attr(BL31, "force_cpu_rendezvous"), "0")
    await provider.write_attr(attr(BL31, "activate"), "1")
    assert component._image(BL31).last_rendezvous is True  # type: ignore[attr-defined]


async def test_auto_activate_activates_on_the_notification(
    provider: SimProvider, machine: SimMachine
) -> None:
    component = machine.components["lfa"]
    assert await provider.read_attr(attr(RMM, "auto_activate")) == "0"
    await provider.write_attr(attr(RMM, "auto_activate"), "on")
    component.stage(f"lfa/{RMM}", {"version": "0.8"})
    for thread in component.auto_threads:  # type: ignore[attr-defined]
        thread.join(10)
    assert await provider.read_attr(attr(RMM, "current_version")) == "0.8"
    assert await provider.read_attr(attr(RMM, "activation_pending")) == "0"
    # without auto_activate the new image just waits
    component.stage(f"lfa/{BL31}", {"version": "2.15"})
    assert not [t for t in component.auto_threads if t.is_alive()]  # type: ignore[attr-defined]
    assert await provider.read_attr(attr(BL31, "activation_pending")) == "1"


async def test_dropped_image_stays_invalidated_until_the_workqueue_runs(
    provider: SimProvider, machine: SimMachine
) -> None:
    """v1+ update_fw_images_tree() invalidates every image; remove_invalid_fw_images()
    deletes the dropped ones from a workqueue, after the write may have returned."""
    state = machine.components["lfa"].state
    state.removal_delay_seconds = 0.2  # type: ignore[attr-defined]
    state.activated_remove = [RMM]  # type: ignore[attr-defined]
    await provider.write_attr(attr(BL31, "activate"), "1")
    values = [
        await provider.read_attr(attr(RMM, name))
        for name in ("activation_capable", "may_reset_cpu", "cpu_rendezvous", "current_version")
    ]
    assert tuple(values) == lfa.INVALIDATED
    assert await provider.read_attr(attr(RMM, "activation_pending")) == "0"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while await provider.exists(f"{lfa.LFA_SYSFS}/{RMM}"):
        assert loop.time() < deadline, "the workqueue never removed the dropped image"
        await asyncio.sleep(0.01)
    assert await provider.read_attr(attr(BL31, "current_version")) == "2.14"
