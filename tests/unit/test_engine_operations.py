"""The engine's operations on fake devices, without D-Bus: one section per kind.

install (the plan, the version rules, the runner), activate, cancel, exclusive,
reconciliation at start, refresh, uevent add/remove, and ``livefw install FILE``
naming the closest device when none takes a payload.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import (
    ActivationFailed,
    Busy,
    InvalidArgument,
    InvalidFile,
    NotFound,
    NothingToDo,
    NotSupported,
    PayloadMismatch,
    VersionNewer,
    VersionSame,
)
from livefw.history import HistoryEntry
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugin import (
    Device,
    InstallOptions,
    InstallResult,
    Operation,
    Payload,
    Plugin,
    Probe,
    Reconciliation,
    UpdateState,
)
from livefw.state import Status
from livefw.versions import ONLY_UPGRADE, VersionTooLow


class Board:
    """What the fake devices do, set per test."""

    def __init__(self) -> None:
        self.checks = 0
        self.fail_install: Exception | None = None
        self.fail_activate: Exception | None = None
        self.verdict: Reconciliation | Exception | None = NotSupported("cannot tell")
        self.state = UpdateState.PENDING
        self.seen: list[tuple[Status, int]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()


BOARD = Board()


class FakeDevice(Device):
    """Takes ``FAKE:<platform>:<version>``; the platform must be its physical id."""

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        BOARD.checks += 1
        parts = payload.data.decode(errors="replace").split(":")
        if len(parts) != 3 or parts[0] != "FAKE":
            raise InvalidFile("not a fake payload")
        if parts[1] != self.physical_id:
            raise PayloadMismatch(f"the payload is for platform {parts[1]}, not {self.physical_id}")
        if "needs-activation" in self.flags and "one-staged" in self.metadata:
            raise Busy("an image is staged already")
        return parts[2]

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        BOARD.started.set()
        if BOARD.gate is not None:
            await BOARD.gate.wait()
        op.record(step="written")
        op.progress(Status.DEVICE_WRITE, 50)
        BOARD.seen.append((self.status, self.percentage))
        if BOARD.fail_install is not None:
            raise BOARD.fail_install
        version = payload.data.decode().split(":")[2]
        if BOARD.state == UpdateState.SUCCESS:
            self.update(version=version)
        else:
            self.update(version_pending=version, flags=self.flags | {"needs-activation"})
        return InstallResult(BOARD.state, version)

    def check_activate(self) -> None:
        if "needs-activation" not in self.flags:
            raise NothingToDo(f"nothing is staged on {self.name}")

    async def activate(self, op: Operation) -> str:
        op.progress(Status.DEVICE_ACTIVATE, 30)
        BOARD.seen.append((self.status, self.percentage))
        if BOARD.fail_activate is not None:
            raise BOARD.fail_activate
        self.update(
            version=self.version_pending,
            version_pending="",
            flags=self.flags - {"needs-activation"},
        )
        return self.version

    def check_cancel(self) -> None:
        if "needs-activation" not in self.flags:
            raise NothingToDo("nothing to cancel")

    async def cancel(self) -> None:
        self.update(version_pending="", flags=self.flags - {"needs-activation"})


class FakePlugin(Plugin):
    name = "fake"
    #: physical id -> (version, lowest, extra flags) of the devices coldplug creates
    layout: ClassVar[dict[str, tuple[str, str, tuple[str, ...]]]] = {}
    refreshed: ClassVar[int] = 0

    async def probe(self) -> Probe:
        return Probe.ok()

    def _add(self, physical_id: str) -> None:
        version, lowest, flags = self.layout[physical_id]
        self.ctx.add_device(
            FakeDevice(
                "fake", physical_id, name=f"Fake {physical_id}", version=version,
                version_lowest=lowest, flags=("updatable", *flags),
            )
        )  # fmt: skip

    async def coldplug(self) -> None:
        for physical_id in self.layout:
            self._add(physical_id)

    async def on_uevent(self, event: UEvent) -> None:
        physical_id = event.devpath.rsplit("/", 1)[-1]
        if event.action == "add" and physical_id in self.layout:
            self._add(physical_id)
        elif event.action == "remove":
            for device in self.ctx.devices():
                if device.physical_id == physical_id:
                    self.ctx.remove_device(device.id)

    async def refresh(self) -> None:
        FakePlugin.refreshed += 1

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        if isinstance(BOARD.verdict, Exception):
            raise BOARD.verdict
        return BOARD.verdict


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    global BOARD
    BOARD = Board()
    FakePlugin.layout = {"a": ("3", "2", ()), "b": ("1.2.3", "", ())}
    FakePlugin.refreshed = 0
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [FakePlugin])
    await engine.start()
    yield engine
    await engine.stop()


def dev(engine: Engine, physical_id: str) -> Device:
    return next(d for d in engine.devices.values() if d.physical_id == physical_id)


def fake(platform: str, version: str) -> Payload:
    return Payload(f"FAKE:{platform}:{version}".encode(), "fw.bin")


# ------------------------------------------------------------------------- install


async def test_install_stages_with_one_device_check_and_the_row_written_first(
    engine: Engine,
) -> None:
    device = dev(engine, "a")
    entry = await engine.install(device.id, fake("a", "4"), InstallOptions())
    assert BOARD.checks == 1  # checked once: nothing else ran before it did
    assert (entry.state, entry.version_old, entry.version_new) == ("staged", "3", "4")
    assert entry.data["step"] == "written"  # recorded while the row was pending
    assert entry.data["payload-name"] == "fw.bin"
    assert BOARD.seen == [(Status.DEVICE_WRITE, 50)]  # progress reached the device
    assert (device.status, engine.status) == (Status.IDLE, Status.IDLE)
    assert device.update_state == UpdateState.PENDING


async def test_install_applied_at_once_is_a_success_row(engine: Engine) -> None:
    BOARD.state = UpdateState.SUCCESS
    device = dev(engine, "a")
    entry = await engine.install(device.id, fake("a", "5"), InstallOptions())
    assert (entry.state, entry.version_new, device.version) == ("success", "5", "5")


@pytest.mark.parametrize(
    ("payload", "options", "error", "words"),
    [
        (fake("a", "3"), InstallOptions(), VersionSame, "allow-reinstall"),
        (fake("a", "2"), InstallOptions(), VersionNewer, "allow-older"),
        (fake("a", "1"), InstallOptions(allow_older=True), VersionTooLow, "lowest version"),
        (fake("x", "9"), InstallOptions(), PayloadMismatch, "platform x"),
        (Payload(b"junk"), InstallOptions(), InvalidFile, "not a fake payload"),
    ],
)
async def test_the_version_rules_and_the_device_refusals_write_nothing(
    engine: Engine,
    payload: Payload,
    options: InstallOptions,
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        await engine.install(dev(engine, "a").id, payload, options)
    assert engine.history.entries() == []


async def test_the_options_lift_the_version_rules(engine: Engine) -> None:
    device = dev(engine, "a")
    again = await engine.install(device.id, fake("a", "3"), InstallOptions(allow_reinstall=True))
    assert again.version_new == "3"
    older = await engine.install(device.id, fake("a", "2"), InstallOptions(allow_older=True))
    assert older.version_new == "2"
    forced = InstallOptions(allow_older=True, force=True)
    assert (await engine.install(device.id, fake("a", "1"), forced)).version_new == "1"


async def test_a_device_that_only_takes_upgrades_refuses_older_whatever_the_options(
    engine: Engine,
) -> None:
    device = dev(engine, "a")
    device.set_flag(ONLY_UPGRADE, True)
    with pytest.raises(VersionNewer, match="anti-rollback"):
        await engine.install(device.id, fake("a", "2"), InstallOptions(allow_older=True))


async def test_dotted_versions_compare_as_fwupd_does(engine: Engine) -> None:
    device = dev(engine, "b")  # runs 1.2.3
    with pytest.raises(VersionNewer):
        await engine.install(device.id, fake("b", "1.2.2"), InstallOptions())
    entry = await engine.install(device.id, fake("b", "1.10.0"), InstallOptions())
    assert entry.version_new == "1.10.0"


async def test_a_failed_install_marks_row_and_device_failed(engine: Engine) -> None:
    BOARD.fail_install = ActivationFailed("the firmware said no")
    device = dev(engine, "a")
    with pytest.raises(ActivationFailed, match="said no"):
        await engine.install(device.id, fake("a", "4"), InstallOptions())
    (row,) = engine.history.entries()
    assert (row.state, row.reason) == ("failed", "the firmware said no")
    assert device.update_state == UpdateState.FAILED
    assert (device.status, engine.status, engine.busy) == (Status.IDLE, Status.IDLE, False)


async def test_an_unexpected_exception_becomes_internal(engine: Engine) -> None:
    from livefw.errors import Internal

    BOARD.fail_install = RuntimeError("bug")
    with pytest.raises(Internal, match="unexpected error"):
        await engine.install(dev(engine, "a").id, fake("a", "4"), InstallOptions())


async def test_an_install_whose_step_after_staging_failed_is_staged(engine: Engine) -> None:
    """The plugin's verdict after the failure says the update is staged: no failed row."""
    BOARD.fail_install = OSError("read-back failed")
    BOARD.verdict = Reconciliation(UpdateState.PENDING, "staged", "4")
    entry = await engine.install(dev(engine, "a").id, fake("a", "4"), InstallOptions())
    assert (entry.state, entry.version_new) == ("staged", "4")


