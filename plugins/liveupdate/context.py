""":class:`LiveUpdateContext`: what the liveupdate device and its sessions share.

livefwd is the one holder of ``/dev/liveupdate`` (kernel/liveupdate/luo_core.c
``luo_open``: a second open is EBUSY). The context holds that handle, the brokered
sessions, the registry sessions and the broker's lock; the plugin fills it at
probe/coldplug, the device and its sessions do the operations through it.
"""

from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING

from livefw.errors import ConfigError, InvalidArgument, KernelError, NotFound, NotSupported
from livefw.kernel import Handle
from livefw.kernel.uapi import liveupdate as uapi
from livefw.plugin import DeviceContext, PluginContext
from livefw.plugins.liveupdate.errors import fd_of, map_error
from livefw.plugins.liveupdate.records import (
    FDSTORE_PREFIX,
    REGISTRY_FILE,
    REGISTRY_SESSIONS,
    REGISTRY_TOKEN,
    SESSIONS_MAX,
    SESSIONS_PER_USER,
    SESSIONS_RESERVED_FOR_ROOT,
    Registry,
)

if TYPE_CHECKING:
    from livefw.plugins.liveupdate.device import LiveUpdateSession

__all__ = ["LiveUpdateContext"]

#: the registry memfd is sealed: nobody, not even livefwd, changes it after writing.
_REGISTRY_SEALS = uapi.F_SEAL_SEAL | uapi.F_SEAL_SHRINK | uapi.F_SEAL_GROW | uapi.F_SEAL_WRITE


def _count(config: dict[str, object], key: str, default: int, least: int) -> int:
    """A session count from ``[plugins.liveupdate]``: ``least`` to SESSIONS_MAX.

    Raises:
        ConfigError: not an integer, or out of range.
    """
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"livefw.conf: plugins.liveupdate.{key} must be a number")
    if not least <= value <= SESSIONS_MAX:
        raise ConfigError(
            f"livefw.conf: plugins.liveupdate.{key} must be {least} to {SESSIONS_MAX} "
            f"(livefwd brokers at most {SESSIONS_MAX} sessions in all), not {value}"
        )
    return value


