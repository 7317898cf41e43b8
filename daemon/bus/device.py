"""``org.livefw.Daemon1.Device``: one object per device, properties only."""

from typing import Any

from livefw.bus.backend import PropertyAccess, ServiceInterface, Variant, dbus_property
from livefw.device import Device

INTERFACE = "org.livefw.Daemon1.Device"

#: snake_case attribute -> (D-Bus property, signature)
PROPERTIES: dict[str, tuple[str, str]] = {
    "id": ("Id", "s"),
    "name": ("Name", "s"),
    "vendor": ("Vendor", "s"),
    "summary": ("Summary", "s"),
    "plugin": ("Plugin", "s"),
    "protocol": ("Protocol", "s"),
    "physical_id": ("PhysicalId", "s"),
    "guids": ("Guids", "as"),
    "version": ("Version", "s"),
    "version_lowest": ("VersionLowest", "s"),
    "version_pending": ("VersionPending", "s"),
    "flags": ("Flags", "as"),
    "update_state": ("UpdateState", "s"),
    "update_error": ("UpdateError", "s"),
    "status": ("Status", "s"),
    "percentage": ("Percentage", "u"),
    "metadata": ("Metadata", "a{ss}"),
}


def wire_value(device: Device, attribute: str) -> Any:
    """A device attribute in its wire form."""
    value = getattr(device, attribute)
    if attribute == "flags":
        return sorted(value)
    if attribute == "guids":
        return list(value)
    if attribute in ("update_state", "status"):
        return str(value)
    if attribute == "metadata":
        return dict(value)
    return value


def device_dict(device: Device) -> dict[str, Variant]:
    """All Device properties as ``a{sv}`` (GetDevices, GetDevice)."""
    return {
        name: Variant(signature, wire_value(device, attribute))
        for attribute, (name, signature) in PROPERTIES.items()
    }


class DeviceInterface(ServiceInterface):
    """Read-only properties of a device; changes arrive as PropertiesChanged."""

    #: every change is announced (:meth:`changed`): LivefwBus may cache the map
    livefw_cache_properties = True

    def __init__(self, device: Device) -> None:
        super().__init__(INTERFACE)
        self.device = device

    def changed(self, attributes: frozenset[str]) -> None:
        """Emit PropertiesChanged with the new values."""
        values = {
            PROPERTIES[attribute][0]: wire_value(self.device, attribute)
            for attribute in attributes
            if attribute in PROPERTIES
        }
        if values:
            self.emit_properties_changed(values)

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> "s":
        return self.device.id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":
        return self.device.name

    @dbus_property(access=PropertyAccess.READ)
    def Vendor(self) -> "s":
        return self.device.vendor

    @dbus_property(access=PropertyAccess.READ)
    def Summary(self) -> "s":
        return self.device.summary

    @dbus_property(access=PropertyAccess.READ)
    def Plugin(self) -> "s":
        return self.device.plugin

    @dbus_property(access=PropertyAccess.READ)
    def Protocol(self) -> "s":
        return self.device.protocol

    @dbus_property(access=PropertyAccess.READ)
    def PhysicalId(self) -> "s":
        return self.device.physical_id

    @dbus_property(access=PropertyAccess.READ)
    def Guids(self) -> "as":
        return list(self.device.guids)

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":
        return self.device.version

    @dbus_property(access=PropertyAccess.READ)
    def VersionLowest(self) -> "s":
        return self.device.version_lowest

    @dbus_property(access=PropertyAccess.READ)
    def VersionPending(self) -> "s":
        return self.device.version_pending

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> "as":
        return sorted(self.device.flags)

    @dbus_property(access=PropertyAccess.READ)
    def UpdateState(self) -> "s":
        return str(self.device.update_state)

    @dbus_property(access=PropertyAccess.READ)
    def UpdateError(self) -> "s":
        return self.device.update_error

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> "s":
        return str(self.device.status)

    @dbus_property(access=PropertyAccess.READ)
    def Percentage(self) -> "u":
        return self.device.percentage

    @dbus_property(access=PropertyAccess.READ)
    def Metadata(self) -> "a{ss}":
        return dict(self.device.metadata)
