"""``org.livefw.Daemon1.Telemetry``: the PFRT firmware log on the PFRU device object.

The kernel keeps the telemetry node root-only, so livefwd does not hand the log to
every local user: reading it (``GetDataInfo``, ``Read``, ``ReadSince``) needs
``org.livefw.daemon1.telemetry-read`` (allowed for the active local session,
administrator authentication elsewhere; root only without polkit). The cached
``LogLevel``/``LogType`` properties stay readable by anyone. Changing the log level,
type or revision needs ``org.livefw.daemon1.telemetry-configure``. Every call holds
the device's lock, so reads, data-info queries and changes never interleave.
"""

from typing import Any

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property, method
from livefw.bus.context import BusContext, parse_options
from livefw.bus.errors import dbus_errors
from livefw.device import Device
from livefw.errors import Internal
from livefw.plugins.pfru import (
    TELEMETRY_INTERFACE,
    PfruTelemetryDevice,
    level_name,
    parse_level,
    parse_log_type,
    parse_revision,
    type_name,
)

INTERFACE = TELEMETRY_INTERFACE
ACTION_CONFIGURE = "org.livefw.daemon1.telemetry-configure"
ACTION_READ = "org.livefw.daemon1.telemetry-read"

_SET_OPTIONS = {"level": "s", "type": "s", "revision": "u"}


class TelemetryInterface(ServiceInterface):
    """The firmware's telemetry ring buffer: settings, whole reads and delta reads."""

    #: every change is announced (PfruTelemetryDevice._set_log_info calls the
    #: listeners): LivefwBus may keep the map and its GetManagedObjects bytes
    livefw_cache_properties = True

    def __init__(self, ctx: BusContext, device: PfruTelemetryDevice) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.device = device
        device.add_telemetry_listener(self._changed)

    def _changed(self) -> None:
        self.emit_properties_changed(
            {
                "LogLevel": level_name(self.device.log_level),
                "LogType": type_name(self.device.log_type),
                "LogRevision": self.device.log_revid,
            }
        )

    def _lock(self) -> Any:
        return self.ctx.engine.device_lock(self.device.id)

    # ---------------------------------------------------------------- properties

    @dbus_property(access=PropertyAccess.READ)
    def LogLevel(self) -> "s":
        return level_name(self.device.log_level)

    @dbus_property(access=PropertyAccess.READ)
    def LogType(self) -> "s":
        return type_name(self.device.log_type)

    @dbus_property(access=PropertyAccess.READ)
    def LogRevision(self) -> "u":
        return self.device.log_revid

    # ------------------------------------------------------------------- methods

    @method()
    @dbus_errors
    async def SetLogInfo(self, options: "a{sv}") -> None:
        given = parse_options(options, _SET_OPTIONS, require_any=True)
        level = parse_level(given["level"]) if "level" in given else None
        log_type = parse_log_type(given["type"]) if "type" in given else None
        revision = (
            parse_revision(given["revision"], "log revision") if "revision" in given else None
        )
        await self.ctx.authorize(ACTION_CONFIGURE)
        async with self.ctx.engine.exclusive(self.device, f"SetLogInfo on {self.device.name}"):
            await self.device.set_telemetry(level, log_type, revision)

    @method()
    @dbus_errors
    async def GetDataInfo(self) -> "a{sv}":
        await self.ctx.authorize(ACTION_READ)
        async with self._lock():
            info = await self.device.telemetry_data_info()
        return {
            "max-data-size": Variant("u", info.max_data_size),
            "chunk1-size": Variant("u", info.chunk1_size),
            "chunk2-size": Variant("u", info.chunk2_size),
            "rollover-count": Variant("u", info.rollover_cnt),
            "reset-count": Variant("u", info.reset_cnt),
            "started": Variant("b", info.chunk2_addr != 0),
            "log-type": Variant("s", type_name(self.device.log_type)),
        }

    @method()
    @dbus_errors
    async def Read(self) -> "ayt":
        await self.ctx.authorize(ACTION_READ)
        async with self._lock():
            result = await self.device.read_telemetry(0)
        return [result.data, result.cursor]

    @method()
    @dbus_errors
    async def ReadSince(self, cursor: "t") -> "aytb":
        await self.ctx.authorize(ACTION_READ)
        async with self._lock():
            result = await self.device.read_telemetry(cursor)
        return [result.data, result.cursor, result.lost]


def build(ctx: BusContext, device: Device) -> ServiceInterface:
    """The Telemetry interface of a PFRU device that carries telemetry."""
    if not isinstance(device, PfruTelemetryDevice):
        raise Internal(f"{device.name} has no PFRT telemetry")
    return TelemetryInterface(ctx, device)
