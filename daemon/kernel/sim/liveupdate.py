"""Simulated Live Update Orchestrator: ``/dev/liveupdate``, sessions, memfd preservation.

Follows shared/spec/kernel-interfaces.md §4.8. The simulated kernel runs inside
livefwd, so the files it "preserves" are real descriptors of the daemon process:

* A session fd is a real memfd named ``[luo_session] <name>`` that the sim maps back
  to its session by inode. Sessions are reference counted by open handles: closing
  the last handle of an outgoing session unpreserves its files and deletes it;
  closing a retrieved (incoming) session finishes it.
* PRESERVE_FD identifies memfds the way the kernel's memfd handler does, through the
  daemon's own ``/proc/self/fd/N`` link (``/memfd:...``) and ``fstat``; it keeps a
  duplicate of the file, as the kernel keeps a reference. Anything else is ENOENT,
  except VFIO device files when ``vfio_handler`` is on (the posted series).
* ``kexec`` serialises every outgoing session still held (memfd contents, size,
  position and seals) into the incoming table of the next boot and drops the rest.
  ``fail_freeze`` (or the ``freeze-failure`` fault) makes it fail and change nothing.
  After the kexec, RETRIEVE_FD recreates each file as a new memfd with the same
  contents, size, position and seals.
* A daemon restart without kexec: the session fds and the files they hold travel
  through the service manager's fd store (:meth:`SimHandle.kernel_fds`); sessions
  whose fds come back are revived by inode, the others are gone once the device is
  opened again, exactly as if nobody had held them.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import stat
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from livefw.errors import KernelError
from livefw.kernel.provider import OpenFlags
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.vfs import Device, Dir, SimHandle, fail
from livefw.kernel.uapi import liveupdate as uapi

#: fcntl(2) F_ADD_SEALS / F_GET_SEALS (include/uapi/linux/fcntl.h).
F_ADD_SEALS = fcntl.F_ADD_SEALS
F_GET_SEALS = fcntl.F_GET_SEALS

Key = tuple[int, int]


class SimFile(BaseModel):
    """A preserved file: identity while held, contents once serialised by a kexec."""

    model_config = ConfigDict(extra="forbid")

    token: int
    kind: Literal["memfd", "vfio"] = "memfd"
    dev: int = 0
    ino: int = 0
    data: str = ""  # base64 of the contents (incoming files only)
    size: int = 0
    pos: int = 0
    seals: int = 0
    path: str = ""  # VFIO device file
    retrieved: bool = False
    #: a failed RETRIEVE_FD stays failed with the same errno (luo_file.c)
    failed_errno: int = 0


class SimSession(BaseModel):
    """A session in the outgoing or incoming table."""

    model_config = ConfigDict(extra="forbid")

    name: str
    direction: Literal["outgoing", "incoming"] = "outgoing"
    retrieved: bool = False
    #: inode of the session's memfd while some process holds it.
    dev: int = 0
    ino: int = 0
    files: list[SimFile] = Field(default_factory=list)

    @property
    def key(self) -> Key:
        """The session fd's identity."""
        return (self.dev, self.ino)


class LiveUpdateState(BaseModel):
    """The simulated LUO.

    Attributes:
        present: ``liveupdate=on`` and KHO enabled (else no /dev/liveupdate).
        eio: deserialising the incoming sessions failed; every open returns EIO.
        held_by_other: another orchestrator (e.g. systemd) holds the device: EBUSY.
        get_name: LIVEUPDATE_SESSION_GET_NAME exists (kernel 7.1+).
        vfio_handler: the posted VFIO handler is present (VFIO cdevs preservable).
        vfio_prefix: where VFIO device files live (tests point it elsewhere).
        fail_freeze: the next kexec fails in the freeze step; nothing changes.
        max_sessions: ENOSPC beyond this many sessions (the KHO block limit).
        max_files: ENOSPC beyond this many preserved files in all sessions.
    """

    model_config = ConfigDict(extra="forbid")

    present: bool = True
    eio: bool = False
    held_by_other: bool = False
    get_name: bool = True
    vfio_handler: bool = False
    vfio_prefix: str = "/dev/vfio/"
    fail_freeze: bool = False
    max_sessions: int = 64
    max_files: int = 1024
    sessions: list[SimSession] = Field(default_factory=list)


_SHMEM_DEV: list[int] = []


