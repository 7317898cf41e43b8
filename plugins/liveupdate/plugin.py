"""Live Update Orchestrator: livefwd as the one holder of ``/dev/liveupdate``.

The kernel lets a single process open ``/dev/liveupdate`` (kernel/liveupdate/luo_core.c
``luo_open``). livefwd is that process and brokers sessions for less privileged
clients (VMMs): it creates a kernel session per client session, preserves the memfds
clients pass, keeps every session fd open until the kexec (a session dies with its
last fd, luo_session.c ``luo_session_release``), performs the kexec itself, and after
it retrieves the sessions by name and hands the files back by token.

This module finds the device and recovers the sessions at start-up: after a restart
in the same boot from the service manager's fd store and ``registry.json``; after a
kexec from the registry the previous livefwd preserved (livefw.plugins.liveupdate.
records). The operations live on the device (livefw.plugins.liveupdate.device).
"""

from __future__ import annotations

import errno

from livefw.errors import KernelError
from livefw.kernel import Handle, OpenFlags
from livefw.kernel.uapi import liveupdate as uapi
from livefw.model import ValidationError
from livefw.plugin import Plugin, PluginContext, Probe, UEventMatch
from livefw.plugins.liveupdate.context import LiveUpdateContext
from livefw.plugins.liveupdate.device import LiveUpdateDevice, LiveUpdateSession
from livefw.plugins.liveupdate.errors import fd_of
from livefw.plugins.liveupdate.records import (
    FDSTORE_PREFIX,
    REGISTRY_FILE,
    REGISTRY_SESSIONS,
    REGISTRY_TOKEN,
    Registry,
)

__all__ = ["LiveUpdatePlugin"]


class LiveUpdatePlugin(Plugin):
    """Finds ``/dev/liveupdate`` and recovers the brokered sessions."""

    name = "liveupdate"
    #: kernel/liveupdate/luo_core.c ``liveupdate_ioctl_init()`` (late_initcall,
    #: built in: CONFIG_LIVEUPDATE is bool) registers the misc device ``liveupdate``
    #: at boot, so its ``add`` (SUBSYSTEM=misc, DEVNAME=liveupdate) comes before
    #: livefwd; it is the only event that could bring /dev/liveupdate. A probe that
    #: failed for another reason (EBUSY: another orchestrator) is not retried.
    probe_uevents = (
        UEventMatch(subsystem="misc", devname=uapi.LIVEUPDATE_DEV.removeprefix("dev/")),
    )

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.shared = LiveUpdateContext(ctx)
        self.device: LiveUpdateDevice | None = None
        self._stored: dict[str, list[Handle]] = {}

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
            self.shared.dev = await provider.open(uapi.LIVEUPDATE_DEV, OpenFlags.RDWR)
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
        self.shared.boot_id = (await self.ctx.boot_id()).strip()
        device = self.device = LiveUpdateDevice(self.shared)
        previous = self._load_disk()
        if previous is not None and previous.boot_id == self.shared.boot_id:
            await self._recover_restart(device, previous)
        else:
            await self._discard_stored("no registry from this boot")
            await self._recover_kexec(device)
        await self.shared.write_registry()
        device.publish()
        self.ctx.add_device(device)

    def _load_disk(self) -> Registry | None:
        text = self.ctx.read_state(REGISTRY_FILE)
        if text is None:
            return None
        try:
            return Registry.model_validate_json(text)
        except ValidationError:
            self.ctx.log.error("liveupdate_registry_corrupt", file=REGISTRY_FILE)
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

    async def _recover_restart(self, device: LiveUpdateDevice, previous: Registry) -> None:
        """Same boot: sessions whose fds came back from the fd store live on."""
        ctx = self.shared
        ctx.generation = previous.generation
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
                ctx.registry_handles[name] = by_name.pop(name)
        for record in previous.sessions:
            kept = by_name.pop(record.kernel_name, None)
            if record.state == "incoming":
                ctx.sessions[record.kernel_name] = LiveUpdateSession(device, record)
            elif kept is not None:
                ctx.sessions[record.kernel_name] = LiveUpdateSession(device, record, kept)
            else:
                self.ctx.log.warning(
                    "liveupdate_session_lost",
                    session=record.kernel_name,
                    reason="its fd did not come back from the fd store",
                )
        for kernel_name, handle in by_name.items():
            self.ctx.log.warning("liveupdate_unknown_stored_session", session=kernel_name)
            await handle.close()
            await ctx.unstore(kernel_name)
        self.ctx.log.info("liveupdate_recovered", mode="restart", sessions=len(ctx.sessions))

    async def _recover_kexec(self, device: LiveUpdateDevice) -> None:
        """New boot: read the registry the previous kernel's livefwd preserved."""
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
            self.shared.sessions[record.kernel_name] = LiveUpdateSession(device, waiting)
        self.ctx.log.info("liveupdate_recovered", mode="kexec", sessions=len(self.shared.sessions))

    async def _read_registry_session(self, name: str) -> Registry | None:
        dev = self.shared.check_ready()
        arg = uapi.pack_retrieve_session(name)
        try:
            await dev.ioctl(uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg)
        except KernelError as error:
            if error.errno == errno.ENOENT:
                return None
            raise
        session = await self.ctx.provider.adopt_fd(fd_of(arg), f"[luo_session] {name}")
        try:
            arg = uapi.pack_retrieve_fd(REGISTRY_TOKEN)
            await session.ioctl(uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg)
            memfd = await self.ctx.provider.adopt_fd(fd_of(arg), "registry memfd")
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

    async def shutdown(self) -> None:
        """Close /dev/liveupdate only: session fds stay with the process (and fd store)."""
        if self.shared.dev is not None:
            await self.shared.dev.close()
            self.shared.dev = None
