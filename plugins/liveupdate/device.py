"""The ``/dev/liveupdate`` device and the sessions it brokers, with their operations.

The device creates and retrieves sessions, lists them and performs the kexec; a
:class:`LiveUpdateSession` preserves files, hands them back, finishes and is dropped.
Both work through the :class:`LiveUpdateContext` (the device handle, the sessions,
the registry, the lock) and never through the plugin. The kernel side of each
operation is in kernel/liveupdate/luo_session.c and luo_file.c; the rows of
docs/kernel.md ("Live Update Orchestrator") list what livefw relies on.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

from livefw.errors import (
    AuthFailed,
    Busy,
    InvalidArgument,
    InvalidFile,
    KernelError,
    LivefwError,
    NoSpace,
    NotFound,
    NothingToDo,
    NotSupported,
)
from livefw.kernel import Handle
from livefw.kernel.uapi import liveupdate as uapi
from livefw.plugin import Device
from livefw.plugins.liveupdate.context import LiveUpdateContext
from livefw.plugins.liveupdate.errors import (
    fd_of,
    map_error,
    map_kexec_error,
    map_preserve_error,
)
from livefw.plugins.liveupdate.records import (
    FILES_MAX,
    INTERFACE,
    PROTOCOL,
    SESSIONS_MAX,
    SessionInfo,
    SessionRecord,
    info_of,
    kernel_session_name,
    parse_options,
)

__all__ = ["KEXEC_LOADED", "LiveUpdateDevice", "LiveUpdateSession"]

#: reads "1" once a kernel is loaded for kexec (kernel/ksysfs.c kexec_loaded_show).
KEXEC_LOADED = "sys/kernel/kexec_loaded"


class LiveUpdateDevice(Device):
    """``/dev/liveupdate``: not updatable; carries the LiveUpdate interface."""

    interfaces: ClassVar[tuple[str, ...]] = (INTERFACE,)

    def __init__(self, ctx: LiveUpdateContext) -> None:
        super().__init__(
            ctx.plugin.name,
            uapi.LIVEUPDATE_DEV,
            name="Live Update Orchestrator",
            vendor="Linux",
            summary="Keeps memfds (and VMM state) across a kexec-based kernel update",
            protocol=PROTOCOL,
            flags=("internal",),
            metadata={"device-file": "/" + uapi.LIVEUPDATE_DEV},
        )
        self.ctx = ctx

    # ------------------------------------------------------------ lookups

    def session(self, caller: int, kernel_name: str) -> LiveUpdateSession:
        """The session ``caller`` may use (root may use every session).

        Raises:
            NotFound: no such session.
            AuthFailed: it belongs to another user.
        """
        session = self.ctx.sessions.get(kernel_name)
        if session is None:
            raise NotFound(f"no live-update session {kernel_name!r}")
        if caller != 0 and session.record.owner != caller:
            raise AuthFailed(f"session {session.record.name!r} belongs to another user")
        return session

    def session_info(self, kernel_name: str) -> SessionInfo:
        """The current state of one session (NotFound once it is gone)."""
        return self.session(0, kernel_name).info()

    def owner_of(self, kernel_name: str) -> int | None:
        """The owner uid of a session, or None when there is no such session."""
        session = self.ctx.sessions.get(kernel_name)
        return None if session is None else session.record.owner

    def list_sessions(self, caller: int) -> list[SessionInfo]:
        """The caller's sessions; root sees every session."""
        return [
            session.info()
            for session in self.ctx.ordered()
            if caller == 0 or session.record.owner == caller
        ]

    @property
    def holds_sessions(self) -> bool:
        """Whether livefwd must stay resident: it holds (or brokers) client sessions."""
        return bool(self.ctx.sessions)

    def publish(self) -> None:
        """Show the session counts and the fd store in the device's metadata."""
        counts = {"outgoing": 0, "incoming": 0, "retrieved": 0}
        for session in self.ctx.sessions.values():
            counts[session.record.state] += 1
        metadata = dict(self.metadata)
        metadata.update({f"sessions-{key}": str(value) for key, value in counts.items()})
        metadata["fd-store"] = "yes" if self.ctx.fd_store_available else "no"
        self.update(metadata=metadata)

    async def save(self, what: str) -> None:
        """Write the registry after a change the kernel already made (cannot undo).

        A failure is logged: the kernel state stands, only livefwd's copy is behind.
        """
        try:
            await self.ctx.write_registry()
        except LivefwError as error:
            self.ctx.log.error("liveupdate_registry_write_failed", error=error.message, what=what)

    # ------------------------------------------------------------ operations

    async def create_session(
        self, caller: int, name: str, options: dict[str, Any] | None = None
    ) -> SessionInfo:
        """Create an outgoing session owned by ``caller``.

        A non-root caller may hold at most ``[plugins.liveupdate] sessions_per_user``
        sessions (SESSIONS_PER_USER by default), in any state: every session holds
        one of livefwd's SESSIONS_MAX slots and a descriptor until it is finished or
        dropped. Non-root callers together may hold at most SESSIONS_MAX less
        ``[plugins.liveupdate] sessions_reserved_for_root`` (SESSIONS_RESERVED_FOR_ROOT
        by default), so that several users cannot take the last slots from root (the
        VMM manager). Root is exempt from both (root's VMMs may need more, and root
        can reconfigure or stop livefwd anyway); the SESSIONS_MAX limit holds for
        everyone.

        Raises:
            InvalidArgument: bad name or option, or a session of that name exists.
            NoSpace: the caller holds its quota of sessions, non-root users hold
                theirs together, livefwd holds SESSIONS_MAX sessions, or the kernel
                has no room.
        """
        opts = parse_options(options, ("label",))
        kernel_name = kernel_session_name(caller, name)
        ctx = self.ctx
        async with ctx.lock:
            ctx.check_ready()
            existing = ctx.sessions.get(kernel_name)
            if existing is not None:
                hint = (
                    "finish or drop the session from before the update first"
                    if existing.record.state != "outgoing"
                    else "pick another name or drop it"
                )
                raise InvalidArgument(f"you already have a session {name!r}: {hint}")
            if caller != 0:
                self._check_quotas(caller)
            if len(ctx.sessions) >= SESSIONS_MAX:
                raise NoSpace(
                    f"livefwd already brokers {SESSIONS_MAX} live-update sessions, the most "
                    "it keeps; finish or drop sessions that are no longer needed"
                )
            handle = await ctx.create_kernel_session(kernel_name)
            record = SessionRecord(
                name=name,
                owner=caller,
                kernel_name=kernel_name,
                state="outgoing",
                label=str(opts.get("label", "")),
            )
            ctx.sessions[kernel_name] = LiveUpdateSession(self, record, handle)
            try:
                await ctx.write_registry()
            except BaseException:
                del ctx.sessions[kernel_name]
                await handle.close()
                raise
            await ctx.store(kernel_name, handle)
            ctx.log.info("liveupdate_session_created", session=kernel_name, owner=caller)
            self.publish()
            return info_of(record)

    def _check_quotas(self, caller: int) -> None:
        """Refuse a new session for a non-root ``caller`` over either quota.

        Raises:
            NoSpace: the caller holds ``sessions_per_user`` sessions, or non-root
                users hold ``sessions_for_users`` together.
        """
        ctx = self.ctx
        held = ctx.held_by(caller)
        if held >= ctx.sessions_per_user:
            raise NoSpace(
                f"you hold {held} live-update sessions and one user may hold at most "
                f"{ctx.sessions_per_user} ([plugins.liveupdate] sessions_per_user in "
                "livefw.conf); finish or drop sessions you no longer need"
            )
        together = ctx.held_by_users()
        if together >= ctx.sessions_for_users:
            raise NoSpace(
                f"users other than root hold {together} live-update sessions together "
                f"and may hold at most {ctx.sessions_for_users}: livefwd keeps "
                f"{ctx.sessions_reserved_for_root} of its {SESSIONS_MAX} for root "
                "([plugins.liveupdate] sessions_reserved_for_root in livefw.conf); "
                "finish or drop sessions you no longer need, or ask the administrator"
            )

    async def retrieve_session(
        self, caller: int, name: str, options: dict[str, Any] | None = None
    ) -> SessionInfo:
        """Retrieve a session the previous kernel preserved (idempotent).

        Raises:
            NotFound: no such session waits for the caller.
            InvalidArgument: it is a session of this boot (nothing to retrieve).
        """
        parse_options(options, ())
        kernel_name = kernel_session_name(caller, name)
        ctx = self.ctx
        async with ctx.lock:
            ctx.check_ready()
            session = ctx.sessions.get(kernel_name)
            if session is None:
                raise NotFound(f"no session {name!r} was preserved for you by the last kexec")
            if session.record.state == "retrieved":
                return session.info()
            if session.record.state == "outgoing":
                raise InvalidArgument(
                    f"session {name!r} was created in this boot: its files come back "
                    "only after the kexec"
                )
            session.handle = await ctx.retrieve_kernel_session(kernel_name)
            session.record.state = "retrieved"
            await self.save("retrieve session")
            await ctx.store(kernel_name, session.handle)
            ctx.log.info("liveupdate_session_retrieved", session=kernel_name)
            self.publish()
            return session.info()

    async def kexec(self) -> None:
        """Switch to the loaded kernel while livefwd holds every session.

        Reads ``/sys/kernel/kexec_loaded`` first, so that the kernel's EINVAL (which
        ``kernel_kexec()`` in kernel/kexec_core.c answers when no image is loaded,
        and a LUO file handler's freeze may answer too) has one meaning left. The
        errnos of reboot(LINUX_REBOOT_CMD_KEXEC): EBUSY when another kexec holds the
        kexec lock; the handler's errno when freezing a preserved file fails
        (kernel/liveupdate/luo_file.c ``luo_file_freeze``, e.g. EINVAL from a VFIO
        device with interrupts still enabled); on 6.19 and 7.0 EAGAIN when KHO
        finalisation fails (luo_core.c ``liveupdate_reboot``; removed in 7.1 by
        6b0dd42d7681). After any of them nothing was lost.

        Returns only on failure (in the simulation the daemon ends right after).

        Raises:
            NotSupported: this kernel cannot kexec, or reboot(2) was not permitted.
            NothingToDo: no kernel is loaded (``kexec -l -s``).
            Busy: another kexec is under way, or EAGAIN (KHO finalisation up to 7.0);
                try again.
            InvalidArgument: a preserved file refused to freeze.
        """
        ctx = self.ctx
        async with ctx.lock:
            ctx.check_ready()
            if not await self._kexec_loaded():
                raise NothingToDo(
                    "no kernel is loaded for kexec (/sys/kernel/kexec_loaded is 0): load "
                    "one with `kexec -l -s KERNEL --initrd=... --reuse-cmdline` first"
                )
            await ctx.write_registry()
            ctx.log.warning("liveupdate_kexec", sessions=len(ctx.sessions))
            try:
                await ctx.provider.kexec()
            except KernelError as error:
                raise map_kexec_error(error, self._vfio_tokens()) from error

    async def _kexec_loaded(self) -> bool:
        try:
            text = await self.ctx.provider.read_attr(KEXEC_LOADED)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                raise NotSupported(
                    "this kernel has no kexec (no /sys/kernel/kexec_loaded: "
                    "CONFIG_KEXEC_CORE is off)"
                ) from error
            raise
        return text.strip() == "1"

    def _vfio_tokens(self) -> list[str]:
        return [
            f"{s.record.name}:{token}"
            for s in self.ctx.ordered()
            if s.record.state == "outgoing"
            for token in s.record.vfio
        ]


