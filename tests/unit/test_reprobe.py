"""A plugin whose interface is missing is probed again only on its own uevents.

A booting machine sends hundreds of uevents (every vc/vcs, tty, disk, network
card); each plugin declares the few that can bring its interface
(``Plugin.probe_uevents``, docs/kernel.md "Uevents"), and the engine probes a
waiting plugin again only on those. These tests count probe calls.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import InvalidArgument
from livefw.kernel.provider import UEvent
from livefw.kernel.sim.control import execute, foreign_uevent
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugin import Plugin, UEventMatch
from livefw.plugins.fwctl import FwctlPlugin
from livefw.plugins.lfa import LfaPlugin
from livefw.plugins.liveupdate import LiveUpdatePlugin
from livefw.plugins.pfru import PfruPlugin
from livefw.plugins.uefi_capsule import UefiCapsulePlugin
from livefw.testing import wait_for

#: what a VM guest's boot and a busy host send (shapes from a 7.2 guest's
#: `udevadm monitor --property`): virtual consoles, ttys, a loop disk, a network card,
#: another misc device, another module.
NOISE = [
    UEvent("add", "devices/virtual/vc/vcs2", "vc", {"DEVNAME": "/dev/vcs2", "MAJOR": "7"}),
    UEvent("add", "devices/virtual/vc/vcsa2", "vc", {"DEVNAME": "/dev/vcsa2"}),
    UEvent("add", "devices/virtual/tty/tty5", "tty", {"DEVNAME": "/dev/tty5"}),
    UEvent("change", "devices/virtual/tty/tty0", "tty", {"DEVNAME": "/dev/tty0"}),
    UEvent("add", "devices/virtual/block/loop0", "block", {"DEVNAME": "/dev/loop0"}),
    UEvent("add", "devices/virtual/net/veth0", "net", {"INTERFACE": "veth0"}),
    UEvent("add", "devices/virtual/misc/rfkill", "misc", {"DEVNAME": "/dev/rfkill"}),
    UEvent("add", "module/loop", "module"),
    UEvent("bind", "devices/pci0000:00/0000:00:03.0", "pci", {"DRIVER": "virtio-pci"}),
]

PFRU_ADD = UEvent(
    "add",
    "devices/platform/INTC1080:00/misc/pfru0",
    "misc",
    {"DEVNAME": "acpi_pfr_update0", "MAJOR": "10", "MINOR": "122"},
)


# ------------------------------------------------------------- the declarations


@pytest.mark.parametrize("event", NOISE, ids=lambda e: e.devpath)
@pytest.mark.parametrize(
    "cls", [PfruPlugin, FwctlPlugin, LfaPlugin, LiveUpdatePlugin, UefiCapsulePlugin]
)
def test_no_plugin_wants_unrelated_uevents(cls: type[Plugin], event: UEvent) -> None:
    assert not any(match.matches(event) for match in cls.probe_uevents)


@pytest.mark.parametrize(
    ("event", "wanted_by"),
    [
        (PFRU_ADD, "pfru"),
        # udev hands DEVNAME on as an absolute path
        (UEvent("add", PFRU_ADD.devpath, "misc", {"DEVNAME": "/dev/acpi_pfr_update0"}), "pfru"),
        (
            UEvent("add", "devices/virtual/misc/liveupdate", "misc", {"DEVNAME": "liveupdate"}),
            "liveupdate",
        ),
        (UEvent("add", "module/fwctl", "module"), "fwctl"),
        (
            UEvent(
                "add",
                "devices/pci0000:00/0000:0d:00.0/mem0/fwctl/fwctl0",
                "fwctl",
                {"DEVNAME": "fwctl/fwctl0"},
            ),
            "fwctl",
        ),
        (UEvent("add", "/module/lfa_fw", "module"), "lfa"),
    ],
)
def test_each_interface_has_its_uevent(event: UEvent, wanted_by: str) -> None:
    classes = [PfruPlugin, FwctlPlugin, LfaPlugin, LiveUpdatePlugin, UefiCapsulePlugin]
    wanting = [c.name for c in classes if any(m.matches(event) for m in c.probe_uevents)]
    assert wanting == [wanted_by]


def test_only_an_add_brings_an_interface() -> None:
    for action in ("remove", "change", "bind", "unbind"):
        event = UEvent(action, PFRU_ADD.devpath, PFRU_ADD.subsystem, PFRU_ADD.properties)
        assert not any(m.matches(event) for m in PfruPlugin.probe_uevents), action
    # the telemetry node alone cannot make the probe succeed (it needs the update node)
    telemetry = UEvent(
        "add", "devices/platform/INTC1081:00/misc/pfrt0", "misc", {"DEVNAME": "acpi_pfr_telemetry0"}
    )
    assert not any(m.matches(telemetry) for m in PfruPlugin.probe_uevents)


# ---------------------------------------------------- the engine, counting probes


class Late(Plugin):
    """Missing until ``present``; counts its probes."""

    name = "late"
    probe_uevents = (UEventMatch(subsystem="misc", devname="late0"),)
    present = False
    probes = 0

    async def probe(self) -> Any:
        from livefw.plugin import Probe

        Late.probes += 1
        return Probe.ok() if Late.present else Probe.unsupported("no /dev/late0")

    async def coldplug(self) -> None:
        from livefw.device import Device

        self.ctx.add_device(Device("late", "late0", name="Late device"))


async def test_unrelated_uevents_cost_a_missing_plugin_no_probe(tmp_path: Path) -> None:
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [Late])
    Late.present, Late.probes = False, 0
    with capture_logs() as logs:
        await engine.start()
        try:
            assert (engine.plugins["late"].probe.result, Late.probes) == ("unsupported", 1)
            Late.present = True  # even with the interface there: noise probes nothing
            for event in NOISE * 20:
                await engine._dispatch_uevent(event)
            await engine._dispatch_uevent(
                UEvent("change", "devices/virtual/misc/late0", "misc", {"DEVNAME": "late0"})
            )
            assert Late.probes == 1
            assert engine.plugins["late"].plugin is None

            await engine._dispatch_uevent(
                UEvent("add", "devices/virtual/misc/late0", "misc", {"DEVNAME": "/dev/late0"})
            )
            assert Late.probes == 2
            assert [d.name for d in engine.devices.values()] == ["Late device"]
            await engine._dispatch_uevent(
                UEvent("add", "devices/virtual/misc/late0", "misc", {"DEVNAME": "late0"})
            )
            assert Late.probes == 2  # loaded: its uevents go to on_uevent, not to probe
        finally:
            Late.present = False
            await engine.stop()
    probed = [log for log in logs if log["event"] == "plugin_probed"]
    assert [(log["log_level"], log["result"]) for log in probed] == [
        ("info", "unsupported"),
        ("info", "ok"),
    ]


async def test_a_failed_reprobe_logs_at_debug_only(tmp_path: Path) -> None:
    """The interface is missing: said once at start (info); a matching uevent that
    does not bring it (a second instance, a race) is not news."""
    machine = SimMachine.load(str(tmp_path / "sim"), create=True)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [Late])
    Late.present, Late.probes = False, 0
    with capture_logs() as logs:
        await engine.start()
        try:
            for _ in range(5):
                await engine._dispatch_uevent(
                    UEvent("add", "devices/virtual/misc/late0", "misc", {"DEVNAME": "late0"})
                )
        finally:
            await engine.stop()
    assert Late.probes == 6
    levels = [log["log_level"] for log in logs if log["event"] == "plugin_probed"]
    assert levels == ["info"] + ["debug"] * 5


def _counting(monkeypatch: pytest.MonkeyPatch, cls: type[Plugin]) -> list[int]:
    calls: list[int] = []
    original = cls.probe

    async def probe(self: Plugin) -> Any:
        calls.append(1)
        return await original(self)

    monkeypatch.setattr(cls, "probe", probe)
    return calls


async def test_missing_pfru_sleeps_through_noise_and_wakes_on_its_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the simulated kernel's uevent stream: noise, a fwctl hot-add (a loaded
    plugin keeps its hotplug), then the PFRU update driver binding."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default", kernel="7.2")
    machine.components["pfru"].remove_device("pfru/code-injection")
    probes = _counting(monkeypatch, PfruPlugin)
    engine = Engine(SimProvider(machine), Config(), str(tmp_path), [PfruPlugin, FwctlPlugin])
    with capture_logs() as logs:
        await engine.start()
        try:
            assert engine.plugins["pfru"].probe.result == "unsupported"
            assert len(probes) == 1
            fwctl_before = sum(d.plugin == "fwctl" for d in engine.devices.values())
            for event in NOISE * 10:
                machine.emit(event)
            # a loaded plugin still follows its hotplug; events arrive in order, so once
            # this one is handled every noise event before it was handled too
            await asyncio.to_thread(
                machine.components["fwctl"].add_device,  # type: ignore[attr-defined]
                {"type": "mlx5", "pci": "0000:09:00.0"},
            )
            await wait_for(
                lambda: (
                    sum(d.plugin == "fwctl" for d in engine.devices.values()) == fwctl_before + 1
                )
            )
            assert len(probes) == 1
            assert not any(d.plugin == "pfru" for d in engine.devices.values())

            await asyncio.to_thread(machine.components["pfru"].add_device, {"device": "update"})
            await wait_for(lambda: any(d.plugin == "pfru" for d in engine.devices.values()))
            assert len(probes) == 2
            assert engine.plugins["pfru"].probe.result == "ok"
        finally:
            await engine.stop()
    pfru_lines = [
        log for log in logs if log.get("plugin") == "pfru" and log["log_level"] != "debug"
    ]
    assert [log["event"] for log in pfru_lines] == [
        "plugin_probed",  # start: missing, once
        "plugin_probed",  # the driver bound: ok
        "plugin_loaded_late",
    ]


# -------------------------------------------- the simulator sends what the kernel sends


async def test_simulated_pfru_binding_sends_the_kernels_uevent(tmp_path: Path) -> None:
    """pfr_update.c: misc device ``pfru0`` below its platform device, node
    ``acpi_pfr_update0``: the event PfruPlugin waits for."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default", kernel="7.2")
    pfru = machine.components["pfru"]
    pfru.remove_device("pfru/code-injection")
    queue = machine.subscribe()
    pfru.add_device({"device": "update"})
    event = await asyncio.wait_for(queue.get(), 10)
    assert (event.action, event.subsystem, event.properties["DEVNAME"]) == (
        "add",
        "misc",
        "acpi_pfr_update0",
    )
    assert event.devpath == "devices/platform/INTC1080:00/misc/pfru0"
    assert any(m.matches(event) for m in PfruPlugin.probe_uevents)


