"""The plugin contract.

A plugin is a :class:`Plugin` subclass registered under the entry-point group
``livefw.plugins`` (its ``name`` equals its folder and entry point). The engine
constructs it with a :class:`PluginContext`, calls :meth:`Plugin.probe`, then
:meth:`Plugin.coldplug`, feeds it uevents, and hands it unfinished history rows to
reconcile at start-up. Devices are :class:`livefw.device.Device` subclasses.

Plugins import only ``livefw.plugin``, ``livefw.kernel`` and ``livefw.errors``; this
module re-exports what they need from the rest of the daemon.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import structlog

from livefw.device import Device, DeviceInfo, device_id
from livefw.device_properties import DeviceChanges
from livefw.errors import Internal, NoSpace, NotSupported
from livefw.history import HistoryEntry
from livefw.kernel.provider import BOOT_ID_PATH, KernelProvider, UEvent
from livefw.model import Model
from livefw.record import Frozen
from livefw.sanitize import clean as clean_text
from livefw.state import FLAGS, Status, UpdateState
from livefw.statefiles import StateDirError, read_private, write_atomic

__all__ = [
    "FLAGS",
    "ONLY_UPGRADE",
    "Device",
    "DeviceChanges",
    "DeviceContext",
    "DeviceInfo",
    "HistoryEntry",
    "InstallOptions",
    "InstallResult",
    "Operation",
    "Payload",
    "Plugin",
    "PluginContext",
    "Probe",
    "Reconciliation",
    "Status",
    "UEventMatch",
    "UpdateState",
    "clean_text",
    "device_id",
]


#: the device flag of firmware that refuses older images whatever the options (fwupd's
#: ``only-version-upgrade``); the engine's version rules honour it (livefw.versions).
ONLY_UPGRADE = "only-version-upgrade"


class Probe(Model, frozen=True):
    """What :meth:`Plugin.probe` found.

    ``ok``: the machine has the interface; ``unsupported``: it does not, and
    ``reason`` says why in words a person understands; ``defer``: not yet (a
    module still loading). After ``unsupported`` or ``defer`` the engine probes
    again only on a uevent the plugin's :attr:`Plugin.probe_uevents` names (and
    after lost uevents), never on every uevent.
    """

    result: Literal["ok", "unsupported", "defer", "failed"]
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "") -> Probe:
        """The plugin can run."""
        return cls(result="ok", reason=reason)

    @classmethod
    def unsupported(cls, reason: str) -> Probe:
        """The machine lacks the interface."""
        return cls(result="unsupported", reason=reason)

    @classmethod
    def defer(cls, reason: str) -> Probe:
        """Try again later."""
        return cls(result="defer", reason=reason)


class InstallOptions(Model, frozen=True):
    """Options of Install (wire: ``a{sv}`` with kebab-case keys)."""

    allow_older: bool = False
    allow_reinstall: bool = False
    activate: bool = False
    force: bool = False


class Payload(Frozen):
    """A payload a client handed in, read completely and size-checked by the engine.

    ``sha256`` is the hex SHA-256 of ``data`` when whoever made the payload already
    computed it (livefw.fdread while it copied a client's file; a cabinet's payload
    when its checksums were verified), so that the engine does not hash 64 MiB
    again; ``""`` when not known.
    """

    _FIELDS = ("data", "name", "sha256")
    data: bytes
    name: str = ""
    sha256: str = ""

    def __init__(self, data: bytes, name: str = "", sha256: str = "") -> None:
        _set = object.__setattr__
        _set(self, "data", data)
        _set(self, "name", name)
        _set(self, "sha256", sha256)


class InstallResult(Frozen):
    """What :meth:`Device.install` did.

    Attributes:
        state: ``pending``/``needs-reboot`` (staged) or ``success`` (applied).
        version: the version now running (after ``success``) or staged.
    """

    _FIELDS = ("state", "version")
    state: UpdateState
    version: str

    def __init__(self, state: UpdateState, version: str) -> None:
        _set = object.__setattr__
        _set(self, "state", state)
        _set(self, "version", version)


class UEventMatch(Frozen):
    """One kind of uevent that can make a plugin's missing interface appear.

    Every field given must match (``""``: any). The fields are those the kernel
    puts in every uevent (lib/kobject_uevent.c ``kobject_uevent_env()``: ACTION,
    DEVPATH, SUBSYSTEM) and the one a device node adds (drivers/base/core.c
    ``dev_uevent()``: DEVNAME, the node's name below /dev). udev hands DEVNAME on as
    an absolute path (``/dev/acpi_pfr_update0``); both forms match.

    Attributes:
        action: ACTION (``add``: a device registered, a module loaded).
        subsystem: SUBSYSTEM exactly (``misc``, ``fwctl``, ``module``).
        devname: DEVNAME exactly, without ``/dev/`` (``liveupdate``).
        devpath: DEVPATH exactly, below /sys without the leading slash
            (``module/lfa_fw``).
    """

    _FIELDS = ("action", "subsystem", "devname", "devpath")
    action: str = "add"
    subsystem: str = ""
    devname: str = ""
    devpath: str = ""

    def __init__(
        self, action: str = "add", subsystem: str = "", devname: str = "", devpath: str = ""
    ) -> None:
        _set = object.__setattr__
        _set(self, "action", action)
        _set(self, "subsystem", subsystem)
        _set(self, "devname", devname)
        _set(self, "devpath", devpath)

    def matches(self, event: UEvent) -> bool:
        """Whether ``event`` is of this kind."""
        if self.action and event.action != self.action:
            return False
        if self.subsystem and event.subsystem != self.subsystem:
            return False
        if self.devpath and event.devpath.strip("/") != self.devpath:
            return False
        if self.devname:
            name = event.properties.get("DEVNAME", "")
            if name.removeprefix("/dev/") != self.devname:
                return False
        return True


class Reconciliation(Frozen):
    """A plugin's verdict on an unfinished history row.

    Attributes:
        state: ``success``, ``failed`` or ``failed-transient``; or ``pending`` /
            ``needs-reboot`` when the operation turns out to have staged an update
            that still waits (the row becomes ``staged``).
        reason: what happened, for the history and the device's UpdateError.
        version: the version the device runs now, if known.
    """

    _FIELDS = ("state", "reason", "version")
    state: UpdateState
    reason: str = ""
    version: str = ""

    def __init__(self, state: UpdateState, reason: str = "", version: str = "") -> None:
        _set = object.__setattr__
        _set(self, "state", state)
        _set(self, "reason", reason)
        _set(self, "version", version)


class Operation:
    """The operation in flight, handed to a device's install/activate hook.

    Reports progress (``Status``/``Percentage`` on the device and the manager) and
    records data into the operation's history row immediately, so that a crash after
    an irreversible step leaves what reconciliation needs.
    """

    def __init__(
        self,
        op_id: str,
        kind: str,
        device: Device,
        on_progress: Callable[[Status, int], None],
        on_record: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self.id = op_id
        self.kind = kind
        self.device = device
        self._on_progress = on_progress
        self._on_record = on_record
        self._status = Status.LOADING
        self._percentage = 0

    def progress(self, status: Status | None = None, percentage: int | None = None) -> None:
        """Report the current step and/or percentage (0-100)."""
        if status is not None:
            self._status = status
        if percentage is not None:
            self._percentage = max(0, min(100, int(percentage)))
        self._on_progress(self._status, self._percentage)

    def record(self, **data: Any) -> None:
        """Merge JSON-serialisable ``data`` into the history row, durably, now."""
        self._on_record(data)


class PluginContext:
    """What a plugin gets from the engine.

    Attributes:
        provider: the kernel provider (real or simulated).
        config: the plugin's section of livefw.conf (``[plugins.<name>]``).
        log: a structlog logger bound with ``plugin=<name>``.
        state_dir: a directory private to the plugin under the daemon's state dir.
    """

    def __init__(
        self,
        name: str,
        provider: KernelProvider,
        config: Mapping[str, Any],
        state_dir: str,
        add_device: Callable[[Device], None],
        remove_device: Callable[[str], None],
        get_devices: Callable[[], list[Device]],
    ) -> None:
        self.name = name
        self.provider = provider
        self.config = dict(config)
        self.state_dir = state_dir
        self.log = structlog.get_logger("livefw.plugin").bind(plugin=name)
        self._add = add_device
        self._remove = remove_device
        self._get = get_devices

    def add_device(self, device: Device) -> None:
        """Register a device; the bus layer publishes it (InterfacesAdded)."""
        self._add(device)

    def remove_device(self, device_id: str) -> None:
        """Unregister a device (InterfacesRemoved)."""
        self._remove(device_id)

    def devices(self) -> list[Device]:
        """This plugin's registered devices."""
        return [device for device in self._get() if device.plugin == self.name]

    async def boot_id(self) -> str:
        """The kernel's boot id (changes at every boot and kexec)."""
        return await self.provider.read_attr(BOOT_ID_PATH)

    def _state_path(self, name: str) -> str:
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise ValueError(f"a state file name is one path component, not {name!r}")
        return f"{self.state_dir}/{name}"

    def read_state(self, name: str, limit: int = 1 << 24) -> bytes | None:
        """A file in the plugin's state dir, or None when there is none.

        Never follows a symlink (livefw.statefiles); the file is at most ``limit`` bytes.

        Raises:
            Internal: the file is unsafe (a link, another user's) or unreadable.
        """
        try:
            return read_private(self._state_path(name), limit)
        except (StateDirError, OSError) as error:
            raise Internal(f"cannot read {name} in {self.state_dir}: {_why(error)}") from error

    def write_state(self, name: str, data: bytes) -> None:
        """Replace a file in the plugin's state dir, atomically, mode 0600, never via a link.

        Raises:
            NoSpace: the filesystem is full (the previous file is unchanged).
            Internal: any other failure (the previous file is unchanged).
        """
        try:
            write_atomic(self._state_path(name), data)
        except (StateDirError, OSError) as error:
            cls = NoSpace if getattr(error, "errno", None) == errno.ENOSPC else Internal
            raise cls(f"cannot write {name} in {self.state_dir}: {_why(error)}") from error


class DeviceContext:
    """What a plugin's devices need to do their own operations (fwupd's FuContext).

    A device gets one of these instead of a link to its plugin. Each plugin
    subclasses it once for its technology and adds the firmware state its devices
    share (PFRU's single staged capsule and update lock, the UEFI plugin's ESP and
    capsule environment, the live-update broker's sessions); the plugin creates
    the one instance, keeps it, and hands it to every device it creates. Devices
    never import or reach their :class:`Plugin`.

    Attributes:
        plugin: the engine's :class:`PluginContext` (device registry, state files).
    """

    def __init__(self, plugin: PluginContext) -> None:
        self.plugin = plugin

    @property
    def provider(self) -> KernelProvider:
        """The kernel provider (real or simulated)."""
        return self.plugin.provider

    @property
    def config(self) -> dict[str, Any]:
        """The plugin's section of livefw.conf."""
        return self.plugin.config

    @property
    def log(self) -> Any:
        """The plugin's structlog logger."""
        return self.plugin.log


def _why(error: Exception) -> str:
    return (error.strerror or str(error)) if isinstance(error, OSError) else str(error)


class Plugin(ABC):
    """One kernel technology.

    Attributes:
        name: equals the folder, the entry point and the devices' ``Plugin``.
        probe_uevents: the uevents that can make this plugin's interface appear
            after :meth:`probe` found it missing (a driver binding, a module
            loading). The engine probes a waiting plugin again only on one of
            these, so a machine's stream of unrelated uevents (ttys, disks,
            network) costs it nothing. Empty: the interface cannot appear while the
            system runs (built in and set up at boot), so only a lost-uevent rescan
            probes again. Each entry cites the kernel source that emits it.
    """

    name: ClassVar[str]
    probe_uevents: ClassVar[tuple[UEventMatch, ...]] = ()

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    @abstractmethod
    async def probe(self) -> Probe:
        """Is this machine capable? Never raises for an absent interface."""

    @abstractmethod
    async def coldplug(self) -> None:
        """Create the devices present now."""

    async def on_uevent(self, event: UEvent) -> None:
        """Hotplug: add or remove devices. Default: ignore.

        Called with every uevent while the plugin is loaded (its probe said ``ok``);
        a plugin picks its own events out (:attr:`probe_uevents` only decides when a
        plugin that is not loaded is probed again).
        """

    async def refresh(self) -> None:
        """Re-scan (``livefw refresh``): add, update and remove devices."""

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """Decide from kernel state what happened to an unfinished history row.

        Args:
            entry: the row, with the data the operation recorded.
            boot_changed: the boot id differs from the one the row was written in.

        Returns:
            The verdict, or None when the operation is legitimately still pending
            (e.g. a capsule staged for the next reboot and no reboot happened); an
            install row the daemon never finished then becomes ``staged``. The
            engine marks the row ``failed: interrupted`` only when this raises
            NotSupported (the plugin cannot tell), which is the default.
        """
        raise NotSupported(f"the {self.name} plugin cannot tell what happened")

    async def shutdown(self) -> None:
        """Release resources when the daemon stops."""
