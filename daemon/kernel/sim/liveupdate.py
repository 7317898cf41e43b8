"""Simulated Live Update Orchestrator: ``/dev/liveupdate``, sessions, memfd preservation.

Follows the kernel sources (docs/kernel.md, "Live Update Orchestrator"):
kernel/liveupdate/luo_core.c (device, kexec hook), luo_session.c (sessions and their
ioctls), luo_file.c (preserve/freeze/retrieve/finish of files), mm/memfd_luo.c (the
memfd handler) and kernel/kexec_core.c ``kernel_kexec()`` (the errnos of a kexec).
Behaviour that changed after 6.19 follows ``machine.kernel_at_least()``. The VFIO
handler is not in mainline: it follows the posted series "vfio/pci: ... preserve a
VFIO device file across Live Update" (v5, Vipin Sharma / David Matlack, 2026-07-14,
drivers/vfio/pci/vfio_pci_liveupdate.c) and is off unless ``vfio_handler`` is set.

The simulated kernel runs inside livefwd, so the files it "preserves" are real
descriptors of the daemon process:

* A session fd is a real memfd named ``[luo_session] <name>`` that the sim maps back
  to its session by inode. Sessions are reference counted by open handles: closing
  the last handle of an outgoing session unpreserves its files and deletes it;
  closing a retrieved (incoming) session finishes it.
* PRESERVE_FD identifies memfds the way the kernel's memfd handler does, through the
  daemon's own ``/proc/self/fd/N`` link (``/memfd:...``) and ``fstat``; it keeps a
  duplicate of the file, as the kernel keeps a reference. Anything else is ENOENT,
  except VFIO device files when ``vfio_handler`` is on (the posted series).
* PRESERVE_FD freezes a memfd as ``memfd_luo_preserve()`` does (``shmem_freeze``
  sets SHMEM_F_MAPPING_FROZEN; mm/shmem.c then answers EPERM to a size change in
  ``shmem_setattr``, a write past the end in ``shmem_write_begin`` and every
  ``shmem_fallocate``, hole punching included), fills the file's holes as
  ``memfd_pin_folios()`` does, and records its size. The descriptor is the client's
  own and the simulated kernel runs in another process, so it cannot put a check
  in the client's write(2), ftruncate(2) or fallocate(2): user space can make
  another process's calls on its own descriptor fail only through the inode, with
  seals (which need MFD_ALLOW_SEALING, and none refuses hole punching without also
  refusing the writes inside the file that the kernel allows) and the append-only
  inode flag (which needs CAP_LINUX_IMMUTABLE and does not refuse growing). So:

  - a memfd made with MFD_ALLOW_SEALING gets F_SEAL_GROW | F_SEAL_SHRINK: a write
    past the end, ftruncate to another size and fallocate beyond the end fail with
    EPERM, as on the kernel (the seals stay after the session is dropped, where the
    kernel unfreezes);
  - when the process running the sim has CAP_LINUX_IMMUTABLE (livefwd.service
    keeps it; a test run as root has it), every preserved memfd also gets
    FS_APPEND_FL until it is unpreserved: ftruncate and hole punching fail with
    EPERM on any memfd (ftruncate to the same size too, which the kernel allows:
    fs/open.c ``do_ftruncate`` refuses an append-only inode before it compares
    sizes, and nothing else in user space refuses hole punching, so it stays);
    if livefwd dies without its fd store, the flag stays on the client's memfd,
    where the kernel would unfreeze as the session's last fd closes;
  - what is left succeeds in the sim where the kernel says EPERM: growing a memfd
    without MFD_ALLOW_SEALING, fallocate beyond the end with FALLOC_FL_KEEP_SIZE,
    and without the capability hole punching and shrinking. The sim compares size
    and allocated blocks with what it recorded at preserve time on every later
    session ioctl, close and kexec; a difference is recorded as a divergence
    (``state.divergences``, the device summary in ``livefw sim devices``, and the
    log) naming the token and what the kernel would have refused. The kexec still
    carries the size recorded at preserve time;
  - fallocate inside the file changes nothing the sim can see (every page is
    allocated already) and goes unreported.
* ``kexec`` answers like ``kernel_kexec()``: EINVAL when no image is loaded
  (``kexec_loaded``), EBUSY when another kexec holds the lock (fault ``kexec-busy``),
  the file handler's errno when a freeze fails (``fail_freeze``, fault
  ``freeze-failure``, a VFIO device with interrupts still enabled: EINVAL), and on
  6.19 and 7.0 EAGAIN when KHO finalisation fails (fault ``kho-finalize``; from 7.1,
  "kho: remove finalize state and clients" 6b0dd42d7681, ``liveupdate_reboot`` no
  longer finalises KHO and the fault cannot be armed); on failure nothing changes.
  Otherwise it serialises every outgoing session still held (memfd contents up to the
  recorded size, position, and from 7.1 the seals) into the incoming table of the
  next boot and drops the rest. After the kexec, RETRIEVE_FD recreates each file.
* A daemon restart without kexec: the session fds and the files they hold travel
  through the service manager's fd store (:meth:`SimHandle.kernel_fds`); sessions
  whose fds come back are revived by inode, the others are gone once the device is
  opened again, exactly as if nobody had held them.
"""

