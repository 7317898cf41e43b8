"""Engine rules with a fake plugin: staged rows, superseding, reconciliation verdicts."""

from pathlib import Path

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import InvalidFile, NotSupported
from livefw.history import HistoryEntry
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

VERDICT: dict[str, Reconciliation | Exception | None] = {}


class FakeDevice(Device):
    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        if not payload.data.startswith(b"FAKE"):
            raise InvalidFile("not a fake payload")
        return payload.data[4:].decode()

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        op.record(step="written")
        return InstallResult(UpdateState.PENDING, "")  # the payload carries no version


class FakePlugin(Plugin):
    name = "fake"

    async def probe(self) -> Probe:
        return Probe.ok()

    async def coldplug(self) -> None:
        self.ctx.add_device(FakeDevice("fake", "dev0", name="Fake", flags=["updatable"]))

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        verdict = VERDICT.get("next")
        if isinstance(verdict, Exception):
            raise verdict
        return verdict


async def make(tmp_path: Path) -> Engine:
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [FakePlugin])
    await engine.start()
    return engine


async def test_staged_row_keeps_the_planned_version_and_supersedes_older(tmp_path: Path) -> None:
    engine = await make(tmp_path)
    device = next(iter(engine.devices.values()))
    first = await engine.install(device.id, Payload(b"FAKE1.0"), InstallOptions())
    assert (first.state, first.version_new) == ("staged", "1.0")
    assert first.data["step"] == "written"
    second = await engine.install(device.id, Payload(b"FAKE1.1"), InstallOptions())
    assert engine.history.get(first.op_id).state == "superseded"
    assert engine.history.get(second.op_id).state == "staged"
    assert device.update_state == UpdateState.PENDING


async def test_match_payload_finds_the_device_or_says_none_fits(tmp_path: Path) -> None:
    engine = await make(tmp_path)
    assert engine.match_payload(Payload(b"FAKE2"), InstallOptions()).name == "Fake"
    with pytest.raises(InvalidFile, match="no device"):
        engine.match_payload(Payload(b"OTHER"), InstallOptions())


@pytest.mark.parametrize(
    ("verdict", "state", "reason"),
    [
        (Reconciliation(UpdateState.PENDING, "still staged"), "staged", "still staged"),
        (Reconciliation(UpdateState.SUCCESS, "applied", "1.0"), "success", "applied"),
        (NotSupported("no idea"), "failed", "interrupted: no idea"),
        # "still waiting" on a row the daemon never completed: the operation staged
        # everything before it stopped, so the row is staged, not left "pending"
        (None, "staged", "staged; the daemon stopped before it recorded so"),
    ],
)
async def test_reconciliation_verdicts(
    tmp_path: Path,
    verdict: Reconciliation | Exception | None,
    state: str,
    reason: str,
) -> None:
    engine = await make(tmp_path)
    device = next(iter(engine.devices.values()))
    row = engine.history.begin(
        device_id=device.id, device_name="Fake", plugin="fake", physical_id="dev0",
        kind="install", version_old="0.9", version_new="1.0", boot_id=engine.boot_id,
    )  # fmt: skip
    await engine.stop()
    VERDICT["next"] = verdict
    try:
        again = await make(tmp_path)
    finally:
        VERDICT.clear()
    entry = again.history.get(row.op_id)
    assert entry.state == state
    assert entry.reason == reason
    await again.stop()


async def test_refused_payload_writes_no_history(tmp_path: Path) -> None:
    engine = await make(tmp_path)
    device = next(iter(engine.devices.values()))
    with pytest.raises(InvalidFile):
        await engine.install(device.id, Payload(b"junk"), InstallOptions())
    assert engine.history.entries() == []


class LatePlugin(Plugin):
    """Unsupported until its interface appears (as after `modprobe`)."""

    name = "late"
    present = False

    async def probe(self) -> Probe:
        return Probe.ok() if LatePlugin.present else Probe.unsupported("no interface yet")

    async def coldplug(self) -> None:
        self.ctx.add_device(Device("late", "x", name="Late device"))


async def test_unsupported_plugin_is_probed_again_on_an_add_uevent(tmp_path: Path) -> None:
    from livefw.kernel.provider import UEvent

    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [LatePlugin])
    await engine.start()
    assert engine.plugins["late"].probe.result == "unsupported"
    LatePlugin.present = True
    try:
        await engine._dispatch_uevent(UEvent("change", "devices/late"))
        assert engine.plugins["late"].plugin is None  # only "add" triggers a probe
        await engine._dispatch_uevent(UEvent("add", "devices/late"))
        assert engine.plugins["late"].probe.result == "ok"
        assert [d.name for d in engine.devices.values()] == ["Late device"]
        await engine._dispatch_uevent(UEvent("add", "devices/other"))
        assert len(engine.devices) == 1  # loaded once, not again
    finally:
        LatePlugin.present = False
        await engine.stop()
