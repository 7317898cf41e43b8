"""Uevents around start-up: subscribe before coldplug, idempotent hotplug, overflow.

udev's rule for enumerating without a gap: start the monitor, then enumerate, then
read the monitor; an ``add`` for a known device and a ``remove`` for an unknown one
are no-ops. These tests hot-plug simulated devices *during* coldplug and replay
events the plugins have already seen.
"""

import asyncio
import contextlib
import errno
import os
import socket
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from livefw.config import Config
from livefw.device import Device
from livefw.engine import Engine
from livefw.errors import KernelError
from livefw.kernel.provider import (
    UEVENT_RESCAN,
    Handle,
    OpenFlags,
    UEvent,
    UEventSubscription,
)
from livefw.kernel.real import RealProvider
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import pfru as pfru_uapi
from livefw.plugins.fwctl import FwctlPlugin
from livefw.plugins.lfa import LfaPlugin
from livefw.plugins.pfru import PfruPlugin
from livefw.testing import wait_for

MakeEngine = Callable[..., Any]
NEW_GUID = "11111111-2222-3333-4444-555555555555"


def component(engine: Engine, name: str) -> Any:
    return engine.provider.machine.components[name]  # type: ignore[attr-defined]


class Recorder:
    """An engine listener that records device additions and removals."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.removed: list[str] = []

    def device_added(self, device: Device) -> None:
        self.added.append(device.id)

    def device_removed(self, device: Device) -> None:
        self.removed.append(device.id)

    def manager_changed(self, names: frozenset[str]) -> None:
        pass


class YieldingProvider(SimProvider):
    """The simulated machine, yielding to the loop in each call as the real one does
    (its calls run in threads): concurrent enumerations interleave as on hardware."""

    async def exists(self, path: str) -> bool:
        await asyncio.sleep(0)
        return await super().exists(path)

    async def is_dir(self, path: str) -> bool:
        await asyncio.sleep(0)
        return await super().is_dir(path)

    async def listdir(self, path: str) -> list[str]:
        await asyncio.sleep(0)
        return await super().listdir(path)

    async def read_attr(self, path: str) -> str:
        await asyncio.sleep(0)
        return await super().read_attr(path)

    async def open(self, path: str, flags: OpenFlags = OpenFlags.READ) -> Handle:
        await asyncio.sleep(0)
        return await super().open(path, flags)


# ------------------------------------------------------------ the subscription


async def test_subscription_buffers_in_order_and_close_ends_it() -> None:
    subscription = UEventSubscription()
    subscription.put_nowait(UEvent("add", "a"))
    subscription.put_nowait(UEvent("remove", "a"))
    assert subscription.pending == 2
    assert [(await anext(subscription)).action for _ in range(2)] == ["add", "remove"]
    reader = asyncio.create_task(anext(subscription))
    await asyncio.sleep(0)
    subscription.put_nowait(UEvent("change", "b"))
    assert (await reader).devpath == "b"
    waiting = asyncio.create_task(anext(subscription))
    await asyncio.sleep(0)
    await subscription.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    subscription.put_nowait(UEvent("add", "c"))  # after close: ignored
    assert subscription.pending == 0


async def test_subscription_overflow_drops_the_buffer_and_asks_for_a_rescan() -> None:
    subscription = UEventSubscription(limit=3)
    for index in range(5):
        subscription.put_nowait(UEvent("add", f"d{index}"))
    assert subscription.dropped == 4  # three buffered, then the fourth overflowed
    assert subscription.pending == 2  # the marker and d4, put after the overflow
    assert (await anext(subscription)).action == UEVENT_RESCAN
    assert (await anext(subscription)).devpath == "d4"
    assert subscription.pending == 0


# ------------------------------------------------- hot-plug during coldplug


class FwctlAddsDuringColdplug(FwctlPlugin):
    """Hot-adds a node right after coldplug listed the nodes (a CXL driver loading
    while livefwd starts)."""

    async def _nodes(self) -> list[str]:
        nodes = await super()._nodes()
        if not getattr(self, "hooked", False):
            self.hooked = True
            component(self.engine, "fwctl").add_device({"type": "mlx5", "pci": "0000:09:00.0"})
        return nodes


class LfaRemovesDuringColdplug(LfaPlugin):
    """Removes an image after coldplug registered it (a firmware-side change)."""

    async def coldplug(self) -> None:
        await super().coldplug()
        component(self.engine, "lfa").remove_device("lfa/" + self.victim)


async def test_device_hot_added_during_coldplug_appears_without_refresh(
    tmp_path: Path,
) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [FwctlAddsDuringColdplug])
    FwctlAddsDuringColdplug.engine = engine  # type: ignore[attr-defined]
    try:
        await engine.start()
        # coldplug listed two nodes; the third was added after the listing
        await wait_for(lambda: len(engine.devices) == 3)
        assert any("0000:09:00.0" in device.name for device in engine.devices.values())
    finally:
        await engine.stop()


async def test_lfa_image_removed_during_coldplug_stays_until_a_rescan(tmp_path: Path) -> None:
    """The LFA driver sends no uevent when an image directory goes (docs/kernel.md,
    Uevents): livefwd lists it until a rescan trigger, here ``livefw refresh``."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [LfaRemovesDuringColdplug])
    LfaRemovesDuringColdplug.engine = engine  # type: ignore[attr-defined]
    LfaRemovesDuringColdplug.victim = "6c0762a6-12f2-4b56-92cb-ba8f633606d9"  # type: ignore[attr-defined]
    try:
        await engine.start()
        marker = "devices/virtual/tty/ttyMARK"
        with capture_logs() as logs:  # every uevent emitted before the marker is handled
            machine.emit(UEvent("add", marker, "tty"))
            await wait_for(lambda: any(log.get("devpath") == marker for log in logs))
        assert len(engine.devices) == 3
        await engine.refresh()
        assert len(engine.devices) == 2
        assert not any("RMM" in device.name for device in engine.devices.values())
    finally:
        await engine.stop()


