"""The PFRU plugin with the engine on the simulated platform (no bus)."""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import (
    ActivationFailed,
    Busy,
    InvalidArgument,
    InvalidFile,
    NothingToDo,
    NotSupported,
    VersionNewer,
    VersionSame,
)
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.pfru import PfruComponent
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import pfru as uapi
from livefw.plugin import InstallOptions, Payload, Plugin
from livefw.plugins.pfru import PfruDevice, PfruPlugin, PfruTelemetryDevice
from livefw.state import UpdateState

CODE = "pfru/code-injection"
DRIVER = "pfru/driver-update"

MakeEngine = Callable[..., Any]


def sim(engine: Engine) -> PfruComponent:
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    component = provider.machine.components["pfru"]
    assert isinstance(component, PfruComponent)
    return component


def device(engine: Engine, update_type: uapi.UpdateType) -> PfruDevice:
    for candidate in engine.devices.values():
        if isinstance(candidate, PfruDevice) and candidate.update_type == update_type:
            return candidate
    raise AssertionError(f"no {update_type} device")


def code(engine: Engine) -> PfruTelemetryDevice:
    found = device(engine, uapi.UpdateType.CODE_INJECTION)
    assert isinstance(found, PfruTelemetryDevice)
    return found


def driver(engine: Engine) -> PfruDevice:
    return device(engine, uapi.UpdateType.DRIVER_UPDATE)


def config(**pfru: Any) -> Config:
    return Config.model_validate({"plugins": {"pfru": pfru}})


# ---------------------------------------------------------------- devices


async def test_devices_from_the_capability(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    platform = sim(engine).state.platform_id
    injection, update = code(engine), driver(engine)
    assert injection.protocol == update.protocol == "org.livefw.pfru"
    assert injection.plugin == "pfru"
    assert injection.guids == (uapi.CODE_INJECTION_GUID, platform)
    assert update.guids == (uapi.DRIVER_UPDATE_GUID, platform)
    assert injection.version == "3"  # code_rt_version
    assert update.version == "2"  # drv_svn (6.17+ gate)
    assert update.metadata["drv-rt-version"] == "7"
    assert {"updatable", "internal", "activation-capable"} <= injection.flags
    assert "needs-activation" not in injection.flags
    assert type(update).interfaces == ("org.livefw.Daemon1.Pfru",)
    assert type(injection).interfaces == ("org.livefw.Daemon1.Pfru", "org.livefw.Daemon1.Telemetry")
    assert injection.log_level == int(uapi.LogLevel.INFO)


async def test_rt_gate_config_uses_the_runtime_version(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], config=config(driver_version_gate="rt"))
    assert driver(engine).version == "7"


async def test_minimal_and_empty_profiles(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine([PfruPlugin], profile="minimal")
    assert [d.update_type for d in engine.devices.values()] == [uapi.UpdateType.CODE_INJECTION]
    empty = await make_engine([PfruPlugin], profile="empty", state_dir=tmp_path / "other")
    record = empty.plugins["pfru"]
    assert record.probe.result == "unsupported"
    assert "/dev/acpi_pfr_update0" in record.probe.reason
    assert "CONFIG_ACPI_PFRUT" in record.probe.reason
    assert not empty.devices


async def test_bad_config_fails_the_plugin_with_the_key(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], config=config(driver_version_gate="maybe"))
    record = engine.plugins["pfru"]
    assert record.probe.result == "failed"
    assert "driver_version_gate" in record.probe.reason


# ---------------------------------------------------------------- install