from __future__ import annotations

import array
import base64
import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Mapping
from typing import Literal

import structlog

from livefw.errors import KernelError
from livefw.kernel.provider import OpenFlags
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.vfs import Attr, Device, Dir, SimHandle, fail
from livefw.kernel.uapi import fs
from livefw.kernel.uapi import liveupdate as uapi
from livefw.model import Field, Model

#: fcntl(2) F_ADD_SEALS / F_GET_SEALS (include/uapi/linux/fcntl.h).
F_ADD_SEALS = fcntl.F_ADD_SEALS
F_GET_SEALS = fcntl.F_GET_SEALS

Key = tuple[int, int]

log = structlog.get_logger("livefw.sim")


class SimFile(Model, extra="forbid"):
    """A preserved file: identity while held, contents once serialised by a kexec."""

    token: int
    kind: Literal["memfd", "vfio"] = "memfd"
    dev: int = 0
    ino: int = 0
    data: str = ""  # base64 of the contents (incoming files only)
    size: int = 0
    pos: int = 0
    seals: int = 0
    path: str = ""  # VFIO device file
    #: the client's own seals at preserve time (the sim's freeze seals excluded)
    own_seals: int = 0
    #: 512-byte blocks allocated once the holes were filled at preserve time
    blocks: int = 0
    #: a change the kernel would have refused was seen (reported once)
    diverged: bool = False
    #: the sim set FS_APPEND_FL on the client's memfd (cleared at unpreserve)
    append_only: bool = False
    retrieved: bool = False
    #: a failed RETRIEVE_FD stays failed with the same errno (luo_file.c)
    failed_errno: int = 0


class SimSession(Model, extra="forbid"):
    """A session in the outgoing or incoming table."""

    name: str
    direction: Literal["outgoing", "incoming"] = "outgoing"
    retrieved: bool = False
    #: FINISH succeeded; the session stays until its fd is closed (luo_session.c)
    finished: bool = False
    #: inode of the session's memfd while some process holds it.
    dev: int = 0
    ino: int = 0
    files: list[SimFile] = Field(default_factory=list)

    @property
    def key(self) -> Key:
        """The session fd's identity."""
        return (self.dev, self.ino)