class LiveUpdateContext(DeviceContext):
    """The broker's state.

    Attributes:
        dev: the open ``/dev/liveupdate`` (None before probe and after shutdown).
        sessions: the brokered sessions by kernel name.
        lock: serialises every change of the sessions and the registry.
        boot_id: the boot the registry belongs to.
        generation: the registry's generation (alternates the registry sessions).
        fd_store_available: the service manager keeps session fds across a restart.
        sessions_per_user: ``[plugins.liveupdate] sessions_per_user``, the sessions a
            non-root uid may hold.
        sessions_for_users: the sessions all non-root uids together may hold:
            SESSIONS_MAX less ``[plugins.liveupdate] sessions_reserved_for_root``.

    Raises:
        ConfigError: (constructor) a bad ``[plugins.liveupdate]`` section.
    """

    def __init__(self, plugin: PluginContext) -> None:
        super().__init__(plugin)
        config = dict(plugin.config)
        unknown = set(config) - {"sessions_per_user", "sessions_reserved_for_root"}
        if unknown:
            raise ConfigError(f"livefw.conf: plugins.liveupdate: unknown keys {sorted(unknown)}")
        per_user = _count(config, "sessions_per_user", SESSIONS_PER_USER, 1)
        reserved = _count(config, "sessions_reserved_for_root", SESSIONS_RESERVED_FOR_ROOT, 0)
        self.sessions_per_user: int = per_user
        self.sessions_reserved_for_root: int = reserved
        self.sessions_for_users: int = SESSIONS_MAX - reserved
        self.dev: Handle | None = None
        self.sessions: dict[str, LiveUpdateSession] = {}
        self.registry_handles: dict[str, Handle] = {}
        self.lock = asyncio.Lock()
        self.boot_id = ""
        self.generation = 0
        self.fd_store_available = False

    def check_ready(self) -> Handle:
        """The device handle.

        Raises:
            NotSupported: livefwd does not hold /dev/liveupdate (any more).
        """
        if self.dev is None:
            raise NotSupported("livefwd does not hold /dev/liveupdate")
        return self.dev

    def held_by(self, owner: int) -> int:
        """How many sessions livefwd holds for ``owner`` (outgoing, incoming, retrieved)."""
        return sum(1 for session in self.sessions.values() if session.record.owner == owner)

    def held_by_users(self) -> int:
        """How many sessions livefwd holds for uids other than root, together."""
        return sum(1 for session in self.sessions.values() if session.record.owner != 0)

    def ordered(self) -> list[LiveUpdateSession]:
        """The sessions by owner, then name."""
        return sorted(self.sessions.values(), key=lambda s: (s.record.owner, s.record.name))

    # ------------------------------------------------------------ the registry

    def registry(self) -> Registry:
        """The registry as it stands."""
        return Registry(
            generation=self.generation,
            boot_id=self.boot_id,
            sessions=[session.record for session in self.ordered()],
        )

    async def write_registry(self) -> None:
        """Persist the registry on disk and in a fresh, sealed, preserved memfd.

        The new registry session is preserved before the previous one is released,
        so a kexec at any moment finds at least one complete registry.

        Raises:
            LivefwError: the kernel refused (the previous registry stays valid).
        """
        self.generation += 1
        data = self.registry().model_dump_json(indent=1).encode()
        if self.dev is not None:
            await self._preserve_registry(data)
        self.plugin.write_state(REGISTRY_FILE, data)

    async def _preserve_registry(self, data: bytes) -> None:
        name = REGISTRY_SESSIONS[self.generation % 2]
        stale = self.registry_handles.pop(name, None)
        if stale is not None:  # left over from an interrupted earlier write
            await stale.close()
            await self.unstore(name)
        session = await self.create_kernel_session(name)
        try:
            memfd = await self.provider.create_memfd(
                "livefwd-registry", data, seals=_REGISTRY_SEALS
            )
            try:
                await session.ioctl(
                    uapi.LIVEUPDATE_SESSION_PRESERVE_FD,
                    uapi.pack_preserve_fd(memfd.fileno(), REGISTRY_TOKEN),
                )
            finally:
                await memfd.close()  # the kernel holds its own reference
        except KernelError as error:
            await session.close()
            raise map_error(error, "preserving livefwd's registry") from error
        await self.store(name, session)
        for old_name, old in list(self.registry_handles.items()):
            await old.close()
            await self.unstore(old_name)
        self.registry_handles = {name: session}

    # ---------------------------------------------------- kernel sessions

    async def create_kernel_session(self, kernel_name: str) -> Handle:
        """LIVEUPDATE_IOCTL_CREATE_SESSION (luo_session.c ``luo_session_create``).

        Raises:
            InvalidArgument: the kernel has an outgoing session of that name (EEXIST).
            NoSpace: too many sessions (ENOMEM, LUO_SESSION_MAX).
        """
        arg = uapi.pack_create_session(kernel_name)
        try:
            await self.check_ready().ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.EEXIST:
                raise InvalidArgument(
                    f"the kernel already has an outgoing session {kernel_name!r}"
                ) from error
            raise map_error(error, f"creating session {kernel_name}") from error
        return await self.provider.adopt_fd(fd_of(arg), f"[luo_session] {kernel_name}")

    async def retrieve_kernel_session(self, kernel_name: str) -> Handle:
        """LIVEUPDATE_IOCTL_RETRIEVE_SESSION (luo_session.c ``luo_session_retrieve``).

        Raises:
            NotFound: the kernel has no incoming session of that name (ENOENT).
        """
        arg = uapi.pack_retrieve_session(kernel_name)
        try:
            await self.check_ready().ioctl(uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                raise NotFound(
                    f"the kernel has no incoming session {kernel_name!r} (lost in the kexec?)"
                ) from error
            raise map_error(error, f"retrieving session {kernel_name}") from error
        return await self.provider.adopt_fd(fd_of(arg), f"[luo_session] {kernel_name}")

    async def store(self, kernel_name: str, handle: Handle) -> None:
        """Keep a session fd in the service manager's fd store (restarts keep it)."""
        self.fd_store_available = await self.provider.store_fds(
            FDSTORE_PREFIX + kernel_name, [handle]
        )

    async def unstore(self, kernel_name: str) -> None:
        """Remove a session fd from the fd store."""
        await self.provider.unstore_fds(FDSTORE_PREFIX + kernel_name)
