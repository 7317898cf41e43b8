"""Wires the engine onto the bus: manager, device objects, per-technology interfaces.

Per-technology interfaces live in modules named ``livefw.bus.ext_<tech>``; each
defines ``INTERFACE`` (its D-Bus name) and ``build(ctx, device)``. A device gets the
extensions named in ``type(device).interfaces``.
"""

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

import structlog

import livefw.bus
from livefw.bus.backend import LivefwBus, NameFlag, RequestNameReply, ServiceInterface
from livefw.bus.context import BusContext
from livefw.bus.device import DeviceInterface
from livefw.bus.manager import ManagerInterface
from livefw.bus.names import BUS_NAME, MANAGER_PATH, device_path
from livefw.bus.polkit import Authorizer
from livefw.device import Device
from livefw.engine import Engine, EngineListener
from livefw.errors import Internal

__all__ = [
    "BUS_NAME",
    "MANAGER_PATH",
    "DaemonService",
    "device_path",
    "discover_extensions",
]

log = structlog.get_logger("livefw.bus")

Builder = Callable[[BusContext, Device], ServiceInterface]


def discover_extensions() -> dict[str, Builder]:
    """``INTERFACE -> build`` for every ``livefw.bus.ext_*`` module."""
    found: dict[str, Builder] = {}
    for info in pkgutil.iter_modules(livefw.bus.__path__):
        if not info.name.startswith("ext_"):
            continue
        module: ModuleType = importlib.import_module(f"livefw.bus.{info.name}")
        found[str(module.INTERFACE)] = module.build
    return found


class DaemonService(EngineListener):
    """Publishes the engine on a bus connection."""

    def __init__(self, engine: Engine, bus: LivefwBus, authorizer: Authorizer) -> None:
        self.engine = engine
        self.bus = bus
        self.ctx = BusContext(engine, bus, authorizer)
        self.manager = ManagerInterface(self.ctx)
        self.extensions = discover_extensions()
        self._exported: dict[str, list[ServiceInterface]] = {}

    async def start(self) -> None:
        """Export the manager and current devices, subscribe to engine events."""
        self.bus.export(MANAGER_PATH, self.manager)
        for device in list(self.engine.devices.values()):
            self.device_added(device)
        self.engine.add_listener(self)

    async def own_name(self) -> None:
        """Request the well-known name once everything is exported.

        Raises:
            Internal: another process owns it.
        """
        # objects exported from now on are announced; those exported so far are in
        # GetManagedObjects, which a client asks when it sees the name appear
        self.bus.start_announcing()
        reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise Internal(f"{BUS_NAME} is already owned by another process (is livefwd running?)")
        log.info("bus_name_owned", name=BUS_NAME)

    # ----------------------------------------------------------- engine events

    def device_added(self, device: Device) -> None:
        """Export the device object with its interfaces (InterfacesAdded)."""
        path = device_path(device.id)
        if path in self._exported:
            return
        interfaces: list[ServiceInterface] = [DeviceInterface(device)]
        for name in type(device).interfaces:
            builder = self.extensions.get(name)
            if builder is None:
                log.error("extension_missing", interface=name, device_id=device.id)
                continue
            interfaces.append(builder(self.ctx, device))
        self.bus.export_object(path, interfaces)
        self._exported[path] = interfaces
        device.add_listener(self._device_changed)

    def device_removed(self, device: Device) -> None:
        """Unexport the object (InterfacesRemoved)."""
        path = device_path(device.id)
        device.remove_listener(self._device_changed)
        if self._exported.pop(path, None) is not None:
            self.bus.unexport(path)

    def manager_changed(self, names: frozenset[str]) -> None:
        """PropertiesChanged on the manager."""
        values: dict[str, object] = {}
        if "status" in names:
            values["Status"] = str(self.engine.status)
        if "percentage" in names:
            values["Percentage"] = self.engine.percentage
        if values:
            self.manager.emit_properties_changed(values)

    def _device_changed(self, device: Device, names: frozenset[str]) -> None:
        interfaces = self._exported.get(device_path(device.id))
        if interfaces:
            device_iface = interfaces[0]
            assert isinstance(device_iface, DeviceInterface)
            device_iface.changed(names)