async def test_start_subscribes_before_the_first_plugin_probes(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    seen: list[int] = []

    class Probing(FwctlPlugin):
        async def probe(self) -> Any:
            seen.append(len(machine._subscribers))
            return await super().probe()

    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [Probing])
    await engine.start()
    await engine.stop()
    assert seen == [1]
    assert machine._subscribers == []  # stop() closed the subscription


async def test_no_netlink_means_no_hotplug_not_no_daemon(tmp_path: Path) -> None:
    """A monitor that cannot be opened (AF_NETLINK not allowed) is logged; the plugins
    still load and `livefw refresh` still finds new devices."""

    class NoUevents(SimProvider):
        async def subscribe_uevents(self) -> UEventSubscription:
            raise KernelError(errno.EAFNOSUPPORT, "udev", "netlink monitor")

    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(NoUevents(machine), Config(), str(tmp_path), [FwctlPlugin])
    with capture_logs() as logs:
        await engine.start()
    try:
        assert len(engine.devices) == 2
        (warning,) = [log for log in logs if log["event"] == "uevents_unavailable"]
        assert "livefw refresh" in warning["consequence"]
        machine.components["fwctl"].add_device({"type": "mlx5"})
        await engine.refresh()
        assert len(engine.devices) == 3
    finally:
        await engine.stop()


# ------------------------------------------------------- idempotent hotplug


@pytest.fixture
async def three(make_engine: MakeEngine) -> Engine:
    engine: Engine = await make_engine([FwctlPlugin, LfaPlugin, PfruPlugin], kernel="7.2")
    return engine