async def test_install_and_activate_whose_activation_failed_keeps_the_staged_row(
    engine: Engine,
) -> None:
    BOARD.fail_install = ActivationFailed("activation failed")
    BOARD.verdict = Reconciliation(UpdateState.PENDING, "staged", "4")
    device = dev(engine, "a")
    with pytest.raises(ActivationFailed):
        await engine.install(device.id, fake("a", "4"), InstallOptions(activate=True))
    (row,) = engine.history.entries()
    assert row.state == "staged"
    assert row.reason == "staged; the activation failed: activation failed"
    assert device.update_state == UpdateState.PENDING


async def test_a_new_staging_supersedes_the_staged_row(engine: Engine) -> None:
    device = dev(engine, "a")
    first = await engine.install(device.id, fake("a", "4"), InstallOptions())
    second = await engine.install(device.id, fake("a", "5"), InstallOptions())
    assert engine.history.get(first.op_id).state == "superseded"
    assert engine.history.get(second.op_id).state == "staged"


async def test_a_queued_plan_is_checked_again_after_another_operation(engine: Engine) -> None:
    """The second install was planned before the first staged: under the lock it is
    checked again and refused by what the first one did (one image staged at a time)."""
    device = dev(engine, "a")
    device.update(metadata={"one-staged": "1"})
    BOARD.gate = asyncio.Event()
    first = asyncio.create_task(engine.install(device.id, fake("a", "4"), InstallOptions()))
    await asyncio.wait_for(BOARD.started.wait(), 10)
    second = asyncio.create_task(engine.install(device.id, fake("a", "5"), InstallOptions()))
    await asyncio.sleep(0.01)
    assert BOARD.checks == 2  # both planned while the first ran
    BOARD.gate.set()
    assert (await first).state == "staged"
    with pytest.raises(Busy, match="staged already"):
        await second
    assert BOARD.checks == 3  # the second again, under the lock
    assert len(engine.history.entries()) == 1


