"""The LFA plugin and the engine on the simulated machine, without a bus."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from livefw.engine import Engine
from livefw.errors import ActivationFailed, NotFound, NothingToDo, NotSupported
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.uapi import lfa as lfa_uapi
from livefw.plugin import Plugin
from livefw.plugins.lfa import LfaDevice, LfaPlugin
from livefw.state import UpdateState
from livefw.testing import wait_for

BL31 = "47d4086d-4cfe-9846-9b95-2950cbbd5a00"
BL33_GUID = "d6d0eea7-fcea-d54b-9782-9934f234b6e4"


def by_name(engine: Engine, text: str) -> Any:
    return next(d for d in engine.devices.values() if text in d.name)


def lfa_state(engine: Engine) -> Any:
    return engine.provider.machine.components["lfa"].state  # type: ignore[attr-defined]


@pytest.fixture
async def engine(make_engine: Callable[..., Any]) -> Engine:
    engine = await make_engine([LfaPlugin])
    lfa_state(engine).activate_seconds = 0
    return engine


async def test_one_device_per_image_with_flags(engine: Engine) -> None:
    assert len(engine.devices) == 3
    bl31 = by_name(engine, "BL31")
    assert bl31.plugin == "lfa"
    assert bl31.protocol == "org.livefw.lfa"
    assert bl31.version == "2.13"
    assert bl31.version_pending == "2.14"
    assert {"activation-capable", "needs-activation", "cpu-rendezvous"} <= bl31.flags
    assert "updatable" not in bl31.flags  # activate-only
    rmm = by_name(engine, "RMM")
    assert "needs-activation" not in rmm.flags
    assert "cpu-rendezvous" not in rmm.flags
    assert "activation-capable" not in by_name(engine, "BL33").flags


async def test_activate_success_writes_history_and_updates_version(engine: Engine) -> None:
    bl31 = by_name(engine, "BL31")
    entry = await engine.activate(bl31.id, caller_uid=0)
    assert (entry.state, entry.version_old, entry.version_new) == ("success", "2.13", "2.14")
    assert bl31.version == "2.14"
    assert bl31.version_pending == ""
    assert "needs-activation" not in bl31.flags
    assert bl31.update_state == UpdateState.SUCCESS
    assert [e.state for e in engine.history.entries()] == ["success"]


async def test_activate_not_capable_is_not_supported_and_changes_nothing(engine: Engine) -> None:
    bl33 = by_name(engine, "BL33")
    with pytest.raises(NotSupported, match="not activation-capable"):
        await engine.activate(bl33.id)
    assert engine.history.entries() == []
    assert bl33.update_state == UpdateState.NONE
    assert bl33.version == "2025.10"


async def test_activate_with_nothing_pending_is_nothing_to_do(engine: Engine) -> None:
    with pytest.raises(NothingToDo):
        await engine.activate(by_name(engine, "RMM").id)
    assert engine.history.entries() == []


async def test_may_reset_cpu_is_refused_before_the_kernel(
    engine: Engine, make_engine: Callable[..., Any]
) -> None:
    machine: SimMachine = engine.provider.machine  # type: ignore[attr-defined]
    machine.components["lfa"].add_device(
        {"guid": "11111111-2222-3333-4444-555555555555", "pending": "2.0", "may-reset-cpu": "1"}
    )
    await engine.refresh()
    device = by_name(engine, "11111111")
    assert "may-reset-cpu" in device.flags
    assert "needs-activation" not in device.flags
    with pytest.raises(NotSupported, match="reset CPUs"):
        await engine.activate(device.id)


@pytest.mark.parametrize("kind", ["auth-error", "activation-failed", "rendezvous-failure"])
async def test_agent_failure_is_activation_failed_in_history(engine: Engine, kind: str) -> None:
    machine: SimMachine = engine.provider.machine  # type: ignore[attr-defined]
    machine.add_fault(FaultSpec(component="lfa", kind=kind))
    bl31 = by_name(engine, "BL31")
    with pytest.raises(ActivationFailed, match="ECANCELED"):
        await engine.activate(bl31.id)
    (entry,) = engine.history.entries()
    assert entry.state == "failed"
    assert "ECANCELED" in entry.reason
    assert bl31.version == "2.13"
    assert bl31.update_state == UpdateState.FAILED
    assert "needs-activation" in bl31.flags


async def test_pending_state_is_reread_on_refresh_not_on_a_timer(engine: Engine) -> None:
    rmm = by_name(engine, "RMM")
    machine: SimMachine = engine.provider.machine  # type: ignore[attr-defined]
    machine.components["lfa"].stage(f"lfa/{rmm.guid}", {"version": "0.8"})
    assert rmm.version_pending == ""  # nothing re-read it yet
    await engine.refresh_device(rmm.id)
    assert rmm.version_pending == "0.8"
    assert "needs-activation" in rmm.flags


async def test_cancel_without_activation_in_progress(engine: Engine) -> None:
    with pytest.raises(NothingToDo, match="no activation in progress"):
        await engine.cancel(by_name(engine, "BL31").id)
    with pytest.raises(NotSupported):
        await engine.cancel(by_name(engine, "BL33").id)


async def test_activation_removing_an_image_removes_the_device(engine: Engine) -> None:
    lfa_state(engine).activated_remove = ["6c0762a6-12f2-4b56-92cb-ba8f633606d9"]
    await engine.activate(by_name(engine, "BL31").id)
    assert not any("RMM" in d.name for d in engine.devices.values())


# ------------------------- image changes without a uevent (docs/kernel.md, Uevents)

NEW = "11111111-2222-3333-4444-555555555555"
RMM_GUID = "6c0762a6-12f2-4b56-92cb-ba8f633606d9"


def machine_of(engine: Engine) -> SimMachine:
    return engine.provider.machine  # type: ignore[attr-defined,no-any-return]


def guids(engine: Engine) -> set[str]:
    return {d.physical_id for d in engine.devices.values() if d.plugin == "lfa"}


async def settle(engine: Engine) -> None:
    """Every uevent emitted so far has been dispatched: the engine dispatches in order,
    so once a marker emitted now reaches it, anything emitted before has been handled."""
    marker = "devices/virtual/tty/ttyLFAMARK"
    with capture_logs() as logs:
        machine_of(engine).emit(UEvent("add", marker, "tty"))
        await wait_for(lambda: any(log.get("devpath") == marker for log in logs))


async def test_out_of_band_change_is_seen_at_refresh_not_before(engine: Engine) -> None:
    """An activation by another process re-enumerates silently: livefwd still lists
    the old inventory until a rescan trigger (here ``Refresh``)."""
    lfa = machine_of(engine).components["lfa"]
    lfa.add_device({"guid": NEW, "pending": "1.1"})
    lfa.remove_device(f"lfa/{RMM_GUID}")
    await settle(engine)
    assert guids(engine) == {BL31, RMM_GUID, BL33_GUID}
    await engine.refresh()
    assert guids(engine) == {BL31, NEW, BL33_GUID}
    assert by_name(engine, "11111111").version_pending == "1.1"


async def test_module_reload_rescans(engine: Engine) -> None:
    """``add``/``remove`` of /module/lfa_fw are the uevents a real kernel sends: the
    images go with the unload and come back, re-read, with the load."""
    machine = machine_of(engine)
    lfa = machine.components["lfa"]
    rmm = by_name(engine, "RMM")
    await rmm.set_activation_options(force_cpu_rendezvous=False)
    lfa.add_device({"guid": NEW})
    await settle(engine)
    assert NEW not in guids(engine)
    with machine.lock:
        lfa.configure("module_loaded", "0")
    await wait_for(lambda: not guids(engine))
    with machine.lock:
        lfa.configure("module_loaded", "1")
    await wait_for(lambda: guids(engine) == {BL31, RMM_GUID, BL33_GUID, NEW})
    # new image objects: the reload reset the administrator's setting, and livefw shows it
    assert by_name(engine, "RMM").force_cpu_rendezvous is True


async def test_unrelated_module_does_not_rescan(engine: Engine) -> None:
    lfa = machine_of(engine).components["lfa"]
    lfa.add_device({"guid": NEW})
    machine_of(engine).emit(UEvent("add", "module/other_fw", "module"))
    await settle(engine)
    assert NEW not in guids(engine)


async def test_own_activation_follows_the_reenumeration_by_guid(engine: Engine) -> None:
    """After livefw's activation the driver re-enumerated (lfa_fw.c
    update_fw_images_tree(), remove_invalid_fw_images()): new GUIDs are added, vanished
    ones removed, the others keep their device."""
    lfa = machine_of(engine).components["lfa"]
    bl31, bl33 = by_name(engine, "BL31"), by_name(engine, "BL33")
    lfa.add_device({"guid": NEW})
    lfa_state(engine).activated_remove = [RMM_GUID]
    await settle(engine)
    assert NEW not in guids(engine)
    await engine.activate(bl31.id)
    assert guids(engine) == {BL31, NEW, BL33_GUID}
    assert by_name(engine, "BL31") is bl31
    assert by_name(engine, "BL33") is bl33
    assert bl31.version == "2.14"


async def test_own_activation_waits_for_the_driver_to_delete_dropped_images(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v1+ driver deletes dropped images from a workqueue: a rescan right after the
    write would still list them with version 0.0 (lfa_fw.c update_fw_images_tree())."""
    monkeypatch.setattr(lfa_uapi, "REMOVAL_WAIT_S", 30.0)  # a deadline, not a timing
    lfa_state(engine).removal_delay_seconds = 0.2
    lfa_state(engine).activated_remove = [RMM_GUID]
    rmm = by_name(engine, "RMM")
    await engine.activate(by_name(engine, "BL31").id)
    assert guids(engine) == {BL31, BL33_GUID}
    assert rmm.version == "0.7"  # never shown with the invalidated values


