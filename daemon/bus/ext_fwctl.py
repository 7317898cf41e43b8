"""``org.livefw.Daemon1.Fwctl`` on fwctl device objects: node facts and ``Rpc``.

``Rpc`` parses the scope (an unknown one is refused before anything else), runs the
device's side-effect-free checks (so a request the daemon would refuse never costs
the caller a polkit prompt), authorizes the scope's polkit action, then awaits the
device's ``rpc``, which serializes RPCs per device and re-checks under its lock. An RPC at a
scope that may write (configuration, debug-write, debug-write-full: include/uapi/
fwctl/fwctl.h ``enum fwctl_rpc_scope``) runs inside ``Engine.exclusive``, so it never
overlaps a firmware update or another state change; a debug-read RPC takes only the
device's lock.
"""

import contextlib
from typing import Any

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property, method
from livefw.bus.context import BusContext, parse_options
from livefw.bus.errors import dbus_errors
from livefw.device import Device
from livefw.errors import Internal
from livefw.kernel.uapi.fwctl import Scope
from livefw.plugins.fwctl import FwctlDevice, RpcOptions, parse_scope

INTERFACE = "org.livefw.Daemon1.Fwctl"

#: polkit action per scope (dbus/org.livefw.daemon1.policy; plugins/fwctl/README.md,
#: "External interface access").
ACTIONS: dict[Scope, str] = {
    Scope.CONFIGURATION: "org.livefw.daemon1.fwctl-configuration",
    Scope.DEBUG_READ_ONLY: "org.livefw.daemon1.fwctl-debug-read",
    Scope.DEBUG_WRITE: "org.livefw.daemon1.fwctl-debug-write",
    Scope.DEBUG_WRITE_FULL: "org.livefw.daemon1.fwctl-debug-write-full",
}

_RPC_OPTIONS = {"response-size": "u"}


def _variant(value: Any) -> Variant:
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("u", value)
    if isinstance(value, bytes):
        return Variant("ay", value)
    return Variant("s", str(value))


def _rpc_options(options: dict[str, Variant]) -> RpcOptions:
    size = parse_options(options, _RPC_OPTIONS).get("response-size")
    return RpcOptions(response_size=None if size is None else int(size))


class FwctlInterface(ServiceInterface):
    """Per-device fwctl facts and RPCs."""

    #: the facts are fixed for the device object's life (a re-probed node is a new
    #: device): LivefwBus may cache the property map (issue 17 item 4)
    livefw_cache_properties = True

    def __init__(self, ctx: BusContext, device: FwctlDevice) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.device = device

    @dbus_property(access=PropertyAccess.READ)
    def Node(self) -> "s":
        return "/" + self.device.devnode

    @dbus_property(access=PropertyAccess.READ)
    def DeviceType(self) -> "s":
        return self.device.type_name

    @dbus_property(access=PropertyAccess.READ)
    def Parent(self) -> "s":
        return self.device.parent.name

    @dbus_property(access=PropertyAccess.READ)
    def Driver(self) -> "s":
        return self.device.parent.driver

    @dbus_property(access=PropertyAccess.READ)
    def PciAddress(self) -> "s":
        return self.device.parent.pci_address

    @dbus_property(access=PropertyAccess.READ)
    def Info(self) -> "a{sv}":
        return {key: _variant(value) for key, value in self.device.fwctl_info().items()}

    @method()
    @dbus_errors
    async def Rpc(self, scope: "s", request: "ay", options: "a{sv}") -> "aya{sv}":
        level = parse_scope(scope)
        rpc_options = _rpc_options(options)
        device = self.device
        data = bytes(request)
        device.check_rpc(level, data, rpc_options, await self.ctx.caller_uid())
        uid = await self.ctx.authorize(ACTIONS[level])
        guard: Any = (
            contextlib.nullcontext()
            if level == Scope.DEBUG_READ_ONLY
            else self.ctx.engine.exclusive(device, f"fwctl {scope} RPC on {device.name}")
        )
        async with guard:
            result = await device.rpc(level, data, rpc_options, caller_uid=uid)
        return [result.response, {key: _variant(value) for key, value in result.info.items()}]


def build(ctx: BusContext, device: Device) -> ServiceInterface:
    """The interface for a fwctl device."""
    if not isinstance(device, FwctlDevice):
        raise Internal(f"{INTERFACE} requested for a non-fwctl device {device.id}")
    return FwctlInterface(ctx, device)
