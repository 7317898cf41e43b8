"""``org.livefw.Daemon1.Manager`` at ``/org/livefw/Daemon1``.

Each method parses, authorizes, awaits the engine and converts; business rules
live in the engine and the plugins.
"""

import os
import time
from typing import TYPE_CHECKING, Any

import livefw
from livefw.bus.backend import (
    PropertyAccess,
    ServiceInterface,
    Variant,
    dbus_property,
    method,
)
from livefw.bus.context import BusContext, parse_options
from livefw.bus.device import device_dict
from livefw.bus.errors import dbus_errors
from livefw.errors import InvalidArgument, LivefwError
from livefw.history import HistoryEntry
from livefw.plugin import InstallOptions

if TYPE_CHECKING:
    # only for annotations: releases and remotes are imported by the first call that
    # needs them, not while livefwd starts (tests/integration/test_import_budget.py)
    from livefw.releases import Candidate

INTERFACE = "org.livefw.Daemon1.Manager"

ACTION_INSTALL = "org.livefw.daemon1.install"
ACTION_ACTIVATE = "org.livefw.daemon1.activate"

#: the kernel's taint mask (proc(5), kernel/panic.c).
TAINTED_PATH = "proc/sys/kernel/tainted"

_INSTALL_OPTIONS = {"allow-older", "allow-reinstall", "activate", "force", "filename"}
#: GetHistory's options and their types (dbus/org.livefw.Daemon1.Manager.xml); a
#: ``u`` limit is always in SQLite's LIMIT range, 0 means every row.
_HISTORY_OPTIONS = {"device-id": "s", "limit": "u"}


def _options(options: dict[str, Variant], allowed: set[str]) -> dict[str, Any]:
    """Unwrap an ``a{sv}`` and refuse unknown keys or wrong types (filename: s, else b)."""
    return parse_options(options, {key: "s" if key == "filename" else "b" for key in allowed})


def history_dict(entry: HistoryEntry) -> dict[str, Variant]:
    """A history row as ``a{sv}``."""
    return {
        "Id": Variant("s", entry.op_id),
        "DeviceId": Variant("s", entry.device_id),
        "DeviceName": Variant("s", entry.device_name),
        "Plugin": Variant("s", entry.plugin),
        "Kind": Variant("s", entry.kind),
        "State": Variant("s", entry.state),
        "VersionOld": Variant("s", entry.version_old),
        "VersionNew": Variant("s", entry.version_new),
        "Reason": Variant("s", entry.reason),
        "BootId": Variant("s", entry.boot_id),
        "CallerUid": Variant("i", entry.caller_uid),
        "Created": Variant("t", int(entry.created)),
        "Finished": Variant("t", int(entry.finished or 0)),
    }


def release_dict(candidate: "Candidate", order: int) -> dict[str, Variant]:
    """A release a remote offers, as ``a{sv}`` (``Order``: -1 older, 0 same, 1 newer)."""
    release = candidate.release
    return {
        "AppstreamId": Variant("s", release.appstream_id),
        "Name": Variant("s", release.name),
        "Summary": Variant("s", release.summary),
        "Vendor": Variant("s", release.vendor),
        "Version": Variant("s", release.version),
        "Order": Variant("i", order),
        "RemoteId": Variant("s", candidate.remote.id if candidate.remote else ""),
        "Location": Variant("s", candidate.location),
        "Checksum": Variant("s", candidate.cabinet.sha256),
        "Size": Variant("t", release.size),
        "Created": Variant("t", release.created),
        "Trusted": Variant("b", candidate.trusted),
        "Guids": Variant("as", list(release.guids)),
    }