async def test_inhibit_and_shutdown_refuse_before_anything_is_checked(engine: Engine) -> None:
    device = dev(engine, "a")
    engine.set_inhibit("x", "a game is running")
    with pytest.raises(Busy, match="a game is running"):
        await engine.install(device.id, fake("a", "4"), InstallOptions())
    engine.set_inhibit("x", None)
    engine.stopping = True
    with pytest.raises(Busy, match="shutting down"):
        await engine.install_file("", fake("a", "4"), InstallOptions())
    engine.stopping = False
    assert BOARD.checks == 0


# --------------------------------------------------- livefw install FILE (no device)


async def test_install_file_finds_the_one_device(engine: Engine) -> None:
    (entry,) = await engine.install_file("", fake("b", "2.0.0"), InstallOptions())
    assert entry.device_id == dev(engine, "b").id


async def test_no_device_names_the_closest_candidate(engine: Engine) -> None:
    # the version rule on "a" is closer than "b" refusing another platform's payload
    with pytest.raises(VersionNewer) as older:
        await engine.install_file("", fake("a", "2"), InstallOptions())
    assert older.value.message.startswith("no device on this machine accepts this payload; ")
    assert "closest: Fake a (fake): the payload carries version 2, older than the running 3" in (
        older.value.message
    )
    with pytest.raises(InvalidFile, match=r"closest: Fake a \(fake\): .*lowest version"):
        await engine.install_file("", fake("a", "1"), InstallOptions(allow_older=True))
    # a payload for another platform: the device of that format is the closest
    with pytest.raises(InvalidFile, match=r"closest: Fake a \(fake\): .*platform zz"):
        await engine.install_file("", Payload(b"FAKE:zz:9"), InstallOptions())
    # nothing of this format at all
    with pytest.raises(InvalidFile) as junk:
        await engine.install_file("", Payload(b"junk"), InstallOptions())
    assert "closest: Fake" in junk.value.message  # a format refusal still names one
    assert engine.history.entries() == []


