"""A small virtual filesystem that the simulated kernel renders its interfaces into.

Components build trees of nodes: directories, text attributes backed by callables
(sysfs: every read is computed, every write is one call, as in the kernel), device
nodes whose ``open`` returns a :class:`SimHandle`, and regular files (efivarfs
variables, files on the ESP). Errors are raised as ``KernelError`` with the errno the
real kernel would return.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping

from livefw.errors import KernelError
from livefw.kernel.provider import OpenFlags
from livefw.record import FACTORY, Record

__all__ = ["Attr", "Device", "Dir", "File", "FsPolicy", "Node", "SimHandle", "fail"]


def fail(err: int, op: str, path: str, detail: str = "") -> KernelError:
    """Build the KernelError the simulated kernel raises."""
    return KernelError(err, op, path, detail)


class Node:
    """Base of every node."""

    mode: int = 0o444


class Attr(Node, Record):
    """A sysfs attribute: ``read`` renders text, ``write`` receives one write's bytes.

    Attributes:
        blocking: the write takes long (firmware activation); the provider runs it in
            a worker thread so the daemon's loop stays responsive.
    """

    _FIELDS = ("read", "write", "mode", "blocking")
    read: Callable[[], str] | None = None
    write: Callable[[bytes], None] | None = None
    mode: int = 0o444
    blocking: bool = False

    def __init__(
        self,
        read: Callable[[], str] | None = None,
        write: Callable[[bytes], None] | None = None,
        mode: int = 0o444,
        blocking: bool = False,
    ) -> None:
        self.read = read
        self.write = write
        self.mode = mode
        self.blocking = blocking


class File(Node, Record):
    """A regular file with contents and inode flags."""

    _FIELDS = ("data", "mode", "immutable")
    data: bytes = b""
    mode: int = 0o644
    immutable: bool = False

    def __init__(self, data: bytes = b"", mode: int = 0o644, immutable: bool = False) -> None:
        self.data = data
        self.mode = mode
        self.immutable = immutable


class Device(Node, Record):
    """A character device node; ``opener`` builds the handle for each open()."""

    _FIELDS = ("opener", "mode")
    opener: Callable[[str, OpenFlags], SimHandle]
    mode: int = 0o600

    def __init__(self, opener: Callable[[str, OpenFlags], SimHandle], mode: int = 0o600) -> None:
        self.opener = opener
        self.mode = mode


class Dir(Node, Record):
    """A directory of named nodes."""

    _FIELDS = ("children", "mode", "policy")
    children: dict[str, Node]
    mode: int = 0o755
    policy: FsPolicy | None = None

    def __init__(
        self, children: dict[str, Node] = FACTORY, mode: int = 0o755, policy: FsPolicy | None = None
    ) -> None:
        self.children = dict() if children is FACTORY else children
        self.mode = mode
        self.policy = policy

    def mkdirs(self, path: str) -> Dir:
        """Return the directory at ``path`` below this one, creating missing parts."""
        node: Dir = self
        for part in path.split("/"):
            if not part:
                continue
            child = node.children.get(part)
            if child is None:
                child = Dir()
                node.children[part] = child
            if not isinstance(child, Dir):
                raise fail(errno.ENOTDIR, "mkdir", path)
            node = child
        return node


class SimHandle:
    """An open simulated file; subclasses implement the ``do_*`` hooks.

    Each handle owns a real file descriptor (an eventfd by default) so that it has
    an identity that can cross D-Bus, as ARCHITECTURE.md requires of the simulation.
    """

    def __init__(self, path: str, fd: int | None = None) -> None:
        self.path = path
        self._fd = fd if fd is not None else os.eventfd(0, os.EFD_CLOEXEC)
        self.closed = False

    def fileno(self) -> int:
        """The real descriptor standing for this open file."""
        return self._fd

    def check_open(self, op: str) -> None:
        """Raise EBADF once closed."""
        if self.closed:
            raise fail(errno.EBADF, op, self.path)

    def do_read(self, size: int) -> bytes:
        """read(2); default EINVAL as for nodes without a read op."""
        raise fail(errno.EINVAL, "read", self.path)

    def do_write(self, data: bytes) -> int:
        """write(2); default EINVAL."""
        raise fail(errno.EINVAL, "write", self.path)

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        """ioctl(2); default ENOTTY."""
        raise fail(errno.ENOTTY, "ioctl", self.path)

    def do_mmap(self, length: int) -> memoryview:
        """mmap(2); default ENODEV."""
        raise fail(errno.ENODEV, "mmap", self.path)

    def do_close(self) -> None:
        """Release per-open resources."""

    def kernel_fds(self) -> list[int]:
        """Descriptors of kernel objects this open file keeps alive (default none).

        Stored with the file in the fd store so a new daemon process (where the
        simulated kernel is reborn) gets them back: see SimComponent.restore_kernel_fds.
        """
        return []

    def close_fd(self) -> None:
        """Close the backing descriptor."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class FsPolicy:
    """Filesystem semantics for a subtree (efivarfs, the ESP); the default is plain.

    The nearest directory with a policy governs every file operation below it.
    Hooks raise ``KernelError`` to refuse, exactly where the real filesystem would.
    """

    def free_space(self) -> int:
        """Free bytes (statvfs)."""
        return 1 << 40

    def before_write(self, path: str, existing: File | None, data: bytes) -> File | None:
        """Validate a write; return the node to store, or None to delete the file."""
        if existing is not None and existing.immutable:
            raise fail(errno.EPERM, "open", path)
        node = existing if existing is not None else File()
        node.data = data
        return node

    def before_unlink(self, path: str, node: File) -> None:
        """Validate an unlink."""
        if node.immutable:
            raise fail(errno.EPERM, "unlink", path)

    def before_mkdir(self, path: str) -> None:
        """Validate a mkdir."""

    def set_immutable(self, path: str, node: File, value: bool) -> None:
        """FS_IOC_SETFLAGS; CAP_LINUX_IMMUTABLE is assumed held by the daemon."""
        node.immutable = value

    def after_change(self) -> None:
        """Called after every successful mutation (persist the subtree)."""