class LiveUpdateSession:
    """One brokered session: its registry record and the session fd livefwd holds.

    Attributes:
        device: the device that brokers it.
        record: what the registry keeps about it.
        handle: the kernel session fd (None for an incoming session not retrieved).
    """

    def __init__(
        self, device: LiveUpdateDevice, record: SessionRecord, handle: Handle | None = None
    ) -> None:
        self.device = device
        self.ctx = device.ctx
        self.record = record
        self.handle = handle

    @property
    def kernel_name(self) -> str:
        """The session's name in the kernel (``livefw.<uid>.<name>``)."""
        return self.record.kernel_name

    def info(self) -> SessionInfo:
        """The session as the bus layer and the CLI see it."""
        return info_of(self.record)

    def tokens(self) -> dict[int, str]:
        """Tokens preserved through livefwd in the session, with their labels."""
        return {int(token): label for token, label in self.record.tokens.items()}

    def _check_current(self) -> None:
        """Under the lock: the session was not finished or dropped meanwhile."""
        self.ctx.check_ready()
        if self.ctx.sessions.get(self.kernel_name) is not self:
            raise NotFound(f"no live-update session {self.kernel_name!r}")

    async def preserve(self, fd: int, token: int, options: dict[str, Any] | None = None) -> None:
        """Preserve the memfd or VFIO device ``fd`` (a descriptor in this process).

        The caller keeps ownership of ``fd``; the kernel takes its own reference. From
        now on the kernel keeps a memfd **frozen** (mm/memfd_luo.c
        ``memfd_luo_preserve``: growing, shrinking and hole punching fail with EPERM;
        writes inside it still work) and carries the size it has now. A VFIO device
        must be its cdev (``/dev/vfio/devices/vfioN``), never a group file.

        Raises:
            InvalidArgument: not an outgoing session, or the token is taken.
            InvalidFile: not a memfd or VFIO device cdev, or already preserved.
            NoSpace: the session has FILES_MAX files (livefwd's limit; the kernel's
                LUO_FILE_MAX up to 7.1).
        """
        opts = parse_options(options, ("label",))
        if not 0 <= token <= 0xFFFFFFFFFFFFFFFF:
            raise InvalidArgument("a token is an unsigned 64-bit number")
        async with self.ctx.lock:
            self._check_current()
            record = self.record
            if record.state != "outgoing" or self.handle is None:
                raise InvalidArgument(
                    f"session {record.name!r} comes from before the update: files can be "
                    "preserved only in a session created in this boot"
                )
            if str(token) in record.tokens:
                raise InvalidArgument(f"token {token} is already used in session {record.name!r}")
            if len(record.tokens) >= FILES_MAX:
                raise NoSpace(
                    f"session {record.name!r} has {FILES_MAX} files, the most livefwd keeps "
                    "in one session; use another session for more"
                )
            link = uapi.fd_path(fd)
            if uapi.VFIO_GROUP_RE.search(link):
                raise InvalidFile(
                    f"{link} is a VFIO group file: Live Update preserves only a device's "
                    "cdev (/dev/vfio/devices/vfioN, opened and bound through iommufd); "
                    "reopen the device through its cdev"
                )
            try:
                await self.handle.ioctl(
                    uapi.LIVEUPDATE_SESSION_PRESERVE_FD, uapi.pack_preserve_fd(fd, token)
                )
            except KernelError as error:
                raise map_preserve_error(error, token, link) from error
            record.tokens[str(token)] = str(opts.get("label", ""))
            if uapi.VFIO_DEVICE_RE.search(link):
                record.vfio.append(str(token))
            # The kernel cannot unpreserve: the file is in the session and is carried.
            await self.device.save(f"preserve token {token}")
            await self.ctx.store(self.kernel_name, self.handle)
            self.ctx.log.info("liveupdate_preserved", session=self.kernel_name, token=token)

    async def retrieve_file(self, token: int) -> Handle:
        """A new descriptor for the file preserved under ``token`` (caller closes it).

        Raises:
            InvalidArgument: the session is not a retrieved one.
            NotFound: no file with that token.
        """
        async with self.ctx.lock:
            self._check_current()
            record = self.record
            if record.state == "outgoing":
                raise InvalidArgument(
                    f"session {record.name!r} was created in this boot: its files come back "
                    "only after the kexec"
                )
            if record.state == "incoming" or self.handle is None:
                raise InvalidArgument(f"retrieve session {record.name!r} first (RetrieveSession)")
            arg = uapi.pack_retrieve_fd(token)
            try:
                await self.handle.ioctl(uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg)
            except KernelError as error:
                if error.errno == errno.ENOENT:
                    raise NotFound(
                        f"session {record.name!r} has no file with token {token}"
                    ) from error
                raise map_error(error, f"retrieving token {token}") from error
            handle = await self.ctx.provider.adopt_fd(fd_of(arg), f"token {token}")
            if str(token) not in record.retrieved:
                record.retrieved.append(str(token))
                await self.device.save(f"retrieve token {token}")
            # storing the session again is harmless and lets a simulated kernel keep
            # the retrieved file across a restart as the real one does
            await self.ctx.store(self.kernel_name, self.handle)
            return handle

    async def finish(self, options: dict[str, Any] | None = None) -> None:
        """Finish a session from before the update: the kernel releases its files.

        Files never retrieved through livefwd would be released too, so FINISH is
        refused while any is left, unless ``options["force"]`` is true. VFIO devices
        are the kernel's own exception (posted VFIO handler, ``can_finish``): they
        must be retrieved and bound to an iommufd first, ``force`` or not.

        Raises:
            InvalidArgument: an outgoing session (use drop), or a bad option.
            Busy: files not retrieved yet (the message lists their tokens), or a file
                handler refused (a VFIO device not retrieved or bound).
        """
        force = parse_options(options, ("force",)).get("force", False)
        if not isinstance(force, bool):
            raise InvalidArgument("option force must be a boolean")
        async with self.ctx.lock:
            self._check_current()
            record = self.record
            if record.state == "outgoing":
                raise InvalidArgument(
                    f"session {record.name!r} was created in this boot and cannot be finished; "
                    "drop it to release it"
                )
            waiting = record.waiting()
            if waiting and not force:
                raise Busy(
                    f"session {record.name!r} still has files nobody retrieved (tokens "
                    f"{', '.join(str(t) for t in waiting)}); finishing releases them for good. "
                    "Retrieve them first, or finish with force "
                    "(`livefw liveupdate finish --force`)"
                )
            if self.handle is None:
                self.handle = await self.ctx.retrieve_kernel_session(self.kernel_name)
                record.state = "retrieved"
            try:
                await self.handle.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, uapi.pack_finish())
            except KernelError as error:
                if error.errno == errno.EBUSY:
                    vfio = ", ".join(record.vfio) or "?"
                    raise Busy(
                        f"the kernel will not finish session {record.name!r} yet: a file "
                        "handler refused. VFIO devices (tokens "
                        f"{vfio}) must be retrieved and bound to an iommufd "
                        "(VFIO_DEVICE_BIND_IOMMUFD) before FINISH; then try again"
                    ) from error
                raise map_error(error, f"finishing {record.name}") from error
            if waiting:
                self.ctx.log.warning(
                    "liveupdate_finish_forced", session=self.kernel_name, released=waiting
                )
            await self._forget()
            self.ctx.log.info("liveupdate_session_finished", session=self.kernel_name)

    async def drop(self) -> None:
        """Release livefwd's reference; the session ends when no other holder is left.

        For a session from before the update, closing it finishes it in the kernel
        (luo_session.c ``luo_session_release``), so the rule of :meth:`finish` holds:
        while files were never retrieved, drop is refused; ``finish`` with force
        releases them.

        Raises:
            Busy: a session from before the update still has files never retrieved.
        """
        async with self.ctx.lock:
            self._check_current()
            record = self.record
            waiting = record.waiting()
            if record.state != "outgoing" and waiting:
                raise Busy(
                    f"dropping session {record.name!r} finishes it, and it still has files "
                    f"nobody retrieved (tokens {', '.join(str(t) for t in waiting)}). Retrieve "
                    "them first, or release them with `livefw liveupdate finish --force`"
                )
            if self.handle is None and record.state == "incoming":
                # not retrieved yet: retrieving and closing it finishes it
                self.handle = await self.ctx.retrieve_kernel_session(self.kernel_name)
            await self._forget()
            self.ctx.log.info("liveupdate_session_dropped", session=self.kernel_name)

    async def _forget(self) -> None:
        del self.ctx.sessions[self.kernel_name]
        if self.handle is not None:
            await self.handle.close()
            self.handle = None
        await self.ctx.unstore(self.kernel_name)
        await self.device.save("forget session")
        self.device.publish()

    def client_handle(self) -> Handle:
        """The handle livefwd holds for the session, for the bus layer to duplicate.

        Raises:
            NotSupported: on the simulated machine (its session fds mean nothing to
                another process) or for a session livefwd has not retrieved.
        """
        if self.ctx.provider.simulated:
            raise NotSupported(
                "the simulated kernel lives inside livefwd: its session fds cannot be "
                "used by another process; use Preserve/Retrieve instead"
            )
        if self.handle is None:
            raise NotSupported(f"retrieve session {self.record.name!r} first")
        return self.handle
