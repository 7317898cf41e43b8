"""The kernel boundary: the one interface through which livefw touches the machine.

Plugins never call ``os``, ``fcntl``, ``mmap`` or ``pyudev``. They ask a
:class:`KernelProvider` for sysfs attributes, directory listings, files and device
nodes; a device node comes back as a :class:`Handle` offering ``read``, a one-call
``write``, ``ioctl`` on that open file, a read-only ``mmap`` and ``close``.

Two implementations exist: :class:`livefw.kernel.real.RealProvider` (the machine,
under a configurable root) and :class:`livefw.kernel.sim.SimProvider` (the simulated
machine, kernel and firmware). Paths are always relative (``sys/firmware/lfa``,
``dev/acpi_pfr_update0``); :func:`normalize` rejects absolute paths and ``..``.

Every failed call raises :class:`livefw.errors.KernelError` carrying the errno.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import os
from collections.abc import Callable, Mapping, Sequence
from enum import IntFlag
from typing import Protocol, runtime_checkable

from livefw.errors import InvalidArgument
from livefw.record import FACTORY, Frozen

__all__ = [
    "BOOT_ID_PATH",
    "UEVENT_BUFFER_MAX",
    "UEVENT_RESCAN",
    "WRITE_CHUNK",
    "Handle",
    "KernelProvider",
    "MountEntry",
    "OpenFlags",
    "UEvent",
    "UEventSubscription",
    "make_memfd",
    "normalize",
    "path_parts",
]

#: where the kernel reports the current boot's random id (proc(5)).
BOOT_ID_PATH = "proc/sys/kernel/random/boot_id"
#: contents larger than this are written in writes of at most this many bytes (an ESP
#: capsule; the simulator's blobs). One write(2) of a 64 MiB capsule into ext4's page
#: cache took 0.4-1.2 s on the bench's VM against 0.02-0.14 s for the same bytes in
#: 1 MiB writes; 4 MiB writes were as slow as one (the page cache is then filled with
#: large folios, which that VM backs slowly; bench/NOTES.md, staging). Anything up to
#: this size (an efivarfs variable: one write is one SetVariable) is one write(2).
WRITE_CHUNK = 1 << 20


class OpenFlags(IntFlag):
    """How to open a file through the provider (a subset of open(2) flags)."""

    READ = 1
    WRITE = 2
    RDWR = 3
    CREATE = 4
    EXCLUSIVE = 8
    TRUNCATE = 16


class UEvent(Frozen):
    """A kernel uevent as the provider reports it.

    Attributes:
        action: ``add``, ``remove``, ``change``, ``bind``, ``unbind``.
        devpath: the kobject path below ``/sys`` without the leading slash
            (``firmware/lfa/47d4...``, ``devices/.../fwctl/fwctl0``).
        subsystem: the kobject's subsystem, or ``""`` for plain kobjects.
        properties: the uevent's environment (``DEVNAME``, ``MAJOR`` ...).
    """

    _FIELDS = ("action", "devpath", "subsystem", "properties")
    action: str
    devpath: str
    subsystem: str = ""
    properties: Mapping[str, str]

    def __init__(
        self,
        action: str,
        devpath: str,
        subsystem: str = "",
        properties: Mapping[str, str] = FACTORY,
    ) -> None:
        _set = object.__setattr__
        _set(self, "action", action)
        _set(self, "devpath", devpath)
        _set(self, "subsystem", subsystem)
        _set(self, "properties", dict() if properties is FACTORY else properties)


#: the action of the marker :class:`UEventSubscription` yields after it dropped events
#: (its buffer overflowed, or the netlink socket answered ENOBUFS): the reader must
#: re-enumerate, as udev's own clients do. No kernel action has this name
#: (lib/kobject_uevent.c ``kobject_actions``).
UEVENT_RESCAN = "livefw-rescan"

#: events a subscription holds before it drops them all and asks for a rescan: what
#: arrives during a long coldplug (boot, 10,000 simulated devices) costs bounded memory.
UEVENT_BUFFER_MAX = 4096


class UEventSubscription:
    """The uevents received since :meth:`KernelProvider.subscribe_uevents` returned.

    udev's rule for enumerating without a gap (libudev(3), sd-device): start the
    monitor first, then enumerate, then read the monitor; an ``add`` for a device
    already known is then a no-op and a ``remove`` for an unknown one likewise. The
    provider binds its source (netlink socket, simulated queue) before returning
    this object, and the object buffers what arrives until it is read, up to
    ``limit`` events. Beyond that it drops the buffer, counts the loss in
    :attr:`dropped`, and yields one ``UEvent(UEVENT_RESCAN, "")`` next: the reader
    re-enumerates instead. Events put after the overflow follow the marker.

    Iterate it (``async for``) in one task; :meth:`close` (idempotent) releases the
    source and ends the iteration. Not thread-safe: :meth:`put_nowait` runs on the loop.
    """

    def __init__(
        self, limit: int = UEVENT_BUFFER_MAX, on_close: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        #: events dropped by overflows since the subscription started.
        self.dropped = 0
        self._events: collections.deque[UEvent] = collections.deque()
        self._rescan = False
        self._closed = False
        self._wakeup = asyncio.Event()
        self._on_close = on_close

    @property
    def pending(self) -> int:
        """Events buffered and not read yet (the rescan marker counts as one)."""
        return len(self._events) + int(self._rescan)

    def put_nowait(self, event: UEvent) -> None:
        """Buffer one event (the provider's reader, on the loop's thread).

        Named like :meth:`asyncio.Queue.put_nowait`, so a subscription fits wherever
        a queue of events does; it never raises QueueFull (see :meth:`overflow`).
        """
        if self._closed:
            return
        if len(self._events) >= self.limit:
            self.overflow(1)
            return
        self._events.append(event)
        self._wakeup.set()

    def overflow(self, lost: int = 0) -> None:
        """Events were lost: drop the buffer and yield the rescan marker next."""
        self.dropped += len(self._events) + lost
        self._events.clear()
        self._rescan = True
        self._wakeup.set()

    def __aiter__(self) -> UEventSubscription:
        return self

    async def __anext__(self) -> UEvent:
        while True:
            if self._rescan:
                self._rescan = False
                return UEvent(UEVENT_RESCAN, "")
            if self._events:
                return self._events.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        """Release the source; a reader waiting in ``async for`` stops."""
        if self._closed:
            return
        self._closed = True
        self._events.clear()
        self._rescan = False
        self._wakeup.set()
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback()


class MountEntry(Frozen):
    """One line of ``/proc/self/mountinfo``, reduced to what livefw uses."""

    _FIELDS = ("mount_point", "fs_type", "source", "major", "minor", "options")
    mount_point: str
    fs_type: str
    source: str
    major: int
    minor: int
    options: tuple[str, ...] = ()

    def __init__(
        self,
        mount_point: str,
        fs_type: str,
        source: str,
        major: int,
        minor: int,
        options: tuple[str, ...] = (),
    ) -> None:
        _set = object.__setattr__
        _set(self, "mount_point", mount_point)
        _set(self, "fs_type", fs_type)
        _set(self, "source", source)
        _set(self, "major", major)
        _set(self, "minor", minor)
        _set(self, "options", options)


@runtime_checkable
class Handle(Protocol):
    """An open file or device node.

    All methods raise :class:`livefw.errors.KernelError` with the errno on failure.
    """

    path: str

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all when -1)."""

    async def write(self, data: bytes | memoryview) -> int:
        """Write ``data`` in exactly one write(2) call; returns the count written."""

    async def ioctl(
        self,
        request: int,
        arg: bytearray | None = None,
        pointers: Mapping[int, bytearray] | None = None,
    ) -> int:
        """Issue an ioctl on this open file.

        Args:
            request: the ioctl request number (from ``livefw.kernel.uapi``).
            arg: the packed argument struct, updated in place with what the kernel
                copies back; ``None`` passes 0.
            pointers: user-space buffers the struct points at, keyed by the byte
                offset of the u64 pointer field in ``arg``. The provider fills in the
                addresses; buffers are updated in place.

        Returns:
            The ioctl's non-negative return value.
        """

    async def mmap(self, length: int) -> memoryview:
        """Map ``length`` bytes read-only (``PROT_READ``, ``MAP_SHARED``)."""

    def fileno(self) -> int:
        """The file descriptor (real in both providers, so it can cross D-Bus)."""

    async def close(self) -> None:
        """Close the file; closing twice is harmless."""


