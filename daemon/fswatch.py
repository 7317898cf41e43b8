"""Whether anything in a few folders changed: one inotify instance, read without blocking.

:class:`FolderWatch` answers "did an entry of these folders change since I last
looked?" with one non-blocking ``read()`` of an inotify descriptor, so a result read
from the folders in a thread can be kept until they change and still be current in
the next reply (livefw.releases keeps the remotes scan this way; issue 17).

Kernel behaviour relied on (docs/kernel.md, "inotify" rows):

* ``inotify_add_watch()`` on a directory reports changes of its entries
  (``IN_CREATE``, ``IN_DELETE``, ``IN_MOVED_FROM``/``IN_MOVED_TO``, and
  ``IN_MODIFY``/``IN_CLOSE_WRITE``/``IN_ATTRIB`` of a file in it) and of the directory
  itself (``IN_DELETE_SELF``, ``IN_MOVE_SELF``); the event is queued before the
  system call that made the change returns (fs/notify/fsnotify.c: ``fsnotify()`` is
  called from the VFS operation itself, e.g. fs/namei.c: ``vfs_create()`` through
  include/linux/fsnotify.h: ``fsnotify_create()``), so a change a client made before
  its call is seen by that call.
* Reading a file queues only ``IN_ACCESS``/``IN_OPEN``/``IN_CLOSE_NOWRITE``, which are
  not asked for here (include/linux/fsnotify.h: ``fsnotify_access()``,
  ``fsnotify_open()``, ``fsnotify_close()``; an atime update is no ``IN_ATTRIB``:
  fs/inode.c: ``touch_atime()`` does not notify), so the reader's own scan does not
  count as a change.
* A full queue is reported as ``IN_Q_OVERFLOW``: any event at all counts as a change,
  so losing the rest changes nothing here (fs/notify/inotify/inotify_user.c).
* ``inotify_add_watch()`` follows symbolic links (unless ``IN_DONT_FOLLOW``): a link
  replaced by another target is a change in the link's folder, which may not be
  watched, so a path with a link in it is refused (:meth:`FolderWatch.add` returns
  False) and its reader does not keep results.

Changes made on another machine to a network file system are not reported at all;
the reader bounds how long it keeps a result for that case.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import structlog

__all__ = ["FolderWatch"]

log = structlog.get_logger("livefw.fswatch")

# include/uapi/linux/inotify.h
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_ONLYDIR = 0x01000000
#: IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
#: every change of a folder's entries or of the folder; no read-only events
CHANGES = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
#: folders one watch follows at most (fs.inotify.max_user_watches is per user)
MAX_FOLDERS = 64


class FolderWatch:
    """One inotify instance and the folders it watches.

    Not thread-safe: :meth:`add` runs where the folders are read (a thread),
    :meth:`changed` and :meth:`close` on the event loop, never at the same time.
    """

    def __init__(
        self, fd: int, add_watch: Callable[[int, bytes, int], int], get_errno: Callable[[], int]
    ) -> None:
        self._fd = fd
        self._add_watch = add_watch
        self._get_errno = get_errno
        self._changed = False
        self.folders: set[str] = set()

    @classmethod
    def create(cls) -> FolderWatch | None:
        """A new watch, or None where inotify is not available (it is logged)."""
        try:
            import ctypes  # imported when a reader first keeps a result, not at start

            libc = ctypes.CDLL(None, use_errno=True)
            init1 = libc.inotify_init1
            add_watch = libc.inotify_add_watch
            add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            fd = int(init1(IN_NONBLOCK | IN_CLOEXEC))
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError, ImportError) as error:
            log.warning("inotify_unavailable", error=str(error))
            return None
        return cls(fd, add_watch, ctypes.get_errno)

    def add(self, folder: str) -> bool:
        """Watch ``folder``, or the nearest folder above it that exists; False: cannot.

        A missing folder is watched through its nearest existing parent, so its
        creation is a change. A path with a symbolic link in it, or more than
        :data:`MAX_FOLDERS` folders, cannot be followed.
        """
        path = os.path.abspath(folder)
        if os.path.realpath(path) != path:
            return False
        while True:
            if path in self.folders:
                return True
            if len(self.folders) >= MAX_FOLDERS:
                return False
            wd = self._add_watch(self._fd, os.fsencode(path), CHANGES | IN_ONLYDIR)
            if wd >= 0:
                self.folders.add(path)
                return True
            error = self._get_errno()
            parent = os.path.dirname(path)
            if error not in (errno.ENOENT, errno.ENOTDIR) or parent == path:
                log.info("inotify_watch_failed", path=path, error=os.strerror(error))
                return False
            path = parent

    def changed(self) -> bool:
        """Whether an event arrived since the watch was made (sticky; never blocks)."""
        if self._changed:
            return True
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return False
        except OSError:
            data = b"error"  # a broken watch proves nothing: count it as a change
        if data:
            self._changed = True
        return self._changed

    def close(self) -> None:
        """Close the inotify descriptor (its watches go with it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