class LiveUpdateState(Model, extra="forbid"):
    """The simulated LUO.

    Attributes:
        present: ``liveupdate=on`` and KHO enabled (else no /dev/liveupdate).
        eio: deserialising the incoming sessions failed; every open returns EIO.
        held_by_other: another orchestrator (e.g. systemd) holds the device: EBUSY.
        get_name: LIVEUPDATE_SESSION_GET_NAME may exist; it does only from kernel
            7.2 on (off in the ``rfc`` profile).
        vfio_handler: the posted VFIO handler is present (VFIO cdevs preservable).
        vfio_prefix: where VFIO files live (tests point it elsewhere); device cdevs
            are ``<prefix>devices/*``, group files ``<prefix><N>``.
        vfio_irqs_enabled: a preserved VFIO device still has interrupts enabled, so
            its freeze fails with EINVAL (the VMM did not quiesce it).
        vfio_bound: every retrieved VFIO device was bound to an iommufd
            (VFIO_DEVICE_BIND_IOMMUFD); if not, FINISH answers EBUSY.
        fail_freeze: every kexec fails in the freeze step (EINVAL); nothing changes.
        kexec_loaded: a kernel is loaded for kexec (``/sys/kernel/kexec_loaded``).
            The simulated machine keeps it loaded across a kexec, as if a
            kexec-load service ran at every boot.
        max_sessions: 0 for the release's own limit (LUO_SESSION_MAX, 744 outgoing
            sessions, ENOMEM, up to 7.1; none from 7.2); N: ENOMEM beyond N sessions
            (from 7.2 that stands for an allocation failing).
        max_files: 0 for the release's own limit (LUO_FILE_MAX, 128 files per
            session, ENOSPC, up to 7.1; none from 7.2); N: refused beyond N files in
            one session (ENOSPC up to 7.1, ENOMEM from 7.2).
        divergences: what a client did to a preserved memfd that the real kernel
            would have refused and the sim could not stop (see the module doc).
    """

    present: bool = True
    eio: bool = False
    held_by_other: bool = False
    get_name: bool = True
    vfio_handler: bool = False
    vfio_prefix: str = "/dev/vfio/"
    vfio_irqs_enabled: bool = False
    vfio_bound: bool = True
    fail_freeze: bool = False
    kexec_loaded: bool = True
    max_sessions: int = 0
    max_files: int = 0
    sessions: list[SimSession] = Field(default_factory=list)
    divergences: list[str] = Field(default_factory=list)


#: luo_session.c up to 7.1: 16 pages of luo_session_ser, "space for 744 sessions";
#: "liveupdate: Remove limit on the number of sessions" (mainline in the 7.2 merge
#: window, tag liveupdate-v7.2-rc1) replaced the array with linked KHO blocks.
LUO_SESSION_MAX = 744
#: luo_file.c up to 7.1: 2 pages of luo_file_ser per session; removed in 7.2 by
#: "liveupdate: Remove limit on the number of files per session" (same merge).
LUO_FILE_MAX = 128
#: divergences kept in the state (the oldest are dropped).
_DIVERGENCES_MAX = 32


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


