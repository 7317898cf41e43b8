"""The state dir: private to livefwd, never reached through a link, written atomically.

Outside systemd (which creates ``/var/lib/livefw`` with ``StateDirectoryMode=0700``
and runs livefwd with ``UMask=0077``) nothing guaranteed that: files were created
with the process umask (``history.db`` and ``registry.json`` 0644) and opened through
whatever symlink sat at their path. Everything livefwd writes under its state dir
now goes through this module:

* :func:`check_state_dir` runs before anything else at start: it creates the
  directory (0700) or refuses it (:class:`StateDirError`, exit code
  :data:`EX_STATE_DIR`) when it is a symlink, not a directory, owned by another
  user, writable by others (or by a group other than livefwd's), sits in a
  directory others can rename it in, or holds a symlink, a hard link or a file of
  another owner; otherwise it tightens the directory's mode to 0700.
* :func:`private_dir` and :func:`open_private` create directories 0700 and files
  0600 whatever the umask, with ``O_NOFOLLOW`` and checks of type and owner on the
  opened descriptor.
* :func:`write_atomic` writes a file completely or not at all: a new temporary file
  (``O_CREAT | O_EXCL | O_NOFOLLOW``, 0600) in the same directory, ``fsync``, then
  ``rename`` over the target (which replaces a symlink rather than following it)
  and ``fsync`` of the directory.

Plugins do not import ``os``: they use ``PluginContext.read_state`` and
``write_state`` (``livefw.plugin``), which call :func:`read_private` and
:func:`write_atomic`. The simulated machine's own files (``sim/``) belong to the
simulator and are only checked, not written, here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "EX_STATE_DIR",
    "StateDirError",
    "check_state_dir",
    "open_private",
    "prepare_database",
    "private_dir",
    "read_private",
    "write_atomic",
]

#: livefwd's exit code for a state dir it refuses (sysexits.h EX_CANTCREAT).
EX_STATE_DIR = 73
#: entries :func:`check_state_dir` looks at before giving up (a state dir holds dozens).
_WALK_MAX = 10_000


class StateDirError(Exception):
    """The state dir or a file in it cannot be used safely; ``str()`` is one line."""


def _owner_problem(path: str, info: os.stat_result) -> str | None:
    uid = os.geteuid()
    if info.st_uid != uid:
        return f"{path} is owned by uid {info.st_uid}, not by livefwd's uid {uid}"
    return None


def _writable_by_others(info: os.stat_result) -> bool:
    mode = info.st_mode
    return bool(mode & stat.S_IWOTH) or bool(mode & stat.S_IWGRP and info.st_gid != os.getegid())


def check_state_dir(path: str) -> None:
    """Create the state dir (0700) or check that only livefwd can change it.

    Raises:
        StateDirError: the directory is unsafe; the message says why and what to do.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.lexists(path):
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
            os.mkdir(path, 0o700)
        except OSError as error:
            raise StateDirError(f"cannot create the state dir {path}: {error.strerror}") from None
    try:
        info = os.lstat(path)
        parent_info = os.stat(parent)
    except OSError as error:
        raise StateDirError(f"cannot read the state dir {path}: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise StateDirError(f"the state dir {path} is a symbolic link; give the directory itself")
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"the state dir {path} is not a directory")
    problem = _owner_problem(path, info)
    if problem:
        raise StateDirError(f"{problem}; chown it (or remove it) before starting livefwd")
    if _writable_by_others(info):
        raise StateDirError(
            f"the state dir {path} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "check what is in it, then chmod 700 it"
        )
    if _writable_by_others(parent_info) and not parent_info.st_mode & stat.S_ISVTX:
        raise StateDirError(
            f"{parent} is writable by others without the sticky bit: another user could "
            f"replace the state dir {path}; choose a state dir elsewhere"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    _check_tree(path)


def _check_tree(root: str) -> None:
    """No symlink, hard link or file of another owner anywhere below ``root``."""
    seen = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            seen += 1
            if seen > _WALK_MAX:
                return
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                raise StateDirError(f"{path} is a symbolic link; remove it before starting livefwd")
            problem = _owner_problem(path, info)
            if problem:
                raise StateDirError(f"{problem}; remove it before starting livefwd")
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise StateDirError(
                    f"{path} has {info.st_nlink} hard links; remove it before starting livefwd"
                )


def private_dir(path: str) -> str:
    """Create ``path`` (0700) or check it is a directory of ours, not a link; tighten it.

    Returns:
        ``path``.

    Raises:
        StateDirError: it is a symlink, not a directory or another user's.
    """
    with contextlib.suppress(FileExistsError):  # e.g. a dangling symlink: refused below
        os.makedirs(path, 0o700, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"{path} is not a directory (a symbolic link?); remove it")
    problem = _owner_problem(path, info)
    if problem:
        raise StateDirError(problem)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def open_private(path: str, flags: int) -> int:
    """``os.open`` for a state file: never through a symlink, created 0600, checked.

    Args:
        path: the file.
        flags: ``os.O_RDONLY``, ``os.O_RDWR | os.O_CREAT`` ...; ``O_NOFOLLOW`` and
            ``O_CLOEXEC`` are added.

    Returns:
        The descriptor (the caller closes it).

    Raises:
        FileNotFoundError: it does not exist and ``O_CREAT`` was not given.
        StateDirError: a symlink, not a regular file, another user's, or hard-linked.
        OSError: anything else the kernel refuses.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StateDirError(f"{path} is a symbolic link; remove it") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateDirError(f"{path} is not a regular file; remove it")
        problem = _owner_problem(path, info)
        if problem:
            raise StateDirError(problem)
        if info.st_nlink > 1:
            raise StateDirError(f"{path} has {info.st_nlink} hard links; remove it")
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private(path: str, limit: int) -> bytes | None:
    """The contents of a state file, or None when it does not exist.

    Raises:
        StateDirError: see :func:`open_private`; or the file is larger than ``limit``.
        OSError: a read error.
    """
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise StateDirError(f"{path} is {size} bytes, more than the {limit} expected")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(len(c) for c in chunks) > limit:
                raise StateDirError(f"{path} grew past the {limit} bytes expected")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (``mode``, 0600 unless told), completely or not at all.

    Raises:
        StateDirError: the directory is a symlink.
        OSError: the write failed; the previous file is unchanged and no temporary
            file is left.
    """
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StateDirError(f"{directory} is a symbolic link; remove it") from None
        raise
    # os.urandom is what secrets.token_hex reads; secrets (with random, hmac, base64)
    # would be ~1.5 ms of livefwd's start (issue 17 item 1)
    tmp = f".{name}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            os.fchmod(fd, mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    finally:
        os.close(dir_fd)


def prepare_database(path: str) -> None:
    """Create an SQLite database file 0600 before SQLite opens it, and check its sidecars.

    SQLite opens the path it is given, following symlinks, and creates ``-wal``,
    ``-shm`` and ``-journal`` with the database file's mode (os_unix.c,
    findCreateFileMode): so the file is created (or checked and tightened) here and
    the sidecars must not be links.

    Raises:
        StateDirError: the file or a sidecar is a symlink, a hard link or another
            user's.
    """
    private_dir(os.path.dirname(os.path.abspath(path)))
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.close(open_private(path + suffix, os.O_RDONLY))
