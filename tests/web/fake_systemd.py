"""A small org.freedesktop.systemd1 for the web test: the part of systemd's D-Bus API the
Firmware page uses for the maintenance window (tests/web/test_cockpit.py).

``python fake_systemd.py BUS_ADDRESS UNIT_DIR TIMER_FILE`` serves livefw-activate.timer
and livefw-activate.service. The timer's ``OnCalendar=`` comes from TIMER_FILE (the
repository's unit) and the drop-ins in ``UNIT_DIR/livefw-activate.timer.d/*.conf``,
read again on ``Reload`` as systemd does on daemon-reload (an empty assignment clears
the list); the next elapse is what ``systemd-analyze calendar`` computes. Manager
methods: LoadUnit, GetUnit, EnableUnitFiles, DisableUnitFiles, StartUnit, StopUnit,
Reload, Subscribe. ``org.livefw.Test.Systemd.FinishRun(i status)`` records a run of the
service with that exit status (0 success, 7 nothing pending, anything else a failure).
"""

import asyncio
import configparser
import glob
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from livefw.bus.backend import (
    LivefwBus,
    PropertyAccess,
    ServiceInterface,
    dbus_property,
    method,
    signal,
)

TIMER = "livefw-activate.timer"
SERVICE = "livefw-activate.service"
ROOT = "/org/freedesktop/systemd1"


def unit_path(name: str) -> str:
    """systemd's bus path for a unit (sd_bus_path_encode: _XX for non-alphanumerics)."""
    escaped = "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in name)
    return f"{ROOT}/unit/{escaped}"


def read_calendars(paths: list[str]) -> list[str]:
    """OnCalendar= values after the unit file and its drop-ins, in order."""
    calendars: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for raw in handle:
                line = raw.strip()
                if not line.startswith("OnCalendar="):
                    continue
                value = line.partition("=")[2].strip()
                if value:
                    calendars.append(value)
                else:
                    calendars.clear()
    return calendars


def next_elapse(calendar: str) -> int:
    """Microseconds since the epoch of the next elapse, from systemd-analyze."""
    result = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=1", calendar],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        timeout=30,
    )
    for line in result.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Next elapse":
            moment = datetime.strptime(value.strip(), "%a %Y-%m-%d %H:%M:%S UTC")
            return int(moment.replace(tzinfo=UTC).timestamp() * 1_000_000)
    return 0


class Unit(ServiceInterface):
    def __init__(self, name: str, fragment: str) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.unit_name = name  # not `name`: ServiceInterface keeps the interface name there
        self.fragment = fragment
        self.active_state = "inactive"
        self.file_state = "disabled"
        self.drop_ins: list[str] = []
        self.invocation = b""

    def set(self, **values: Any) -> None:
        changed = {}
        for key, value in values.items():
            attribute = {
                "ActiveState": "active_state",
                "UnitFileState": "file_state",
                "DropInPaths": "drop_ins",
            }[key]
            if getattr(self, attribute) != value:
                setattr(self, attribute, value)
                changed[key] = value
        if changed:
            self.emit_properties_changed(changed)

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> "s":
        return self.unit_name

    @dbus_property(access=PropertyAccess.READ)
    def LoadState(self) -> "s":
        return "loaded"

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> "s":
        return self.active_state

    @dbus_property(access=PropertyAccess.READ)
    def UnitFileState(self) -> "s":
        return self.file_state

    @dbus_property(access=PropertyAccess.READ)
    def FragmentPath(self) -> "s":
        return self.fragment

    @dbus_property(access=PropertyAccess.READ)
    def DropInPaths(self) -> "as":
        return self.drop_ins

    @dbus_property(access=PropertyAccess.READ)
    def InvocationID(self) -> "ay":
        return self.invocation


