"""The real kernel provider: os, fcntl, mmap and pyudev under a configurable root.

The root is ``/`` in production; tests and tools can point it at a directory tree
(as power-profiles-daemon does with ``UMOCKDEV_DIR``). Blocking system calls run in
worker threads so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from livefw.errors import KernelError
from livefw.kernel.fdstore import FdStore
from livefw.kernel.provider import (
    WRITE_CHUNK,
    Handle,
    MountEntry,
    OpenFlags,
    UEvent,
    UEventSubscription,
    make_memfd,
    normalize,
)
from livefw.kernel.uapi.fs import FS_IMMUTABLE_FL, FS_IOC_GETFLAGS, FS_IOC_SETFLAGS

T = TypeVar("T")

#: reboot(2) command that starts the kernel loaded with kexec_load/kexec_file_load
#: (include/uapi/linux/reboot.h LINUX_REBOOT_CMD_KEXEC; glibc <sys/reboot.h> RB_KEXEC).
LINUX_REBOOT_CMD_KEXEC = 0x45584543


def _call(op: str, path: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except OSError as error:
        raise KernelError(error.errno or errno.EIO, op, path) from error


class RealHandle:
    """An open file descriptor on the real machine."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._maps: list[mmap.mmap] = []

    def fileno(self) -> int:
        """The file descriptor."""
        return self._fd

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes, or to end of file."""

        def run() -> bytes:
            if size >= 0:
                return os.read(self._fd, size)
            chunks = []
            while chunk := os.read(self._fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)

        return await asyncio.to_thread(_call, "read", self.path, run)

    async def write(self, data: bytes | memoryview) -> int:
        """One write(2) call, as PFRU and efivarfs require."""
        return await asyncio.to_thread(_call, "write", self.path, lambda: os.write(self._fd, data))

    async def ioctl(
        self,
        request: int,
        arg: bytearray | None = None,
        pointers: Mapping[int, bytearray] | None = None,
    ) -> int:
        """ioctl(2) with pointer fields filled from ``pointers``."""
        buffers: dict[int, ctypes.Array[ctypes.c_char]] = {}
        if arg is not None and pointers:
            for offset, buf in pointers.items():
                cbuf = ctypes.create_string_buffer(bytes(buf), max(len(buf), 1))
                buffers[offset] = cbuf
                struct.pack_into("<Q", arg, offset, ctypes.addressof(cbuf))

        def run() -> int:
            if arg is None:
                return int(fcntl.ioctl(self._fd, request, 0))
            return int(fcntl.ioctl(self._fd, request, arg, True))

        result = await asyncio.to_thread(_call, "ioctl", self.path, run)
        if arg is not None and pointers:
            for offset, buf in pointers.items():
                buf[:] = buffers[offset].raw[: len(buf)]
                struct.pack_into("<Q", arg, offset, 0)
        return result

    async def mmap(self, length: int) -> memoryview:
        """Read-only shared mapping of ``length`` bytes at offset 0."""
        mapping = _call(
            "mmap",
            self.path,
            lambda: mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ),
        )
        self._maps.append(mapping)
        return memoryview(mapping).toreadonly()

    async def close(self) -> None:
        """Close the descriptor and any mappings."""
        for mapping in self._maps:
            # a caller may still hold a view; the GC unmaps it then
            with contextlib.suppress(BufferError):
                mapping.close()
        self._maps.clear()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class RealProvider:
    """Kernel access on this machine, below ``root``."""

    simulated = False

    def __init__(self, root: str = "/", fd_store: FdStore | None = None) -> None:
        self.root = os.path.abspath(root)
        #: systemd's fd store (from $NOTIFY_SOCKET and LISTEN_FDS at construction).
        self.fd_store = fd_store if fd_store is not None else FdStore()
        self._monitor: object | None = None

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, normalize(path))

    async def exists(self, path: str) -> bool:
        """Whether the path exists."""
        # sysfs/proc stat calls do not block on I/O; no thread hop needed
        return os.path.lexists(self._abs(path))  # noqa: ASYNC240

    async def is_dir(self, path: str) -> bool:
        """Whether the path is a directory."""
        return os.path.isdir(self._abs(path))  # noqa: ASYNC240

    async def listdir(self, path: str) -> list[str]:
        """Sorted directory entries."""
        full = self._abs(path)
        return sorted(_call("listdir", path, lambda: os.listdir(full)))

    async def read_attr(self, path: str) -> str:
        """Read an attribute, trailing newline stripped."""
        data = await self.read_file(path)
        return data.decode("utf-8", "replace").rstrip("\n")

    async def write_attr(self, path: str, value: str) -> None:
        """One write(2) to a sysfs attribute (can block for a long time)."""
        full = self._abs(path)

        def run() -> None:
            fd = os.open(full, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)

        await asyncio.to_thread(_call, "write", path, run)

    async def read_file(self, path: str) -> bytes:
        """Read a whole file."""
        full = self._abs(path)

        def run() -> bytes:
            with open(full, "rb", buffering=0) as handle:
                return handle.read()

        return await asyncio.to_thread(_call, "read", path, run)

    async def write_file(
        self, path: str, data: bytes | memoryview, *, durable: bool = False
    ) -> None:
        """Create or replace a file with one write(2), or 1 MiB writes past that.

        Each write must be complete (a short one is EIO, as one short write(2) was:
        efivarfs takes a variable in one write). See :data:`WRITE_CHUNK` for why a
        capsule is not one write.
        """
        full = self._abs(path)

        def run() -> None:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                with memoryview(data) as view:
                    for at in range(0, max(len(view), 1), WRITE_CHUNK):
                        chunk = view[at : at + WRITE_CHUNK]
                        if os.write(fd, chunk) != len(chunk):
                            raise OSError(errno.EIO, "short write")
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(_call, "write", path, run)

    async def unlink(self, path: str) -> None:
        """Remove a file."""
        full = self._abs(path)
        await asyncio.to_thread(_call, "unlink", path, lambda: os.unlink(full))

    async def rename(self, src: str, dst: str) -> None:
        """Atomic rename, then fsync of the directory."""
        full_src, full_dst = self._abs(src), self._abs(dst)

        def run() -> None:
            os.rename(full_src, full_dst)
            dir_fd = os.open(os.path.dirname(full_dst), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        await asyncio.to_thread(_call, "rename", dst, run)

    async def makedirs(self, path: str) -> None:
        """Mkdir -p."""
        full = self._abs(path)
        _call("mkdir", path, lambda: os.makedirs(full, exist_ok=True))

    async def get_immutable(self, path: str) -> bool:
        """FS_IOC_GETFLAGS & FS_IMMUTABLE_FL."""
        return bool(self._get_flags(path) & FS_IMMUTABLE_FL)

    def _get_flags(self, path: str) -> int:
        full = self._abs(path)

        def run() -> int:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
            try:
                buf = bytearray(8)
                fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
                return int(struct.unpack_from("<l", buf)[0])
            finally:
                os.close(fd)

        return _call("ioctl", path, run)

    async def set_immutable(self, path: str, value: bool) -> None:
        """Set or clear FS_IMMUTABLE_FL (needs CAP_LINUX_IMMUTABLE)."""
        full = self._abs(path)
        flags = self._get_flags(path)
        flags = flags | FS_IMMUTABLE_FL if value else flags & ~FS_IMMUTABLE_FL

        def run() -> None:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<l", flags))
            finally:
                os.close(fd)

        _call("ioctl", path, run)

    async def free_space(self, path: str) -> int:
        """statvfs: bytes available to unprivileged... and root alike (f_bavail)."""
        result = _call("statvfs", path, lambda: os.statvfs(self._abs(path)))
        return result.f_bavail * result.f_frsize

    async def mounts(self) -> list[MountEntry]:
        """Parse proc/self/mountinfo below the root."""
        text = (await self.read_file("proc/self/mountinfo")).decode("utf-8", "replace")
        entries = []
        for line in text.splitlines():
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 6 or len(tail) < 2:
                continue
            major, _, minor = fields[2].partition(":")
            entries.append(
                MountEntry(
                    mount_point=_unescape_mount(fields[4]),
                    fs_type=tail[0],
                    source=_unescape_mount(tail[1]),
                    major=int(major),
                    minor=int(minor),
                    # per-mount options, then the file system's own (vfat's uid=/gid=
                    # live there; uefi_capsule refuses user-owned ESP candidates)
                    options=tuple(fields[5].split(","))
                    + (tuple(tail[2].split(",")) if len(tail) > 2 else ()),
                )
            )
        return entries

    async def udev_properties(self, subsystem: str, major: int, minor: int) -> dict[str, str]:
        """Properties from the udev database through pyudev."""
        import pyudev

        def run() -> dict[str, str]:
            context = pyudev.Context()
            kind = "block" if subsystem == "block" else "char"
            device = pyudev.Devices.from_device_number(context, kind, os.makedev(major, minor))
            return {str(key): str(device.properties[key]) for key in device.properties}

        try:
            return await asyncio.to_thread(run)
        except (pyudev.DeviceNotFoundError, OSError) as error:
            raise KernelError(errno.ENODEV, "udev", f"{subsystem} {major}:{minor}") from error

    async def open(self, path: str, flags: OpenFlags = OpenFlags.READ) -> RealHandle:
        """open(2) with O_CLOEXEC."""
        mode = {
            OpenFlags.READ: os.O_RDONLY,
            OpenFlags.WRITE: os.O_WRONLY,
        }.get(flags & OpenFlags.RDWR, os.O_RDWR)
        if flags & OpenFlags.CREATE:
            mode |= os.O_CREAT
        if flags & OpenFlags.EXCLUSIVE:
            mode |= os.O_EXCL
        if flags & OpenFlags.TRUNCATE:
            mode |= os.O_TRUNC
        full = self._abs(path)
        fd = await asyncio.to_thread(
            _call, "open", path, lambda: os.open(full, mode | os.O_CLOEXEC)
        )
        return RealHandle(path, fd)

    async def kexec(self) -> None:
        """reboot(LINUX_REBOOT_CMD_KEXEC); only returns on failure.

        glibc's ``reboot(int howto)`` takes the command alone and passes
        LINUX_REBOOT_MAGIC1/MAGIC2 to the system call itself (sysdeps/unix/sysv/linux/
        reboot.c); passing the magic numbers here would make the magic the command,
        which kernel/reboot.c refuses with EINVAL. The kernel then runs
        ``kernel_kexec()`` (kernel/kexec_core.c), whose errnos the caller maps.

        Raises:
            KernelError: the errno of reboot(2) (EPERM without CAP_SYS_BOOT, EINVAL
                when no kernel is loaded, EBUSY, EAGAIN, or a LUO file handler's).
        """
        libc = ctypes.CDLL(None, use_errno=True)
        reboot = libc.reboot
        reboot.argtypes = [ctypes.c_int]
        reboot.restype = ctypes.c_int
        result = reboot(LINUX_REBOOT_CMD_KEXEC)
        if result != 0:
            raise KernelError(ctypes.get_errno() or errno.EIO, "reboot", "kexec")

    async def adopt_fd(self, fd: int, path: str) -> RealHandle:
        """Own a descriptor an ioctl returned."""
        return RealHandle(path, fd)

    async def create_memfd(self, name: str, data: bytes, *, seals: int = 0) -> RealHandle:
        """memfd_create(2) with ``data``, position 0, then ``seals``."""
        fd = _call("memfd_create", name, lambda: make_memfd(name, data, seals))
        return RealHandle(f"memfd:{name}", fd)

    async def store_fds(self, name: str, handles: Sequence[Handle]) -> bool:
        """Push the handles' descriptors into systemd's fd store."""
        return self.fd_store.push(name, [handle.fileno() for handle in handles])

    async def unstore_fds(self, name: str) -> None:
        """``FDSTOREREMOVE=1`` for ``name``."""
        self.fd_store.remove(name)

    async def stored_fds(self, prefix: str) -> dict[str, list[Handle]]:
        """Inherited fd-store descriptors under ``prefix``."""
        found: dict[str, list[Handle]] = {}
        for name, fd in self.fd_store.take(prefix):
            found.setdefault(name, []).append(RealHandle(f"fdstore:{name}", fd))
        return found

    async def subscribe_uevents(self) -> UEventSubscription:
        """Udev's netlink monitor, bound and read (``loop.add_reader``) from now on.

        The socket is created, bound to udev's multicast group and watched before
        this returns (pyudev ``Monitor.start``: ``udev_monitor_enable_receiving``),
        so what udev announces while the plugins enumerate waits in the
        subscription. ENOBUFS from the socket (the kernel dropped messages for a
        full receive buffer, netlink_overrun() in net/netlink/af_netlink.c) turns
        into the subscription's rescan marker.
        """
        import pyudev

        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.start()
        except OSError as error:
            raise KernelError(error.errno or errno.EIO, "udev", "netlink monitor") from error
        loop = asyncio.get_running_loop()
        fd = monitor.fileno()

        def on_close() -> None:
            # pyudev has no close(): libudev closes the socket when the Monitor is
            # dropped (Monitor.__del__ -> udev_monitor_unref), i.e. once the loop
            # and the subscription release these two closures
            loop.remove_reader(fd)

        subscription = UEventSubscription(on_close=on_close)

        def on_readable() -> None:
            try:
                while (device := monitor.poll(timeout=0)) is not None:
                    subscription.put_nowait(
                        UEvent(
                            action=device.action or "change",
                            devpath=device.device_path.lstrip("/"),
                            subsystem=device.subsystem or "",
                            properties={
                                str(k): str(device.properties[k]) for k in device.properties
                            },
                        )
                    )
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                subscription.overflow()

        loop.add_reader(fd, on_readable)
        return subscription

    async def close(self) -> None:
        """Nothing to release: a uevent subscription is closed by its reader."""


def _unescape_mount(text: str) -> str:
    """Mountinfo escapes space, tab, newline and backslash as octal."""
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and index + 3 < len(text) and text[index + 1 : index + 4].isdigit():
            out.append(chr(int(text[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)