def _set_append_only(fd: int, on: bool) -> bool:
    """Set or clear FS_APPEND_FL on a file (False without CAP_LINUX_IMMUTABLE)."""
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, fs.FS_IOC_GETFLAGS, flags)
        wanted = flags[0] | fs.FS_APPEND_FL if on else flags[0] & ~fs.FS_APPEND_FL
        fcntl.ioctl(fd, fs.FS_IOC_SETFLAGS, array.array("l", [wanted]))
    except OSError:
        return False
    return True


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
        "freeze-failure": "the next kexec fails while freezing preserved files: EINVAL "
        "(nothing changes)",
        "kexec-busy": "the next kexec finds the kexec lock taken: EBUSY",
        "kho-finalize": "the next kexec fails in KHO finalisation: EAGAIN (nothing changes; "
        "6.19 and 7.0 only)",
    }

    def __init__(self, machine: SimMachine, state: Model) -> None:
        super().__init__(machine, state)
        self.device_open = False
        self._purged = False
        #: open session handles by session key (the reference count).
        self._handles: dict[Key, set[_SessionHandle]] = {}
        #: the sim's own references to preserved / retrieved files, by inode.
        self._files: dict[Key, int] = {}

    def fault_problem(self, kind: str) -> str | None:
        """``kho-finalize`` exists up to 7.0 only.

        kernel/liveupdate/luo_core.c ``liveupdate_reboot`` turned a failing
        ``kho_finalize()`` into EAGAIN on 6.19 and 7.0; "kho: remove finalize state and
        clients" (6b0dd42d7681, mainline with mm-stable-2026-04-13, 7.1) removed
        ``kho_finalize()`` and its call there, so from 7.1 no KHO step can fail a kexec.
        """
        if kind == "kho-finalize" and self.machine.kernel_at_least("7.1"):
            return (
                f"kernel {self.machine.state.kernel} has no KHO finalisation step (removed "
                "in 7.1 by 6b0dd42d7681); use a 6.19 or 7.0 machine"
            )
        return None

    @classmethod
    def default_state(cls, profile: str, scale: int) -> LiveUpdateState:
        """Present everywhere but ``empty``; ``rfc`` is a 6.19 kernel without GET_NAME."""
        if profile == "empty":
            return LiveUpdateState(present=False)
        if profile == "rfc":
            return LiveUpdateState(get_name=False)
        return LiveUpdateState()

    def render(self, root: Dir) -> None:
        """``sys/kernel/kexec_loaded`` always; ``dev/liveupdate`` when LUO is enabled.

        kexec_loaded: kernel/ksysfs.c ``kexec_loaded_show()`` ("1" once an image is
        loaded with kexec_load/kexec_file_load).
        """
        root.mkdirs("sys/kernel").children["kexec_loaded"] = Attr(
            read=lambda: "1\n" if self.state.kexec_loaded else "0\n"
        )
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
                summary=f"{outgoing} outgoing, {incoming} incoming sessions"
                + (
                    f"; {len(self.state.divergences)} divergences from the real kernel "
                    f"(last: {self.state.divergences[-1]})"
                    if self.state.divergences
                    else ""
                ),
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
        """Release the sim's references (a file another session also holds stays)."""
        others = {(f.dev, f.ino) for s in self.state.sessions if s is not session for f in s.files}
        for item in session.files:
            key = (item.dev, item.ino)
            if key in others:
                continue
            fd = self._files.pop(key, None)
            if fd is not None:
                if item.append_only:  # luo_file_unpreserve_files: the kernel unfreezes
                    _set_append_only(fd, False)
                os.close(fd)
        session.files = []

    def _delete(self, session: SimSession) -> None:
        self._drop_files(session)
        self.state.sessions = [s for s in self.state.sessions if s is not session]
        self._handles.pop(session.key, None)

    def _purge_unheld(self) -> None:
        """Sessions a previous daemon process held and nobody handed back are gone."""
        if self._purged:
            return
        self._purged = True
        gone = [
            session
            for session in self.state.sessions
            if (session.direction == "outgoing" or session.retrieved) and not self._live(session)
        ]
        for session in gone:
            self._delete(session)
        if gone:  # nothing to save otherwise (a save of machine.json at every daemon start)
            self.machine.changed(self.name)

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
        """The session name as luo_session_create() takes it.

        From 7.2 (luo_session.c ``luo_session_create``: "reject ... invalid name
        length", Luca Boccassi's series) an empty name or 64 bytes without a NUL is
        EINVAL. 6.19 and 7.1 accept both: ``strscpy`` truncates to 63 bytes and an
        empty name is a session like any other.
        """
        raw = field.split(b"\x00", 1)[0]
        if self.machine.kernel_at_least("7.2") and (not raw or len(raw) >= len(field)):
            raise fail(errno.EINVAL, "ioctl", path, "session name empty or not NUL-terminated")
        return raw[: uapi.SESSION_NAME_MAX].decode(errors="replace")

    def _new_session_fd(self, name: str) -> tuple[int, Key]:
        fd = os.memfd_create(f"[luo_session] {name}", os.MFD_CLOEXEC)
        key = _fstat_key(fd)
        assert key is not None
        return fd, key

    def device_ioctl(self, handle: _DeviceHandle, request: int, arg: bytearray | None) -> int:
        """CREATE_SESSION and RETRIEVE_SESSION (luo_core.c ``luo_ioctl``).

        Create: EEXIST for a name an outgoing session has; ENOMEM once
        LUO_SESSION_MAX outgoing sessions exist (luo_session.c
        ``luo_session_insert``, up to 7.1; knob ``max_sessions``). Retrieve: ENOENT
        without an incoming session of that name, EINVAL when it was retrieved
        already.
        """
        path = handle.path
        table = (uapi.LIVEUPDATE_CMD_CREATE_SESSION, uapi.LIVEUPDATE_CMD_RETRIEVE_SESSION)
        nr, _ = self._decode(request, arg, table, path)
        assert arg is not None
        size, _fd, field = uapi.CREATE_SESSION.unpack_from(arg)
        name = self._name(field, path)
        if nr == uapi.LIVEUPDATE_CMD_CREATE_SESSION:
            outgoing = [s for s in self.state.sessions if s.direction == "outgoing"]
            limit = self._limit(self.state.max_sessions, LUO_SESSION_MAX)
            if limit and len(outgoing) >= limit:
                raise fail(errno.ENOMEM, "ioctl", path, "no room for another session")
            if any(s.name == name for s in outgoing):
                raise fail(errno.EEXIST, "ioctl", path, f"outgoing session {name!r} exists")
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
        self.machine.changed(self.name)
        return 0

    # ------------------------------------------------------------- sessions

    def session_ioctl(self, handle: _SessionHandle, request: int, arg: bytearray | None) -> int:
        """PRESERVE_FD, RETRIEVE_FD, FINISH and (7.2+) GET_NAME on a session fd.

        luo_session.c ``luo_session_ioctl``. From 7.2 ("liveupdate: validate session
        type before performing operation", 507e3b479f9c, mainline with tag
        liveupdate-v7.2-rc1 on 2026-06-21; Cc stable, so 7.1.y may have it)
        PRESERVE_FD on a retrieved session and RETRIEVE_FD/FINISH on an outgoing one
        are EINVAL before anything runs. On 6.19 they reach the file code: a file preserved into
        an incoming session is never carried, RETRIEVE_FD of an outgoing file fails
        in its handler (EINVAL here) and FINISH releases the outgoing files.
        """
        path = handle.path
        table: tuple[int, ...] = (
            uapi.LIVEUPDATE_CMD_SESSION_PRESERVE_FD,
            uapi.LIVEUPDATE_CMD_SESSION_RETRIEVE_FD,
            uapi.LIVEUPDATE_CMD_SESSION_FINISH,
        )
        if self.state.get_name and self.machine.kernel_at_least("7.2"):
            table += (uapi.LIVEUPDATE_CMD_SESSION_GET_NAME,)
        nr, _ = self._decode(request, arg, table, path)
        assert arg is not None
        session = self._find(handle.key)
        if session is None:
            # carried away by a kexec that this process outlived
            raise fail(errno.EINVAL, "ioctl", path, "the session no longer exists")
        incoming = session.direction == "incoming"
        self._audit(session)
        if self.machine.kernel_at_least("7.2"):
            wrong = (nr == uapi.LIVEUPDATE_CMD_SESSION_PRESERVE_FD and incoming) or (
                nr in (uapi.LIVEUPDATE_CMD_SESSION_RETRIEVE_FD, uapi.LIVEUPDATE_CMD_SESSION_FINISH)
                and not incoming
            )
            if wrong:
                raise fail(errno.EINVAL, "ioctl", path, "not valid for this session's direction")
        if nr == uapi.LIVEUPDATE_CMD_SESSION_PRESERVE_FD:
            size, fd, token = uapi.PRESERVE_FD.unpack_from(arg)
            self._preserve(session, fd, token, path)
        elif nr == uapi.LIVEUPDATE_CMD_SESSION_RETRIEVE_FD:
            size, _fd, token = uapi.RETRIEVE_FD.unpack_from(arg)
            new_fd = self._retrieve(session, token, path)
            uapi.RETRIEVE_FD.pack_into(arg, 0, size, new_fd, token)
        elif nr == uapi.LIVEUPDATE_CMD_SESSION_FINISH:
            # luo_session_finish() does not look at ``reserved``
            self._finish(session, path)
        else:
            size, reserved, _ = uapi.GET_NAME.unpack_from(arg)
            if reserved:
                raise fail(errno.EINVAL, "ioctl", path, "reserved must be 0")
            uapi.GET_NAME.pack_into(arg, 0, size, 0, uapi.encode_name(session.name))
        self.machine.changed(self.name)
        return 0

    def _finish(self, session: SimSession, path: str) -> None:
        """luo_file.c ``luo_file_finish``: every handler's can_finish, then release all.

        The session itself stays until its last fd is closed: a second FINISH
        succeeds (no files left) and RETRIEVE_FD answers ENOENT. The VFIO handler's
        can_finish (posted series) refuses until the device was retrieved and bound
        to an iommufd: EBUSY, nothing released.
        """
        for item in session.files:
            if item.kind == "vfio" and session.direction == "incoming":
                if not item.retrieved:
                    raise fail(errno.EBUSY, "ioctl", path, f"VFIO token {item.token} not retrieved")
                if not self.state.vfio_bound:
                    raise fail(
                        errno.EBUSY, "ioctl", path, f"VFIO token {item.token} not bound to iommufd"
                    )
        self._drop_files(session)
        session.finished = True

    def _classify(self, fd: int, path: str) -> tuple[Literal["memfd", "vfio"], Key, str]:
        """Find the handler as luo_file.c ``luo_preserve_file`` does (``can_preserve``).

        memfd (mm/memfd_luo.c ``memfd_luo_can_preserve``): a shmem file without a link,
        i.e. memfd_create(2) without MFD_HUGETLB. VFIO (posted series,
        ``vfio_pci_liveupdate_can_preserve``): only a device's cdev file
        (``/dev/vfio/devices/vfioN``), never a group file (``/dev/vfio/<N>``).
        """
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
            and link.startswith(self.state.vfio_prefix + "devices/")
            and (stat.S_ISCHR(info.st_mode) or stat.S_ISREG(info.st_mode))
        ):
            return "vfio", key, link
        raise fail(errno.ENOENT, "ioctl", path, f"no LUO handler accepts {link or 'this file'}")

    def _preserve(self, session: SimSession, fd: int, token: int, path: str) -> None:
        """luo_file.c ``luo_preserve_file`` and the handler's ``preserve``.

        Order as in the kernel: EEXIST for a token used in this session, ENOSPC past
        LUO_FILE_MAX files in this session (up to 7.1; knob ``max_files``), EBADF,
        ENOENT without a handler. From 7.1 ("liveupdate: prevent double management of
        files", 00d0b372374f, mainline with mm-stable-2026-04-18-02-14;
        ``luo_preserved_files`` xarray, keyed by ``memfd_luo_get_id``: the inode) a
        file already preserved in any session is EBUSY; 6.19 accepts it again. From
        7.1 ("mm: memfd_luo: preserve file seals", 8a552d68a86e, mainline with
        mm-stable-2026-04-13) seals outside MEMFD_LUO_ALL_SEALS are EOPNOTSUPP. A
        memfd is then frozen (``memfd_luo_preserve``: ``shmem_freeze``), its holes
        filled (``memfd_pin_folios``) and its size recorded.
        """
        if any(f.token == token for f in session.files):
            raise fail(errno.EEXIST, "ioctl", path, f"token {token} already used in this session")
        limit = self._limit(self.state.max_files, LUO_FILE_MAX)
        if limit and len(session.files) >= limit:
            err = errno.ENOMEM if self.machine.kernel_at_least("7.2") else errno.ENOSPC
            raise fail(err, "ioctl", path, "this session has no room for more files")
        kind, key, link = self._classify(fd, path)
        if key in self._files and self.machine.kernel_at_least("7.1"):
            raise fail(errno.EBUSY, "ioctl", path, "this file is already preserved")
        seals = 0
        size = 0
        blocks = 0
        append_only = False
        if kind == "memfd":
            try:
                seals = fcntl.fcntl(fd, F_GET_SEALS)
            except OSError:
                seals = 0
            if seals & ~uapi.MEMFD_LUO_SEALS and self.machine.kernel_at_least("7.1"):
                raise fail(errno.EOPNOTSUPP, "ioctl", path, f"unknown memfd seals 0x{seals:x}")
            size = os.fstat(fd).st_size
            blocks = self._freeze_memfd(fd, seals, size)
            append_only = _set_append_only(fd, True)
        if key not in self._files:
            self._files[key] = os.dup(fd)
        session.files.append(
            SimFile(
                token=token,
                kind=kind,
                dev=key[0],
                ino=key[1],
                path=link,
                seals=seals,
                own_seals=seals,
                size=size,
                blocks=blocks,
                append_only=append_only,
            )
        )

    def _limit(self, knob: int, until_7_1: int) -> int:
        """A configured limit, else the release's own (0: none, from 7.2)."""
        if knob > 0:
            return knob
        return 0 if self.machine.kernel_at_least("7.2") else until_7_1

    def _freeze_memfd(self, fd: int, seals: int, size: int) -> int:
        """Freeze what a seal can, fill the holes; the allocated blocks afterwards.

        memfd_luo_preserve: ``shmem_freeze`` (see the module doc for what the sim
        cannot enforce) and ``memfd_pin_folios``, which allocates a page for every
        index up to the size ("Holes in the file are filled by allocating pages for
        them during preservation", mm/memfd_luo.c).
        """
        if size:
            with contextlib.suppress(OSError):  # ENOSPC: the kernel's pin would fail too
                os.posix_fallocate(fd, 0, size)
        frozen = uapi.F_SEAL_GROW | uapi.F_SEAL_SHRINK
        if not seals & uapi.F_SEAL_SEAL and seals & frozen != frozen:
            # it fails e.g. while a writable shared mapping exists; the audit holds
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_ADD_SEALS, frozen)
        return os.fstat(fd).st_blocks

    def _audit(self, session: SimSession) -> None:
        """Record what a client did to a frozen memfd that the kernel would refuse.

        Only for an outgoing session (the kernel unfreezes on unpreserve and a
        retrieved memfd is an ordinary one again). Size and allocated blocks are
        compared with the record made at preserve time: a different size is a
        ftruncate or a write past the end (``shmem_setattr``/``shmem_write_begin``:
        EPERM), fewer blocks a punched hole, more blocks fallocate beyond the end
        (``shmem_fallocate``: EPERM).
        """
        if session.direction != "outgoing":
            return
        for item in session.files:
            fd = self._files.get((item.dev, item.ino))
            if item.kind != "memfd" or item.diverged or fd is None:
                continue
            try:
                info = os.fstat(fd)
            except OSError:
                continue
            what = ""
            if info.st_size != item.size:
                what = f"its size changed from {item.size} to {info.st_size} bytes"
            elif info.st_blocks < item.blocks:
                what = "a hole was punched into it"
            elif info.st_blocks > item.blocks:
                what = "fallocate allocated beyond its end"
            if what:
                item.diverged = True
                self._diverged(
                    f"session {session.name!r} token {item.token}: {what} after "
                    "PRESERVE_FD; the kernel refuses that with EPERM (shmem_freeze), "
                    "the simulation could not"
                )

    def _diverged(self, text: str) -> None:
        log.warning("sim_divergence", component=self.name, what=text)
        self.state.divergences = [*self.state.divergences, text][-_DIVERGENCES_MAX:]
        self.machine.changed(self.name)

    def _retrieve(self, session: SimSession, token: int, path: str) -> int:
        item = next((f for f in session.files if f.token == token), None)
        if item is None:
            raise fail(errno.ENOENT, "ioctl", path, f"no file with token {token}")
        if session.direction == "outgoing":
            # 6.19 only: the handler's retrieve runs on live (not handed over) memory
            # and KHO refuses it
            raise fail(errno.EINVAL, "ioctl", path, f"token {token} was not handed over")
        if item.failed_errno:
            raise fail(item.failed_errno, "ioctl", path, f"token {token} failed to restore")
        kept = self._files.get((item.dev, item.ino)) if item.retrieved else None
        if kept is None:
            try:
                kept = self._recreate(item, path)
            except KernelError as error:
                item.failed_errno = error.errno
                self.machine.changed(self.name)
                raise
            key = _fstat_key(kept)
            assert key is not None
            item.dev, item.ino = key
            item.retrieved = True
            self._files[key] = kept
        return os.dup(kept)

    def _recreate(self, item: SimFile, path: str) -> int:
        """The handler's retrieve (mm/memfd_luo.c ``memfd_luo_retrieve``).

        A new memfd with the contents, the size recorded at preserve time and the
        position at freeze time. On 6.19 it has no seals and cannot be sealed
        (``memfd_alloc_file(name, 0)``); from 7.1 the preserved seals are applied.
        """
        if item.kind == "vfio":
            try:
                return os.open(item.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as error:
                raise fail(error.errno or errno.EIO, "ioctl", path, item.path) from error
        data = base64.b64decode(item.data)
        with_seals = self.machine.kernel_at_least("7.1")
        flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if with_seals else 0)
        fd = os.memfd_create(f"luo-restored-{item.token}", flags)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.ftruncate(fd, item.size)
            os.lseek(fd, item.pos, os.SEEK_SET)
            if with_seals and item.seals:
                fcntl.fcntl(fd, F_ADD_SEALS, item.seals)
        except OSError as error:
            os.close(fd)
            raise fail(error.errno or errno.EIO, "ioctl", path, "restoring the memfd") from error
        return fd

    def release(self, handle: _SessionHandle) -> None:
        """The last close of an outgoing session drops it; of an incoming one, finishes it.

        luo_session.c ``luo_session_release``: if finishing a retrieved session fails
        (a VFIO device not retrieved or bound), the session and its files stay in the
        incoming list until the next boot.
        """
        handles = self._handles.get(handle.key)
        if handles is None:
            return
        handles.discard(handle)
        if handles:
            return
        session = self._find(handle.key)
        if session is None:
            return
        self._audit(session)  # what happened while it was frozen (unfrozen from now on)
        if session.direction == "incoming" and not session.finished:
            try:
                self._finish(session, handle.path)
            except KernelError:
                self._handles.pop(session.key, None)
                self.machine.changed(self.name)
                return
        self._delete(session)
        self.machine.changed(self.name)

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

    def _new_kernel(self, sessions: list[SimSession]) -> None:
        """The old kernel is gone: its references and freezes with it."""
        for session in self.state.sessions:
            for item in session.files:
                fd = self._files.get((item.dev, item.ino))
                if item.append_only and fd is not None:
                    _set_append_only(fd, False)  # the client outlives a simulated kexec
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._handles.clear()
        self.state.sessions = sessions
        self.state.eio = False
        self.device_open = False
        self.machine.changed(self.name)

    def on_reboot(self) -> None:
        """A cold reboot keeps nothing: every session and file is gone."""
        self._new_kernel([])

    def on_kexec(self) -> None:
        """``kernel_kexec()`` then ``liveupdate_reboot()``; on failure nothing changes.

        kernel/kexec_core.c ``kernel_kexec``: EBUSY when the kexec lock is taken,
        EINVAL when no image is loaded; kernel/liveupdate/luo_core.c
        ``liveupdate_reboot``: the first failing handler's ``freeze`` errno
        (luo_file.c ``luo_file_freeze``, everything unfrozen again), and on 6.19 and
        7.0 EAGAIN when ``kho_finalize()`` fails (gone from 7.1: :meth:`fault_problem`).
        Then every held outgoing session is serialised.
        """
        if self.machine.take_fault(self.name, "*", ("kexec-busy",)):
            raise fail(errno.EBUSY, "reboot", "kexec", "another kexec holds the kexec lock")
        if not self.state.kexec_loaded:
            raise fail(errno.EINVAL, "reboot", "kexec", "no kernel is loaded for kexec")
        fault = self.machine.take_fault(self.name, "*", ("freeze-failure",))
        if self.state.fail_freeze or fault:
            raise fail(errno.EINVAL, "reboot", "kexec", "a preserved file refused to freeze")
        carried = [s for s in self.state.sessions if s.direction == "outgoing" and self._live(s)]
        for session in carried:
            self._audit(session)
        if self.state.vfio_irqs_enabled and any(f.kind == "vfio" for s in carried for f in s.files):
            # vfio_pci_liveupdate_freeze (posted series): interrupts still enabled
            raise fail(errno.EINVAL, "reboot", "kexec", "a VFIO device has interrupts enabled")
        if not self.machine.kernel_at_least("7.1") and self.machine.take_fault(
            self.name, "*", ("kho-finalize",)
        ):
            raise fail(errno.EAGAIN, "reboot", "kexec", "KHO finalisation failed")
        incoming: list[SimSession] = []
        for session in carried:
            files = []
            for item in session.files:
                fd = self._files.get((item.dev, item.ino))
                if fd is None:
                    continue
                files.append(self._serialise(item, fd))
            incoming.append(SimSession(name=session.name, direction="incoming", files=files))
        self._new_kernel(incoming)

    def _serialise(self, item: SimFile, fd: int) -> SimFile:
        """What the next kernel gets (mm/memfd_luo.c ``memfd_luo_preserve``/``freeze``).

        The contents of the pinned folios up to the size recorded at preserve time,
        the position at freeze time; the seals the owner had set only from 7.1.
        """
        if item.kind == "vfio":
            return SimFile(token=item.token, kind="vfio", path=item.path)
        size = item.size
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
            seals=item.own_seals if self.machine.kernel_at_least("7.1") else 0,
        )


COMPONENT = LiveUpdateComponent