def known_adds(engine: Engine) -> list[UEvent]:
    fwctl = component(engine, "fwctl")
    node = fwctl.state.nodes[0]
    return [
        fwctl._uevent("add", node),
        # the LFA driver sends none for its images; a module add makes it rescan
        UEvent("add", "module/lfa_fw", "module"),
        UEvent("add", pfru_uapi.UPDATE_DEVPATH, "misc", {"DEVNAME": "acpi_pfr_update0"}),
        UEvent("add", pfru_uapi.TELEMETRY_DEVPATH, "misc", {"DEVNAME": "acpi_pfr_telemetry0"}),
    ]


async def test_duplicate_add_is_silent_and_changes_nothing(three: Engine) -> None:
    engine = three
    before = dict(engine.devices)
    assert {device.plugin for device in before.values()} == {"fwctl", "lfa", "pfru"}
    recorder = Recorder()
    engine.add_listener(recorder)  # type: ignore[arg-type]
    for event in known_adds(engine):
        with capture_logs() as logs:
            await engine._dispatch_uevent(event)
        rescan = ["lfa_rescan"] if event.subsystem == "module" else []
        assert [log["event"] for log in logs] == ["uevent", *rescan], event
    assert engine.devices == before
    assert all(engine.devices[key] is device for key, device in before.items())
    assert (recorder.added, recorder.removed) == ([], [])


async def test_remove_of_an_unknown_device_is_silent(three: Engine) -> None:
    engine = three
    fwctl = component(engine, "fwctl")
    gone = fwctl.state.nodes[1]
    await asyncio.to_thread(fwctl.remove_device, f"fwctl/fwctl{gone.minor}")
    await asyncio.to_thread(component(engine, "pfru").remove_device, "pfru/telemetry")
    await wait_for(lambda: not engine.plugins["pfru"].plugin.device_ctx.telemetry)  # type: ignore[union-attr]
    await wait_for(lambda: sum(d.plugin == "fwctl" for d in engine.devices.values()) == 1)
    before = dict(engine.devices)
    recorder = Recorder()
    engine.add_listener(recorder)  # type: ignore[arg-type]
    for event in (
        fwctl._uevent("remove", gone),  # removed already
        UEvent("remove", "devices/pci0000:00/0000:77:00.0/fwctl/fwctl9", "fwctl"),
        UEvent("remove", f"firmware/lfa/{NEW_GUID}"),
        UEvent("remove", pfru_uapi.TELEMETRY_DEVPATH, "misc"),  # removed already
    ):
        with capture_logs() as logs:
            await engine._dispatch_uevent(event)
        assert [log["event"] for log in logs] == ["uevent"], event
    assert engine.devices == before
    assert (recorder.added, recorder.removed) == ([], [])


async def test_refresh_racing_a_hot_add_registers_the_device_once(tmp_path: Path) -> None:
    """`livefw refresh` while the uevent of a new node is dispatched: each enumerates
    the node; the engine lets a plugin enumerate one thing at a time."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(YieldingProvider(machine), Config(), str(tmp_path), [FwctlPlugin])
    await engine.start()
    try:
        assert engine._uevents is not None
        await engine._uevents.close()  # this test dispatches the event itself
        fwctl = machine.components["fwctl"]
        fwctl.add_device({"type": "mlx5", "pci": "0000:09:00.0"})  # type: ignore[attr-defined]
        node = fwctl.state.nodes[-1]  # type: ignore[attr-defined]
        with capture_logs() as logs:
            await asyncio.gather(
                engine.refresh(),
                engine._dispatch_uevent(fwctl._uevent("add", node)),  # type: ignore[attr-defined]
            )
        assert len(engine.devices) == 3
        assert not [log for log in logs if log["log_level"] in ("warning", "error")]
    finally:
        await engine.stop()


async def test_lfa_rescan_racing_a_module_reload_registers_the_image_once(
    tmp_path: Path,
) -> None:
    """An activation re-enumerates (LfaDevice.activate -> rescan) while the ``add`` of a
    module reload (/module/lfa_fw) is dispatched: both read the same new image."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default")
    engine = Engine(YieldingProvider(machine), Config(), str(tmp_path), [LfaPlugin])
    await engine.start()
    try:
        assert engine._uevents is not None
        await engine._uevents.close()
        machine.components["lfa"].add_device({"guid": NEW_GUID})
        plugin = engine.plugins["lfa"].plugin
        assert isinstance(plugin, LfaPlugin)
        with capture_logs() as logs:
            await asyncio.gather(
                plugin.device_ctx.rescan(),
                engine._dispatch_uevent(UEvent("add", "module/lfa_fw", "module")),
            )
        assert len(engine.devices) == 4
        assert [log for log in logs if log["event"] == "lfa_image_added"] != []
        assert not [log for log in logs if log["log_level"] in ("warning", "error")]
    finally:
        await engine.stop()


