"""fwupd's API on livefw's engine: what ``org.freedesktop.fwupd`` does, without D-Bus.

livefw.bus.compat parses each call, calls one method here and maps what it returns
with livefw.bus.fwupd_map. Here: which devices fwupd's clients see
(:data:`HIDDEN_PLUGINS`) and fwupd's ``supported`` flag; engine events as fwupd's
signals (:class:`FwupdEvents`); fwupd's one history row per device; Inhibit; Install
with fwupd's polkit actions (the action depends on what the cabinet holds, so the
cabinet is planned before polkit is asked); GetDetails; downgrades the firmware
would take; search; ModifyConfig and ResetConfig (livefw.fwupd_config); the host's
facts and HSI attributes; Quit. What it keeps is in livefw.compat_state.

``authorize`` arguments ask polkit whether the caller may do an action (fwupd's
action ids) and return the caller's uid; they raise AuthFailed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

import structlog

import livefw
from livefw.compat_state import ClientState, CompatState, DeviceCache, Inhibits, latest_rows
from livefw.device import Device
from livefw.engine import Engine, EngineListener
from livefw.errors import InvalidFile, LivefwError, NotFound, NothingToDo, NotSupported
from livefw.fdread import TooLarge
from livefw.firmware_lists import checksums as valid_checksums
from livefw.history import HistoryEntry
from livefw.hostinfo import HostInfo, SecurityAttr, host_security_id, load_host
from livefw.hostinfo import report_metadata as host_report_metadata
from livefw.hostinfo import security_attrs as host_security_attrs
from livefw.libfwupd import fwupd_version
from livefw.planner import Plan
from livefw.plugin import InstallOptions
from livefw.record import Frozen

if TYPE_CHECKING:
    # only for annotations: releases, remotes and cabinets are imported by the first
    # call that needs them, not while livefwd starts (test_import_budget)
    from livefw.fwupd_config import FwupdConfig
    from livefw.releases import Candidate
    from livefw.remotes import Remote

__all__ = [
    "ACTION_ACTIVATE",
    "HIDDEN_PLUGINS",
    "LVFS_REMOTE_ID",
    "Authorize",
    "Detail",
    "FwupdEvents",
    "FwupdService",
    "HistoryRow",
    "InstallJob",
    "install_action",
    "visible",
]

log = structlog.get_logger("livefw.compat")

Authorize = Callable[[str], Awaitable[int]]

#: plugins whose devices stay off the fwupd-compatible API (nothing like them in fwupd).
HIDDEN_PLUGINS = frozenset({"fwctl", "liveupdate"})
#: fwupdmgr looks this remote up by name (refresh, report-devices, the upload nag);
#: livefw downloads nothing, so GetRemotes lists it disabled (livefw.bus.fwupd_map).
LVFS_REMOTE_ID = "lvfs"
#: Inhibit: the longest reason kept.
INHIBIT_REASON_MAX = 256
#: Search: the longest search term looked for.
SEARCH_MAX = 256

#: fwupd's action for switching staged firmware live (its Activate method checks it;
#: policy/org.freedesktop.fwupd.policy.in: auth_admin_keep for active sessions, unlike
#: update-*-trusted which is allowed outright). fwupd's Install has no option that
#: activates, so livefw.bus.fwupd_map.install_options never sets ``activate`` and a
#: compatible Install only stages; should it ever activate, this action is required on
#: top of the install action, as the native API requires ``org.livefw.daemon1.activate``.
ACTION_ACTIVATE = "org.freedesktop.fwupd.device-activate"


def visible(device: Device) -> bool:
    """Whether a device is shown on the fwupd-compatible API."""
    return device.plugin not in HIDDEN_PLUGINS


def install_action(plan: Plan) -> str:
    """Fwupd's polkit action for one planned release (org.freedesktop.fwupd.policy)."""
    internal = "internal" in plan.device.flags
    kind = "downgrade" if plan.downgrade else "update"
    action = f"org.freedesktop.fwupd.{kind}-{'internal' if internal else 'hotplug'}"
    trusted = plan.candidate is not None and plan.candidate.trusted_payload
    return action + ("-trusted" if trusted else "")