async def test_get_device_of_a_vanished_image_rescans(engine: Engine) -> None:
    """GetDevice re-reads one image; its directory gone means the kernel re-enumerated,
    so the whole inventory is read again and the caller gets NotFound."""
    lfa = machine_of(engine).components["lfa"]
    rmm = by_name(engine, "RMM")
    lfa.remove_device(f"lfa/{RMM_GUID}")
    lfa.add_device({"guid": NEW})
    with pytest.raises(NotFound, match="no longer in /sys/firmware/lfa"):
        await engine.refresh_device(rmm.id)
    assert guids(engine) == {BL31, NEW, BL33_GUID}
    assert rmm.version == "0.7"  # not overwritten with the defaults of a missing file


async def test_rescan_reads_at_most_max_images(
    make_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lfa_uapi, "MAX_IMAGES", 2)
    with capture_logs() as logs:
        engine = await make_engine([LfaPlugin])
    assert len(guids(engine)) == 2
    (warning,) = [log for log in logs if log["event"] == "lfa_too_many_images"]
    assert (warning["limit"], warning["skipped"]) == (2, 1)


async def test_rfc_style_tree_is_tolerated(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([LfaPlugin], profile="rfc")
    lfa_state(engine).activate_seconds = 0
    bl31 = by_name(engine, "BL31")
    assert bl31.version == ""
    assert "needs-activation" in bl31.flags
    entry = await engine.activate(bl31.id)
    assert entry.state == "success"


async def test_no_lfa_directory_means_unsupported_probe(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([LfaPlugin], profile="empty")
    record = engine.plugins["lfa"]
    assert record.probe.result == "unsupported"
    assert "/sys/firmware/lfa" in record.probe.reason
    assert engine.devices == {}


# ------------------------------------------------------------------ reconciliation


async def _interrupted_row(engine: Engine, **data: str) -> str:
    bl31 = by_name(engine, "BL31")
    entry = engine.history.begin(
        device_id=bl31.id,
        device_name=bl31.name,
        plugin="lfa",
        physical_id=BL31,
        kind="activate",
        version_old="2.13",
        version_new="2.14",
        boot_id=engine.boot_id,
    )
    await engine.stop()
    return entry.op_id


async def test_restart_reconciles_a_completed_activation_as_success(
    engine: Engine, make_engine: Callable[..., Any], tmp_path: Path
) -> None:
    op_id = await _interrupted_row(engine)
    # the firmware finished after the daemon died: the version changed
    machine = SimMachine.load(str(tmp_path / "sim"))
    image = machine.components["lfa"].state.images[0]  # type: ignore[attr-defined]
    image.current, image.pending, image.pending_version = "2.14", False, None
    machine.components["lfa"]._enumerate(machine.components["lfa"].state)  # type: ignore[attr-defined]
    machine.save()
    again = await make_engine([LfaPlugin])
    entry = again.history.get(op_id)
    assert (entry.state, entry.reason) == ("success", "activated")
    assert by_name(again, "BL31").update_state == UpdateState.SUCCESS


async def test_restart_reconciles_an_activation_that_never_happened(
    engine: Engine, make_engine: Callable[..., Any]
) -> None:
    op_id = await _interrupted_row(engine)
    again = await make_engine([LfaPlugin])
    entry = again.history.get(op_id)
    assert entry.state == "failed"
    assert "did not complete" in entry.reason
    assert "interrupted" not in entry.reason


async def test_restart_marks_interrupted_only_when_the_plugin_cannot_tell(
    engine: Engine, make_engine: Callable[..., Any], tmp_path: Path
) -> None:
    op_id = await _interrupted_row(engine)
    machine = SimMachine.load(str(tmp_path / "sim"))
    machine.components["lfa"].remove_device(f"lfa/{BL31}")
    machine.save()
    again = await make_engine([LfaPlugin])
    entry = again.history.get(op_id)
    assert entry.state == "failed"
    assert entry.reason.startswith("interrupted:")


# ------------------------------------------------- administrator settings (issue 14.17)

RMM = "6c0762a6-12f2-4b56-92cb-ba8f633606d9"


def image(engine: Engine, guid: str) -> Any:
    return next(i for i in lfa_state(engine).images if i.guid == guid)


async def test_activation_settings_are_shown_and_set(engine: Engine) -> None:
    rmm, bl31, bl33 = by_name(engine, "RMM"), by_name(engine, "BL31"), by_name(engine, "BL33")
    assert (rmm.force_cpu_rendezvous, rmm.auto_activate, rmm.cpu_rendezvous) == (
        True,
        False,
        False,
    )
    assert rmm.metadata["force-cpu-rendezvous"] == "true"
    assert rmm.metadata["activation-stops-cpus"] == "true"
    await rmm.set_activation_options(force_cpu_rendezvous=False, auto_activate=True)
    assert (image(engine, RMM).force_cpu_rendezvous, image(engine, RMM).auto_activate) == (
        False,
        True,
    )
    assert rmm.metadata["activation-stops-cpus"] == "false"
    assert rmm.metadata["auto-activate"] == "true"
    # an activation now runs without stop_machine()
    engine.provider.machine.components["lfa"].stage(f"lfa/{RMM}", {"version": "0.8"})  # type: ignore[attr-defined]
    for thread in engine.provider.machine.components["lfa"].auto_threads:  # type: ignore[attr-defined]
        thread.join(10)
    await engine.refresh_device(rmm.id)
    assert (rmm.version, image(engine, RMM).last_rendezvous) == ("0.8", False)
    # refused with the reason, nothing written
    with pytest.raises(NotSupported, match="requires a CPU rendezvous"):
        await bl31.set_activation_options(force_cpu_rendezvous=False)
    assert image(engine, bl31.guid).force_cpu_rendezvous is True
    with pytest.raises(NotSupported, match="not activation-capable"):
        await bl33.set_activation_options(auto_activate=True)
    assert image(engine, bl33.guid).auto_activate is False


async def test_rfc_postings_lack_the_settings(make_engine: Callable[..., Any]) -> None:
    engine = await make_engine([LfaPlugin], profile="rfc")
    rmm = by_name(engine, "RMM")
    assert (rmm.force_cpu_rendezvous, rmm.auto_activate) == (None, None)
    assert rmm.metadata["activation-stops-cpus"] == "true"
    assert "force-cpu-rendezvous" not in rmm.metadata
    with pytest.raises(NotSupported, match="RFC v2"):
        await rmm.set_activation_options(force_cpu_rendezvous=False)
    with pytest.raises(NotSupported, match="v2 posting"):
        await rmm.set_activation_options(auto_activate=True)


# ------------------------------------------------- the plugin pattern (issue 15 item 2)


async def test_devices_share_one_context_and_never_hold_their_plugin(engine: Engine) -> None:
    plugin = engine.plugins["lfa"].plugin
    assert isinstance(plugin, LfaPlugin)
    devices = list(engine.devices.values())
    assert devices
    assert all(isinstance(d, LfaDevice) and d.ctx is plugin.device_ctx for d in devices)
    for device in devices:
        assert not [k for k, v in vars(device).items() if isinstance(v, Plugin)], device.name
    # the inventory the activation re-reads is the engine's view
    assert set(plugin.device_ctx.images.values()) == set(devices)