async def test_simulated_fwctl_load_sends_the_module_add_first(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "empty", kernel="7.2")
    queue = machine.subscribe()
    machine.components["fwctl"].add_device({"type": "cxl"})  # type: ignore[attr-defined]
    first = await asyncio.wait_for(queue.get(), 10)
    second = await asyncio.wait_for(queue.get(), 10)
    assert (first.action, first.devpath, first.subsystem) == ("add", "module/fwctl", "module")
    assert (second.action, second.subsystem) == ("add", "fwctl")
    assert second.properties["DEVNAME"] == "fwctl/fwctl0"
    # loaded once: the next driver sends no second module add
    machine.components["fwctl"].add_device({"type": "mlx5"})  # type: ignore[attr-defined]
    third = await asyncio.wait_for(queue.get(), 10)
    assert third.subsystem == "fwctl"
    assert queue.empty()


async def test_sim_uevent_command_sends_a_foreign_uevent(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"), "minimal")
    queue = machine.subscribe()
    result = execute(
        machine,
        "uevent",
        {
            "action": "add",
            "devpath": "/devices/virtual/tty/tty5",
            "subsystem": "tty",
            "properties": {"DEVNAME": "tty5", "MAJOR": "4"},
        },
    )
    assert result == {"action": "add", "devpath": "devices/virtual/tty/tty5", "subsystem": "tty"}
    event = await asyncio.wait_for(queue.get(), 10)
    assert event == UEvent(
        "add", "devices/virtual/tty/tty5", "tty", {"DEVNAME": "tty5", "MAJOR": "4"}
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"action": "plug", "devpath": "devices/x"}, "action must be one of"),
        ({"action": "add", "devpath": ""}, "needs a DEVPATH"),
        ({"action": "add", "devpath": "devices/x", "properties": ["A"]}, "needs a DEVPATH"),
        ({"action": "add", "devpath": "devices/x", "properties": {"dev name": "x"}}, "upper-case"),
        ({"action": "add", "devpath": "devices/" + "x" * 3000}, "at most 2048 bytes"),
        (
            {"action": "add", "devpath": "d", "properties": {f"K{i}": "v" for i in range(61)}},
            "at most 2048 bytes in 64",
        ),
    ],
)
def test_sim_uevent_refuses_what_the_kernel_could_not_send(args: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        foreign_uevent(args)