class FwupdEvents:
    """What the fwupd-compatible API tells its clients (livefw.bus.compat: signals).

    Only devices fwupd's clients see are passed.
    """

    def device_added(self, device: Device) -> None:
        """A device appeared."""

    def device_removed(self, device: Device) -> None:
        """A device went away."""

    def device_changed(self, device: Device) -> None:
        """A device changed."""

    def changed(self) -> None:
        """Something clients cache changed (fwupd's ``Changed``: reload the devices)."""

    def progress_changed(self, names: frozenset[str]) -> None:
        """The engine's ``status`` and/or ``percentage`` changed."""


class HistoryRow(NamedTuple):
    """A row of fwupd's history: the entry, its device if still present, notified."""

    entry: HistoryEntry
    device: Device | None
    notified: bool


class Detail(NamedTuple):
    """GetDetails: a release of the cabinet and the device it is for, if any.

    ``order`` is the release against the device's version (-1, 0, 1), None without one.
    """

    candidate: Candidate
    device: Device | None
    supported: bool
    order: int | None


class InstallJob(Frozen):
    """An Install planned: the plans, and what polkit granted while planning."""

    _FIELDS = ("plans", "activate", "granted", "uid")
    plans: list[Plan]
    activate: bool
    granted: frozenset[str]
    uid: int

    def __init__(
        self, plans: list[Plan], activate: bool, granted: frozenset[str], uid: int
    ) -> None:
        _set = object.__setattr__
        _set(self, "plans", plans)
        _set(self, "activate", activate)
        _set(self, "granted", granted)
        _set(self, "uid", uid)