async def test_install_stages_then_activate_applies(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    data = sim(engine).sample(CODE, "5", None)
    entry = await engine.install(target.id, Payload(data, "fw.cap"), InstallOptions())
    assert (entry.state, entry.version_old, entry.version_new) == ("staged", "3", "5")
    assert entry.data["pfru_step"] == "staged"
    assert "needs-activation" in target.flags
    assert target.version_pending == "5"
    assert target.update_state == UpdateState.PENDING
    assert sim(engine).state.staged is not None
    assert target.version == "3"

    entry = await engine.activate(target.id)
    assert (entry.state, entry.version_new) == ("success", "5")
    assert target.version == "5"
    assert "needs-activation" not in target.flags
    assert target.version_pending == ""
    states = {e.kind: e.state for e in engine.history.entries()}
    assert states == {"install": "success", "activate": "success"}  # staged row closed
    with pytest.raises(NothingToDo):
        target.check_activate()


async def test_install_with_activate(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = driver(engine)
    data = sim(engine).sample(DRIVER, "3", None)
    entry = await engine.install(target.id, Payload(data), InstallOptions(activate=True))
    assert entry.state == "success"
    assert target.version == "3"
    assert sim(engine).state.drv_svn == 3
    assert target.update_state == UpdateState.SUCCESS
    assert "needs-activation" not in target.flags


async def test_match_payload_finds_the_device(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    data = sim(engine).sample(DRIVER, None, None)
    assert engine.match_payload(Payload(data), InstallOptions()) is driver(engine)
    broken = sim(engine).sample(CODE, None, "header-v3")
    with pytest.raises(InvalidFile):
        engine.match_payload(Payload(broken), InstallOptions())


def _assert_untouched(engine: Engine, rows: int = 0) -> None:
    assert len(engine.history.entries()) == rows
    for candidate in engine.devices.values():
        assert "needs-activation" not in candidate.flags
        assert candidate.version_pending == ""
    assert sim(engine).state.staged is None


@pytest.mark.parametrize(
    ("broken", "error", "text"),
    [
        ("header-v3", InvalidFile, "version 3"),
        ("other-platform", InvalidFile, "for platform"),
        ("truncated", InvalidFile, "truncated"),
        ("wrong-image-type", InvalidFile, "neither PFRU"),
        ("not-a-capsule", InvalidFile, "not a valid PFRU capsule"),
        ("downgrade", VersionNewer, "anti-rollback"),
    ],
)
async def test_refused_before_anything_is_written(
    make_engine: MakeEngine, broken: str, error: type[Exception], text: str
) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    data = sim(engine).sample(CODE, None, broken)
    buffer_before = sim(engine).state.buffer
    with pytest.raises(error, match=text):
        await engine.install(target.id, Payload(data), InstallOptions(allow_older=True))
    _assert_untouched(engine)
    assert sim(engine).state.buffer == buffer_before  # nothing reached the kernel
    assert target.update_state == UpdateState.NONE


async def test_downgrade_refused_whatever_the_options(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    data = sim(engine).sample(DRIVER, None, "svn-downgrade")
    options = InstallOptions(allow_older=True, allow_reinstall=True, force=True)
    with pytest.raises(VersionNewer, match="anti-rollback"):
        await engine.install(driver(engine).id, Payload(data), options)
    _assert_untouched(engine)


async def test_svn_downgrade_under_the_rt_gate(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], config=config(driver_version_gate="rt"))
    data = sim(engine).sample(DRIVER, None, "svn-downgrade")
    with pytest.raises(VersionNewer, match="security version"):
        await engine.install(driver(engine).id, Payload(data), InstallOptions())


async def test_same_version_needs_allow_reinstall(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    data = sim(engine).sample(CODE, "3", None)
    with pytest.raises(VersionSame):
        await engine.install(target.id, Payload(data), InstallOptions())
    _assert_untouched(engine)
    entry = await engine.install(target.id, Payload(data), InstallOptions(allow_reinstall=True))
    assert entry.state == "staged"


async def test_wrong_device(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    data = sim(engine).sample(DRIVER, None, None)
    with pytest.raises(InvalidFile, match="driver update capsule, not a code injection"):
        await engine.install(code(engine).id, Payload(data), InstallOptions())
    _assert_untouched(engine)


async def test_over_the_configured_limit(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], config=config(max_capsule_size=1000))
    data = sim(engine).sample(CODE, None, None)
    with pytest.raises(InvalidFile, match="max_capsule_size"):
        await engine.install(code(engine).id, Payload(data), InstallOptions())
    _assert_untouched(engine)


async def test_larger_than_the_buffer_is_a_kernel_einval(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    data = sim(engine).sample(CODE, None, "too-large")
    with pytest.raises(InvalidFile, match="EINVAL"):
        await engine.install(target.id, Payload(data), InstallOptions())
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "communication buffer" in row.reason
    assert row.data["pfru_step"] == "writing"
    assert target.update_state == UpdateState.FAILED
    assert "needs-activation" not in target.flags
    assert sim(engine).state.staged is None
    assert not engine.history.entries(unfinished=True)
    # and a good capsule still goes through afterwards
    good = sim(engine).sample(CODE, None, None)
    assert (await engine.install(target.id, Payload(good), InstallOptions())).state == "staged"


async def test_fd_checks(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine([PfruPlugin])
    read_fd, write_fd = os.pipe()
    try:
        with pytest.raises(InvalidFile, match="regular file or a memfd"):
            await engine.read_payload(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    empty = tmp_path / "empty.cap"
    empty.write_bytes(b"")
    fd = os.open(empty, os.O_RDONLY)
    try:
        with pytest.raises(InvalidFile, match="empty"):
            await engine.read_payload(fd)
    finally:
        os.close(fd)
    memfd = os.memfd_create("capsule")
    os.write(memfd, sim(engine).sample(CODE, None, None))
    payload = await engine.read_payload(memfd, "memfd")
    os.close(memfd)
    assert code(engine).check_install(payload, InstallOptions()) == "4"
    _assert_untouched(engine)


async def test_firmware_refuses_to_stage(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    data = sim(engine).sample(CODE, None, "corrupt-auth")
    with pytest.raises(ActivationFailed, match="refused to stage"):
        await engine.install(target.id, Payload(data), InstallOptions())
    (row,) = engine.history.entries()
    assert (row.state, row.data["pfru_step"]) == ("failed", "written")
    assert "needs-activation" not in target.flags
    assert target.version == "3"


async def test_stage_fault_and_activate_fault(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    machine = provider.machine
    target = code(engine)
    data = sim(engine).sample(CODE, None, None)
    machine.add_fault(FaultSpec(component="pfru", kind="stage-fail"))
    with pytest.raises(ActivationFailed):
        await engine.install(target.id, Payload(data), InstallOptions())
    assert "needs-activation" not in target.flags

    await engine.install(target.id, Payload(data), InstallOptions())
    machine.add_fault(FaultSpec(component="pfru", kind="activate-fail"))
    with pytest.raises(ActivationFailed, match="stays staged"):
        await engine.activate(target.id)
    assert "needs-activation" in target.flags  # retry is possible
    assert target.version == "3"
    entry = await engine.activate(target.id)
    assert (entry.state, target.version) == ("success", "4")


async def test_busy_firmware_during_install(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    provider.machine.add_fault(FaultSpec(component="pfru", kind="busy"))
    data = sim(engine).sample(CODE, None, None)
    with pytest.raises(Busy):
        await engine.install(code(engine).id, Payload(data), InstallOptions())
    _assert_untouched(engine, rows=1)
    assert engine.history.entries()[0].state == "failed"


async def test_one_staged_capsule_at_a_time(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    await engine.install(
        code(engine).id, Payload(sim(engine).sample(CODE, None, None)), InstallOptions()
    )
    other = sim(engine).sample(DRIVER, None, None)
    with pytest.raises(Busy, match="one staged capsule at a time"):
        await engine.install(driver(engine).id, Payload(other), InstallOptions())
    with pytest.raises(NothingToDo):
        driver(engine).check_activate()
    await engine.activate(code(engine).id)
    assert (await engine.install(driver(engine).id, Payload(other), InstallOptions())).state


async def test_cancel_is_not_supported(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    with pytest.raises(NotSupported, match="no way to discard"):
        await engine.cancel(code(engine).id)
    with pytest.raises(NothingToDo):
        await engine.activate(code(engine).id)
    assert not engine.history.entries()


# ------------------------------------------------------------ reconciliation


async def _restart(engine: Engine, state_dir: Path) -> Engine:
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    await engine.stop()
    machine = SimMachine.load(provider.machine.directory)
    fresh = Engine(SimProvider(machine), engine.config, str(state_dir), [PfruPlugin])
    await fresh.start()
    return fresh


async def test_staged_survives_a_daemon_restart(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine([PfruPlugin])
    data = sim(engine).sample(CODE, None, None)
    await engine.install(code(engine).id, Payload(data), InstallOptions())
    engine = await _restart(engine, tmp_path)
    target = code(engine)
    assert "needs-activation" in target.flags
    assert target.version_pending == "4"
    assert target.update_state == UpdateState.PENDING
    entry = await engine.activate(target.id)
    assert entry.state == "success"
    assert not engine.history.entries(unfinished=True)
    await engine.stop()


async def test_staged_is_lost_at_reboot(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine([PfruPlugin])
    data = sim(engine).sample(CODE, None, None)
    await engine.install(code(engine).id, Payload(data), InstallOptions())
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    provider.machine.reboot()
    engine = await _restart(engine, tmp_path)
    target = code(engine)
    assert "needs-activation" not in target.flags
    (row,) = engine.history.entries()
    assert row.state == "failed"
    assert "rebooted" in row.reason
    assert target.update_state == UpdateState.FAILED
    await engine.stop()


async def test_interrupted_install_is_reconciled_from_versions(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    # a row as a killed daemon leaves it: staged in firmware, activation started
    row = engine.history.begin(
        device_id=target.id,
        device_name=target.name,
        plugin="pfru",
        physical_id=target.physical_id,
        kind="install",
        version_old="3",
        version_new="4",
        boot_id=engine.boot_id,
        data={"pfru_update_type": "code-injection", "pfru_step": "activating"},
    )
    # the firmware did activate before the daemon died
    component = sim(engine)
    handle = await engine.provider.open(uapi.UPDATE_NODE)
    await handle.write(component.sample(CODE, "4", None))
    await handle.ioctl(uapi.PFRU_IOC_STAGE_ACTIVATE)
    await handle.close()
    engine = await _restart(engine, tmp_path)
    assert engine.history.get(row.op_id).state == "success"
    assert code(engine).version == "4"
    await engine.stop()


async def test_interrupted_before_staging(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    row = engine.history.begin(
        device_id=target.id,
        device_name=target.name,
        plugin="pfru",
        physical_id=target.physical_id,
        kind="install",
        version_old="3",
        version_new="4",
        boot_id=engine.boot_id,
        data={"pfru_update_type": "code-injection", "pfru_step": "writing"},
    )
    engine = await _restart(engine, tmp_path)
    entry = engine.history.get(row.op_id)
    assert entry.state == "failed"
    assert "before the capsule was staged" in entry.reason
    await engine.stop()


# ---------------------------------------------------------------- telemetry


async def test_read_all_and_deltas(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    first = await target.read_telemetry(0)
    assert b"boot: runtime update service ready" in first.data
    assert not first.lost
    nothing = await target.read_telemetry(first.cursor)
    assert (nothing.data, nothing.cursor, nothing.lost) == (b"", first.cursor, False)
    await engine.install(
        target.id, Payload(sim(engine).sample(CODE, None, None)), InstallOptions(activate=True)
    )
    delta = await target.read_telemetry(first.cursor)
    assert delta.data.startswith(b"[")
    assert b"stage: code-injection runtime version 4 staged" in delta.data
    assert b"boot:" not in delta.data
    assert not delta.lost
    whole = await target.read_telemetry(0)
    assert whole.data == first.data + delta.data
    with pytest.raises(InvalidArgument, match="ahead of the log"):
        await target.read_telemetry(whole.cursor + 10)


async def test_wrap_and_reset_report_lost_records(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    start = await target.read_telemetry(0)
    component = sim(engine)
    size = component.state.telemetry_size
    for index in range(size // 20 + 10):
        component.append_record(f"event {index:05d}")
    wrapped = await target.read_telemetry(start.cursor)
    assert wrapped.lost
    assert len(wrapped.data) == size
    assert wrapped.info.rollover_cnt >= 1
    component.append_record("after the wrap")
    small = await target.read_telemetry(wrapped.cursor)
    assert not small.lost
    assert small.data.endswith(b"after the wrap\n")
    component.reset_telemetry()
    after_reset = await target.read_telemetry(small.cursor)
    assert after_reset.lost
    assert b"telemetry service restarted" in after_reset.data


async def test_double_read_retries_while_the_firmware_appends(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    target = code(engine)
    provider.machine.add_fault(FaultSpec(component="pfru", kind="append-race", count=2))
    result = await target.read_telemetry(0)
    # the records appended during the first two attempts are in the consistent copy
    assert result.data.count(b"firmware event while a reader copies the log") == 2
    assert result.data.endswith(b"copies the log\n")
    provider.machine.add_fault(FaultSpec(component="pfru", kind="append-race", count=-1))
    with pytest.raises(Busy, match="kept appending"):
        await target.read_telemetry(0)


async def test_set_level_and_type(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    changes: list[tuple[int, int]] = []
    target.add_telemetry_listener(lambda: changes.append((target.log_level, target.log_type)))
    info = await target.set_telemetry(uapi.LogLevel.VERBOSE, None)
    assert (info.log_level, info.log_type) == (4, 0)
    info = await target.set_telemetry(None, uapi.LogType.HISTORY)
    assert (info.log_level, info.log_type) == (4, 1)
    assert changes == [(4, 0), (4, 1)]
    history_log = await target.read_telemetry(0)
    assert b"platform firmware runtime update enabled" in history_log.data
    assert b"service ready" not in history_log.data


async def test_telemetry_not_started_and_busy(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], profile="minimal")
    target = code(engine)
    result = await target.read_telemetry(0)
    assert (result.data, result.lost) == (b"", False)
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    provider.machine.add_fault(FaultSpec(component="pfru", kind="telemetry-busy"))
    with pytest.raises(Busy):
        await target.read_telemetry(0)
    provider.machine.add_fault(FaultSpec(component="pfru", kind="telemetry-busy"))
    with pytest.raises(Busy, match="log level"):
        await target.telemetry_info()


async def test_a_memory_type_conflict_on_the_telemetry_mmap_is_not_busy(
    make_engine: MakeEngine,
) -> None:
    """The VM lane's finding on 7.2.13: EAGAIN from the mmap is no reason to retry."""
    engine = await make_engine([PfruPlugin])
    target = code(engine)
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    provider.machine.add_fault(FaultSpec(component="pfru", kind="mmap-memtype-conflict"))
    with pytest.raises(NotSupported, match="retrying does not help"):
        await target.read_telemetry(0)
    assert (await target.read_telemetry(0)).data  # the next map works again


def test_plugin_imports_only_the_allowed_modules() -> None:
    plugin_dir = Path(__file__).resolve().parents[2] / "plugins" / "pfru"
    for path in plugin_dir.glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                module = stripped.split()[1]
                assert module.split(".")[0] in {
                    "__future__",
                    "asyncio",
                    "errno",
                    "dataclasses",
                    "typing",
                    "livefw",
                }, (
                    path.name,
                    line,
                )
                if module.startswith("livefw"):
                    assert module.startswith(
                        (
                            "livefw.plugin",
                            "livefw.kernel",
                            "livefw.errors",
                            "livefw.plugins.pfru",
                            "livefw.record",  # the frozen-record base, no I/O
                        )
                    ), line


async def _settle(engine: Engine, predicate: Callable[[], bool]) -> None:
    # a deadline, not a count of sleeps: on a loaded machine a uevent can take seconds
    deadline = asyncio.get_running_loop().time() + 30.0
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the uevent was not handled")
        await asyncio.sleep(0.02)


async def test_hotplug_follows_the_drivers(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    component = sim(engine)
    old_id = code(engine).id
    component.remove_device("pfru/telemetry")
    await _settle(
        engine,
        lambda: not isinstance(device(engine, uapi.UpdateType.CODE_INJECTION), PfruTelemetryDevice),
    )
    assert device(engine, uapi.UpdateType.CODE_INJECTION).id == old_id  # same Id, no telemetry
    component.remove_device(CODE)
    await _settle(engine, lambda: not engine.devices)
    component.add_device({"device": "update"})
    component.add_device({"device": "telemetry"})
    await _settle(
        engine, lambda: len(engine.devices) == 2 and isinstance(code(engine), PfruTelemetryDevice)
    )
    with pytest.raises(InvalidArgument, match="already present"):
        component.add_device({"device": "update"})
    await engine.stop()


# ---------------------------------------------------------------- revisions (issue 14.16)


async def test_update_revision_is_sent_and_checked(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    plugin = code(engine)
    assert plugin.revision == 0  # livefw sent none: the driver's own 1
    found = await plugin.query_revisions()
    assert (found.kernel, found.update_firmware, found.telemetry_firmware) == (
        (1, 2),
        (1, 2),
        (1, 2),
    )
    # the probe put the drivers back
    assert (sim(engine).state.rev_id, sim(engine).state.log_revid) == (1, 1)
    await plugin.set_revision(2)
    assert (plugin.revision, sim(engine).state.rev_id) == (2, 2)
    # every later _DSM call goes out at revision 2: an install still works
    payload = Payload(sim(engine).sample(CODE, None, None), "code.cap")
    entry = await engine.install(code(engine).id, payload, InstallOptions())
    assert entry.state == "staged"
    assert sim(engine).state.staged is not None
    assert sim(engine).state.rev_id == 2
    with pytest.raises(InvalidArgument, match="1 or 2"):
        await plugin.set_revision(3)
    assert sim(engine).state.rev_id == 2


async def test_firmware_without_revision_2(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], profile="minimal")
    plugin = code(engine)
    found = await plugin.query_revisions()
    assert found.update_firmware == (1,)
    assert found.telemetry_firmware == (1,)
    with pytest.raises(NotSupported, match="revision 2"):
        await plugin.set_revision(2)
    # put back: the next capability query works
    assert sim(engine).state.rev_id == 1
    assert plugin.revision == 0
    await code(engine).refresh()


async def test_telemetry_revision(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin])
    telemetry = code(engine)
    assert telemetry.log_revid == 1
    info = await telemetry.set_telemetry(revision=2)
    assert (info.log_revid, telemetry.log_revid, sim(engine).state.log_revid) == (2, 2, 2)
    assert (await telemetry.read_telemetry()).data
    sim(engine).state.telemetry_max_revision = 1
    await telemetry.set_telemetry(revision=1)
    with pytest.raises(NotSupported, match="telemetry _DSM at revision 2"):
        await telemetry.set_telemetry(revision=2, level=uapi.LogLevel.VERBOSE)
    # nothing changed: not the revision, not the level
    assert sim(engine).state.log_revid == 1
    assert sim(engine).state.log_level == int(uapi.LogLevel.INFO)
    with pytest.raises(InvalidArgument):
        await telemetry.set_telemetry(revision=0)


async def test_configured_revisions_are_sent_at_start(make_engine: MakeEngine) -> None:
    engine = await make_engine([PfruPlugin], config=config(update_revision=2, telemetry_revision=2))
    assert (sim(engine).state.rev_id, sim(engine).state.log_revid) == (2, 2)
    assert code(engine).revision == driver(engine).revision == 2
    bad = await make_engine(
        [PfruPlugin], config=config(update_revision=5), state_dir=Path(engine.state_dir) / "bad"
    )
    assert "update_revision" in bad.plugins["pfru"].probe.reason


# ------------------------------------------------- the plugin pattern (issue 15 item 2)


async def test_devices_share_one_context_and_never_hold_their_plugin(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine([PfruPlugin])
    plugin = engine.plugins["pfru"].plugin
    assert isinstance(plugin, PfruPlugin)
    injection, update = code(engine), driver(engine)
    assert injection.ctx is update.ctx is plugin.device_ctx
    for device in (injection, update):
        assert not [k for k, v in vars(device).items() if isinstance(v, Plugin)], device.name
    # the staged capsule is one state for both update types
    await engine.install(
        injection.id, Payload(sim(engine).sample(CODE, None, None)), InstallOptions()
    )
    assert update.ctx.staged == uapi.UpdateType.CODE_INJECTION