@runtime_checkable
class KernelProvider(Protocol):
    """Primitives over sysfs, device nodes, efivarfs, the ESP and uevents.

    Attributes:
        simulated: True for the simulated machine.
    """

    simulated: bool

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists (file, directory or node)."""

    async def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory."""

    async def listdir(self, path: str) -> list[str]:
        """Sorted names in directory ``path``. Raises KernelError(ENOENT/ENOTDIR)."""

    async def read_attr(self, path: str) -> str:
        """Read a sysfs/proc attribute as text (trailing newline stripped)."""

    async def write_attr(self, path: str, value: str) -> None:
        """Write a sysfs attribute in one write(2). May block for a long time."""

    async def read_file(self, path: str) -> bytes:
        """Read a whole file (efivarfs variable, file on the ESP)."""

    async def write_file(
        self, path: str, data: bytes | memoryview, *, durable: bool = False
    ) -> None:
        """Create or replace ``path`` with ``data`` in one write(2).

        Contents larger than :data:`WRITE_CHUNK` go in writes of that size, each
        complete.

        ``durable`` adds an fsync of the file before returning.
        """

    async def unlink(self, path: str) -> None:
        """Remove a file."""

    async def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` over ``dst`` (same filesystem)."""

    async def makedirs(self, path: str) -> None:
        """Create a directory and its parents; existing ones are fine."""

    async def get_immutable(self, path: str) -> bool:
        """Whether ``FS_IMMUTABLE_FL`` is set (FS_IOC_GETFLAGS)."""

    async def set_immutable(self, path: str, value: bool) -> None:
        """Set or clear ``FS_IMMUTABLE_FL`` (FS_IOC_SETFLAGS)."""

    async def free_space(self, path: str) -> int:
        """Free bytes on the filesystem holding ``path`` (statvfs)."""

    async def mounts(self) -> list[MountEntry]:
        """The mount table (``/proc/self/mountinfo``)."""

    async def udev_properties(self, subsystem: str, major: int, minor: int) -> dict[str, str]:
        """Udev's properties of a device node (e.g. ``ID_PART_ENTRY_UUID``)."""

    async def open(self, path: str, flags: OpenFlags = OpenFlags.READ) -> Handle:
        """Open a file or device node and return its handle."""

    async def kexec(self) -> None:
        """reboot(LINUX_REBOOT_CMD_KEXEC): switch to the kernel loaded by ``kexec -l``."""

    async def adopt_fd(self, fd: int, path: str) -> Handle:
        """Own a descriptor the kernel returned inside an ioctl struct.

        Some ioctls return new file descriptors in their argument (LUO session fds,
        retrieved files). The returned handle owns ``fd`` and closes it; ``path`` only
        labels it in errors and logs.
        """

    async def create_memfd(self, name: str, data: bytes, *, seals: int = 0) -> Handle:
        """memfd_create(2) (close-on-exec, sealing allowed) holding ``data``.

        The file position is left at 0 and ``seals`` (``F_SEAL_*``) are added last.
        """

    async def store_fds(self, name: str, handles: Sequence[Handle]) -> bool:
        """Keep open files across a daemon restart in the service manager's fd store.

        ``FDSTORE=1``/``FDNAME=name`` to systemd (``FileDescriptorStoreMax=``); the
        handles stay open here too. Storing the same file again is harmless.

        Returns:
            False when no service manager listens (``$NOTIFY_SOCKET`` unset).
        """

    async def unstore_fds(self, name: str) -> None:
        """Drop every descriptor stored under ``name`` (``FDSTOREREMOVE=1``)."""

    async def stored_fds(self, prefix: str) -> dict[str, list[Handle]]:
        """The descriptors this process inherited from the fd store, by name.

        Returns (and removes from the inherited set) every name starting with
        ``prefix``; the caller owns the handles.
        """

    async def subscribe_uevents(self) -> UEventSubscription:
        """Start receiving uevents now and return them as a buffered subscription.

        The source (udev's netlink socket, the simulated machine's fan-out) is bound
        before this returns, so a device that appears while the caller then
        enumerates (coldplug) is reported even if the enumeration missed it. Read
        it in one task; :meth:`UEventSubscription.close` stops it.

        Raises:
            KernelError: the source cannot be opened (no netlink socket allowed).
        """

    async def close(self) -> None:
        """Release the provider's resources (uevent monitor, sim state)."""


def path_parts(path: str) -> list[str]:
    """The components of a provider path (what :func:`normalize` joins).

    A lookup walks these directly: joining and splitting again cost ~10 µs per
    lookup, and coldplug at 1,000 devices makes ~20,000 lookups (issue 17).

    Raises:
        InvalidArgument: for absolute paths, ``..`` components and empty paths, so
            nothing a caller supplies can leave the provider's root.
    """
    if not path or path[0] == "/" or "\x00" in path:
        raise InvalidArgument(f"kernel path must be relative and non-empty: {path!r}")
    parts = path.split("/")
    if "" in parts or "." in parts:
        parts = [part for part in parts if part not in ("", ".")]
    if ".." in parts or not parts:
        raise InvalidArgument(f"kernel path must stay below the root: {path!r}")
    return parts


def normalize(path: str) -> str:
    """Return the canonical relative form of a provider path.

    Raises:
        InvalidArgument: for absolute paths, ``..`` components and empty paths, so
            nothing a caller supplies can leave the provider's root.
    """
    return "/".join(path_parts(path))


def make_memfd(name: str, data: bytes, seals: int = 0) -> int:
    """A close-on-exec, sealable memfd holding ``data``, positioned at 0, with ``seals``.

    Both providers' ``create_memfd`` (here, not in livefw.kernel.real: the simulator
    would import the real provider, ctypes and mmap for it at every start).

    Raises:
        OSError: memfd_create, write or F_ADD_SEALS failed (the fd is closed).
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        if seals:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(fd)
        raise
    return fd