async def test_a_payload_two_devices_take_must_name_one(tmp_path: Path) -> None:
    class Loose(FakeDevice):
        def check_install(self, payload: Payload, options: InstallOptions) -> str:
            return "9"

    class LoosePlugin(FakePlugin):
        async def coldplug(self) -> None:
            for physical_id in ("p", "q"):
                self.ctx.add_device(Loose("fake", physical_id, name=physical_id,
                                          version="1", flags=["updatable"]))  # fmt: skip

    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [LoosePlugin])
    await engine.start()
    try:
        with pytest.raises(InvalidArgument, match="fits several devices"):
            await engine.install_file("*", Payload(b"x"), InstallOptions())
    finally:
        await engine.stop()


# ------------------------------------------------------------------------ activate


async def test_activate_switches_and_closes_the_staged_row(engine: Engine) -> None:
    device = dev(engine, "a")
    staged = await engine.install(device.id, fake("a", "4"), InstallOptions())
    entry = await engine.activate(device.id)
    assert (entry.kind, entry.state, entry.version_old, entry.version_new) == (
        "activate", "success", "3", "4",
    )  # fmt: skip
    assert engine.history.get(staged.op_id).state == "success"
    assert (device.version, device.update_state) == ("4", UpdateState.SUCCESS)
    assert BOARD.seen[-1] == (Status.DEVICE_ACTIVATE, 30)
    assert device.status == Status.IDLE


async def test_activate_with_nothing_staged_writes_nothing(engine: Engine) -> None:
    with pytest.raises(NothingToDo):
        await engine.activate(dev(engine, "a").id)
    assert engine.history.entries() == []


async def test_a_failed_activation_leaves_the_staged_row(engine: Engine) -> None:
    device = dev(engine, "a")
    staged = await engine.install(device.id, fake("a", "4"), InstallOptions())
    BOARD.fail_activate = ActivationFailed("_DSM status 1")
    with pytest.raises(ActivationFailed):
        await engine.activate(device.id)
    rows = {row.kind: row for row in engine.history.entries()}
    assert rows["activate"].state == "failed"
    assert engine.history.get(staged.op_id).state == "staged"
    assert device.update_state == UpdateState.FAILED


async def test_an_activation_that_switched_before_failing_is_a_success(engine: Engine) -> None:
    device = dev(engine, "a")
    await engine.install(device.id, fake("a", "4"), InstallOptions())
    BOARD.fail_activate = OSError("re-read failed")
    BOARD.verdict = Reconciliation(UpdateState.SUCCESS, "switched", "4")
    entry = await engine.activate(device.id)
    assert (entry.state, entry.version_new) == ("success", "4")


# -------------------------------------------------------------------------- cancel


async def test_cancel_closes_the_staged_row(engine: Engine) -> None:
    device = dev(engine, "a")
    staged = await engine.install(device.id, fake("a", "4"), InstallOptions())
    await engine.cancel(device.id, caller_uid=7)
    row = engine.history.get(staged.op_id)
    assert (row.state, row.reason) == ("cancelled", "cancelled by uid 7")
    assert device.update_state == UpdateState.NONE
    with pytest.raises(NothingToDo):
        await engine.cancel(device.id)


# ----------------------------------------------------------------------- exclusive


