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
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from livefw.errors import NotSupported
from livefw.sanitize import NAME_MAX, TEXT_MAX, clean
from livefw.state import Status, UpdateState, transition

if TYPE_CHECKING:
    from livefw.plugin import InstallOptions, InstallResult, Operation, Payload

__all__ = ["Device", "DeviceInfo", "device_id"]


def device_id(plugin: str, physical_id: str) -> str:
    """The stable device Id: lowercase hex SHA-1 of ``<plugin>:<physical id>``."""
    return hashlib.sha1(f"{plugin}:{physical_id}".encode()).hexdigest()


class DeviceInfo(BaseModel):
    """A frozen snapshot of a device, as it crosses to the CLI and JSON output."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    vendor: str
    summary: str
    plugin: str
    protocol: str
    physical_id: str
    guids: tuple[str, ...]
    version: str
    version_lowest: str
    version_pending: str
    flags: tuple[str, ...]
    update_state: str
    update_error: str
    status: str
    percentage: int
    metadata: dict[str, str]


#: string properties sanitised on the way in, with their length cap.
_TEXT_FIELDS = {
    "name": NAME_MAX,
    "vendor": NAME_MAX,
    "summary": TEXT_MAX,
    "protocol": NAME_MAX,
    "version": NAME_MAX,
    "version_lowest": NAME_MAX,
    "version_pending": NAME_MAX,
    "update_error": TEXT_MAX,
}
#: at most this many metadata entries are kept (firmware decides how many it reports).
METADATA_MAX = 64


def _clean_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    items = list(metadata.items())[:METADATA_MAX]
    return {clean(key, 64): clean(value, TEXT_MAX) for key, value in items}


Listener = Callable[["Device", frozenset[str]], None]

#: The properties :meth:`Device.update` accepts.
_FIELDS = frozenset(
    {
        "name",
        "vendor",
        "summary",
        "protocol",
        "guids",
        "version",
        "version_lowest",
        "version_pending",
        "flags",
        "update_state",
        "update_error",
        "status",
        "percentage",
        "metadata",
    }
)


class Device:
    """A device a plugin found.

    Attributes:
        interfaces: extra D-Bus interfaces the bus layer exports on this device's
            object (``org.livefw.Daemon1.Telemetry`` ...), by name.
    """

    interfaces: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        plugin: str,
        physical_id: str,
        *,
        name: str,
        vendor: str = "",
        summary: str = "",
        protocol: str = "",
        guids: Iterable[str] = (),
        version: str = "",
        version_lowest: str = "",
        version_pending: str = "",
        flags: Iterable[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.plugin = plugin
        self.physical_id = physical_id
        self.id = device_id(plugin, physical_id)
        self.name = clean(name, NAME_MAX)
        self.vendor = clean(vendor, NAME_MAX)
        self.summary = clean(summary, TEXT_MAX)
        self.protocol = clean(protocol, NAME_MAX)
        self.guids: tuple[str, ...] = tuple(guids)
        self.version = clean(version, NAME_MAX)
        self.version_lowest = clean(version_lowest, NAME_MAX)
        self.version_pending = clean(version_pending, NAME_MAX)
        self.flags: frozenset[str] = frozenset(flags)
        self.update_state = UpdateState.NONE
        self.update_error = ""
        self.status = Status.IDLE
        self.percentage = 0
        self.metadata: dict[str, str] = _clean_metadata(metadata or {})
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------- change tracking

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(device, changed_names)`` after every effective update."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def update(self, **changes: Any) -> frozenset[str]:
        """Change properties and notify listeners of those that really changed.

        ``flags`` and ``guids`` take any iterable; ``update_state`` is checked
        against the transition table; text and metadata are sanitised
        (:func:`livefw.sanitize.clean`).

        Returns:
            The names of the properties that changed.

        Raises:
            TypeError: an unknown property name.
        """
        unknown = set(changes) - _FIELDS
        if unknown:
            raise TypeError(f"unknown device properties: {sorted(unknown)}")
        changed = set()
        for key, value in changes.items():
            if key == "flags":
                value = frozenset(value)
            elif key == "guids":
                value = tuple(value)
            elif key == "update_state":
                value = transition(self.update_state, UpdateState(value))
            elif key == "status":
                value = Status(value)
            elif key == "metadata":
                value = _clean_metadata(value)
            elif key in _TEXT_FIELDS:
                value = clean(value, _TEXT_FIELDS[key])
            if getattr(self, key) != value:
                setattr(self, key, value)
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
        return DeviceInfo(
            id=self.id,
            name=self.name,
            vendor=self.vendor,
            summary=self.summary,
            plugin=self.plugin,
            protocol=self.protocol,
            physical_id=self.physical_id,
            guids=self.guids,
            version=self.version,
            version_lowest=self.version_lowest,
            version_pending=self.version_pending,
            flags=tuple(sorted(self.flags)),
            update_state=str(self.update_state),
            update_error=self.update_error,
            status=str(self.status),
            percentage=self.percentage,
            metadata=dict(self.metadata),
        )

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

        Raises:
            NotSupported: the device takes no payloads.
            InvalidFile, VersionNewer, VersionSame: the payload is refused.
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

    async def cleanup(self) -> None:
        """Always called after activate/install/cancel, success or not."""
