"""``org.livefw.Daemon1.Device``: one object per device, properties only.

The getters are made from the property table (:mod:`livefw.device_properties`), one
per row, with the row's D-Bus name, signature and wire form: a property added to the
table appears here, in ``PropertiesChanged`` and in ``GetDevices`` without more code.
"""

from typing import Any

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property
from livefw.bus.names import DEVICE_INTERFACE
from livefw.device import Device
from livefw.device_properties import BY_ATTRIBUTE, PROPERTIES, DeviceProperty

INTERFACE = DEVICE_INTERFACE


def wire_value(device: Device, attribute: str) -> Any:
    """A device attribute in its wire form."""
    return BY_ATTRIBUTE[attribute].wire_value(device)


def device_dict(device: Device) -> dict[str, Variant]:
    """All Device properties as ``a{sv}`` (GetDevices, GetDevice), in table order."""
    return {prop.wire: Variant(prop.signature, prop.wire_value(device)) for prop in PROPERTIES}


class DeviceInterface(ServiceInterface):
    """Read-only properties of a device; changes arrive as PropertiesChanged.

    One getter per row of the property table, added below the class.
    """

    #: every change is announced (:meth:`changed`): LivefwBus may cache the map
    livefw_cache_properties = True

    def __init__(self, device: Device) -> None:
        super().__init__(INTERFACE)
        self.device = device

    def changed(self, attributes: frozenset[str]) -> None:
        """Emit PropertiesChanged with the new values."""
        values = {
            BY_ATTRIBUTE[attribute].wire: BY_ATTRIBUTE[attribute].wire_value(self.device)
            for attribute in attributes
            if attribute in BY_ATTRIBUTE
        }
        if values:
            self.emit_properties_changed(values)


def _getter(prop: DeviceProperty[Any]) -> Any:
    """The read-only D-Bus property of one row: named and typed as the row says.

    The bus libraries read the name from the function and the signature from its
    return annotation, as for a getter written out in the class.
    """

    def getter(self: DeviceInterface) -> Any:
        return prop.wire_value(self.device)

    getter.__name__ = prop.wire
    getter.__qualname__ = f"{DeviceInterface.__qualname__}.{prop.wire}"
    getter.__annotations__ = {"return": prop.signature}
    return dbus_property(access=PropertyAccess.READ)(getter)


for _prop in PROPERTIES:
    setattr(DeviceInterface, _prop.wire, _getter(_prop))
del _prop