class ManagerInterface(ServiceInterface):
    """Devices, operations, history and plugins."""

    def __init__(self, ctx: BusContext) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        #: when this daemon process started serving (seconds since the epoch).
        self.start_time = time.time()

    # ---------------------------------------------------------------- properties

    @dbus_property(access=PropertyAccess.READ)
    def StartTime(self) -> "t":
        return int(self.start_time * 1_000_000)

    @dbus_property(access=PropertyAccess.READ)
    def DaemonVersion(self) -> "s":
        return livefw.__version__

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> "s":
        return str(self.ctx.engine.status)

    @dbus_property(access=PropertyAccess.READ)
    def Percentage(self) -> "u":
        return self.ctx.engine.percentage

    @dbus_property(access=PropertyAccess.READ)
    def Simulated(self) -> "b":
        return bool(self.ctx.engine.provider.simulated)

    @dbus_property(access=PropertyAccess.READ)
    def BootId(self) -> "s":
        return self.ctx.engine.boot_id

    # ------------------------------------------------------------------- devices

    @method()
    @dbus_errors
    async def GetDevices(self) -> "aa{sv}":
        devices = sorted(self.ctx.engine.devices.values(), key=lambda d: (d.plugin, d.name))
        return [device_dict(device) for device in devices]

    @method()
    @dbus_errors
    async def GetDevice(self, device_id: "s") -> "a{sv}":
        device = await self.ctx.engine.refresh_device(device_id)
        return device_dict(device)

    @method()
    @dbus_errors
    async def Refresh(self) -> None:
        await self.ctx.engine.refresh()

    # ---------------------------------------------------------------- operations

    @method()
    @dbus_errors
    async def Activate(self, device_id: "s", options: "a{sv}") -> "a{sv}":
        _options(options, set())
        uid = await self.ctx.authorize(ACTION_ACTIVATE)
        entry = await self.ctx.engine.activate(device_id, caller_uid=uid)
        return history_dict(entry)

    @method()
    @dbus_errors
    async def Cancel(self, device_id: "s", options: "a{sv}") -> None:
        _options(options, set())
        uid = await self.ctx.authorize(ACTION_INSTALL)
        await self.ctx.engine.cancel(device_id, caller_uid=uid)

    @method()
    @dbus_errors
    async def Install(self, device_id: "s", fd: "h", options: "a{sv}") -> "a{sv}":
        if not isinstance(fd, int):  # an "h" argument with no descriptor attached
            raise InvalidArgument("Install needs the payload as a Unix file descriptor")
        try:
            parsed = _options(options, _INSTALL_OPTIONS)
            filename = str(parsed.pop("filename", ""))
            install_options = InstallOptions(**{k.replace("-", "_"): v for k, v in parsed.items()})
            uid = await self.ctx.authorize(ACTION_INSTALL)
            if install_options.activate:
                # activating at runtime is its own permission (Activate checks it too):
                # holding install alone must not switch firmware live
                await self.ctx.authorize(ACTION_ACTIVATE)
            payload = await self.ctx.engine.read_payload(fd, os.path.basename(filename))
        finally:
            os.close(fd)
        # a cabinet (.cab) or a raw payload; several rows when a cabinet updates
        # several devices: the last one is returned, all are in the history
        entries = await self.ctx.engine.install_file(
            device_id, payload, install_options, caller_uid=uid
        )
        return history_dict(entries[-1])

    # ------------------------------------------------------------------ releases

    @method()
    @dbus_errors
    async def GetReleases(self, device_id: "s") -> "aa{sv}":
        releases = self.ctx.engine.releases
        device = self.ctx.engine.get_device(device_id)
        candidates = await releases.releases(device)
        return [release_dict(c, releases.compare_to_device(device, c)) for c in candidates]

    @method()
    @dbus_errors
    async def GetUpgrades(self, device_id: "s") -> "aa{sv}":
        device = self.ctx.engine.get_device(device_id)
        candidates = await self.ctx.engine.releases.upgrades(device)
        return [release_dict(c, 1) for c in candidates]

    # ---------------------------------------------------------- history, plugins

    @method()
    @dbus_errors
    async def GetHistory(self, options: "a{sv}") -> "aa{sv}":
        parsed = parse_options(options, _HISTORY_OPTIONS)
        device_id, limit = parsed.get("device-id"), parsed.get("limit", 0)
        entries = self.ctx.engine.history.entries(device_id=device_id, limit=limit)
        return [history_dict(entry) for entry in entries]

    @method()
    @dbus_errors
    async def GetHostState(self) -> "a{sv}":
        state: dict[str, Variant] = {
            "StartTime": Variant("t", int(self.start_time * 1_000_000)),
            "BootId": Variant("s", self.ctx.engine.boot_id),
            # fwupd-compatible Inhibit (issue 18): id -> reason, installs and activations
            # are refused while any is held
            "Inhibits": Variant("a{ss}", dict(self.ctx.engine.inhibits)),
        }
        try:
            raw = await self.ctx.engine.provider.read_attr(TAINTED_PATH)
            state["Tainted"] = Variant("t", int(raw.strip() or "0"))
        except (LivefwError, ValueError):
            pass  # absent: the kernel (or the simulated one) does not say
        return state

    @method()
    @dbus_errors
    async def GetPlugins(self) -> "aa{sv}":
        return [
            {
                "Name": Variant("s", record.name),
                "Result": Variant("s", record.probe.result),
                "Reason": Variant("s", record.probe.reason),
                "Devices": Variant(
                    "u",
                    sum(1 for d in self.ctx.engine.devices.values() if d.plugin == record.name),
                ),
            }
            for record in sorted(self.ctx.engine.plugins.values(), key=lambda r: r.name)
        ]
