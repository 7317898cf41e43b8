"""The engine: plugins, the device registry, and every operation's entry point.

Business rules live here and in the plugins; the bus layer only translates. The
engine's helpers each have a module: the install plan (livefw.planner, with the
version rules of livefw.versions), the lock and the irreversible-step guard
(livefw.guard), reconciliation (livefw.reconcile), cabinets and remotes
(livefw.releases, which knows nothing of the engine). One
engine-wide lock serialises every state change on every device: install, activate and
cancel, and through :meth:`Engine.exclusive` kexec, fwctl RPCs at write scopes,
live-update session changes and PFRU/telemetry/LFA settings (firmware state never
changes twice at once). Read-only calls (telemetry reads, debug-read fwctl RPCs) take
only their device's lock. docs/architecture.md, "Engine entry points", says which
entry point waits for the lock and which is refused instead (a kexec).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from livefw import planner
from livefw.config import Config
from livefw.device import Device
from livefw.entrypoints import entry_points
from livefw.errors import (
    Busy,
    Internal,
    LivefwError,
    NotFound,
)
from livefw.fdread import FdReader
from livefw.firmware_lists import FirmwareLists
from livefw.guard import EngineGuard
from livefw.history import History, HistoryEntry
from livefw.kernel.provider import (
    BOOT_ID_PATH,
    UEVENT_RESCAN,
    KernelProvider,
    UEvent,
    UEventSubscription,
)
from livefw.planner import Plan, plan_cabinet, plan_raw
from livefw.plugin import (
    InstallOptions,
    InstallResult,
    Operation,
    Payload,
    Plugin,
    PluginContext,
    Probe,
)
from livefw.reconcile import reconcile_at_start, verdict_after_failure
from livefw.record import Record
from livefw.state import HistoryState, Status, UpdateState
from livefw.statefiles import private_dir

if TYPE_CHECKING:
    from livefw.releases import Candidate, ReleaseService

__all__ = ["Engine", "EngineListener", "PluginRecord", "discover_plugins"]

log = structlog.get_logger("livefw.engine")

ENTRY_POINT_GROUP = "livefw.plugins"


class PluginRecord(Record):
    """A plugin as ``livefw plugins`` shows it: loaded or not, and why."""

    _FIELDS = ("name", "plugin", "probe")
    name: str
    plugin: Plugin | None
    probe: Probe

    def __init__(self, name: str, plugin: Plugin | None, probe: Probe) -> None:
        self.name = name
        self.plugin = plugin
        self.probe = probe


class EngineListener:
    """Receives engine events (the bus layer implements this)."""

    def device_added(self, device: Device) -> None:
        """A device was registered."""

    def device_removed(self, device: Device) -> None:
        """A device was unregistered."""

    def manager_changed(self, names: frozenset[str]) -> None:
        """Manager properties (``status``, ``percentage``) changed."""


def discover_plugins() -> tuple[list[type[Plugin]], list[PluginRecord]]:
    """Load every entry point of ``livefw.plugins``; failures become records."""
    classes: list[type[Plugin]] = []
    failures: list[PluginRecord] = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, Plugin)):
                raise TypeError(f"{entry.value} is not a Plugin subclass")
            classes.append(cls)
        except Exception as error:
            log.error("plugin_import_failed", plugin=entry.name, error=str(error))
            failures.append(
                PluginRecord(entry.name, None, Probe(result="failed", reason=f"import: {error}"))
            )
    return classes, failures


class Engine:
    """Owns plugins, devices, operations and history for one daemon process."""

    def __init__(
        self,
        provider: KernelProvider,
        config: Config,
        state_dir: str,
        plugin_classes: Iterable[type[Plugin]] | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.state_dir = state_dir
        self.history = History(os.path.join(state_dir, "history.db"))
        self.plugins: dict[str, PluginRecord] = {}
        self.devices: dict[str, Device] = {}
        self.status = Status.IDLE
        self.percentage = 0
        self.boot_id = ""
        self.stopping = False
        #: held inhibits, id -> reason (fwupd's Inhibit): installs and activations are
        #: refused on every API while one is held.
        self.inhibits: dict[str, str] = {}
        self._explicit_classes = list(plugin_classes) if plugin_classes is not None else None
        #: classes of plugins whose probe said "defer" or "unsupported": probed again
        #: on a uevent their ``probe_uevents`` name (a driver bound, a module loaded
        #: after livefwd started) and after lost uevents; never on other uevents.
        self._waiting: dict[str, type[Plugin]] = {}
        #: the one engine lock and the irreversible-step guard (livefw.guard)
        self.guard = EngineGuard()
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[EngineListener] = []
        self._uevent_task: asyncio.Task[None] | None = None
        self._uevents: UEventSubscription | None = None
        #: one lock per plugin name around coldplug, on_uevent and refresh: a plugin
        #: enumerates or handles one event at a time (a `livefw refresh` during a
        #: hot-add would otherwise create the same device twice).
        self._hotplug_locks: dict[str, asyncio.Lock] = {}

    @functools.cached_property
    def releases(self) -> ReleaseService:
        """Cabinet installs and local-remote releases (issue 7, livefw.releases)."""
        from livefw.releases import ReleaseService

        return ReleaseService(self.config)

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on (fwupd's ModifyConfig).

        The install limits and ``only_trusted`` apply at once; what plugins read at
        start applies when livefwd restarts.
        """
        self.config = config
        if "releases" in self.__dict__:
            self.releases.reconfigure(config)

    @functools.cached_property
    def firmware_lists(self) -> FirmwareLists:
        """The blocked and approved checksums (fwupd's lists), honoured by :meth:`plan`."""
        return FirmwareLists(self.state_dir)

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: EngineListener) -> None:
        """Subscribe to device and manager events."""
        self._listeners.append(listener)

    def _set_progress(self, status: Status, percentage: int) -> None:
        changed = set()
        if status != self.status:
            self.status = status
            changed.add("status")
        if percentage != self.percentage:
            self.percentage = percentage
            changed.add("percentage")
        if changed:
            for listener in self._listeners:
                listener.manager_changed(frozenset(changed))

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Follow uevents, load and probe plugins, coldplug, reconcile history.

        The uevent subscription starts before any plugin enumerates (udev's rule:
        monitor first, then enumerate): what appears or vanishes during coldplug
        waits in the subscription and is dispatched once start() has loaded every
        plugin, so a device whose module loads while livefwd starts is not missed.
        Plugins treat an ``add`` for a device they know, and a ``remove`` for one
        they do not, as no-ops.
        """
        self.boot_id = (await self.provider.read_attr(BOOT_ID_PATH)).strip()
        subscription: UEventSubscription | None = None
        try:
            subscription = await self.provider.subscribe_uevents()
        except LivefwError as error:
            # e.g. AF_NETLINK not allowed: devices still come from coldplug and refresh
            log.warning(
                "uevents_unavailable",
                error=error.message,
                consequence="hot-plugged devices appear only after `livefw refresh`",
            )
        self._uevents = subscription
        try:
            if self._explicit_classes is None:
                classes, failures = discover_plugins()
                for record in failures:
                    self.plugins[record.name] = record
            else:
                classes = self._explicit_classes
            for cls in classes:
                await self._load_plugin(cls)
            await reconcile_at_start(self.history, self._plugin_of, self.devices, self.boot_id)
        except BaseException:
            self._uevents = None
            if subscription is not None:
                await subscription.close()
            raise
        if subscription is not None:
            self._uevent_task = asyncio.create_task(
                self._follow_uevents(subscription), name="uevents"
            )
        log.info(
            "engine_started",
            devices=len(self.devices),
            plugins={name: rec.probe.result for name, rec in self.plugins.items()},
            boot_id=self.boot_id,
            uevents_pending=subscription.pending if subscription is not None else None,
        )

    def _hotplug_lock(self, name: str) -> asyncio.Lock:
        return self._hotplug_locks.setdefault(name, asyncio.Lock())

    async def _load_plugin(self, cls: type[Plugin], again: bool = False) -> None:
        """Probe ``cls`` and coldplug it when its interface is there.

        ``again``: a re-probe of a waiting plugin (a matching uevent, a rescan); its
        interface still being missing is then logged at debug level only, since
        start-up already said so once at info level.
        """
        name = cls.name
        if name in self.config.plugins.disabled:
            self.plugins[name] = PluginRecord(
                name, None, Probe.unsupported("disabled in livefw.conf ([plugins] disabled)")
            )
            return
        private_dir(os.path.join(self.state_dir, "plugins"))
        plugin_dir = private_dir(os.path.join(self.state_dir, "plugins", name))
        ctx = PluginContext(
            name,
            self.provider,
            self.config.plugins.for_plugin(name),
            plugin_dir,
            self._add_device,
            self._remove_device,
            lambda: list(self.devices.values()),
        )
        try:
            plugin = cls(ctx)
            probe = await plugin.probe()
            record = PluginRecord(name, plugin if probe.result == "ok" else None, probe)
            self.plugins[name] = record
            if probe.result == "ok":
                self._waiting.pop(name, None)
                async with self._hotplug_lock(name):
                    await plugin.coldplug()
            else:
                self._waiting[name] = cls
            say = log.debug if again and probe.result != "ok" else log.info
            say("plugin_probed", plugin=name, result=probe.result, reason=probe.reason)
        except Exception as error:
            log.exception("plugin_failed", plugin=name)
            reason = error.message if isinstance(error, LivefwError) else repr(error)
            self.plugins[name] = PluginRecord(name, None, Probe(result="failed", reason=reason))
            for device in [d for d in self.devices.values() if d.plugin == name]:
                self._remove_device(device.id)

    async def stop(self) -> None:
        """Refuse new operations, let an irreversible step finish (bounded), release."""
        self.stopping = True
        await self.guard.wait_idle(self.config.daemon.shutdown_timeout)
        if self._uevents is not None:
            await self._uevents.close()
        if self._uevent_task is not None:
            self._uevent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._uevent_task
        for record in self.plugins.values():
            if record.plugin is not None:
                try:
                    await record.plugin.shutdown()
                except Exception:
                    log.exception("plugin_shutdown_failed", plugin=record.name)
        self.history.close()

    async def _follow_uevents(self, subscription: UEventSubscription) -> None:
        async for event in subscription:
            if event.action == UEVENT_RESCAN:
                await self._rescan(subscription.dropped)
            else:
                await self._dispatch_uevent(event)

    async def _rescan(self, dropped: int) -> None:
        """Uevents were lost (buffer overflow, ENOBUFS): probe and enumerate again."""
        log.warning("uevents_lost", dropped=dropped, action="rescanning every plugin")
        for name, cls in list(self._waiting.items()):
            if not self.stopping:
                await self._load_plugin(cls, again=True)
                if self.plugins[name].plugin is not None:
                    log.info("plugin_loaded_late", plugin=name, devpath="")
        try:
            await self.refresh()
        except Exception:
            log.exception("uevent_rescan_failed")

    async def _dispatch_uevent(self, event: UEvent) -> None:
        log.debug("uevent", action=event.action, devpath=event.devpath, subsystem=event.subsystem)
        # an interface that appears late (driver bound, module loaded): probe again,
        # but only the plugins this kind of event can concern (Plugin.probe_uevents);
        # a plugin that loads now coldplugs, which covers the device of this event
        for name, cls in list(self._waiting.items()):
            if self.stopping or not any(m.matches(event) for m in cls.probe_uevents):
                continue
            await self._load_plugin(cls, again=True)
            if self.plugins[name].plugin is not None:
                log.info("plugin_loaded_late", plugin=name, devpath=event.devpath)
        for record in list(self.plugins.values()):
            if record.plugin is None:
                continue
            try:
                async with self._hotplug_lock(record.name):
                    await record.plugin.on_uevent(event)
            except Exception:
                log.exception("uevent_failed", plugin=record.name, devpath=event.devpath)

    # ------------------------------------------------------------------- devices

    def _add_device(self, device: Device) -> None:
        if device.id in self.devices:
            raise Internal(f"device {device.id} registered twice")
        self.devices[device.id] = device
        for listener in self._listeners:
            listener.device_added(device)

    def _remove_device(self, device_id: str) -> None:
        device = self.devices.pop(device_id, None)
        self._device_locks.pop(device_id, None)
        if device is not None:
            for listener in self._listeners:
                listener.device_removed(device)

    def get_device(self, device_id: str) -> Device:
        """The device with that Id.

        Raises:
            NotFound: no such device (it may have been removed).
        """
        device = self.devices.get(device_id)
        if device is None:
            raise NotFound(f"no device with id {device_id}; `livefw get-devices` lists them")
        return device

    def device_lock(self, device_id: str) -> asyncio.Lock:
        """The per-device lock (fwctl RPCs, telemetry reads)."""
        self.get_device(device_id)
        return self._device_locks.setdefault(device_id, asyncio.Lock())

    async def refresh_device(self, device_id: str) -> Device:
        """Re-read a device's live state and return it."""
        device = self.get_device(device_id)
        await device.refresh()
        return device

    async def refresh(self) -> None:
        """Re-scan every loaded plugin."""
        for record in list(self.plugins.values()):
            if record.plugin is not None:
                async with self._hotplug_lock(record.name):
                    await record.plugin.refresh()

    # ---------------------------------------------------------------- operations

    @property
    def on_irreversible(self) -> Callable[[bool], Any] | None:
        """Called with True as the first irreversible step starts, False after the last."""
        return self.guard.on_irreversible

    @on_irreversible.setter
    def on_irreversible(self, callback: Callable[[bool], Any] | None) -> None:
        self.guard.on_irreversible = callback

    def irreversible(self, what: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Mark a step that must not be interrupted by a shutdown (livefw.guard)."""
        return self.guard.irreversible(what)

    def in_flight(self) -> str:
        """What holds the engine lock and what waits for it, for a person to read."""
        return self.guard.in_flight()

    @contextlib.asynccontextmanager
    async def exclusive(
        self,
        device: Device,
        what: str,
        *,
        wait: bool = True,
        status: Status = Status.DEVICE_WRITE,
    ) -> AsyncIterator[Device]:
        """Run one state change on ``device`` (``what`` names it for a person).

        The entry point of every state-changing call besides install, activate and
        cancel (which take the same lock themselves and write a history row): the
        engine lock (so nothing else changes firmware state meanwhile), the device's
        lock (so its read-only calls never see half a change), the irreversible-step
        guard (SIGTERM waits; the daemon holds the logind shutdown/sleep inhibitor) and
        the manager's and device's ``Status`` (``status`` while it runs, idle after).
        None of these state changes writes a history row: the history records
        firmware images (install, activate), not settings, RPCs or sessions.

        ``wait=True`` (settings, RPCs, sessions) queues behind the operation in
        flight, as a second install does. ``wait=False`` (kexec) refuses at once
        with Busy naming what is in flight or queued: a kexec that waited for a
        stage or an activation would happen minutes later at a moment nobody chose,
        or cut short an update queued meanwhile; refused, the operator decides.

        Raises:
            Busy: livefwd is stopping, or ``wait`` is False and the lock is taken.
            NotFound: the device went away (checked again once the lock is held).
        """
        if self.stopping:
            raise Busy("livefwd is shutting down; try again when it is back")
        self.get_device(device.id)
        async with self.guard.held(what, wait=wait):
            if self.stopping:
                raise Busy("livefwd is shutting down; try again when it is back")
            self.get_device(device.id)
            async with self.device_lock(device.id), self.irreversible(what):
                device.update(status=status, percentage=0)
                self._set_progress(status, 0)
                try:
                    yield device
                finally:
                    self._finish_progress(device)

    @property
    def busy(self) -> bool:
        """An operation holds the engine lock."""
        return self.guard.busy

    def _check_running(self) -> None:
        if self.stopping:
            raise Busy("livefwd is shutting down; try again when it is back")
        if self.inhibits:
            reasons = "; ".join(f"{key}: {why}" for key, why in sorted(self.inhibits.items()))
            raise Busy(
                f"firmware updates are inhibited ({reasons}); try again after the inhibiting "
                "program ends or calls Uninhibit"
            )

    def set_inhibit(self, inhibit_id: str, reason: str | None) -> None:
        """Hold (``reason`` given) or drop an inhibit; listeners see ``inhibits`` change."""
        if reason is None:
            self.inhibits.pop(inhibit_id, None)
        else:
            self.inhibits[inhibit_id] = reason
        log.info("inhibits_changed", inhibit_id=inhibit_id, held=reason is not None,
                 count=len(self.inhibits))  # fmt: skip
        for listener in self._listeners:
            listener.manager_changed(frozenset({"inhibits"}))

    def _operation(self, kind: str, device: Device, entry: HistoryEntry) -> Operation:
        def on_progress(status: Status, percentage: int) -> None:
            device.update(status=status, percentage=percentage)
            self._set_progress(status, percentage)

        def on_record(data: Mapping[str, Any]) -> None:
            self.history.record(entry.op_id, data)

        return Operation(entry.op_id, kind, device, on_progress, on_record)

    def _finish_progress(self, device: Device) -> None:
        if device.id in self.devices:
            device.update(status=Status.IDLE, percentage=0)
        self._set_progress(Status.IDLE, 0)

    # ------------------------------------------------------------------- install

    async def plan(
        self,
        target: str,
        payload: Payload,
        options: InstallOptions,
        *,
        authorized: bool = True,
    ) -> list[Plan]:
        """Where a payload goes and whether it may, checked once, nothing written.

        ``target`` is a device id, or ``""``/``"*"`` for the device(s) the payload is
        for. A cabinet gives one plan per (device, release) that fits; a raw payload
        one plan. ``authorized=False``: a cabinet is parsed with the small limits of
        a caller polkit has not been asked about (livefw.releases).

        Raises:
            NotFound: no such device; a cabinet for no device here.
            InvalidArgument: a raw payload fits several devices; name one.
            InvalidFile, VersionNewer, VersionSame, NotSupported, Busy, NothingToDo:
                refused, with why (livefw.planner).
            NotSupported: the file is blocked, or not approved while an approved
                list is set (livefw.firmware_lists).
        """
        every = target in ("", "*")
        from livefw.cabinet import is_cabinet  # an install: not on the start path

        if is_cabinet(payload.data):
            candidates = await self.releases.open(payload.data, authorized, payload.sha256)
            devices = list(self.devices.values()) if every else [self.get_device(target)]
            plans = plan_cabinet(devices, candidates, options, self.releases, every=every)
        elif every:
            plans = [plan_raw(self.devices.values(), payload, options)]
        else:
            plans = [planner.check(self.get_device(target), payload, options)]
        await self.firmware_lists.check_plans(plans)
        return self._stamped(plans)

    def _stamped(self, plans: Iterable[Plan]) -> list[Plan]:
        """``plans`` marked as checked now: checked again only if an operation runs first."""
        return [dataclasses.replace(plan, generation=self.guard.generation) for plan in plans]

    def check_release(self, device: Device, candidate: Candidate, options: InstallOptions) -> Plan:
        """Whether a remote's release may be installed on ``device`` now (no side effects).

        Raises:
            see :func:`livefw.planner.check`.
        """
        payload = Payload(
            candidate.release.payload,
            candidate.release.payload_name,
            candidate.release.payload_sha256,
        )
        return planner.check(device, payload, options, candidate, self.releases)

    async def install_file(
        self, target: str, payload: Payload, options: InstallOptions, caller_uid: int = -1
    ) -> list[HistoryEntry]:
        """Plan and install a cabinet or a raw payload (``Install``, ``livefw install``).

        Several rows when a cabinet updates several devices, in order.
        """
        self._check_running()
        return await self.install_plans(await self.plan(target, payload, options), caller_uid)

    async def install(
        self,
        device_id: str,
        payload: Payload,
        options: InstallOptions,
        caller_uid: int = -1,
    ) -> HistoryEntry:
        """Check and install a raw payload on one device.

        Raises:
            see :meth:`plan` and :meth:`install_plans`.
        """
        self._check_running()
        plan = planner.check(self.get_device(device_id), payload, options)
        await self.firmware_lists.check_plans([plan])
        (entry,) = await self.install_plans(self._stamped([plan]), caller_uid)
        return entry

    async def install_plans(
        self, plans: Iterable[Plan], caller_uid: int = -1
    ) -> list[HistoryEntry]:
        """Install planned payloads one after the other, each under the engine lock.

        A plan is checked again under the lock only when another operation ran
        since it was made (a queued install, or the previous plan of the same
        cabinet, may have changed what the device takes).

        Raises:
            Busy: livefwd is stopping or updates are inhibited.
            NotFound: the device went away.
            the plan's refusals when checked again; the device's failure (the
            history row says ``failed``, or ``staged`` when only an activation asked
            for failed).
        """
        return [await self._install(plan, caller_uid) for plan in plans]

    async def _install(self, plan: Plan, caller_uid: int) -> HistoryEntry:
        # hashlib drops the GIL: a 64 MiB payload is hashed off the loop, and only
        # when nobody has yet (a cabinet's payload was, when its checksums were verified)
        payload = plan.payload
        digest = payload.sha256 or await asyncio.to_thread(
            lambda: hashlib.sha256(payload.data).hexdigest()
        )
        async with self.guard.held(f"install of {plan.device.name}"):
            self._check_running()
            device = self.get_device(plan.device.id)
            if plan.generation != self.guard.generation or device is not plan.device:
                releases = self.releases if plan.candidate is not None else None
                checked = planner.check(device, payload, plan.options, plan.candidate, releases)
                plan = dataclasses.replace(checked, generation=self.guard.generation)
            options = plan.options
            data = {
                "payload-name": payload.name,
                "payload-size": len(payload.data),
                "payload-sha256": digest,
                "activate": options.activate,
                **plan.extra,
            }

            async def step(op: Operation) -> InstallResult:
                return await device.install(payload, options, op)

            applied = frozenset(
                {UpdateState.SUCCESS, UpdateState.PENDING, UpdateState.NEEDS_REBOOT}
            )
            entry, result, failure = await self._run(
                "install", device, plan.version, caller_uid, Status.LOADING, step, applied, data
            )
            version = result.version or plan.version
            if failure is not None and options.activate and result.state != UpdateState.SUCCESS:
                # staged, but the activation asked for failed: the row owns the staged
                # update, the caller gets the activation's error
                self.history.set_state(
                    entry.op_id,
                    HistoryState.STAGED,
                    reason=f"staged; the activation failed: {failure.message}",
                    version_new=version,
                    finished=False,
                )
                if device.id in self.devices:
                    device.update(update_state=result.state, update_error=failure.message)
                raise failure
            if result.state in (UpdateState.PENDING, UpdateState.NEEDS_REBOOT):
                # a new staging replaces what the device had staged before
                for older in self.history.entries(device_id=device.id, unfinished=True):
                    if older.state == HistoryState.STAGED and older.op_id != entry.op_id:
                        self.history.set_state(
                            older.op_id,
                            HistoryState.SUPERSEDED,
                            reason=f"replaced by {entry.op_id[:8]}",
                        )
                reason = (
                    "staged; waiting for Activate"
                    if result.state == UpdateState.PENDING
                    else "staged; applied at the next reboot"
                )
                entry = self.history.set_state(
                    entry.op_id,
                    HistoryState.STAGED,
                    reason=reason,
                    version_new=version,
                    finished=False,
                )
            else:
                entry = self.history.set_state(
                    entry.op_id, HistoryState.SUCCESS, version_new=version
                )
            device.update(update_state=result.state, update_error="")
            log.info("operation_done", kind="install", op_id=entry.op_id, plugin=device.plugin,
                     device_id=device.id, state=str(result.state), version=version)  # fmt: skip
            return entry

    # ------------------------------------------------------------------ activate

    async def activate(self, device_id: str, caller_uid: int = -1) -> HistoryEntry:
        """Activate a device's pending or staged image.

        Raises:
            NotFound, NotSupported, NothingToDo: before anything is written.
            ActivationFailed, Busy, ...: the attempt failed (the history says so).
        """
        self._check_running()
        device = self.get_device(device_id)
        await device.refresh()
        device.check_activate()
        async with self.guard.held(f"activate of {device.name}"):
            self._check_running()
            device = self.get_device(device_id)
            device.check_activate()
            active = device

            async def step(op: Operation) -> InstallResult:
                version = await active.activate(op)
                return InstallResult(UpdateState.SUCCESS, version)

            entry, result, _ = await self._run(
                "activate",
                device,
                device.version_pending,
                caller_uid,
                Status.DEVICE_ACTIVATE,
                step,
                frozenset({UpdateState.SUCCESS}),
            )
            version = result.version or device.version_pending or device.version
            entry = self.history.set_state(entry.op_id, HistoryState.SUCCESS, version_new=version)
            self._complete_staged(
                device, HistoryState.SUCCESS, f"activated by {entry.op_id[:8]}", version
            )
            device.update(update_state=UpdateState.SUCCESS, update_error="")
            log.info("operation_done", kind="activate", op_id=entry.op_id, plugin=device.plugin,
                     device_id=device.id, state="success", version=version)  # fmt: skip
            return entry

    async def cancel(self, device_id: str, caller_uid: int = -1) -> None:
        """Cancel a staged update (or an activation the firmware allows to cancel)."""
        self._check_running()
        device = self.get_device(device_id)
        device.check_cancel()
        async with self.guard.held(f"cancel on {device.name}"):
            self._check_running()
            device.check_cancel()
            await device.cancel()
            self._complete_staged(
                device, HistoryState.CANCELLED, f"cancelled by uid {caller_uid}", ""
            )
            if device.update_state in (UpdateState.PENDING, UpdateState.NEEDS_REBOOT):
                device.update(update_state=UpdateState.NONE, update_error="")
            log.info("cancelled", device_id=device.id, plugin=device.plugin, uid=caller_uid)

    # -------------------------------------------------------------------- runner

    async def _run(
        self,
        kind: str,
        device: Device,
        version_new: str,
        caller_uid: int,
        status: Status,
        step: Callable[[Operation], Awaitable[InstallResult]],
        applied: frozenset[UpdateState],
        data: Mapping[str, Any] | None = None,
    ) -> tuple[HistoryEntry, InstallResult, LivefwError | None]:
        """The one runner of install and activate; the caller holds the engine lock.

        Writes the history row before the device's first irreversible step, runs
        ``step`` under the irreversible-step guard (SIGTERM waits; the logind
        inhibitor is held) with progress on the device and the manager, and sets
        both idle again afterwards. When ``step`` raises, the plugin is asked what
        the kernel says happened (livefw.reconcile.verdict_after_failure): a verdict in
        ``applied`` means the step took effect and only something after it failed.

        Returns:
            (the row, still ``pending``; what the step did; the failure of a step
            that took effect anyway, or None). The caller finishes the row.

        Raises:
            The step's error (as a LivefwError) when it took no effect: the row and
            the device say ``failed`` first.
        """
        entry = self.history.begin(
            device_id=device.id,
            device_name=device.name,
            plugin=device.plugin,
            physical_id=device.physical_id,
            kind=kind,
            version_old=device.version,
            version_new=version_new,
            boot_id=self.boot_id,
            caller_uid=caller_uid,
            data=data,
        )
        bound = log.bind(op_id=entry.op_id, kind=kind, plugin=device.plugin, device_id=device.id)
        bound.info("operation_started", version_old=device.version, to=version_new)
        op = self._operation(kind, device, entry)
        op.progress(status, 0)
        try:
            async with self.irreversible(f"{kind} {device.name}"):
                return entry, await step(op), None
        except Exception as error:
            failure = _as_livefw_error(error)
            verdict = await verdict_after_failure(
                self.history, self._plugin_of, self.devices, entry
            )
            if verdict is None or verdict.state not in applied:
                bound.error("operation_failed", error=failure.message, error_name=failure.name)
                self.history.set_state(entry.op_id, HistoryState.FAILED, reason=failure.message)
                if device.id in self.devices:
                    device.update(update_state=UpdateState.FAILED, update_error=failure.message)
                raise failure from error
            # the firmware did it; only a step after that failed (e.g. a read-back)
            bound.warning("operation_applied_despite_error", error=failure.message,
                          state=str(verdict.state), version=verdict.version)  # fmt: skip
            return entry, InstallResult(verdict.state, verdict.version), failure
        finally:
            self._finish_progress(device)

    @functools.cached_property
    def payload_readers(self) -> tuple[FdReader, FdReader]:
        """Readers for callers already authorized, and for callers not yet authorized.

        Separate pools: a user who pins the second one with reads that never finish
        (livefw.fdread) leaves the first to authorized installs.
        """
        stall = self.config.install.payload_read_timeout
        return (
            FdReader("payload", slots=2, stall=stall),
            FdReader("payload", slots=2, stall=stall),
        )

    async def read_payload(
        self, fd: int, name: str = "", *, limit: int | None = None, authorized: bool = True
    ) -> Payload:
        """Read a payload from a file descriptor a client passed, with the size cap.

        Only regular files and memfds are accepted (a pipe or socket could block the
        daemon or change under it); the whole file is read from offset 0, off the
        event loop and with a deadline (livefw.fdread). ``fd`` stays the caller's.

        Raises:
            InvalidFile: not a regular file or memfd, empty, or over the limit
                (PayloadTooLarge).
            Timeout: the file system behind ``fd`` stopped answering.
            Busy: earlier reads are still stuck.
        """
        cap = self.config.install.max_payload_size
        limit = cap if limit is None else min(limit, cap)
        reader = self.payload_readers[0 if authorized else 1]
        contents = await reader.read(fd, limit)
        return Payload(contents.data, name, contents.sha256)

    def match_payload(self, payload: Payload, options: InstallOptions) -> Device:
        """The one updatable device a raw payload is for (see :func:`livefw.planner.plan_raw`)."""
        device: Device = plan_raw(self.devices.values(), payload, options).device
        return device

    def _plugin_of(self, name: str) -> Plugin | None:
        record = self.plugins.get(name)
        return None if record is None else record.plugin

    def _complete_staged(
        self, device: Device, state: HistoryState, reason: str, version: str
    ) -> None:
        """Close the device's staged install rows with the outcome of what followed."""
        for entry in self.history.entries(device_id=device.id, unfinished=True):
            if entry.state == HistoryState.STAGED:
                self.history.set_state(
                    entry.op_id, state, reason=reason, version_new=version or None
                )


#: what a verdict after a failed install may say for the install to count as done.
_DONE = frozenset({UpdateState.SUCCESS, UpdateState.PENDING, UpdateState.NEEDS_REBOOT})


def _as_livefw_error(error: BaseException) -> LivefwError:
    if isinstance(error, LivefwError):
        return error
    return Internal(f"unexpected error: {error!r}")
