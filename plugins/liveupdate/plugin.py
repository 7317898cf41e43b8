"""Live Update Orchestrator: livefwd as the one holder of ``/dev/liveupdate``.

The kernel lets a single process open ``/dev/liveupdate``. livefwd is that process
and brokers sessions for less privileged clients (VMMs): it creates a kernel session
per client session, preserves the memfds clients pass, keeps every session fd open
until the kexec (a session dies with its last fd), performs the kexec itself, and
after it retrieves the sessions by name and hands the files back by token.

Kernel session names are ``livefw.<uid>.<name>`` so two users cannot collide; the
broker's own registry (names, owners, tokens, labels) lives in a sealed memfd
preserved in a reserved session (``livefw.registry.a``/``.b``, alternating so a new
registry is preserved before the old one is released) and in ``registry.json`` in
the plugin's state dir for restarts without kexec. Session fds go into systemd's fd
store so a daemon restart keeps them.
"""

from __future__ import annotations

import asyncio
import errno
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from livefw.errors import (
    AuthFailed,
    Busy,
    Internal,
    InvalidArgument,
    InvalidFile,
    KernelError,
    LivefwError,
    NoSpace,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel import Handle, OpenFlags
from livefw.kernel.uapi import liveupdate as uapi
from livefw.plugin import Device, Plugin, PluginContext, Probe, clean_text

__all__ = [
    "INTERFACE",
    "LiveUpdateDevice",
    "LiveUpdatePlugin",
    "SessionInfo",
    "kernel_session_name",
]

PROTOCOL = "org.livefw.liveupdate"
#: the D-Bus interface the device carries (implemented in livefw.bus.ext_liveupdate).
INTERFACE = "org.livefw.Daemon1.LiveUpdate"
#: kernel session names livefwd creates for clients: ``livefw.<uid>.<name>``.
KERNEL_PREFIX = "livefw."
#: livefwd's own registry sessions (no uid, so no client name can collide).
REGISTRY_SESSIONS = ("livefw.registry.a", "livefw.registry.b")
#: the registry's copy in the plugin's state dir (restarts without a kexec).
REGISTRY_FILE = "registry.json"
REGISTRY_TOKEN = 1
#: fd store names: ``luo.<kernel session name>``.
FDSTORE_PREFIX = "luo."
#: longest uid in decimal (4294967295).
_UID_DIGITS = 10
#: longest client session name: 63 - len("livefw.") - 10 - len(".") = 45.
NAME_MAX = uapi.SESSION_NAME_MAX - len(KERNEL_PREFIX) - _UID_DIGITS - 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LABEL_MAX = 256
#: reads "1" once a kernel is loaded for kexec (kernel/ksysfs.c kexec_loaded_show).
KEXEC_LOADED = "sys/kernel/kexec_loaded"
_VFIO_DEVICE = uapi.VFIO_DEVICE_RE
_VFIO_GROUP = uapi.VFIO_GROUP_RE
#: the registry memfd is sealed: nobody, not even livefwd, changes it after writing.
_REGISTRY_SEALS = uapi.F_SEAL_SEAL | uapi.F_SEAL_SHRINK | uapi.F_SEAL_GROW | uapi.F_SEAL_WRITE

State = Literal["outgoing", "incoming", "retrieved"]


def kernel_session_name(owner: int, name: str) -> str:
    """The kernel name of a client session (validates ``name``).

    Raises:
        InvalidArgument: empty, too long, or characters outside ``[A-Za-z0-9._-]``.
    """
    if not name:
        raise InvalidArgument("a session name must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidArgument(
            f"session name {name[:20]!r}... is {len(name)} characters; at most {NAME_MAX} fit "
            "in the kernel's 63-character limit next to the owner's uid"
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"session name {name!r} may use only letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit"
        )
    if not 0 <= owner <= 0xFFFFFFFF:
        raise InvalidArgument(f"invalid owner uid {owner}")
    return f"{KERNEL_PREFIX}{owner}.{name}"


class SessionRecord(BaseModel):
    """One brokered session in the registry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    owner: int
    kernel_name: str
    state: State
    label: str = ""
    #: token (decimal string, JSON keys are strings) -> label
    tokens: dict[str, str] = Field(default_factory=dict)
    #: tokens handed back through livefwd after the kexec (Retrieve)
    retrieved: list[str] = Field(default_factory=list)
    #: tokens that are VFIO device files (the kernel's rules for them differ)
    vfio: list[str] = Field(default_factory=list)


class Registry(BaseModel):
    """What survives a restart (registry.json) and a kexec (the registry memfd)."""

    model_config = ConfigDict(extra="forbid")

    generation: int = 0
    boot_id: str = ""
    sessions: list[SessionRecord] = Field(default_factory=list)


@dataclass(frozen=True)
class SessionInfo:
    """A session as the bus layer and the CLI see it."""

    name: str
    kernel_name: str
    owner: int
    state: str
    label: str
    tokens: dict[int, str] = field(default_factory=dict)


@dataclass
class _Session:
    record: SessionRecord
    handle: Handle | None = None


def _parse_options(options: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidArgument(f"unknown options {unknown}; this call accepts {list(allowed)}")
    if "label" in options:
        label = options["label"]
        if not isinstance(label, str) or len(label) > LABEL_MAX or "\x00" in label:
            raise InvalidArgument(f"label must be a string of at most {LABEL_MAX} characters")
        # another user's text that root lists: stored and published sanitised
        return {**options, "label": clean_text(label, LABEL_MAX)}
    return options


class LiveUpdateDevice(Device):
    """``/dev/liveupdate``: not updatable; carries the LiveUpdate interface."""

    interfaces: ClassVar[tuple[str, ...]] = (INTERFACE,)

    def __init__(self, plugin: LiveUpdatePlugin) -> None:
        super().__init__(
            LiveUpdatePlugin.name,
            uapi.LIVEUPDATE_DEV,
            name="Live Update Orchestrator",
            vendor="Linux",
            summary="Keeps memfds (and VMM state) across a kexec-based kernel update",
            protocol=PROTOCOL,
            flags=("internal",),
            metadata={"device-file": "/" + uapi.LIVEUPDATE_DEV},
        )
        self.broker = plugin


class LiveUpdatePlugin(Plugin):
    """The session broker."""

    name = "liveupdate"
    requires = (uapi.LIVEUPDATE_DEV,)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.device: LiveUpdateDevice | None = None
        self._dev: Handle | None = None
        self._stored: dict[str, list[Handle]] = {}
        self._sessions: dict[str, _Session] = {}
        self._registry_handles: dict[str, Handle] = {}
        self._generation = 0
        self._boot_id = ""
        self._lock = asyncio.Lock()
        self._registry_path = Path(ctx.state_dir) / REGISTRY_FILE
        self.fd_store_available = False

    # ------------------------------------------------------------------ probe

    async def probe(self) -> Probe:
        """Open /dev/liveupdate exclusively; EBUSY means another orchestrator owns it."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.LIVEUPDATE_DEV):
            return Probe.unsupported(
                "no /dev/liveupdate: the kernel lacks CONFIG_LIVEUPDATE (6.19+) or was "
                "booted without liveupdate=on and kho=on"
            )
        # Take back what a previous livefwd kept in the fd store before opening the
        # device: opening it is where sessions nobody held are forgotten.
        self._stored = await provider.stored_fds(FDSTORE_PREFIX)
        try:
            self._dev = await provider.open(uapi.LIVEUPDATE_DEV, OpenFlags.RDWR)
        except KernelError as error:
            if error.errno == errno.EBUSY:
                return Probe.unsupported(
                    "another orchestrator owns /dev/liveupdate (systemd 261+ or another "
                    "LUO agent); livefwd does not retry"
                )
            if error.errno == errno.EIO:
                return Probe.unsupported(
                    "the kernel could not restore the sessions of the previous kernel "
                    "(EIO on /dev/liveupdate); they are lost until the next boot"
                )
            if error.errno in (errno.EACCES, errno.EPERM):
                return Probe.unsupported("/dev/liveupdate needs root")
            raise
        return Probe.ok()

    # --------------------------------------------------------------- coldplug

    async def coldplug(self) -> None:
        """Recover sessions (restart: fd store; kexec: registry session), add the device."""
        self._boot_id = (await self.ctx.boot_id()).strip()
        previous = self._load_disk()
        if previous is not None and previous.boot_id == self._boot_id:
            await self._recover_restart(previous)
        else:
            await self._discard_stored("no registry from this boot")
            await self._recover_kexec()
        self.device = LiveUpdateDevice(self)
        await self._write_registry()
        self._update_device()
        self.ctx.add_device(self.device)

    def _load_disk(self) -> Registry | None:
        text = self.ctx.read_state(REGISTRY_FILE)
        if text is None:
            return None
        try:
            return Registry.model_validate_json(text)
        except ValidationError:
            self.ctx.log.error("liveupdate_registry_corrupt", path=str(self._registry_path))
            return None

    async def _discard_stored(self, why: str) -> None:
        for name, handles in self._stored.items():
            self.ctx.log.info("liveupdate_stored_fd_discarded", fdname=name, why=why)
            for handle in handles:
                await handle.close()
            await self.ctx.provider.unstore_fds(name)
        self._stored = {}

    async def _kernel_name_of(self, handle: Handle, fallback: str) -> str:
        """LIVEUPDATE_SESSION_GET_NAME (7.2+), else the name we stored it under."""
        arg = uapi.pack_get_name()
        try:
            await handle.ioctl(uapi.LIVEUPDATE_SESSION_GET_NAME, arg)
        except KernelError as error:
            if error.errno in (errno.EINVAL, errno.ENOTTY):
                return fallback
            raise
        return uapi.decode_name(bytes(arg[8:]))

    async def _recover_restart(self, previous: Registry) -> None:
        """Same boot: sessions whose fds came back from the fd store live on."""
        self._generation = previous.generation
        by_name: dict[str, Handle] = {}
        for fdname, handles in list(self._stored.items()):
            kernel_name = fdname.removeprefix(FDSTORE_PREFIX)
            handle, extra = handles[0], handles[1:]
            for spare in extra:
                await spare.close()
            actual = await self._kernel_name_of(handle, kernel_name)
            if actual != kernel_name:
                self.ctx.log.error("liveupdate_fdstore_mismatch", fdname=fdname, kernel=actual)
            by_name[actual] = handle
        self._stored = {}
        for name in REGISTRY_SESSIONS:
            if name in by_name:
                self._registry_handles[name] = by_name.pop(name)
        for record in previous.sessions:
            kept = by_name.pop(record.kernel_name) if record.kernel_name in by_name else None
            if record.state == "incoming":
                self._sessions[record.kernel_name] = _Session(record)
            elif kept is not None:
                self._sessions[record.kernel_name] = _Session(record, kept)
            else:
                self.ctx.log.warning(
                    "liveupdate_session_lost",
                    session=record.kernel_name,
                    reason="its fd did not come back from the fd store",
                )
        for kernel_name, handle in by_name.items():
            self.ctx.log.warning("liveupdate_unknown_stored_session", session=kernel_name)
            await handle.close()
            await self.ctx.provider.unstore_fds(FDSTORE_PREFIX + kernel_name)
        self.ctx.log.info("liveupdate_recovered", mode="restart", sessions=len(self._sessions))

    async def _recover_kexec(self) -> None:
        """New boot: read the registry the previous kernel's livefwd preserved."""
        assert self._dev is not None
        newest: Registry | None = None
        for name in REGISTRY_SESSIONS:
            registry = await self._read_registry_session(name)
            if registry is not None and (newest is None or registry.generation > newest.generation):
                newest = registry
        if newest is None:
            self.ctx.log.info("liveupdate_recovered", mode="boot", sessions=0)
            return
        for record in newest.sessions:
            if record.state != "outgoing":
                continue  # sessions retrieved or waiting in the old boot died with it
            waiting = record.model_copy(update={"state": "incoming"})
            self._sessions[record.kernel_name] = _Session(waiting)
        self.ctx.log.info("liveupdate_recovered", mode="kexec", sessions=len(self._sessions))

    async def _read_registry_session(self, name: str) -> Registry | None:
        assert self._dev is not None
        arg = uapi.pack_retrieve_session(name)
        try:
            await self._dev.ioctl(uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                return None
            raise
        session = await self.ctx.provider.adopt_fd(_fd_of(arg), f"[luo_session] {name}")
        try:
            arg = uapi.pack_retrieve_fd(REGISTRY_TOKEN)
            await session.ioctl(uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg)
            memfd = await self.ctx.provider.adopt_fd(_fd_of(arg), "registry memfd")
            try:
                data = await memfd.read()
            finally:
                await memfd.close()
            return Registry.model_validate_json(data)
        except (KernelError, ValidationError) as error:
            self.ctx.log.error("liveupdate_registry_unreadable", session=name, error=str(error))
            return None
        finally:
            # closing a retrieved session finishes it: the registry was read
            await session.close()

    # --------------------------------------------------------------- registry

    def _registry(self) -> Registry:
        return Registry(
            generation=self._generation,
            boot_id=self._boot_id,
            sessions=[s.record for s in sorted(self._sessions.values(), key=_order)],
        )

    async def _write_registry(self) -> None:
        """Persist the registry on disk and in a fresh, sealed, preserved memfd.

        The new registry session is preserved before the previous one is released,
        so a kexec at any moment finds at least one complete registry.

        Raises:
            LivefwError: the kernel refused (the previous registry stays valid).
        """
        self._generation += 1
        data = self._registry().model_dump_json(indent=1).encode()
        if self._dev is not None:
            await self._preserve_registry(data)
        self.ctx.write_state(REGISTRY_FILE, data)

    async def _preserve_registry(self, data: bytes) -> None:
        provider = self.ctx.provider
        name = REGISTRY_SESSIONS[self._generation % 2]
        stale = self._registry_handles.pop(name, None)
        if stale is not None:  # left over from an interrupted earlier write
            await stale.close()
            await provider.unstore_fds(FDSTORE_PREFIX + name)
        session = await self._create_kernel_session(name)
        try:
            memfd = await provider.create_memfd("livefwd-registry", data, seals=_REGISTRY_SEALS)
            try:
                await session.ioctl(
                    uapi.LIVEUPDATE_SESSION_PRESERVE_FD,
                    uapi.pack_preserve_fd(memfd.fileno(), REGISTRY_TOKEN),
                )
            finally:
                await memfd.close()  # the kernel holds its own reference
        except KernelError as error:
            await session.close()
            raise _map_error(error, "preserving livefwd's registry") from error
        self.fd_store_available = await provider.store_fds(FDSTORE_PREFIX + name, [session])
        for old_name, old in list(self._registry_handles.items()):
            await old.close()
            await provider.unstore_fds(FDSTORE_PREFIX + old_name)
        self._registry_handles = {name: session}

    async def _create_kernel_session(self, kernel_name: str) -> Handle:
        assert self._dev is not None
        arg = uapi.pack_create_session(kernel_name)
        try:
            await self._dev.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.EEXIST:
                raise InvalidArgument(
                    f"the kernel already has an outgoing session {kernel_name!r}"
                ) from error
            raise _map_error(error, f"creating session {kernel_name}") from error
        return await self.ctx.provider.adopt_fd(_fd_of(arg), f"[luo_session] {kernel_name}")

    def _update_device(self) -> None:
        if self.device is None:
            return
        counts = {"outgoing": 0, "incoming": 0, "retrieved": 0}
        for session in self._sessions.values():
            counts[session.record.state] += 1
        metadata = dict(self.device.metadata)
        metadata.update({f"sessions-{key}": str(value) for key, value in counts.items()})
        metadata["fd-store"] = "yes" if self.fd_store_available else "no"
        self.device.update(metadata=metadata)

    # ------------------------------------------------------------ lookups

    def _lookup(self, caller: int, kernel_name: str) -> _Session:
        session = self._sessions.get(kernel_name)
        if session is None:
            raise NotFound(f"no live-update session {kernel_name!r}")
        if caller != 0 and session.record.owner != caller:
            raise AuthFailed(f"session {session.record.name!r} belongs to another user")
        return session

    def session_info(self, kernel_name: str) -> SessionInfo:
        """The current state of one session (NotFound once it is gone)."""
        session = self._sessions.get(kernel_name)
        if session is None:
            raise NotFound(f"no live-update session {kernel_name!r}")
        return _info(session.record)

    def owner_of(self, kernel_name: str) -> int | None:
        """The owner uid of a session, or None when there is no such session."""
        session = self._sessions.get(kernel_name)
        return None if session is None else session.record.owner

    def list_sessions(self, caller: int) -> list[SessionInfo]:
        """The caller's sessions; root sees every session."""
        return [
            _info(s.record)
            for s in sorted(self._sessions.values(), key=_order)
            if caller == 0 or s.record.owner == caller
        ]

    # ------------------------------------------------------------ operations

    @property
    def holds_sessions(self) -> bool:
        """Whether livefwd must stay resident: it holds (or brokers) client sessions."""
        return bool(self._sessions)

    def _check_ready(self) -> None:
        if self._dev is None:
            raise NotSupported("livefwd does not hold /dev/liveupdate")

    async def create_session(
        self, caller: int, name: str, options: dict[str, Any] | None = None
    ) -> SessionInfo:
        """Create an outgoing session owned by ``caller``.

        Raises:
            InvalidArgument: bad name or option, or a session of that name exists.
            NoSpace: the kernel has no room for another session.
        """
        opts = _parse_options(options or {}, ("label",))
        kernel_name = kernel_session_name(caller, name)
        async with self._lock:
            self._check_ready()
            existing = self._sessions.get(kernel_name)
            if existing is not None:
                hint = (
                    "finish or drop the session from before the update first"
                    if existing.record.state != "outgoing"
                    else "pick another name or drop it"
                )
                raise InvalidArgument(f"you already have a session {name!r}: {hint}")
            handle = await self._create_kernel_session(kernel_name)
            record = SessionRecord(
                name=name,
                owner=caller,
                kernel_name=kernel_name,
                state="outgoing",
                label=str(opts.get("label", "")),
            )
            self._sessions[kernel_name] = _Session(record, handle)
            try:
                await self._write_registry()
            except BaseException:
                del self._sessions[kernel_name]
                await handle.close()
                raise
            self.fd_store_available = await self.ctx.provider.store_fds(
                FDSTORE_PREFIX + kernel_name, [handle]
            )
            self.ctx.log.info("liveupdate_session_created", session=kernel_name, owner=caller)
            self._update_device()
            return _info(record)

    async def retrieve_session(
        self, caller: int, name: str, options: dict[str, Any] | None = None
    ) -> SessionInfo:
        """Retrieve a session the previous kernel preserved (idempotent).

        Raises:
            NotFound: no such session waits for the caller.
            InvalidArgument: it is a session of this boot (nothing to retrieve).
        """
        _parse_options(options or {}, ())
        kernel_name = kernel_session_name(caller, name)
        async with self._lock:
            self._check_ready()
            assert self._dev is not None
            session = self._sessions.get(kernel_name)
            if session is None:
                raise NotFound(f"no session {name!r} was preserved for you by the last kexec")
            if session.record.state == "retrieved":
                return _info(session.record)
            if session.record.state == "outgoing":
                raise InvalidArgument(
                    f"session {name!r} was created in this boot: its files come back "
                    "only after the kexec"
                )
            session.handle = await self._kernel_retrieve(kernel_name)
            session.record.state = "retrieved"
            try:
                await self._write_registry()
            except LivefwError as error:
                self.ctx.log.warning("liveupdate_registry_write_failed", error=error.message)
            self.fd_store_available = await self.ctx.provider.store_fds(
                FDSTORE_PREFIX + kernel_name, [session.handle]
            )
            self.ctx.log.info("liveupdate_session_retrieved", session=kernel_name)
            self._update_device()
            return _info(session.record)

    async def _kernel_retrieve(self, kernel_name: str) -> Handle:
        assert self._dev is not None
        arg = uapi.pack_retrieve_session(kernel_name)
        try:
            await self._dev.ioctl(uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                raise NotFound(
                    f"the kernel has no incoming session {kernel_name!r} (lost in the kexec?)"
                ) from error
            raise _map_error(error, f"retrieving session {kernel_name}") from error
        return await self.ctx.provider.adopt_fd(_fd_of(arg), f"[luo_session] {kernel_name}")

    async def preserve(
        self,
        caller: int,
        kernel_name: str,
        fd: int,
        token: int,
        options: dict[str, Any] | None = None,
    ) -> SessionInfo:
        """Preserve the memfd or VFIO device ``fd`` (a descriptor in this process).

        The caller keeps ownership of ``fd``; the kernel takes its own reference. From
        now on the kernel keeps a memfd **frozen** (mm/memfd_luo.c
        ``memfd_luo_preserve``: growing, shrinking and hole punching fail with EPERM;
        writes inside it still work) and carries the size it has now. A VFIO device
        must be its cdev (``/dev/vfio/devices/vfioN``), never a group file.

        Raises:
            InvalidArgument: not an outgoing session, or the token is taken.
            InvalidFile: not a memfd or VFIO device cdev, or already preserved.
            NoSpace: the session has its 128 files (LUO_FILE_MAX).
        """
        opts = _parse_options(options or {}, ("label",))
        if not 0 <= token <= 0xFFFFFFFFFFFFFFFF:
            raise InvalidArgument("a token is an unsigned 64-bit number")
        async with self._lock:
            self._check_ready()
            session = self._lookup(caller, kernel_name)
            record = session.record
            if record.state != "outgoing" or session.handle is None:
                raise InvalidArgument(
                    f"session {record.name!r} comes from before the update: files can be "
                    "preserved only in a session created in this boot"
                )
            if str(token) in record.tokens:
                raise InvalidArgument(f"token {token} is already used in session {record.name!r}")
            link = uapi.fd_path(fd)
            if _VFIO_GROUP.search(link):
                raise InvalidFile(
                    f"{link} is a VFIO group file: Live Update preserves only a device's "
                    "cdev (/dev/vfio/devices/vfioN, opened and bound through iommufd); "
                    "reopen the device through its cdev"
                )
            try:
                await session.handle.ioctl(
                    uapi.LIVEUPDATE_SESSION_PRESERVE_FD, uapi.pack_preserve_fd(fd, token)
                )
            except KernelError as error:
                raise _map_preserve_error(error, token, link) from error
            record.tokens[str(token)] = str(opts.get("label", ""))
            if _VFIO_DEVICE.search(link):
                record.vfio.append(str(token))
            try:
                await self._write_registry()
            except LivefwError as error:
                # The kernel cannot unpreserve; the file is in the session and will be
                # carried. Only the broker's own copy of the registry is behind.
                self.ctx.log.error(
                    "liveupdate_registry_write_failed", error=error.message, token=token
                )
            await self.ctx.provider.store_fds(FDSTORE_PREFIX + kernel_name, [session.handle])
            self.ctx.log.info("liveupdate_preserved", session=kernel_name, token=token)
            return _info(record)

    async def tokens(self, caller: int, kernel_name: str) -> dict[int, str]:
        """Tokens preserved through livefwd in the session, with their labels."""
        session = self._lookup(caller, kernel_name)
        return {int(token): label for token, label in session.record.tokens.items()}

    async def retrieve_file(self, caller: int, kernel_name: str, token: int) -> Handle:
        """A new descriptor for the file preserved under ``token`` (caller closes it).

        Raises:
            InvalidArgument: the session is not a retrieved one.
            NotFound: no file with that token.
        """
        async with self._lock:
            session = self._lookup(caller, kernel_name)
            record = session.record
            if record.state == "outgoing":
                raise InvalidArgument(
                    f"session {record.name!r} was created in this boot: its files come back "
                    "only after the kexec"
                )
            if record.state == "incoming" or session.handle is None:
                raise InvalidArgument(f"retrieve session {record.name!r} first (RetrieveSession)")
            arg = uapi.pack_retrieve_fd(token)
            try:
                await session.handle.ioctl(uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg)
            except KernelError as error:
                if error.errno == errno.ENOENT:
                    raise NotFound(
                        f"session {record.name!r} has no file with token {token}"
                    ) from error
                raise _map_error(error, f"retrieving token {token}") from error
            handle = await self.ctx.provider.adopt_fd(_fd_of(arg), f"token {token}")
            if str(token) not in record.retrieved:
                record.retrieved.append(str(token))
                try:
                    await self._write_registry()
                except LivefwError as error:
                    self.ctx.log.warning("liveupdate_registry_write_failed", error=error.message)
            # storing the session again is harmless and lets a simulated kernel keep
            # the retrieved file across a restart as the real one does
            await self.ctx.provider.store_fds(FDSTORE_PREFIX + kernel_name, [session.handle])
            return handle

    async def finish(
        self, caller: int, kernel_name: str, options: dict[str, Any] | None = None
    ) -> None:
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
        opts = options or {}
        unknown = sorted(set(opts) - {"force"})
        if unknown:
            raise InvalidArgument(f"unknown options {unknown}; this call accepts ['force']")
        force = opts.get("force", False)
        if not isinstance(force, bool):
            raise InvalidArgument("option force must be a boolean")
        async with self._lock:
            session = self._lookup(caller, kernel_name)
            record = session.record
            if record.state == "outgoing":
                raise InvalidArgument(
                    f"session {record.name!r} was created in this boot and cannot be finished; "
                    "drop it to release it"
                )
            waiting = sorted(
                (int(t) for t in record.tokens if t not in record.retrieved),
            )
            if waiting and not force:
                raise Busy(
                    f"session {record.name!r} still has files nobody retrieved (tokens "
                    f"{', '.join(str(t) for t in waiting)}); finishing releases them for good. "
                    "Retrieve them first, or finish with force "
                    "(`livefw liveupdate finish --force`)"
                )
            if session.handle is None:
                session.handle = await self._kernel_retrieve(kernel_name)
                record.state = "retrieved"
            try:
                await session.handle.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, uapi.pack_finish())
            except KernelError as error:
                if error.errno == errno.EBUSY:
                    vfio = ", ".join(record.vfio) or "?"
                    raise Busy(
                        f"the kernel will not finish session {record.name!r} yet: a file "
                        "handler refused. VFIO devices (tokens "
                        f"{vfio}) must be retrieved and bound to an iommufd "
                        "(VFIO_DEVICE_BIND_IOMMUFD) before FINISH; then try again"
                    ) from error
                raise _map_error(error, f"finishing {record.name}") from error
            if waiting:
                self.ctx.log.warning(
                    "liveupdate_finish_forced", session=kernel_name, released=waiting
                )
            await self._forget(kernel_name)
            self.ctx.log.info("liveupdate_session_finished", session=kernel_name)

    async def drop(self, caller: int, kernel_name: str) -> None:
        """Release livefwd's reference; the session ends when no other holder is left.

        For a session from before the update, closing it finishes it in the kernel
        (luo_session.c ``luo_session_release``), so the rule of :meth:`finish` holds:
        while files were never retrieved, drop is refused; ``finish`` with force
        releases them.

        Raises:
            Busy: a session from before the update still has files never retrieved.
        """
        async with self._lock:
            session = self._lookup(caller, kernel_name)
            record = session.record
            waiting = sorted(int(t) for t in record.tokens if t not in record.retrieved)
            if record.state != "outgoing" and waiting:
                raise Busy(
                    f"dropping session {record.name!r} finishes it, and it still has files "
                    f"nobody retrieved (tokens {', '.join(str(t) for t in waiting)}). Retrieve "
                    "them first, or release them with `livefw liveupdate finish --force`"
                )
            if session.handle is None and record.state == "incoming":
                # not retrieved yet: retrieving and closing it finishes it
                session.handle = await self._kernel_retrieve(kernel_name)
            await self._forget(kernel_name)
            self.ctx.log.info("liveupdate_session_dropped", session=kernel_name)

    async def _forget(self, kernel_name: str) -> None:
        session = self._sessions.pop(kernel_name)
        if session.handle is not None:
            await session.handle.close()
        await self.ctx.provider.unstore_fds(FDSTORE_PREFIX + kernel_name)
        try:
            await self._write_registry()
        except LivefwError as error:
            self.ctx.log.error("liveupdate_registry_write_failed", error=error.message)
        self._update_device()

    async def session_handle(self, caller: int, kernel_name: str) -> Handle:
        """The handle livefwd holds for the session, for the bus layer to duplicate.

        Raises:
            NotSupported: on the simulated machine (its session fds mean nothing to
                another process) or for a session livefwd has not retrieved.
        """
        session = self._lookup(caller, kernel_name)
        if self.ctx.provider.simulated:
            raise NotSupported(
                "the simulated kernel lives inside livefwd: its session fds cannot be "
                "used by another process; use Preserve/Retrieve instead"
            )
        if session.handle is None:
            raise NotSupported(f"retrieve session {session.record.name!r} first")
        return session.handle

    async def kexec(self) -> None:
        """Switch to the loaded kernel while livefwd holds every session.

        Reads ``/sys/kernel/kexec_loaded`` first, so that the kernel's EINVAL (which
        ``kernel_kexec()`` in kernel/kexec_core.c answers when no image is loaded,
        and a LUO file handler's freeze may answer too) has one meaning left. The
        errnos of reboot(LINUX_REBOOT_CMD_KEXEC): EBUSY when another kexec holds the
        kexec lock; the handler's errno when freezing a preserved file fails
        (kernel/liveupdate/luo_file.c ``luo_file_freeze``, e.g. EINVAL from a VFIO
        device with interrupts still enabled); EAGAIN when KHO finalisation fails
        (luo_core.c ``liveupdate_reboot``). After any of them nothing was lost.

        Returns only on failure (in the simulation the daemon ends right after).

        Raises:
            NotSupported: this kernel cannot kexec, or reboot(2) was not permitted.
            NothingToDo: no kernel is loaded (``kexec -l -s``).
            Busy: another kexec is under way, or KHO finalisation failed; try again.
            InvalidArgument: a preserved file refused to freeze.
        """
        async with self._lock:
            self._check_ready()
            loaded = await self._kexec_loaded()
            if not loaded:
                raise NothingToDo(
                    "no kernel is loaded for kexec (/sys/kernel/kexec_loaded is 0): load "
                    "one with `kexec -l -s KERNEL --initrd=... --reuse-cmdline` first"
                )
            await self._write_registry()
            self.ctx.log.warning("liveupdate_kexec", sessions=len(self._sessions))
            try:
                await self.ctx.provider.kexec()
            except KernelError as error:
                raise _map_kexec_error(error, self._vfio_tokens()) from error

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
            for s in sorted(self._sessions.values(), key=_order)
            if s.record.state == "outgoing"
            for token in s.record.vfio
        ]

    async def shutdown(self) -> None:
        """Close /dev/liveupdate only: session fds stay with the process (and fd store)."""
        if self._dev is not None:
            await self._dev.close()
            self._dev = None


def _order(session: _Session) -> tuple[int, str]:
    return (session.record.owner, session.record.name)


def _info(record: SessionRecord) -> SessionInfo:
    return SessionInfo(
        name=record.name,
        kernel_name=record.kernel_name,
        owner=record.owner,
        state=record.state,
        label=clean_text(record.label, LABEL_MAX),  # also registries of older versions
        tokens={int(token): clean_text(label, LABEL_MAX) for token, label in record.tokens.items()},
    )


def _fd_of(arg: bytearray) -> int:
    """The fd the kernel wrote into the second field of a LUO struct."""
    fd = int.from_bytes(arg[4:8], "little", signed=True)
    if fd < 0:
        raise Internal("the kernel returned no file descriptor")
    return fd


def _map_kexec_error(error: KernelError, vfio: list[str]) -> LivefwError:
    """The errnos of reboot(LINUX_REBOOT_CMD_KEXEC) once kexec_loaded said 1."""
    unchanged = "the kexec did not happen and every session is as it was"
    if error.errno == errno.EPERM:
        return NotSupported(f"livefwd may not kexec (EPERM: it needs CAP_SYS_BOOT); {unchanged}")
    if error.errno == errno.EBUSY:
        return Busy(f"another kexec is in progress (the kernel's kexec lock is taken); {unchanged}")
    if error.errno == errno.EAGAIN:
        return Busy(f"the kernel could not finalise Kexec HandOver (EAGAIN); {unchanged}; retry")
    if error.errno == errno.EINVAL:
        hint = (
            f"VFIO devices ({', '.join(vfio)}) must have every interrupt disabled "
            "(VFIO_DEVICE_SET_IRQS with DATA_NONE | ACTION_TRIGGER, count 0) before the kexec"
            if vfio
            else "see the kernel log (`Freeze failed for token ...`)"
        )
        return InvalidArgument(f"a preserved file refused to freeze (EINVAL): {hint}; {unchanged}")
    return _map_error(error, "kexec")


def _map_error(error: KernelError, what: str) -> LivefwError:
    if error.errno in (errno.ENOSPC, errno.ENOMEM):
        return NoSpace(
            f"{what}: the kernel has no room for more live-update state "
            f"({errno.errorcode[error.errno]}): too many sessions, or 128 files in one"
        )
    if error.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{what}: the kernel refused (permission)")
    if error.errno == errno.EBUSY:
        return Busy(f"{what}: busy; try again")
    if error.errno in (errno.EINVAL, errno.E2BIG):
        return InvalidArgument(f"{what}: the kernel rejected the request ({error.message})")
    return error


def _map_preserve_error(error: KernelError, token: int, link: str = "") -> LivefwError:
    if error.errno == errno.ENOENT:
        if _VFIO_DEVICE.search(link):
            return NotSupported(
                f"{link}: this kernel has no Live Update handler for VFIO devices (the "
                "vfio/pci Live Update series is not in mainline Linux)"
            )
        return InvalidFile(
            "only memfds (memfd_create(2) without MFD_HUGETLB) and, with the VFIO "
            "handler, VFIO device cdevs can be preserved; sockets, pipes, regular "
            "files and devices such as /dev/null cannot"
        )
    if error.errno == errno.EBUSY:
        return InvalidFile("this file is already preserved (in this or another session)")
    if error.errno == errno.EEXIST:
        return InvalidArgument(f"token {token} is already used in this session")
    if error.errno == errno.EBADF:
        return InvalidArgument("the file descriptor passed is not open")
    if error.errno == errno.EOPNOTSUPP:
        return NotSupported("the memfd carries seals this kernel cannot preserve")
    return _map_error(error, f"preserving token {token}")
