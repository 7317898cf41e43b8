"""Devices: what plugins create and the bus layer publishes.

A :class:`Device` is owned by its plugin, registered with the engine, and changed
only through :meth:`Device.update`, which tells listeners (the bus layer) which
properties changed so they can emit ``PropertiesChanged``. Plugins subclass it and
override the async hooks their technology supports.

Text a device publishes comes from firmware (names, vendors, versions, summaries,
metadata) and is sanitised here, once, for every plugin: :class:`Device` passes it
through :func:`livefw.sanitize.clean` when it is set (constructor and
:meth:`Device.update`), so the bus, the logs and the history only ever see one
line of printable text of bounded length. ``physical_id`` and ``guids`` are kept
as they are: plugins address the kernel with them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from livefw.device_properties import (
    BY_ATTRIBUTE,
    PROPERTIES,
    REQUIRED,
    DeviceChanges,
    DeviceInit,
    DeviceProperties,
)
from livefw.errors import NotSupported
from livefw.model import Model

if TYPE_CHECKING:
    from livefw.plugin import InstallOptions, InstallResult, Operation, Payload

__all__ = ["Device", "DeviceInfo", "device_id"]


def device_id(plugin: str, physical_id: str) -> str:
    """The stable device Id: lowercase hex SHA-1 of ``<plugin>:<physical id>``."""
    return hashlib.sha1(f"{plugin}:{physical_id}".encode()).hexdigest()


#: a property's type in its wire form, by D-Bus signature (DeviceInfo's fields).
_WIRE_TYPES: dict[str, Any] = {
    "s": str,
    "u": int,
    "as": tuple[str, ...],
    "a{ss}": dict[str, str],
}


class DeviceInfo(Model, frozen=True):
    """A frozen snapshot of a device in its wire form.

    One field per property row (:data:`livefw.device_properties.PROPERTIES`), flags
    sorted, states as text.
    """

    __annotations__ = {prop.attribute: _WIRE_TYPES[prop.signature] for prop in PROPERTIES}


Listener = Callable[["Device", frozenset[str]], None]

#: the properties the constructor takes as keywords, and those :meth:`Device.update` takes.
_INIT = frozenset(prop.attribute for prop in PROPERTIES if prop.init)
_SETTABLE = frozenset(prop.attribute for prop in PROPERTIES if prop.settable)


class Device(DeviceProperties):
    """A device a plugin found.

    Its properties (``name``, ``version``, ``flags``, ``update_state`` ...) are the
    rows of :class:`~livefw.device_properties.DeviceProperties`; the constructor takes
    those marked ``init`` as keywords (``name`` is required), the others start at
    their default. The keywords are typed (:class:`~livefw.device_properties.DeviceInit`,
    :class:`~livefw.device_properties.DeviceChanges`), so mypy refuses a misspelt
    property or a value of the wrong type where a plugin builds or updates a device.

    Attributes:
        interfaces: extra D-Bus interfaces the bus layer exports on this device's
            object (``org.livefw.Daemon1.Telemetry`` ...), by name.
    """

    interfaces: ClassVar[tuple[str, ...]] = ()

    def __init__(self, plugin: str, physical_id: str, **properties: Unpack[DeviceInit]) -> None:
        """Raises TypeError on a property the constructor does not take or a missing one."""
        given: Mapping[str, Any] = properties
        unknown = set(given) - _INIT
        if unknown:
            raise TypeError(f"unknown device properties: {sorted(unknown)}")
        values = self.__dict__
        values["plugin"] = plugin
        values["physical_id"] = physical_id
        values["id"] = device_id(plugin, physical_id)
        for prop in PROPERTIES:
            if not prop.settable:
                continue
            raw = given.get(prop.attribute, prop.default)
            if raw is REQUIRED:
                raise TypeError(f"a device needs its {prop.attribute}")
            values[prop.attribute] = prop.convert(raw)
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------- change tracking

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(device, changed_names)`` after every effective update."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def update(self, **changes: Unpack[DeviceChanges]) -> frozenset[str]:
        """Change properties and notify listeners of those that really changed.

        ``flags`` and ``guids`` take any iterable; ``update_state`` is checked
        against the transition table; text and metadata are sanitised
        (:func:`livefw.sanitize.clean`).

        Returns:
            The names of the properties that changed.

        Raises:
            TypeError: an unknown property name.
        """
        given: Mapping[str, Any] = changes
        unknown = set(given) - _SETTABLE
        if unknown:
            raise TypeError(f"unknown device properties: {sorted(unknown)}")
        changed = set()
        values = self.__dict__
        for key, raw in given.items():
            value = BY_ATTRIBUTE[key].value(values[key], raw)
            if values[key] != value:
                values[key] = value
                changed.add(key)
        result = frozenset(changed)
        if result:
            for listener in list(self._listeners):
                listener(self, result)
        return result

    def set_flag(self, flag: str, value: bool) -> None:
        """Add or remove one flag."""
        self.update(flags=self.flags | {flag} if value else self.flags - {flag})

    def info(self) -> DeviceInfo:
        """A frozen snapshot."""
        return DeviceInfo(**{prop.attribute: prop.wire_value(self) for prop in PROPERTIES})

    # ---------------------------------------------------------- plugin hooks

    async def refresh(self) -> None:
        """Re-read live kernel state (e.g. LFA pending image). Default: nothing."""

    def check_activate(self) -> None:
        """Raise before any lock is taken if this device cannot be activated now.

        Raises:
            NotSupported: the device cannot activate at all.
            NothingToDo: nothing is pending.
        """
        raise NotSupported(f"{self.name} cannot be activated: it has no activation interface")

    async def activate(self, op: Operation) -> str:
        """Activate a pending or staged image; return the version now running.

        Runs under the engine lock, after the history row was written; report
        progress and record what reconciliation needs through ``op``.
        """
        raise NotSupported(f"{self.name} cannot be activated")

    def check_cancel(self) -> None:
        """Raise if there is nothing this device could cancel."""
        raise NotSupported(f"{self.name} has nothing that can be cancelled")

    async def cancel(self) -> None:
        """Cancel a staged update or activation."""
        raise NotSupported(f"{self.name} has nothing that can be cancelled")

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        """Validate a payload without side effects; return the version it carries.

        Only what is this device's own: the engine's planner (livefw.planner) calls it
        once per plan and then applies the version rules (livefw.versions: older,
        same, lowest) to the version returned, so a device never compares versions.

        Raises:
            NotSupported: the device takes no payloads.
            PayloadMismatch: the payload is this plugin's kind but for another device
                (platform, update type, ESRT entry); the planner names the closest.
            InvalidFile: the payload is refused for what it is.
        """
        raise NotSupported(f"{self.name} is not updatable through livefw")

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        """Write a checked payload and stage (or apply) it.

        Runs under the engine lock, after the history row was written; record
        every artefact staged (``op.record``) before writing it.
        """
        raise NotSupported(f"{self.name} is not updatable through livefw")
