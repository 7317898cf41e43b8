"""The kernel provider over the simulated machine.

Paths resolve through the machine's VFS. Attribute reads and writes call the owning
component; device nodes return its handles; regular files follow the governing
:class:`FsPolicy` (efivarfs and ESP semantics). Long writes (``Attr.blocking``) run
in a worker thread; everything else runs inline under the machine lock.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Mapping, Sequence

from livefw.errors import KernelError
from livefw.kernel.fdstore import FdStore
from livefw.kernel.provider import (
    Handle,
    MountEntry,
    OpenFlags,
    UEventSubscription,
    make_memfd,
    normalize,
    path_parts,
)
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.vfs import Attr, Device, Dir, File, FsPolicy, Node, SimHandle, fail

_DEFAULT_POLICY = FsPolicy()


class _FileHandle(SimHandle):
    """open() of a regular file: reads and one-call writes through the policy."""

    def __init__(self, provider: SimProvider, path: str, flags: OpenFlags) -> None:
        super().__init__(path)
        self._provider = provider
        self._flags = flags
        self._offset = 0

    def do_read(self, size: int) -> bytes:
        node = self._provider.lookup(self.path)
        if not isinstance(node, File):
            raise fail(errno.EISDIR, "read", self.path)
        end = len(node.data) if size < 0 else self._offset + size
        data = node.data[self._offset : end]
        self._offset += len(data)
        return data

    def do_write(self, data: bytes) -> int:
        if not self._flags & OpenFlags.WRITE:
            raise fail(errno.EBADF, "write", self.path)
        self._provider.write_file_sync(self.path, data)
        return len(data)


class _AttrHandle(SimHandle):
    """open() of a sysfs attribute."""

    def __init__(self, path: str, attr: Attr) -> None:
        super().__init__(path)
        self._attr = attr
        self._done = False

    def do_read(self, size: int) -> bytes:
        if self._attr.read is None:
            raise fail(errno.EACCES, "read", self.path)
        if self._done:
            return b""
        self._done = True
        return self._attr.read().encode()

    def do_write(self, data: bytes) -> int:
        if self._attr.write is None:
            raise fail(errno.EACCES, "write", self.path)
        self._attr.write(data)
        return len(data)


class _PlainHandle(SimHandle):
    """A real descriptor that is no simulated device (a memfd the sim returned or made).

    Reads and writes go to the descriptor itself.
    """

    def do_read(self, size: int) -> bytes:
        try:
            if size >= 0:
                return os.read(self.fileno(), size)
            chunks = []
            while chunk := os.read(self.fileno(), 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as error:
            raise fail(error.errno or errno.EIO, "read", self.path) from error

    def do_write(self, data: bytes) -> int:
        try:
            return os.write(self.fileno(), data)
        except OSError as error:
            raise fail(error.errno or errno.EIO, "write", self.path) from error


#: fd-store name prefix for the simulated kernel's own objects (never handed to callers).
SIM_KERNEL_FDNAME = "livefw-simk."


class _Handle:
    """Async face of a :class:`SimHandle` (the Handle protocol)."""

    def __init__(self, machine: SimMachine, inner: SimHandle) -> None:
        self._machine = machine
        self._inner = inner
        self.path = inner.path

    def fileno(self) -> int:
        return self._inner.fileno()

    async def read(self, size: int = -1) -> bytes:
        self._inner.check_open("read")
        with self._machine.lock:
            return self._inner.do_read(size)

    async def write(self, data: bytes | memoryview) -> int:
        self._inner.check_open("write")
        with self._machine.lock:
            return self._inner.do_write(bytes(data))

    async def ioctl(
        self,
        request: int,
        arg: bytearray | None = None,
        pointers: Mapping[int, bytearray] | None = None,
    ) -> int:
        self._inner.check_open("ioctl")
        with self._machine.lock:
            return self._inner.do_ioctl(request, arg, pointers or {})

    async def mmap(self, length: int) -> memoryview:
        self._inner.check_open("mmap")
        with self._machine.lock:
            return self._inner.do_mmap(length)

    async def close(self) -> None:
        if self._inner.closed:
            return
        self._inner.closed = True
        with self._machine.lock:
            try:
                self._inner.do_close()
            finally:
                self._inner.close_fd()


class SimProvider:
    """KernelProvider implementation backed by a :class:`SimMachine`."""

    simulated = True

    def __init__(self, machine: SimMachine, fd_store: FdStore | None = None) -> None:
        self.machine = machine
        #: systemd's fd store (or a LocalFdStore's), from the environment by default.
        self.fd_store = fd_store if fd_store is not None else FdStore()
        self._kernel_restored = False

    # --------------------------------------------------------------- resolution

    def lookup(self, path: str) -> Node:
        """Resolve ``path`` to a node or raise ENOENT."""
        node: Node = self.machine.root
        for part in path_parts(path):
            if not isinstance(node, Dir):
                raise fail(errno.ENOTDIR, "lookup", path)
            child = node.children.get(part)
            if child is None:
                raise fail(errno.ENOENT, "lookup", path)
            node = child
        return node

    def _parent(self, path: str) -> tuple[Dir, str, FsPolicy]:
        """The parent directory of ``path``, the leaf name and the governing policy."""
        parts = path_parts(path)
        node: Node = self.machine.root
        policy = _DEFAULT_POLICY
        for part in parts[:-1]:
            if not isinstance(node, Dir):
                raise fail(errno.ENOTDIR, "lookup", path)
            if node.policy is not None:
                policy = node.policy
            child = node.children.get(part)
            if child is None:
                raise fail(errno.ENOENT, "lookup", path)
            node = child
        if not isinstance(node, Dir):
            raise fail(errno.ENOTDIR, "lookup", path)
        if node.policy is not None:
            policy = node.policy
        return node, parts[-1], policy

    # ------------------------------------------------------------------ queries

    def _try_lookup(self, path: str) -> Node | None:
        try:
            return self.lookup(path)
        except KernelError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    async def exists(self, path: str) -> bool:
        with self.machine.lock:
            return self._try_lookup(path) is not None

    async def is_dir(self, path: str) -> bool:
        with self.machine.lock:
            return isinstance(self._try_lookup(path), Dir)

    async def listdir(self, path: str) -> list[str]:
        with self.machine.lock:
            node = self.lookup(path)
            if not isinstance(node, Dir):
                raise fail(errno.ENOTDIR, "listdir", path)
            return sorted(node.children)

    async def read_attr(self, path: str) -> str:
        with self.machine.lock:
            node = self.lookup(path)
            if isinstance(node, File):
                return node.data.decode("utf-8", "replace").rstrip("\n")
            if not isinstance(node, Attr):
                raise fail(errno.EISDIR if isinstance(node, Dir) else errno.EINVAL, "read", path)
            if node.read is None:
                raise fail(errno.EACCES, "read", path)
            return node.read().rstrip("\n")

    async def write_attr(self, path: str, value: str) -> None:
        with self.machine.lock:
            node = self.lookup(path)
            if not isinstance(node, Attr) or node.write is None:
                raise fail(errno.EACCES, "write", path)
            writer, blocking = node.write, node.blocking
        if blocking:
            await asyncio.to_thread(writer, value.encode())
        else:
            with self.machine.lock:
                writer(value.encode())

    async def read_file(self, path: str) -> bytes:
        with self.machine.lock:
            node = self.lookup(path)
            if isinstance(node, Attr):
                if node.read is None:
                    raise fail(errno.EACCES, "read", path)
                return node.read().encode()
            if not isinstance(node, File):
                raise fail(errno.EISDIR, "read", path)
            return bytes(node.data)

    def write_file_sync(self, path: str, data: bytes | memoryview) -> None:
        """One write(2) creating or replacing a regular file, through the policy."""
        with self.machine.lock:
            parent, name, policy = self._parent(path)
            existing = parent.children.get(name)
            if existing is not None and not isinstance(existing, File):
                raise fail(errno.EISDIR, "write", path)
            node = policy.before_write(normalize(path), existing, bytes(data))
            if node is None:
                parent.children.pop(name, None)
            else:
                parent.children[name] = node
            policy.after_change()

    async def write_file(
        self, path: str, data: bytes | memoryview, *, durable: bool = False
    ) -> None:
        self.write_file_sync(path, data)

    async def unlink(self, path: str) -> None:
        with self.machine.lock:
            parent, name, policy = self._parent(path)
            node = parent.children.get(name)
            if node is None:
                raise fail(errno.ENOENT, "unlink", path)
            if not isinstance(node, File):
                raise fail(errno.EISDIR, "unlink", path)
            policy.before_unlink(normalize(path), node)
            del parent.children[name]
            policy.after_change()

    async def rename(self, src: str, dst: str) -> None:
        with self.machine.lock:
            src_parent, src_name, policy = self._parent(src)
            dst_parent, dst_name, _ = self._parent(dst)
            node = src_parent.children.get(src_name)
            if not isinstance(node, File):
                raise fail(errno.ENOENT, "rename", src)
            target = dst_parent.children.get(dst_name)
            if isinstance(target, File):
                policy.before_unlink(normalize(dst), target)
            dst_parent.children[dst_name] = src_parent.children.pop(src_name)
            policy.after_change()

    async def makedirs(self, path: str) -> None:
        with self.machine.lock:
            node: Dir = self.machine.root
            policy = _DEFAULT_POLICY
            walked = []
            for part in path_parts(path):
                walked.append(part)
                if node.policy is not None:
                    policy = node.policy
                child = node.children.get(part)
                if child is None:
                    policy.before_mkdir("/".join(walked))
                    child = Dir()
                    node.children[part] = child
                    policy.after_change()
                if not isinstance(child, Dir):
                    raise fail(errno.ENOTDIR, "mkdir", path)
                node = child

    async def get_immutable(self, path: str) -> bool:
        with self.machine.lock:
            node = self.lookup(path)
            return isinstance(node, File) and node.immutable

    async def set_immutable(self, path: str, value: bool) -> None:
        with self.machine.lock:
            _, _, policy = self._parent(path)
            node = self.lookup(path)
            if not isinstance(node, File):
                raise fail(errno.ENOTTY, "ioctl", path)
            policy.set_immutable(normalize(path), node, value)
            policy.after_change()

    async def free_space(self, path: str) -> int:
        with self.machine.lock:
            probe = path + "/x" if isinstance(self._try_lookup(path), Dir) else path
            _, _, policy = self._parent(probe)
            return policy.free_space()

    async def mounts(self) -> list[MountEntry]:
        with self.machine.lock:
            return list(self.machine.mount_table)

    async def udev_properties(self, subsystem: str, major: int, minor: int) -> dict[str, str]:
        with self.machine.lock:
            props = self.machine.udev_table.get((subsystem, major, minor))
            if props is None:
                raise fail(errno.ENODEV, "udev", f"{subsystem} {major}:{minor}")
            return dict(props)

    async def open(self, path: str, flags: OpenFlags = OpenFlags.READ) -> _Handle:
        with self.machine.lock:
            node = self._try_lookup(path)
            if node is None:
                if not flags & OpenFlags.CREATE:
                    raise fail(errno.ENOENT, "open", path)
                self.write_file_sync(path, b"")
                node = self.lookup(path)
            inner: SimHandle
            if isinstance(node, Device):
                inner = node.opener(normalize(path), flags)
            elif isinstance(node, Attr):
                inner = _AttrHandle(normalize(path), node)
            elif isinstance(node, File):
                if flags & OpenFlags.WRITE and node.immutable:
                    raise fail(errno.EPERM, "open", path)
                inner = _FileHandle(self, normalize(path), flags)
            else:
                raise fail(errno.EISDIR, "open", path)
            return _Handle(self.machine, inner)

    async def kexec(self) -> None:
        """Simulated kexec: the machine carries what survives, then this daemon ends."""
        self.machine.kexec()
        if self.machine.exit_hook is not None:
            self.machine.exit_hook("kexec")

    async def adopt_fd(self, fd: int, path: str) -> _Handle:
        with self.machine.lock:
            inner = self.machine.returned_fds.pop(fd, None)
        if inner is None:
            inner = _PlainHandle(path, fd)
        return _Handle(self.machine, inner)

    async def create_memfd(self, name: str, data: bytes, *, seals: int = 0) -> _Handle:
        try:
            fd = make_memfd(name, data, seals)
        except OSError as error:
            raise fail(error.errno or errno.EIO, "memfd_create", name) from error
        return _Handle(self.machine, _PlainHandle(f"memfd:{name}", fd))

    async def store_fds(self, name: str, handles: Sequence[Handle]) -> bool:
        """Store the handles, and the simulated kernel objects they keep alive."""
        kernel: list[int] = []
        with self.machine.lock:
            for handle in handles:
                if isinstance(handle, _Handle):
                    kernel.extend(handle._inner.kernel_fds())
        stored = self.fd_store.push(name, [handle.fileno() for handle in handles])
        if stored and kernel:
            self.fd_store.push(SIM_KERNEL_FDNAME + name, kernel)
        return stored

    async def unstore_fds(self, name: str) -> None:
        self.fd_store.remove(name)
        self.fd_store.remove(SIM_KERNEL_FDNAME + name)

    async def stored_fds(self, prefix: str) -> dict[str, list[Handle]]:
        """Inherited fds; the simulated kernel first takes back its own objects."""
        if not self._kernel_restored:
            self._kernel_restored = True
            kernel = [fd for _, fd in self.fd_store.take(SIM_KERNEL_FDNAME)]
            self.machine.restore_kernel_fds(kernel)
        found: dict[str, list[Handle]] = {}
        for name, fd in self.fd_store.take(prefix):
            if name.startswith(SIM_KERNEL_FDNAME):
                continue
            inner = self.machine.claim_fd(fd) or _PlainHandle(f"fdstore:{name}", fd)
            found.setdefault(name, []).append(_Handle(self.machine, inner))
        return found

    async def subscribe_uevents(self) -> UEventSubscription:
        """The machine's uevents from now on: registered before this returns."""
        subscription = UEventSubscription(on_close=lambda: self.machine.unsubscribe(subscription))
        self.machine.attach(subscription)
        return subscription

    async def close(self) -> None:
        with self.machine.lock:
            self.machine.save()