# ------------------------------------------------------------------ overflow


async def test_lost_uevents_make_the_engine_rescan(three: Engine) -> None:
    engine = three
    subscription = engine._uevents
    assert subscription is not None
    subscription.limit = 2
    fwctl = component(engine, "fwctl")
    with capture_logs() as logs:
        # hold the plugin: the follower waits in the first event, the rest pile up
        async with engine._hotplug_lock("fwctl"):
            for index in range(5):
                fwctl.add_device({"type": "mlx5", "pci": f"0000:5{index}:00.0"})
            await wait_for(lambda: subscription.dropped > 0)
        await wait_for(lambda: sum(d.plugin == "fwctl" for d in engine.devices.values()) == 7)
        await wait_for(lambda: subscription.pending == 0)
    assert [log["dropped"] for log in logs if log["event"] == "uevents_lost"] != []


# --------------------------------------------------- the real provider's monitor


class FakeMonitor:
    """pyudev.Monitor's surface as the real provider uses it, on a socketpair."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.started = False
        self.queue: list[Any] = []

    def start(self) -> None:
        self.started = True

    def fileno(self) -> int:
        return self.ours.fileno()

    def poll(self, timeout: float = 0) -> Any:
        with contextlib.suppress(BlockingIOError):
            self.ours.recv(64)
        if not self.queue:
            return None
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item


@pytest.fixture
def fake_pyudev(monkeypatch: pytest.MonkeyPatch) -> FakeMonitor:
    monitor = FakeMonitor()
    module = types.ModuleType("pyudev")
    module.Context = lambda: object()  # type: ignore[attr-defined]
    module.Monitor = types.SimpleNamespace(from_netlink=lambda context: monitor)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyudev", module)
    yield monitor
    monitor.ours.close()
    monitor.theirs.close()


async def test_real_provider_reads_the_monitor_from_subscribe_on(
    fake_pyudev: FakeMonitor, tmp_path: Path
) -> None:
    provider = RealProvider(str(tmp_path))
    subscription = await provider.subscribe_uevents()
    assert fake_pyudev.started
    # a uevent arriving before anyone reads the subscription is kept
    fake_pyudev.queue.append(
        types.SimpleNamespace(
            action="add",
            device_path="/devices/virtual/fwctl/fwctl0",
            subsystem="fwctl",
            properties={"DEVNAME": "fwctl/fwctl0"},
        )
    )
    fake_pyudev.theirs.send(b"x")
    event = await asyncio.wait_for(anext(subscription), 30)
    assert (event.action, event.devpath, event.subsystem) == (
        "add",
        "devices/virtual/fwctl/fwctl0",
        "fwctl",
    )
    assert event.properties == {"DEVNAME": "fwctl/fwctl0"}
    # ENOBUFS: the kernel dropped messages; the reader is told to rescan
    fake_pyudev.queue.append(OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)))
    fake_pyudev.theirs.send(b"x")
    assert (await asyncio.wait_for(anext(subscription), 30)).action == UEVENT_RESCAN
    await subscription.close()
    loop = asyncio.get_running_loop()
    assert not loop.remove_reader(fake_pyudev.fileno())  # close() removed it