def _shmem_dev() -> int:
    """The device of the kernel's internal shmem mount, where plain memfds live."""
    if not _SHMEM_DEV:
        probe = os.memfd_create("luo-probe", os.MFD_CLOEXEC)
        try:
            _SHMEM_DEV.append(os.fstat(probe).st_dev)
        finally:
            os.close(probe)
    return _SHMEM_DEV[0]


def _fstat_key(fd: int) -> Key | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class _DeviceHandle(SimHandle):
    """An open ``/dev/liveupdate``."""

    def __init__(self, component: LiveUpdateComponent, path: str) -> None:
        super().__init__(path)
        self.component = component

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        return self.component.device_ioctl(self, request, arg)

    def do_close(self) -> None:
        self.component.device_open = False


class _SessionHandle(SimHandle):
    """An open session fd (a memfd standing for the anonymous ``[luo_session]`` inode)."""

    def __init__(self, component: LiveUpdateComponent, key: Key, name: str, fd: int) -> None:
        super().__init__(f"[luo_session] {name}", fd)
        self.component = component
        self.key = key

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        return self.component.session_ioctl(self, request, arg)

    def do_close(self) -> None:
        self.component.release(self)

    def kernel_fds(self) -> list[int]:
        return self.component.held_files(self.key)


class LiveUpdateComponent(SimComponent):
    """``/dev/liveupdate`` and the kernel's session tables."""

    name = "liveupdate"
    order = 5  # kexec: freeze first, so a freeze failure leaves every component as it was
    state_model = LiveUpdateState
    state: LiveUpdateState
    FAULTS = {
        "freeze-failure": "the next kexec fails while freezing preserved files (nothing changes)",
    }

    def __init__(self, machine: SimMachine, state: BaseModel) -> None:
        super().__init__(machine, state)
        self.device_open = False
        self._purged = False
        #: open session handles by session key (the reference count).
        self._handles: dict[Key, set[_SessionHandle]] = {}
        #: the sim's own references to preserved / retrieved files, by inode.
        self._files: dict[Key, int] = {}

    @classmethod
    def default_state(cls, profile: str, scale: int) -> LiveUpdateState:
        """Present everywhere but ``empty``; ``rfc`` is a 6.19 kernel without GET_NAME."""
        if profile == "empty":
            return LiveUpdateState(present=False)
        if profile == "rfc":
            return LiveUpdateState(get_name=False)
        return LiveUpdateState()

    def render(self, root: Dir) -> None:
        """``dev/liveupdate`` when LUO is enabled."""
        if not self.state.present:
            return
        root.mkdirs("dev").children["liveupdate"] = Device(opener=self._open, mode=0o600)

    def devices(self) -> list[SimDevice]:
        """The one LUO device."""
        if not self.state.present:
            return []
        outgoing = sum(1 for s in self.state.sessions if s.direction == "outgoing")
        incoming = len(self.state.sessions) - outgoing
        return [
            SimDevice(
                key="liveupdate",
                name="Live Update Orchestrator",
                component=self.name,
                summary=f"{outgoing} outgoing, {incoming} incoming sessions",
            )
        ]

    def configure(self, key: str, value: str) -> None:
        """Set a knob; ``present`` adds or removes the device node."""
        super().configure(key, value)
        if key == "present":
            self.machine.render()

    # -------------------------------------------------------------- tables

    def _find(self, key: Key) -> SimSession | None:
        for session in self.state.sessions:
            if session.key == key and key != (0, 0):
                return session
        return None

    def _live(self, session: SimSession) -> bool:
        return bool(self._handles.get(session.key))

    def held_files(self, key: Key) -> list[int]:
        """Our references to the files a session holds (for the fd store)."""
        session = self._find(key)
        if session is None:
            return []
        return [self._files[(f.dev, f.ino)] for f in session.files if (f.dev, f.ino) in self._files]

    def _drop_files(self, session: SimSession) -> None:
        for item in session.files:
            fd = self._files.pop((item.dev, item.ino), None)
            if fd is not None:
                os.close(fd)

    def _delete(self, session: SimSession) -> None:
        self._drop_files(session)
        self.state.sessions = [s for s in self.state.sessions if s is not session]
        self._handles.pop(session.key, None)

    def _purge_unheld(self) -> None:
        """Sessions a previous daemon process held and nobody handed back are gone."""
        if self._purged:
            return
        self._purged = True
        for session in list(self.state.sessions):
            if (session.direction == "outgoing" or session.retrieved) and not self._live(session):
                self._delete(session)
        self.machine.changed()

    # -------------------------------------------------------------- device

    def _open(self, path: str, flags: OpenFlags) -> SimHandle:
        if not self.state.present:
            raise fail(errno.ENOENT, "open", path)
        if self.state.eio:
            raise fail(errno.EIO, "open", path, "deserialising the incoming sessions failed")
        if self.device_open or self.state.held_by_other:
            raise fail(errno.EBUSY, "open", path, "another process has /dev/liveupdate open")
        self.device_open = True
        self._purge_unheld()
        return _DeviceHandle(self, path)

    def _decode(
        self, request: int, arg: bytearray | None, table: tuple[int, ...], path: str
    ) -> tuple[int, int]:
        """Check an ioctl like luo_ioctl(): returns (nr, user size)."""
        nr = request & 0xFF
        if nr not in table:
            raise fail(errno.EINVAL, "ioctl", path, f"unknown LUO command 0x{nr:02x}")
        if request != (uapi.LIVEUPDATE_IOCTL_TYPE << 8 | nr):
            raise fail(errno.ENOTTY, "ioctl", path)
        if arg is None or len(arg) < 4:
            raise fail(errno.EFAULT, "ioctl", path)
        size = int.from_bytes(arg[:4], "little")
        minimum = uapi.MIN_SIZE[nr]
        if size < minimum:
            raise fail(errno.EINVAL, "ioctl", path, f"size {size} < {minimum}")
        if len(arg) < size:
            raise fail(errno.EFAULT, "ioctl", path)
        if any(arg[minimum:size]):
            raise fail(errno.E2BIG, "ioctl", path, "non-zero bytes beyond the kernel's struct")
        return nr, size

    def _name(self, field: bytes, path: str) -> str:
        if b"\x00" not in field or field[0] == 0:
            raise fail(errno.EINVAL, "ioctl", path, "session name empty or not NUL-terminated")
        return uapi.decode_name(field)

    def _new_session_fd(self, name: str) -> tuple[int, Key]:
        fd = os.memfd_create(f"[luo_session] {name}", os.MFD_CLOEXEC)
        key = _fstat_key(fd)
        assert key is not None
        return fd, key

    def device_ioctl(self, handle: _DeviceHandle, request: int, arg: bytearray | None) -> int:
        """CREATE_SESSION and RETRIEVE_SESSION."""
        path = handle.path
        table = (uapi.LIVEUPDATE_CMD_CREATE_SESSION, uapi.LIVEUPDATE_CMD_RETRIEVE_SESSION)
        nr, _ = self._decode(request, arg, table, path)
        assert arg is not None
        size, _fd, field = uapi.CREATE_SESSION.unpack_from(arg)
        name = self._name(field, path)
        if nr == uapi.LIVEUPDATE_CMD_CREATE_SESSION:
            if any(s.name == name and s.direction == "outgoing" for s in self.state.sessions):
                raise fail(errno.EEXIST, "ioctl", path, f"outgoing session {name!r} exists")
            if len(self.state.sessions) >= self.state.max_sessions:
                raise fail(errno.ENOSPC, "ioctl", path, "too many sessions")
            fd, key = self._new_session_fd(name)
            session = SimSession(name=name, dev=key[0], ino=key[1])
            self.state.sessions.append(session)
        else:
            found = [s for s in self.state.sessions if s.name == name and s.direction == "incoming"]
            if not found:
                raise fail(errno.ENOENT, "ioctl", path, f"no incoming session {name!r}")
            session = found[0]
            if session.retrieved:
                raise fail(errno.EINVAL, "ioctl", path, f"session {name!r} already retrieved")
            fd, key = self._new_session_fd(name)
            session.retrieved = True
            session.dev, session.ino = key
        handle_fd = _SessionHandle(self, key, name, fd)
        self._handles.setdefault(key, set()).add(handle_fd)
        uapi.CREATE_SESSION.pack_into(arg, 0, size, self.machine.return_fd(handle_fd), field)
        self.machine.changed()
        return 0

    # ------------------------------------------------------------- sessions

    def session_ioctl(self, handle: _SessionHandle, request: int, arg: bytearray | None) -> int:
        """PRESERVE_FD, RETRIEVE_FD, FINISH and (7.1+) GET_NAME on a session fd."""
        path = handle.path
        table: tuple[int, ...] = (
            uapi.LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
            uapi.LIVEUPDATE_CMD_SESSION_RETRIEVE_FD,
            uapi.LIVEUPDATE_CMD_SESSION_FINISH,
        )
        if self.state.get_name:
            table += (uapi.LIVEUPDATE_CMD_SESSION_GET_NAME,)
        nr, _ = self._decode(request, arg, table, path)
        assert arg is not None
        session = self._find(handle.key)
        if session is None:
            # finished, or carried away by a kexec that this process outlived
            raise fail(errno.EINVAL, "ioctl", path, "the session no longer exists")
        if nr == uapi.LIVEUPDATE_CMD_SESSION_PRESERVE_FD:
            if session.direction != "outgoing":
                raise fail(errno.EINVAL, "ioctl", path, "preserve on an incoming session")
            size, fd, token = uapi.PRESERVE_FD.unpack_from(arg)
            self._preserve(session, fd, token, path)
        elif nr == uapi.LIVEUPDATE_CMD_SESSION_RETRIEVE_FD:
            if session.direction != "incoming":
                raise fail(errno.EINVAL, "ioctl", path, "retrieve on an outgoing session")
            size, _fd, token = uapi.RETRIEVE_FD.unpack_from(arg)
            new_fd = self._retrieve(session, token, path)
            uapi.RETRIEVE_FD.pack_into(arg, 0, size, new_fd, token)
        elif nr == uapi.LIVEUPDATE_CMD_SESSION_FINISH:
            _size, reserved = uapi.FINISH.unpack_from(arg)
            if reserved:
                raise fail(errno.EINVAL, "ioctl", path, "reserved must be 0")
            if session.direction != "incoming":
                raise fail(errno.EINVAL, "ioctl", path, "finish on an outgoing session")
            self._delete(session)
        else:
            size, reserved, _ = uapi.GET_NAME.unpack_from(arg)
            if reserved:
                raise fail(errno.EINVAL, "ioctl", path, "reserved must be 0")
            uapi.GET_NAME.pack_into(arg, 0, size, 0, uapi.encode_name(session.name))
        self.machine.changed()
        return 0

    def _classify(self, fd: int, path: str) -> tuple[Literal["memfd", "vfio"], Key, str]:
        try:
            info = os.fstat(fd)
        except OSError as error:
            raise fail(errno.EBADF, "ioctl", path, "bad file descriptor") from error
        key = (info.st_dev, info.st_ino)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            link = ""
        if self._find(key) is not None:
            raise fail(errno.ENOENT, "ioctl", path, "no LUO handler for session files")
        if (
            stat.S_ISREG(info.st_mode)
            and link.startswith("/memfd:")
            and info.st_dev == _shmem_dev()  # MFD_HUGETLB memfds live on hugetlbfs
        ):
            return "memfd", key, link
        if (
            self.state.vfio_handler
            and link.startswith(self.state.vfio_prefix)
            and (stat.S_ISCHR(info.st_mode) or stat.S_ISREG(info.st_mode))
        ):
            return "vfio", key, link
        raise fail(errno.ENOENT, "ioctl", path, f"no LUO handler accepts {link or 'this file'}")

    def _preserve(self, session: SimSession, fd: int, token: int, path: str) -> None:
        kind, key, link = self._classify(fd, path)
        if any(f.token == token for f in session.files):
            raise fail(errno.EEXIST, "ioctl", path, f"token {token} already used in this session")
        if key in self._files:
            raise fail(errno.EBUSY, "ioctl", path, "this file is already preserved")
        seals = 0
        if kind == "memfd":
            try:
                seals = fcntl.fcntl(fd, F_GET_SEALS)
            except OSError:
                seals = 0
            if seals & ~uapi.MEMFD_LUO_SEALS:
                raise fail(errno.EOPNOTSUPP, "ioctl", path, f"unknown memfd seals 0x{seals:x}")
        if sum(len(s.files) for s in self.state.sessions) >= self.state.max_files:
            raise fail(errno.ENOSPC, "ioctl", path, "too many preserved files")
        self._files[key] = os.dup(fd)
        session.files.append(
            SimFile(token=token, kind=kind, dev=key[0], ino=key[1], path=link, seals=seals)
        )

    def _retrieve(self, session: SimSession, token: int, path: str) -> int:
        item = next((f for f in session.files if f.token == token), None)
        if item is None:
            raise fail(errno.ENOENT, "ioctl", path, f"no file with token {token}")
        if item.failed_errno:
            raise fail(item.failed_errno, "ioctl", path, f"token {token} failed to restore")
        kept = self._files.get((item.dev, item.ino)) if item.retrieved else None
        if kept is None:
            try:
                kept = self._recreate(item, path)
            except KernelError as error:
                item.failed_errno = error.errno
                self.machine.changed()
                raise
            key = _fstat_key(kept)
            assert key is not None
            item.dev, item.ino = key
            item.retrieved = True
            self._files[key] = kept
        return os.dup(kept)

    def _recreate(self, item: SimFile, path: str) -> int:
        if item.kind == "vfio":
            try:
                return os.open(item.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                raise fail(error.errno or errno.EIO, "ioctl", path, item.path) from error
        data = base64.b64decode(item.data)
        fd = os.memfd_create(f"luo-restored-{item.token}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.ftruncate(fd, item.size)
            os.lseek(fd, item.pos, os.SEEK_SET)
            if item.seals:
                fcntl.fcntl(fd, F_ADD_SEALS, item.seals)
        except OSError as error:
            os.close(fd)
            raise fail(error.errno or errno.EIO, "ioctl", path, "restoring the memfd") from error
        return fd

    def release(self, handle: _SessionHandle) -> None:
        """The last close of an outgoing session drops it; of an incoming one, finishes it."""
        handles = self._handles.get(handle.key)
        if handles is None:
            return
        handles.discard(handle)
        if handles:
            return
        session = self._find(handle.key)
        if session is not None:
            self._delete(session)
            self.machine.changed()

    # ----------------------------------------------------------- fd store

    def restore_kernel_fds(self, fds: list[int]) -> list[int]:
        """Take back the files of sessions a previous daemon process stored."""
        wanted = {
            (f.dev, f.ino)
            for s in self.state.sessions
            if s.direction == "outgoing" or s.retrieved
            for f in s.files
        }
        others = []
        for fd in fds:
            key = _fstat_key(fd)
            if key is not None and key in wanted and key not in self._files:
                self._files[key] = fd
            else:
                others.append(fd)
        return others

    def claim_fd(self, fd: int) -> SimHandle | None:
        """A stored session fd: the session lives on."""
        key = _fstat_key(fd)
        session = self._find(key) if key is not None else None
        if session is None or key is None:
            return None
        if session.direction == "outgoing" and any(
            (f.dev, f.ino) not in self._files for f in session.files
        ):
            # a preserved file did not come back: the kernel would still hold it, the
            # sim cannot; treat the session as lost rather than carry it half.
            return None
        handle = _SessionHandle(self, key, session.name, fd)
        self._handles.setdefault(key, set()).add(handle)
        return handle

    # --------------------------------------------------------------- kexec

    def on_reboot(self) -> None:
        """A cold reboot keeps nothing: every session and file is gone."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._handles.clear()
        self.state.sessions = []
        self.state.eio = False
        self.device_open = False
        self.machine.changed()

    def on_kexec(self) -> None:
        """Freeze and serialise every held outgoing session; drop everything else."""
        fault = self.machine.take_fault(self.name, "*", ("freeze-failure",))
        if self.state.fail_freeze or fault:
            raise fail(errno.EBUSY, "reboot", "kexec", "a preserved file refused to freeze")
        incoming: list[SimSession] = []
        for session in self.state.sessions:
            if session.direction != "outgoing" or not self._live(session):
                continue
            files = []
            for item in session.files:
                fd = self._files.get((item.dev, item.ino))
                if fd is None:
                    continue
                files.append(self._freeze(item, fd))
            incoming.append(SimSession(name=session.name, direction="incoming", files=files))
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._handles.clear()
        self.state.sessions = incoming
        self.device_open = False
        self.state.eio = False
        self.machine.changed()

    @staticmethod
    def _freeze(item: SimFile, fd: int) -> SimFile:
        if item.kind == "vfio":
            return SimFile(token=item.token, kind="vfio", path=item.path)
        size = os.fstat(fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, min(1 << 20, size - offset), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return SimFile(
            token=item.token,
            data=base64.b64encode(b"".join(chunks)).decode(),
            size=size,
            pos=os.lseek(fd, 0, os.SEEK_CUR),
            seals=fcntl.fcntl(fd, F_GET_SEALS),
        )


COMPONENT = LiveUpdateComponent