class FwupdService(EngineListener):
    """fwupd's API on one engine (see the module doc)."""

    def __init__(self, engine: Engine, state_dir: str, config_path: str | None = None) -> None:
        self.engine = engine
        self.config_path = config_path
        #: fwupd's device ``Created``: when livefwd started serving the API.
        self.created = int(time.time())
        self.state = CompatState(state_dir)
        self.clients = ClientState()
        self.inhibits = Inhibits()
        self.cache = DeviceCache()
        self.daemon_version = (
            engine.config.daemon.fwupd_version or fwupd_version() or livefw.__version__
        )
        self.host = HostInfo()
        self.host_security_id = "HSI:0"
        #: what refresh_supported and devices worked out last, and from what
        self._supported_from: tuple[object, int] | None = None
        self._listed: tuple[tuple[int, int], list[Device]] | None = None
        self._config: FwupdConfig | None = None
        self._events = FwupdEvents()

    async def load_host(self) -> None:
        """Read SMBIOS, the machine id and the HSI attributes once (properties are sync)."""
        self.host = await load_host(self.engine.provider)
        await self.security_attrs()

    def attach(self, events: FwupdEvents) -> None:
        """Follow engine and device events and tell ``events`` about them."""
        self._events = events
        self.engine.add_listener(self)
        for device in self.engine.devices.values():
            device.add_listener(self._device_changed)

    # ------------------------------------------------------------ engine events

    def device_added(self, device: Device) -> None:
        """Follow the device's changes; tell the clients if they see it."""
        self.cache.drop(device.id)
        device.add_listener(self._device_changed)
        if visible(device):
            self._events.device_added(device)

    def device_removed(self, device: Device) -> None:
        """Stop following the device; tell the clients if they saw it."""
        self.cache.drop(device.id)
        device.remove_listener(self._device_changed)
        if visible(device):
            self._events.device_removed(device)

    def manager_changed(self, names: frozenset[str]) -> None:
        """An inhibit changes every updatable device's dict; progress is passed on."""
        if "inhibits" in names:
            self.cache.drop()
            self._events.changed()
        progress = names & {"status", "percentage"}
        if progress:
            self._events.progress_changed(progress)

    def _device_changed(self, device: Device, names: frozenset[str]) -> None:
        self.cache.drop(device.id)
        if visible(device) and names:
            self._events.device_changed(device)

    # ------------------------------------------------------------------ devices

    def device(self, device_id: str) -> Device:
        """A device fwupd's clients see.

        Raises:
            NotFound: no such device, or one of a hidden plugin (fwupd's message).
        """
        device = self.engine.devices.get(device_id)
        if device is None or not visible(device):
            raise NotFound(f"Failed to find {device_id[:64]} in device list")
        return device

    def supported(self, device: Device) -> bool:
        """Fwupd's ``supported`` flag: a remote holds a release for the device."""
        return device.id in self.cache.supported

    async def refresh_supported(self) -> None:
        """Find again which devices a remote holds a release for."""
        try:
            available = await self.engine.releases.available()
        except LivefwError:
            available = []
        # the same kept scan and no device changed: the same answer
        last = self._supported_from
        if last is not None and last[0] is available and last[1] == self.cache.generation:
            return
        self.cache.supported = {
            device.id
            for device in self.engine.devices.values()
            if "updatable" in device.flags
            and any(c.release.provides(device.guids) for c in available)
        }
        self._supported_from = (available, self.cache.generation)

    async def devices(self) -> list[Device]:
        """GetDevices: the visible devices by plugin and name, ``supported`` refreshed.

        The list is kept while :attr:`DeviceCache.generation` stays the same, and the
        same list object comes back (callers must not change it): a caller may keep
        what it built from it until another list comes.

        Raises:
            NothingToDo: none (fwupd's answer).
        """
        await self.refresh_supported()
        # the count too: a device taken out of the engine without its event
        generation = (self.cache.generation, len(self.engine.devices))
        listed = self._listed
        if listed is not None and listed[0] == generation:
            devices = listed[1]
        else:
            devices = sorted(
                (d for d in self.engine.devices.values() if visible(d)),
                key=lambda d: (d.plugin, d.name),
            )
            self._listed = (generation, devices)
        if not devices:
            raise NothingToDo("No detected devices")
        return devices

    # ----------------------------------------------------------------- releases

    async def releases(self, device_id: str) -> list[tuple[Candidate, int]]:
        """GetReleases: each release for the device, with its order against its version."""
        device = self.device(device_id)
        releases = self.engine.releases
        return [(c, releases.compare_to_device(device, c)) for c in await releases.releases(device)]

    async def upgrades(self, device_id: str) -> list[Candidate]:
        """GetUpgrades (raises NothingToDo, as livefw.releases says)."""
        return await self.engine.releases.upgrades(self.device(device_id))

    async def downgrades(self, device_id: str) -> list[Candidate]:
        """GetDowngrades: older releases the device would take.

        Raises:
            NothingToDo: none (an anti-rollback device, PFRU, takes none).
        """
        device = self.device(device_id)
        allowed = []
        for candidate in await self.engine.releases.downgrades(device):
            try:
                # e.g. PFRU anti-rollback: the firmware would refuse it, so do not offer it
                self.engine.check_release(device, candidate, InstallOptions(allow_older=True))
            except LivefwError:
                continue
            allowed.append(candidate)
        if not allowed:
            raise NothingToDo(f"No downgrades for {device.name}")
        return allowed

    async def search(self, token: str) -> list[Candidate]:
        """Search: the releases whose AppStream id, name or summary hold ``token``.

        Raises:
            NothingToDo: no term, or no release matches.
        """
        needle = token.strip().lower()[:SEARCH_MAX]
        if not needle:
            raise NothingToDo("no search term")
        found = []
        for candidate in await self.engine.releases.available():
            release = candidate.release
            if needle in " ".join((release.appstream_id, release.name, release.summary)).lower():
                found.append(candidate)
        if not found:
            raise NothingToDo(f"No releases match {token[:64]!r}")
        return found

    def remotes(self) -> list[Remote]:
        """GetRemotes: livefw's directory remotes (livefw.bus.fwupd_map adds fwupd's LVFS)."""
        return self.engine.releases.remotes()

    def clean_remote(self, remote_id: str) -> None:
        """CleanRemote: livefw caches no metadata, so there is never anything to clean.

        Raises:
            NotFound: no such remote (``lvfs`` is one: GetRemotes lists it).
            NothingToDo: otherwise.
        """
        if remote_id not in {r.id for r in self.remotes()} | {LVFS_REMOTE_ID}:
            raise NotFound(f"No remote '{remote_id[:64]}' found in search paths")
        raise NothingToDo(
            f"{remote_id} has no cached metadata: livefw reads directory remotes directly"
        )

    # ------------------------------------------------------------------ history

    def _rows(self) -> list[HistoryEntry]:
        entries = self.engine.history.entries()
        return latest_rows(e for e in entries if e.plugin not in HIDDEN_PLUGINS)

    def _row(self, entry: HistoryEntry) -> HistoryRow:
        device = self.engine.devices.get(entry.device_id)
        return HistoryRow(entry, device, entry.op_id in self.state.notified)

    def history(self) -> list[HistoryRow]:
        """GetHistory: one row per device, oldest first.

        Raises:
            NothingToDo: no row (fwupd's answer).
        """
        rows = self._rows()
        if not rows:
            raise NothingToDo("No history")
        return [self._row(entry) for entry in rows]

    def result(self, device_id: str) -> HistoryRow:
        """GetResults (see :meth:`livefw.compat_state.CompatState.result`)."""
        return self._row(self.state.result(self._rows(), device_id))

    def clear_results(self, device_id: str) -> None:
        """ClearResults (see :meth:`livefw.compat_state.CompatState.clear_result`)."""
        self.state.clear_result(self._rows(), device_id)

    def modify_device(self, device_id: str, key: str, value: str) -> None:
        """ModifyDevice (see :meth:`livefw.compat_state.CompatState.modify_flags`)."""
        self.state.modify_flags(self._rows(), device_id, key, value)

    # ----------------------------------------------------------------- inhibits

    def inhibit(self, sender: str, reason: str) -> str:
        """Inhibit: refuse installs and activations on every API until released.

        Raises:
            NotSupported: too many inhibits (livefw.compat_state.Inhibits).
        """
        inhibit_id = self.inhibits.add(sender)
        self.engine.set_inhibit(inhibit_id, reason[:INHIBIT_REASON_MAX] or "no reason given")
        return inhibit_id

    def uninhibit(self, sender: str, inhibit_id: str) -> None:
        """Uninhibit (raises NotFound, PermissionDenied: livefw.compat_state.Inhibits)."""
        self.inhibits.remove(inhibit_id, sender)
        self._release(inhibit_id)

    def _release(self, inhibit_id: str) -> None:
        self.engine.set_inhibit(inhibit_id, None)
        self.cache.drop()

    def forget_client(self, sender: str) -> bool:
        """A client left the bus: drop its hints, flags and inhibits (as fwupd)."""
        dropped = self.inhibits.forget(sender)
        for inhibit_id in dropped:
            self._release(inhibit_id)
        return self.clients.forget(sender) or bool(dropped)

    # ------------------------------------------------------------------ install

    async def plan_install(
        self,
        device_id: str,
        fd: int,
        name: str,
        options: InstallOptions,
        authorize: Authorize,
    ) -> InstallJob:
        """Install, first half: read the cabinet from ``fd`` (the caller's) and plan it.

        The cabinet is read with the budget of a caller polkit was not asked about
        (fwupd's action depends on what it holds); when it is bigger than that, the
        action every install on the target needs is asked first and the whole file
        read with the full limits.

        Raises:
            NotFound: no such device, or the cabinet is for no device here.
            InvalidFile: not a cabinet (raw capsules go through livefw's API).
            AuthFailed: a big cabinet, and the caller may not install on the target.
            the plan's refusals (livefw.engine.Engine.plan).
        """
        target = "*" if device_id in ("", "*") else self.device(device_id).id
        try:
            async with self.engine.releases.untrusted() as limits:
                plans = await self._plan(fd, name, target, options, limits.max_size, False)
        except TooLarge:
            action = self._first_action(target)
            uid = await authorize(action)
            plans = await self._plan(fd, name, target, options, None, True)
            return InstallJob(plans, options.activate, frozenset({action}), uid)
        return InstallJob(plans, options.activate, frozenset(), -1)

    async def install(self, job: InstallJob, authorize: Authorize) -> None:
        """Install, second half: fwupd's polkit action of each plan, then the engine.

        Clients are told ``changed`` afterwards, whatever the outcome.

        Raises:
            AuthFailed: the caller may not install one of the releases.
            the engine's refusals and failures (Engine.install_plans).
        """
        actions = {install_action(plan) for plan in job.plans}
        if job.activate:
            actions.add(ACTION_ACTIVATE)
        uid = job.uid
        for action in sorted(actions - job.granted):
            uid = await authorize(action)
        try:
            await self.engine.install_plans(job.plans, caller_uid=uid)
        finally:
            self._events.changed()

    async def _plan(
        self,
        fd: int,
        name: str,
        target: str,
        options: InstallOptions,
        limit: int | None,
        authorized: bool,
    ) -> list[Plan]:
        payload = await self.engine.read_payload(fd, name, limit=limit, authorized=authorized)
        from livefw.cabinet import is_cabinet

        if not is_cabinet(payload.data):
            raise InvalidFile(
                "not a firmware cabinet (.cab); raw capsules go through livefw's own API "
                "(`livefw install FILE`)"
            )
        plans = await self.engine.plan(target, payload, options, authorized=authorized)
        plans = [p for p in plans if visible(p.device)]
        if not plans:
            raise NotFound("No supported devices found")
        return plans

    def _first_action(self, target: str) -> str:
        """The least an install on ``target`` needs (asked before a big cabinet is read).

        In fwupd's policy every internal install action implies
        ``update-internal-trusted`` and the hotplug update actions imply
        ``update-hotplug-trusted``, so a caller allowed any of them passes.
        """
        if target == "*":
            devices = [d for d in self.engine.devices.values() if visible(d)]
        else:
            devices = [self.device(target)]
        internal = not devices or any("internal" in d.flags for d in devices)
        return f"org.freedesktop.fwupd.update-{'internal' if internal else 'hotplug'}-trusted"

    async def activate(self, device_id: str, authorize: Authorize) -> None:
        """Activate: switch a staged update live (fwupd's ``device-activate`` action).

        Clients are told ``changed`` once the engine ran, whatever the outcome.

        Raises:
            NotFound: no such device.
            NotSupported: the device does not need activation.
            AuthFailed, and the engine's refusals and failures (Engine.activate).
        """
        device = self.device(device_id)
        if "needs-activation" not in device.flags:
            raise NotSupported(f"Device {device_id} does not need activation")
        uid = await authorize(ACTION_ACTIVATE)
        try:
            await self.engine.activate(device.id, caller_uid=uid)
        finally:
            self._events.changed()

    async def details(self, fd: int) -> list[Detail]:
        """GetDetails: the releases a cabinet (from ``fd``, the caller's) holds, and for what.

        fwupd asks no permission here: the cabinet is read and parsed with the small
        budget for callers not authorized, one caller at a time (ReleaseService).

        Raises:
            InvalidFile: not a cabinet; TooLarge past the budget, saying how to read it.
        """
        releases = self.engine.releases
        try:
            async with releases.untrusted() as limits:
                data = await self.engine.read_payload(fd, limit=limits.max_size, authorized=False)
                candidates = await releases.open(data.data, authorized=False, sha256=data.sha256)
        except TooLarge as error:
            limits = releases.untrusted_limits
            raise TooLarge(
                f"{error.message}: GetDetails inspects cabinets of up to "
                f"{limits.max_size >> 20} MiB ({limits.max_unpacked >> 20} MiB unpacked); "
                "`livefw inspect FILE` reads bigger ones locally"
            ) from error
        await self.refresh_supported()  # supported: a remote holds a release for it
        result = []
        for candidate in candidates:
            device = next(
                (
                    d
                    for d in self.engine.devices.values()
                    if visible(d) and candidate.release.provides(d.guids)
                ),
                None,
            )
            if device is None:
                result.append(Detail(candidate, None, False, None))
            else:
                order = releases.compare_to_device(device, candidate)
                result.append(Detail(candidate, device, self.supported(device), order))
        return result

    # ------------------------------------------------------ lists, config, quit

    async def set_firmware_list(
        self, values: list[str], authorize: Authorize, *, approved: bool
    ) -> None:
        """SetApprovedFirmware / SetBlockedFirmware: the engine's list, every API's.

        Raises:
            InvalidFile: a value that is not a SHA-1 or SHA-256 (checked first).
            AuthFailed: the caller may not set it.
        """
        checksums = valid_checksums(values)
        await authorize("org.freedesktop.fwupd.set-approved-firmware")
        if approved:
            self.engine.firmware_lists.set(approved=checksums)
        else:
            self.engine.firmware_lists.set(blocked=checksums)

    def _fwupd_config(self) -> FwupdConfig:
        if self._config is None:
            from livefw.fwupd_config import FwupdConfig

            self._config = FwupdConfig(self.config_path)
        return self._config

    async def modify_config(
        self, section: str, key: str, value: str, authorize: Authorize, sender: str
    ) -> None:
        """ModifyConfig: a ``[fwupd]`` key into livefw.conf's drop-in, applied now.

        Raises:
            NotFound, NotSupported, InvalidArgument: as fwupd answers
                (livefw.fwupd_config.config_change), before polkit is asked.
            AuthFailed: the caller may not change the configuration.
            Internal: the drop-in could not be written.
        """
        from livefw.fwupd_config import CONFIG_LIVE, config_change

        if section != "fwupd":
            if section in self.engine.plugins:
                raise NotSupported(f"config key {key[:64]} not supported")
            raise NotFound(f"no plugin {section[:64]} found")
        tables, name, parsed = config_change(key, value)
        await authorize("org.freedesktop.fwupd.modify-config")
        self.engine.reconfigure(self._fwupd_config().modify(tables, name, parsed))
        log.info("config_modified", key=key, value=parsed, live=key in CONFIG_LIVE,
                 sender=sender)  # fmt: skip
        self.cache.drop()

    async def reset_config(self, section: str, authorize: Authorize, sender: str) -> None:
        """ResetConfig: remove the drop-in (success for other sections, as fwupd).

        Raises:
            AuthFailed: the caller may not change the configuration.
            InvalidArgument, Internal: livefw.fwupd_config.FwupdConfig.reset.
        """
        await authorize("org.freedesktop.fwupd.reset-config")
        if section != "fwupd":
            return  # fwupd answers success: livefw keeps nothing for other sections
        self.engine.reconfigure(self._fwupd_config().reset())
        log.info("config_reset", section=section, sender=sender)
        self.cache.drop()

    async def quit(self, authorize: Authorize, sender: str) -> None:
        """Quit: stop livefwd in order (SIGTERM), unless an update is in flight.

        fwupd ignores the request while an update runs and still answers success.

        Raises:
            AuthFailed: the caller may not stop the daemon.
        """
        await authorize("org.freedesktop.fwupd.quit")
        if self.engine.busy:
            log.warning("quit_ignored", reason="an install or activation is in flight")
            return
        log.info("quit_requested", sender=sender)
        signal.raise_signal(signal.SIGTERM)  # the daemon's own orderly stop

    # --------------------------------------------------------------------- host

    async def security_attrs(self) -> list[SecurityAttr]:
        """GetHostSecurityAttrs; keeps ``host_security_id`` up to date."""
        engine = self.engine
        attrs = await host_security_attrs(engine.provider, list(engine.devices.values()))
        self.host_security_id = host_security_id(attrs)
        return attrs

    async def report_metadata(self) -> dict[str, str]:
        """GetReportMetadata (livefw.hostinfo.report_metadata)."""
        return await host_report_metadata(
            self.engine.provider, self.daemon_version, livefw.__version__
        )
