"""livefw's names on the bus, for the daemon and its clients alike.

The daemon (livefw.bus.service, livefw.bus.device) and the CLI (livefw.cli.client)
read them here, so the object layout is written once. Imports nothing: the CLI loads
it without the daemon.
"""

__all__ = [
    "BUS_NAME",
    "DEVICES_PATH",
    "DEVICE_INTERFACE",
    "MANAGER_INTERFACE",
    "MANAGER_PATH",
    "device_path",
]

BUS_NAME = "org.livefw.Daemon1"
MANAGER_PATH = "/org/livefw/Daemon1"
MANAGER_INTERFACE = "org.livefw.Daemon1.Manager"
DEVICE_INTERFACE = "org.livefw.Daemon1.Device"
DEVICES_PATH = MANAGER_PATH + "/devices"


def device_path(device_id: str) -> str:
    """``/org/livefw/Daemon1/devices/<Id>`` (the Id is hex, always a valid element)."""
    return f"{DEVICES_PATH}/{device_id}"
