"""The CLI's D-Bus client: every command talks to livefwd over the bus only."""

from __future__ import annotations

import os
from typing import Any

from livefw.bus.backend import (
    BusType,
    Message,
    MessageBus,
    MessageType,
    Variant,
    call,
    disconnect,
)
from livefw.bus.names import (
    BUS_NAME,
    DEVICE_INTERFACE,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    device_path,
)
from livefw.errors import ERROR_PREFIX

__all__ = [
    "BUS_NAME",
    "DEVICE_IFACE",
    "MANAGER_IFACE",
    "MANAGER_PATH",
    "CallError",
    "Client",
    "device_path",
    "unwrap",
]

#: the CLI's names for the daemon's interfaces (livefw.bus.names)
MANAGER_IFACE = MANAGER_INTERFACE
DEVICE_IFACE = DEVICE_INTERFACE

#: default timeout of ordinary calls; long operations pass their own.
DEFAULT_TIMEOUT = 30.0
#: activations and installs reply when done (LFA writes can take tens of seconds).
LONG_TIMEOUT = 3600.0


def unwrap(value: Any) -> Any:
    """Turn Variants (recursively) into plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


class CallError(Exception):
    """A D-Bus error reply.

    Attributes:
        name: the D-Bus error name.
        short: the name without ``org.livefw.Daemon1.Error.`` (``NotFound`` ...).
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{message}")
        self.name = name
        self.short = name.removeprefix(ERROR_PREFIX)
        self.message = message


class Client:
    """A connection to livefwd."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> Client:
        """Connect to ``address``, ``$LIVEFW_BUS_ADDRESS``, or the system bus."""
        address = address or os.environ.get("LIVEFW_BUS_ADDRESS") or None
        if address:
            bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        await bus.connect()
        return cls(bus)

    async def close(self) -> None:
        """Disconnect."""
        disconnect(self.bus)

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str = MANAGER_IFACE,
        destination: str = BUS_NAME,
        unix_fds: list[int] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Any]:
        """Call a method and return the reply body (Variants unwrapped).

        Raises:
            CallError: the daemon replied with an error.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        import asyncio

        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
            unix_fds=unix_fds or [],
        )
        reply = await asyncio.wait_for(call(self.bus, message), timeout)
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            raise CallError(str(reply.error_name), str(text))
        return [unwrap(item) for item in reply.body]

    async def get_property(self, path: str, interface: str, name: str) -> Any:
        """One property."""
        (value,) = await self.call(
            "Get",
            "ss",
            [interface, name],
            path=path,
            interface="org.freedesktop.DBus.Properties",
        )
        return value

    async def managed_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """GetManagedObjects on the manager."""
        (objects,) = await self.call(
            "GetManagedObjects", interface="org.freedesktop.DBus.ObjectManager"
        )
        return dict(objects)

    async def devices(self) -> list[dict[str, Any]]:
        """Every device's properties (the Device interface), sorted by name."""
        objects = await self.managed_objects()
        result = [ifaces[DEVICE_IFACE] for ifaces in objects.values() if DEVICE_IFACE in ifaces]
        return sorted(result, key=lambda d: (d["Plugin"], d["Name"], d["Id"]))

    async def resolve_device(self, query: str) -> str:
        """A full device Id from an Id, a unique Id prefix or a unique name.

        Raises:
            CallError: with ``NotFound`` or ``InvalidArgument`` when nothing or
                several devices match.
        """
        devices = await self.devices()
        if any(device["Id"] == query for device in devices):
            return query
        for matcher in (
            lambda d: d["Id"].startswith(query.lower()),
            lambda d: d["Name"].lower() == query.lower(),
            lambda d: query.lower() in d["Name"].lower(),
        ):
            hits = [d for d in devices if matcher(d)]
            if len(hits) == 1:
                return str(hits[0]["Id"])
            if len(hits) > 1:
                names = ", ".join(f"{d['Id'][:8]} ({d['Name']})" for d in hits)
                raise CallError(ERROR_PREFIX + "InvalidArgument", f"{query!r} matches {names}")
        raise CallError(
            ERROR_PREFIX + "NotFound", f"no device matches {query!r}; see `livefw get-devices`"
        )
