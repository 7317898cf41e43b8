"""``org.livefw.Daemon1.Lfa``: how an Arm LFA image is activated, on its device object.

The v3 LFA posting (``Documentation/ABI/testing/sysfs-firmware-lfa``) leaves two
settings per image to the administrator: ``force_cpu_rendezvous`` (whether the kernel
stops every CPU during the activation even when the firmware does not require it)
and ``auto_activate`` (whether the driver activates a new pending image by itself
when the platform signals one). Both decide when and how firmware is activated, so
changing them needs ``org.livefw.daemon1.activate``: ``auto_activate`` is a standing
activation without asking again, and the rendezvous choice trades safety for the
brief stop of the whole machine, the same decision an activation is.
"""

from typing import Any

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property, method
from livefw.bus.context import BusContext, parse_options
from livefw.bus.errors import dbus_errors
from livefw.device import Device
from livefw.errors import Internal
from livefw.plugins.lfa import LFA_INTERFACE, LfaDevice

INTERFACE = LFA_INTERFACE
ACTION_ACTIVATE = "org.livefw.daemon1.activate"

_OPTIONS = {"force-cpu-rendezvous": "b", "auto-activate": "b"}


def _options(device: LfaDevice) -> dict[str, Variant]:
    found = {"cpu-rendezvous-required": Variant("b", device.cpu_rendezvous)}
    if device.force_cpu_rendezvous is not None:
        found["force-cpu-rendezvous"] = Variant("b", device.force_cpu_rendezvous)
    if device.auto_activate is not None:
        found["auto-activate"] = Variant("b", device.auto_activate)
    return found


class LfaInterface(ServiceInterface):
    """The administrator's activation settings of one LFA image."""

    #: every change is announced (:meth:`_changed`, on each update of the device;
    #: ``LfaDevice.read_options`` is always followed by the ``refresh`` that updates
    #: it): LivefwBus may keep the map and its GetManagedObjects bytes
    livefw_cache_properties = True

    def __init__(self, ctx: BusContext, device: LfaDevice) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.device = device
        self._last = _options(device)
        device.add_listener(self._changed)

    def _changed(self, device: Any, names: Any) -> None:
        current = _options(self.device)
        if {k: v.value for k, v in current.items()} != {k: v.value for k, v in self._last.items()}:
            self._last = current
            self.emit_properties_changed({"ActivationOptions": current})

    @dbus_property(access=PropertyAccess.READ)
    def ActivationOptions(self) -> "a{sv}":
        return _options(self.device)

    @method()
    @dbus_errors
    async def SetActivationOptions(self, options: "a{sv}") -> None:
        given = parse_options(options, _OPTIONS, require_any=True)
        await self.ctx.authorize(ACTION_ACTIVATE)
        force, auto = given.get("force-cpu-rendezvous"), given.get("auto-activate")
        async with self.ctx.engine.exclusive(
            self.device, f"SetActivationOptions on {self.device.name}"
        ):
            await self.device.set_activation_options(force, auto)


def build(ctx: BusContext, device: Device) -> ServiceInterface:
    """The Lfa interface of an LFA image."""
    if not isinstance(device, LfaDevice):
        raise Internal(f"{device.name} is not an LFA image")
    return LfaInterface(ctx, device)