async def test_exclusive_serialises_with_installs_and_refuses_without_waiting(
    engine: Engine,
) -> None:
    device = dev(engine, "a")
    BOARD.gate = asyncio.Event()
    install = asyncio.create_task(engine.install(device.id, fake("a", "4"), InstallOptions()))
    await asyncio.wait_for(BOARD.started.wait(), 10)
    with pytest.raises(Busy, match="install of Fake a is in flight"):
        async with engine.exclusive(device, "kexec", wait=False):
            pass
    order: list[str] = []

    async def setting() -> None:
        async with engine.exclusive(device, "setting") as held:
            assert held is device
            assert device.status == Status.DEVICE_WRITE
            order.append("setting")

    change = asyncio.create_task(setting())
    await asyncio.sleep(0.01)
    assert order == []
    BOARD.gate.set()
    await install
    await change
    assert order == ["setting"]
    assert (device.status, engine.status) == (Status.IDLE, Status.IDLE)


# --------------------------------------------------------- reconciliation at start


async def test_reconciliation_at_start_closes_an_interrupted_row(
    engine: Engine, tmp_path: Path
) -> None:
    device = dev(engine, "a")
    row = engine.history.begin(
        device_id=device.id, device_name=device.name, plugin="fake", physical_id="a",
        kind="activate", version_old="3", version_new="4", boot_id=engine.boot_id,
    )  # fmt: skip
    await engine.stop()
    BOARD.verdict = Reconciliation(UpdateState.FAILED, "the firmware kept 3", "3")
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    again = Engine(SimProvider(machine), Config(), str(tmp_path), [FakePlugin])
    await again.start()
    try:
        entry = again.history.get(row.op_id)
        assert (entry.state, entry.reason) == ("failed", "the firmware kept 3")
        assert dev(again, "a").update_state == UpdateState.FAILED
    finally:
        await again.stop()


async def test_reconciliation_of_a_plugin_that_is_gone_fails_the_row(
    engine: Engine, tmp_path: Path
) -> None:
    row = engine.history.begin(
        device_id="d", device_name="Gone", plugin="gone", physical_id="g",
        kind="install", version_old="1", version_new="2", boot_id=engine.boot_id,
    )  # fmt: skip
    await engine.stop()
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    again = Engine(SimProvider(machine), Config(), str(tmp_path), [FakePlugin])
    await again.start()
    try:
        entry = again.history.get(row.op_id)
        assert (entry.state, entry.reason) == (
            "failed", "interrupted: the gone plugin is not loaded",
        )  # fmt: skip
    finally:
        await again.stop()


# -------------------------------------------------------- refresh, uevents, lookup


async def test_refresh_rescans_every_plugin(engine: Engine) -> None:
    await engine.refresh()
    await engine.refresh()
    assert FakePlugin.refreshed == 2
    device = dev(engine, "a")
    assert await engine.refresh_device(device.id) is device
    with pytest.raises(NotFound):
        await engine.refresh_device("nope")


async def test_uevents_add_and_remove_devices(engine: Engine) -> None:
    FakePlugin.layout["c"] = ("1", "", ())
    added: list[str] = []
    removed: list[str] = []

    class Listener:
        def device_added(self, device: Device) -> None:
            added.append(device.physical_id)

        def device_removed(self, device: Device) -> None:
            removed.append(device.physical_id)

        def manager_changed(self, names: frozenset[str]) -> None:
            pass

    engine.add_listener(Listener())  # type: ignore[arg-type]
    await engine._dispatch_uevent(UEvent("add", "devices/fake/c"))
    assert added == ["c"]
    device = dev(engine, "c")
    await engine._dispatch_uevent(UEvent("remove", "devices/fake/c"))
    assert removed == ["c"]
    assert device.id not in engine.devices
    with pytest.raises(NotFound):
        await engine.install(device.id, fake("c", "2"), InstallOptions())


async def test_a_uevent_right_after_start_is_not_lost(make_engine: Any) -> None:
    """start() returns subscribed to the provider's uevents (it used to subscribe only
    when the follower task first ran, so a device added at once could be missed)."""
    from livefw.plugins.fwctl import FwctlPlugin

    engine = await make_engine([FwctlPlugin])
    machine = engine.provider.machine
    assert machine._subscribers, "start() returned before following uevents"