class Timer(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Timer")
        self.calendars: list[tuple[str, str, int]] = []
        self.next_elapse = 0
        self.last_trigger = 0

    def set(self, calendars: list[tuple[str, str, int]], next_usec: int) -> None:
        self.calendars = calendars
        self.next_elapse = next_usec
        self.emit_properties_changed(
            {"TimersCalendar": [list(c) for c in calendars], "NextElapseUSecRealtime": next_usec}
        )

    @dbus_property(access=PropertyAccess.READ)
    def TimersCalendar(self) -> "a(sst)":
        return [list(c) for c in self.calendars]

    @dbus_property(access=PropertyAccess.READ)
    def NextElapseUSecRealtime(self) -> "t":
        return self.next_elapse

    @dbus_property(access=PropertyAccess.READ)
    def LastTriggerUSec(self) -> "t":
        return self.last_trigger

    @dbus_property(access=PropertyAccess.READ)
    def Persistent(self) -> "b":
        return True


class Service(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Service")
        self.result = "success"
        self.status = 0
        self.exit_usec = 0

    @dbus_property(access=PropertyAccess.READ)
    def Result(self) -> "s":
        return self.result

    @dbus_property(access=PropertyAccess.READ)
    def ExecMainStatus(self) -> "i":
        return self.status

    @dbus_property(access=PropertyAccess.READ)
    def ExecMainExitTimestamp(self) -> "t":
        return self.exit_usec


class Manager(ServiceInterface):
    def __init__(self, unit_dir: str, timer_file: str) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.unit_dir = unit_dir
        self.timer_file = timer_file
        self.timer_unit = Unit(TIMER, timer_file)
        self.timer = Timer()
        self.service_unit = Unit(SERVICE, timer_file.replace(".timer", ".service"))
        self.service = Service()
        self.job = 0
        self.calls: list[str] = []
        self.reload()

    def reload(self) -> None:
        drop_ins = sorted(glob.glob(os.path.join(self.unit_dir, TIMER + ".d", "*.conf")))
        calendars = read_calendars([self.timer_file, *drop_ins])
        elapses = [next_elapse(c) for c in calendars]
        self.timer_unit.set(DropInPaths=drop_ins)
        self.timer.set(
            [("OnCalendar", c, e) for c, e in zip(calendars, elapses, strict=True)],
            min(elapses, default=0),
        )

    def _unit(self, name: str) -> str:
        if name not in (TIMER, SERVICE):
            from livefw.bus.backend import DBusError

            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not found.")
        return unit_path(name)

    def _job(self) -> str:
        self.job += 1
        return f"{ROOT}/job/{self.job}"

    @method()
    def LoadUnit(self, name: "s") -> "o":
        return self._unit(name)

    @method()
    def GetUnit(self, name: "s") -> "o":
        return self._unit(name)

    @method()
    def Subscribe(self) -> None:
        self.calls.append("Subscribe")

    @method()
    def Reload(self) -> None:
        self.calls.append("Reload")
        self.Reloading(True)
        self.reload()
        self.Reloading(False)

    @signal()
    def Reloading(self, active: bool) -> "b":
        return active

    @method()
    def EnableUnitFiles(self, files: "as", runtime: "b", force: "b") -> "ba(sss)":
        self.calls.append("EnableUnitFiles " + " ".join(files))
        for name in files:
            self._unit(name)
        self.timer_unit.set(UnitFileState="enabled")
        link = os.path.join(self.unit_dir, "timers.target.wants", TIMER)
        return [True, [["symlink", link, self.timer_file]]]

    @method()
    def DisableUnitFiles(self, files: "as", runtime: "b") -> "a(sss)":
        self.calls.append("DisableUnitFiles " + " ".join(files))
        for name in files:
            self._unit(name)
        self.timer_unit.set(UnitFileState="disabled")
        return [["unlink", os.path.join(self.unit_dir, "timers.target.wants", TIMER), ""]]

    @method()
    def StartUnit(self, name: "s", mode: "s") -> "o":
        self.calls.append("StartUnit " + name)
        self._unit(name)
        (self.timer_unit if name == TIMER else self.service_unit).set(ActiveState="active")
        return self._job()

    @method()
    def StopUnit(self, name: "s", mode: "s") -> "o":
        self.calls.append("StopUnit " + name)
        self._unit(name)
        (self.timer_unit if name == TIMER else self.service_unit).set(ActiveState="inactive")
        return self._job()


class Control(ServiceInterface):
    """Test control, off systemd's API: record a run of the service, list the calls."""

    def __init__(self, manager: Manager) -> None:
        super().__init__("org.livefw.Test.Systemd")
        self.manager = manager

    @method()
    def FinishRun(self, status: "i") -> None:
        now = int(time.time() * 1_000_000)
        service = self.manager.service
        service.status = status
        service.result = "success" if status in (0, 7) else "exit-code"
        service.exit_usec = now
        self.manager.timer.last_trigger = now
        # a fresh id no journal on this machine has lines for
        self.manager.service_unit.invocation = os.urandom(16)
        self.manager.service_unit.emit_properties_changed(
            {"InvocationID": self.manager.service_unit.invocation}
        )
        service.emit_properties_changed(
            {"Result": service.result, "ExecMainStatus": status, "ExecMainExitTimestamp": now}
        )
        self.manager.timer.emit_properties_changed({"LastTriggerUSec": now})

    @method()
    def Calls(self) -> "as":
        return list(self.manager.calls)


async def main() -> None:
    address, unit_dir, timer_file = sys.argv[1:4]
    config = configparser.ConfigParser(strict=False)
    config.read(timer_file)  # fail early on an unreadable unit
    bus = LivefwBus(bus_address=address, object_manager_path="/nonexistent")
    await bus.connect()
    manager = Manager(unit_dir, timer_file)
    bus.export(ROOT, manager)
    bus.export(ROOT + "/test", Control(manager))
    bus.export_object(unit_path(TIMER), [manager.timer_unit, manager.timer])
    bus.export_object(unit_path(SERVICE), [manager.service_unit, manager.service])
    await bus.request_name("org.freedesktop.systemd1")
    await asyncio.Event().wait()


asyncio.run(main())
