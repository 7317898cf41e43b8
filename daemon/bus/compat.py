"""``org.freedesktop.fwupd`` at ``/``: the fwupd-compatible subset real clients use.

With ``--fwupd-compat`` (or ``[daemon] fwupd_compat``) livefwd also owns
``org.freedesktop.fwupd`` so fwupdmgr, gnome-firmware, gnome-software and Discover
drive it as if it were fwupd (docs/compat.md has every method beside fwupd's). Wire rules kept
here: exact dictionary types; empty results are ``NothingToDo`` errors (except
GetRemotes, which returns ``[]``); Install takes fd 0 of the message whatever the
``h`` value says; errors carry fwupd's names only (codes 0-17, what 1.8 clients
know); methods check fwupd's own polkit action ids.

Devices: PFRU and LFA use ``needs-activation`` (``updatable`` cleared and
``updatable-hidden`` set while staged), UEFI capsule devices carry ``needs-reboot``
as a capability; fwctl and live-update devices are not shown.
"""

import os
import signal as signals
import time
from typing import Any

import structlog

import livefw
from livefw.bus.backend import (
    BusType,
    DBusError,
    LivefwBus,
    Message,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
    ServiceInterface,
    Variant,
    call,
    dbus_property,
    disconnect,
    method,
    signal,
)
from livefw.bus.context import BusContext
from livefw.bus.errors import FWUPD_ERROR_PREFIX as ERROR_PREFIX
from livefw.bus.errors import fwupd_errors
from livefw.bus.fwupd_map import (
    ACTION_ACTIVATE,
    CONFIG_LIVE,
    HIDDEN_PLUGINS,
    HSI_RESULT,
    INHIBIT_REASON_MAX,
    INHIBITS_MAX,
    INHIBITS_PER_SENDER,
    LVFS_METADATA_URI,
    LVFS_REMOTE_ID,
    PROBLEM_SYSTEM_INHIBIT,
    REMOTE_ENABLED,
    REMOTE_KIND_DIRECTORY,
    REMOTE_KIND_DOWNLOAD,
    STATUS,
    config_change,
    device_dict,
    history_dict,
    install_action,
    install_options,
    release_dict,
    visible,
)
from livefw.cabinet import is_cabinet
from livefw.compat_state import ClientState, CompatState, DeviceCache, FwupdConfig
from livefw.device import Device
from livefw.engine import EngineListener
from livefw.errors import (
    InvalidFile,
    LivefwError,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
)
from livefw.fdread import TooLarge
from livefw.firmware_lists import checksums as valid_checksums
from livefw.history import HistoryEntry
from livefw.hostinfo import HostInfo, host_security_id, load_host, report_metadata, security_attrs
from livefw.planner import Plan
from livefw.plugin import InstallOptions
from livefw.releases import fwupd_version

log = structlog.get_logger("livefw.compat")

BUS_NAME = "org.freedesktop.fwupd"
PATH = "/"
INTERFACE = "org.freedesktop.fwupd"


class CompatInterface(ServiceInterface, EngineListener):
    """The ``org.freedesktop.fwupd`` interface, backed by the engine."""

    def __init__(self, ctx: BusContext, state_dir: str, config_path: str | None = None) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.fwupd_config = FwupdConfig(config_path)
        self.created = int(time.time())
        self.cache = DeviceCache()
        self.clients = ClientState()
        self.state = CompatState(state_dir)
        self._daemon_version = ctx.engine.config.daemon.fwupd_version or fwupd_version()
        self.host = HostInfo()
        self._host_security_id = "HSI:0"
        #: Inhibit ids -> (sender, reason); the engine refuses installs and activations
        #: while any is held (its ``inhibits``).
        self._inhibit_seq = 0
        self._inhibit_owners: dict[str, str] = {}

    async def load_host(self) -> None:
        """Read SMBIOS, the machine id and the HSI attributes once (properties are sync)."""
        self.host = await load_host(self.ctx.engine.provider)
        await self._security_attrs()

    def attach(self) -> None:
        """Follow engine and device events (signals)."""
        self.ctx.engine.add_listener(self)
        for device in self.ctx.engine.devices.values():
            device.add_listener(self._device_changed)

    # ----------------------------------------------------------- engine events

    def device_added(self, device: Device) -> None:
        """DeviceAdded, and follow its changes."""
        self.cache.drop(device.id)
        device.add_listener(self._device_changed)
        if visible(device):
            self.DeviceAdded(device_dict(device, device.id in self.cache.supported, self.created))

    def device_removed(self, device: Device) -> None:
        """DeviceRemoved."""
        self.cache.drop(device.id)
        device.remove_listener(self._device_changed)
        if visible(device):
            self.DeviceRemoved(device_dict(device, device.id in self.cache.supported, self.created))

    def manager_changed(self, names: frozenset[str]) -> None:
        """PropertiesChanged with values, one property per signal (as fwupd)."""
        engine = self.ctx.engine
        if "inhibits" in names:
            self.cache.drop()
            self.Changed()
        if "status" in names:
            self.emit_properties_changed({"Status": STATUS.get(str(engine.status), 0)})
        if "percentage" in names:
            self.emit_properties_changed({"Percentage": engine.percentage})
            self.emit_properties_changed({"PercentageFull": float(engine.percentage)})

    def _device_changed(self, device: Device, names: frozenset[str]) -> None:
        self.cache.drop(device.id)
        if visible(device) and names:
            self.DeviceChanged(device_dict(device, device.id in self.cache.supported, self.created))

    # ------------------------------------------------------------------ helpers

    async def _refresh_supported(self) -> None:
        try:
            available = await self.ctx.engine.releases.available()
        except LivefwError:
            available = []
        self.cache.supported = {
            device.id
            for device in self.ctx.engine.devices.values()
            if "updatable" in device.flags
            and any(c.release.provides(device.guids) for c in available)
        }

    def _device(self, device_id: str) -> Device:
        device = self.ctx.engine.devices.get(device_id)
        if device is None or not visible(device):
            raise NotFound(f"Failed to find {device_id} in device list")
        return device

    def _history_rows(self) -> list[HistoryEntry]:
        """The latest row per device, install rows preferred (fwupd keeps one per device)."""
        rows: dict[str, HistoryEntry] = {}
        for entry in self.ctx.engine.history.entries():
            if entry.plugin in HIDDEN_PLUGINS or entry.kind not in ("install", "activate"):
                continue
            current = rows.get(entry.device_id)
            if (
                current is None
                or (current.kind != "install" and entry.kind == "install")
                or (current.kind == entry.kind and entry.created > current.created)
            ):
                rows[entry.device_id] = entry
        return sorted(rows.values(), key=lambda e: e.created)

    def _history_dict(self, entry: HistoryEntry) -> dict[str, Variant]:
        device = self.ctx.engine.devices.get(entry.device_id)
        return history_dict(entry, device, entry.op_id in self.state.notified)

    def _sender(self) -> str:
        try:
            return self.ctx.sender()
        except LivefwError:
            return ""

    # --------------------------------------------------------------- properties

    @dbus_property(access=PropertyAccess.READ)
    def DaemonVersion(self) -> "s":
        return self._daemon_version or livefw.__version__

    @dbus_property(access=PropertyAccess.READ)
    def HostBkc(self) -> "s":
        return ""  # fwupd.conf HostBkc: livefw has no best-known-configuration tags

    @dbus_property(access=PropertyAccess.READ)
    def HostVendor(self) -> "s":
        return self.host.vendor

    @dbus_property(access=PropertyAccess.READ)
    def HostProduct(self) -> "s":
        return self.host.product

    @dbus_property(access=PropertyAccess.READ)
    def HostMachineId(self) -> "s":
        return self.host.machine_id

    @dbus_property(access=PropertyAccess.READ)
    def HostSecurityId(self) -> "s":
        return self._host_security_id

    @dbus_property(access=PropertyAccess.READ)
    def Hwids(self) -> "a(ss)":
        return [list(pair) for pair in self.host.hwids()]

    @dbus_property(access=PropertyAccess.READ)
    def Tainted(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Interactive(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> "u":
        return STATUS.get(str(self.ctx.engine.status), 0)

    @dbus_property(access=PropertyAccess.READ)
    def Percentage(self) -> "u":
        return self.ctx.engine.percentage

    @dbus_property(access=PropertyAccess.READ)
    def PercentageFull(self) -> "d":
        return float(self.ctx.engine.percentage)

    @dbus_property(access=PropertyAccess.READ)
    def BatteryLevel(self) -> "u":
        return 101

    @dbus_property(access=PropertyAccess.READ)
    def BatteryThreshold(self) -> "u":
        return 10

    @dbus_property(access=PropertyAccess.READ)
    def OnlyTrusted(self) -> "b":
        return bool(self.ctx.engine.config.install.only_trusted)

    # ----------------------------------------------------------------- methods

    @method()
    @fwupd_errors
    async def SetHints(self, hints: "a{ss}") -> None:
        self.clients.set_hints(self._sender(), dict(hints))

    @method()
    @fwupd_errors
    async def SetFeatureFlags(self, feature_flags: "t") -> None:
        self.clients.set_features(self._sender(), int(feature_flags))

    @method()
    @fwupd_errors
    async def GetDevices(self) -> "aa{sv}":
        await self._refresh_supported()
        devices = sorted(
            (d for d in self.ctx.engine.devices.values() if visible(d)),
            key=lambda d: (d.plugin, d.name),
        )
        if not devices:
            raise NothingToDo("No detected devices")
        return [self._cached_dict(d) for d in devices]

    def _cached_dict(self, device: Device) -> dict[str, Variant]:
        cached: dict[str, Variant] | None = self.cache.get(device)
        if cached is not None:
            return cached
        result = device_dict(device, device.id in self.cache.supported, self.created)
        inhibits = self.ctx.engine.inhibits
        if inhibits and "updatable" in device.flags:
            result["Problems"] = Variant("t", PROBLEM_SYSTEM_INHIBIT)
            result["UpdateError"] = Variant(
                "s", "Updates are inhibited: " + "; ".join(sorted(inhibits.values()))
            )
        self.cache.put(device, result)
        return result

    @method()
    @fwupd_errors
    async def GetPlugins(self) -> "aa{sv}":
        return []

    @method()
    @fwupd_errors
    async def GetReleases(self, device_id: "s") -> "aa{sv}":
        device = self._device(device_id)
        releases = self.ctx.engine.releases
        candidates = await releases.releases(device)
        return [release_dict(c, releases.compare_to_device(device, c)) for c in candidates]

    @method()
    @fwupd_errors
    async def GetUpgrades(self, device_id: "s") -> "aa{sv}":
        device = self._device(device_id)
        candidates = await self.ctx.engine.releases.upgrades(device)
        return [release_dict(c, 1) for c in candidates]

    @method()
    @fwupd_errors
    async def GetDowngrades(self, device_id: "s") -> "aa{sv}":
        device = self._device(device_id)
        allowed = []
        for candidate in await self.ctx.engine.releases.downgrades(device):
            try:
                # e.g. PFRU anti-rollback: the firmware would refuse it, so do not offer it
                self.ctx.engine.check_release(device, candidate, InstallOptions(allow_older=True))
            except LivefwError:
                continue
            allowed.append(release_dict(candidate, -1))
        if not allowed:
            raise NothingToDo(f"No downgrades for {device.name}")
        return allowed

    @method()
    @fwupd_errors
    async def GetHistory(self) -> "aa{sv}":
        rows = self._history_rows()
        if not rows:
            raise NothingToDo("No history")
        return [self._history_dict(entry) for entry in rows]

    @method()
    @fwupd_errors
    async def GetResults(self, device_id: "s") -> "a{sv}":
        rows = self._history_rows()
        if device_id == "*":
            rows = [e for e in rows if e.state in ("success", "failed", "failed-transient")]
        else:
            rows = [e for e in rows if e.device_id == device_id]
        if not rows:
            raise NothingToDo(f"no results for {device_id}")
        entry = rows[0] if device_id == "*" else rows[-1]
        if entry.op_id in self.state.notified or entry.state in ("pending",):
            raise NothingToDo(
                "the user was already notified"
                if entry.op_id in self.state.notified
                else "in progress"
            )
        if not entry.data.get("appstream-id"):
            raise NotFound(f"{entry.device_name} was not updated from a cabinet (no AppStream id)")
        return self._history_dict(entry)

    @method()
    @fwupd_errors
    async def ClearResults(self, device_id: "s") -> None:
        rows = [e for e in self._history_rows() if e.device_id == device_id]
        if not rows:
            raise NothingToDo(f"no results for {device_id}")
        if rows[-1].op_id in self.state.notified:
            raise NothingToDo(f"the results for {device_id} were already cleared")
        self.state.set_notified(rows[-1].op_id)

    @method()
    @fwupd_errors
    async def ModifyDevice(self, device_id: "s", key: "s", value: "s") -> None:
        if key != "Flags" or value not in ("notified", "reported", "~notified", "~reported"):
            raise NotSupported(f"key {key} value {value} is not supported")
        rows = [e for e in self._history_rows() if e.device_id == device_id]
        if not rows:
            raise NotFound(f"no history for {device_id}")
        if value in ("notified", "~notified"):
            self.state.set_notified(rows[-1].op_id, value == "notified")

    @method()
    @fwupd_errors
    async def GetRemotes(self) -> "aa{sv}":
        result = []
        for remote in self.ctx.engine.releases.remotes():
            result.append(
                {
                    "RemoteId": Variant("s", remote.id),
                    "Title": Variant("s", remote.title),
                    "Type": Variant("u", REMOTE_KIND_DIRECTORY),
                    "Flags": Variant("t", REMOTE_ENABLED if remote.enabled else 0),
                    "Enabled": Variant("b", remote.enabled),
                    "ApprovalRequired": Variant("b", False),
                    "Uri": Variant("s", "file://" + remote.path),
                    "FilenameSource": Variant("s", remote.config_path),
                    "Priority": Variant("i", remote.priority),
                    "ModificationTime": Variant("t", remote.mtime or int(time.time())),
                }
            )
        # fwupdmgr expects the LVFS remote (refresh, report-devices, the upload nag);
        # livefw downloads nothing, so it is offered and disabled, as when a user runs
        # `fwupdmgr disable-remote lvfs` with fwupd
        result.append(
            {
                "RemoteId": Variant("s", LVFS_REMOTE_ID),
                "Title": Variant("s", "Linux Vendor Firmware Service (not used by livefw)"),
                "Type": Variant("u", REMOTE_KIND_DOWNLOAD),
                "Flags": Variant("t", 0),
                "Enabled": Variant("b", False),
                "ApprovalRequired": Variant("b", False),
                "Uri": Variant("s", LVFS_METADATA_URI),
                "MetadataURI": Variant("s", LVFS_METADATA_URI),
                "Priority": Variant("i", 0),
            }
        )
        return result

    def _take_fd(self) -> int:
        """Fd 0 of the message (the ``h`` value is the client's own number)."""
        fds = list(self.ctx.message().unix_fds or [])
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise DBusError(
                ERROR_PREFIX + "Internal", f"wrong number of file descriptors: {len(fds)}"
            )
        return int(fds[0])

    @method()
    @fwupd_errors
    async def GetDetails(self, handle: "h") -> "aa{sv}":
        # fwupd asks no permission here: the cabinet is read and parsed with the small
        # budget for callers not authorized, one caller at a time (ReleaseService)
        fd = self._take_fd()
        releases = self.ctx.engine.releases
        try:
            async with releases.untrusted() as limits:
                data = await self.ctx.engine.read_payload(
                    fd, limit=limits.max_size, authorized=False
                )
                candidates = await releases.open(data.data, authorized=False)
        except TooLarge as error:
            raise TooLarge(
                f"{error.message}: GetDetails inspects cabinets of up to "
                f"{limits.max_size >> 20} MiB ({limits.max_unpacked >> 20} MiB unpacked); "
                "`livefw inspect FILE` reads bigger ones locally"
            ) from error
        finally:
            os.close(fd)
        await self._refresh_supported()  # supported: a remote holds a release for it
        result = []
        for candidate in candidates:
            matches = [
                d
                for d in self.ctx.engine.devices.values()
                if visible(d) and candidate.release.provides(d.guids)
            ]
            if matches:
                device = matches[0]
                entry = device_dict(device, device.id in self.cache.supported, self.created)
                order = releases.compare_to_device(device, candidate)
            else:
                entry = {
                    "Guid": Variant("as", list(candidate.release.guids)),
                    "Name": Variant("s", candidate.release.name or candidate.release.appstream_id),
                    "Flags": Variant("t", 0),
                    "Problems": Variant("t", 0),
                    "UpdateError": Variant("s", "Device was not found"),
                }
                order = None
            entry["Release"] = Variant("aa{sv}", [release_dict(candidate, order)])
            result.append(entry)
        return result

    @method()
    @fwupd_errors
    async def Install(self, device_id: "s", handle: "h", options: "a{sv}") -> None:
        fd = self._take_fd()
        try:
            parsed, name = install_options(options)
            target = "*" if device_id in ("", "*") else self._device(device_id).id
            granted: set[str] = set()
            uid = -1
            try:
                # fwupd's action depends on what the cabinet holds, so it is parsed
                # before polkit is asked: with the budget of an unauthorized caller
                async with self.ctx.engine.releases.untrusted() as limits:
                    plans = await self._plan(fd, name, target, parsed, limits.max_size, False)
            except TooLarge:
                # bigger than that: first the action every install on the target
                # needs, then the whole file with the full limits
                action = self._first_action(target)
                uid = await self.ctx.authorize(action)
                granted.add(action)
                plans = await self._plan(fd, name, target, parsed, None, True)
        finally:
            os.close(fd)
        actions = {install_action(plan) for plan in plans}
        if parsed.activate:
            actions.add(ACTION_ACTIVATE)
        for action in sorted(actions - granted):
            uid = await self.ctx.authorize(action)
        try:
            await self.ctx.engine.install_plans(plans, caller_uid=uid)
        finally:
            self.Changed()

    async def _plan(
        self,
        fd: int,
        name: str,
        target: str,
        options: InstallOptions,
        limit: int | None,
        authorized: bool,
    ) -> list[Plan]:
        payload = await self.ctx.engine.read_payload(fd, name, limit=limit, authorized=authorized)
        if not is_cabinet(payload.data):
            raise InvalidFile(
                "not a firmware cabinet (.cab); raw capsules go through livefw's own API "
                "(`livefw install FILE`)"
            )
        plans = await self.ctx.engine.plan(target, payload, options, authorized=authorized)
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
            devices = [d for d in self.ctx.engine.devices.values() if visible(d)]
        else:
            devices = [self._device(target)]
        internal = not devices or any("internal" in d.flags for d in devices)
        kind = "internal" if internal else "hotplug"
        return f"org.freedesktop.fwupd.update-{kind}-trusted"

    @method()
    @fwupd_errors
    async def Activate(self, device_id: "s") -> None:
        device = self._device(device_id)
        if "needs-activation" not in device.flags:
            raise NotSupported(f"Device {device_id} does not need activation")
        uid = await self.ctx.authorize(ACTION_ACTIVATE)
        try:
            await self.ctx.engine.activate(device.id, caller_uid=uid)
        finally:
            self.Changed()

    @method()
    @fwupd_errors
    async def Unlock(self, device_id: "s") -> None:
        self._device(device_id)
        raise NotSupported(f"Device {device_id} is not locked")

    @method()
    @fwupd_errors
    async def Verify(self, device_id: "s") -> None:
        self._device(device_id)
        raise NotSupported("livefw devices cannot read their firmware back")

    @method()
    @fwupd_errors
    async def ModifyRemote(self, remote_id: "s", key: "s", value: "s") -> None:
        raise NotSupported(
            "livefw remotes are configured in files (remotes_dir in livefw.conf); edit "
            f"{remote_id}.conf there"
        )

    @method()
    @fwupd_errors
    async def UpdateMetadata(self, remote_id: "s", data: "h", signature: "h") -> None:
        for fd in list(self.ctx.message().unix_fds or []):
            os.close(fd)
        raise NotSupported(
            "livefw has no download remotes; drop cabinets into a directory remote instead"
        )

    @method()
    @fwupd_errors
    async def GetApprovedFirmware(self) -> "as":
        return sorted(self.ctx.engine.firmware_lists.approved)

    @method()
    @fwupd_errors
    async def SetApprovedFirmware(self, checksums: "as") -> None:
        values = valid_checksums(checksums)
        await self.ctx.authorize("org.freedesktop.fwupd.set-approved-firmware")
        self.ctx.engine.firmware_lists.set(approved=values)

    @method()
    @fwupd_errors
    async def GetBlockedFirmware(self) -> "as":
        return sorted(self.ctx.engine.firmware_lists.blocked)

    @method()
    @fwupd_errors
    async def SetBlockedFirmware(self, checksums: "as") -> None:
        values = valid_checksums(checksums)
        await self.ctx.authorize("org.freedesktop.fwupd.set-approved-firmware")
        self.ctx.engine.firmware_lists.set(blocked=values)

    @method()
    @fwupd_errors
    async def GetReportMetadata(self) -> "a{ss}":
        return await report_metadata(
            self.ctx.engine.provider, self.DaemonVersion, livefw.__version__
        )

    @method()
    @fwupd_errors
    async def GetHostSecurityAttrs(self) -> "aa{sv}":
        return [self._attr_dict(attr) for attr in await self._security_attrs()]

    @method()
    @fwupd_errors
    async def GetHostSecurityEvents(self, limit: "u") -> "aa{sv}":
        return []  # livefw records no HSI change events (nothing to list)

    @method()
    @fwupd_errors
    async def FixHostSecurityAttr(self, appstream_id: "s") -> None:
        raise NotSupported(f"livefw cannot change {appstream_id}: it only reports it")

    @method()
    @fwupd_errors
    async def UndoHostSecurityAttr(self, appstream_id: "s") -> None:
        raise NotSupported(f"livefw never changed {appstream_id}: there is nothing to undo")

    @method()
    @fwupd_errors
    async def Inhibit(self, reason: "s") -> "s":
        sender = self._sender()
        held = self._inhibits()
        if sum(1 for owner, _ in held.values() if owner == sender) >= INHIBITS_PER_SENDER:
            raise NotSupported(f"at most {INHIBITS_PER_SENDER} inhibits per client")
        if len(held) >= INHIBITS_MAX:
            raise NotSupported(f"at most {INHIBITS_MAX} inhibits")
        self._inhibit_seq += 1
        inhibit_id = f"dbus-{self._inhibit_seq:06d}"
        self._inhibit_owners[inhibit_id] = sender
        text = reason[:INHIBIT_REASON_MAX] or "no reason given"
        self.ctx.engine.set_inhibit(inhibit_id, text)
        return inhibit_id

    @method()
    @fwupd_errors
    async def Uninhibit(self, inhibit_id: "s") -> None:
        owner = self._inhibit_owners.get(inhibit_id)
        if owner is None:
            raise NotFound(f"Cannot find inhibit ID {inhibit_id[:64]}")
        if owner != self._sender():
            raise PermissionDenied(f"{inhibit_id} was set by another client")
        self.drop_inhibit(inhibit_id)

    def _inhibits(self) -> dict[str, tuple[str, str]]:
        engine = self.ctx.engine
        return {
            key: (owner, engine.inhibits.get(key, ""))
            for key, owner in self._inhibit_owners.items()
        }

    def drop_inhibit(self, inhibit_id: str) -> None:
        """Release one inhibit (Uninhibit, or its client left the bus)."""
        self._inhibit_owners.pop(inhibit_id, None)
        self.ctx.engine.set_inhibit(inhibit_id, None)
        self.cache.drop()

    def forget_client(self, sender: str) -> bool:
        """A client left the bus: drop its hints, flags and inhibits (as fwupd)."""
        dropped = [key for key, owner in self._inhibit_owners.items() if owner == sender]
        for key in dropped:
            self.drop_inhibit(key)
        return self.clients.forget(sender) or bool(dropped)

    @method()
    @fwupd_errors
    async def Quit(self) -> None:
        await self.ctx.authorize("org.freedesktop.fwupd.quit")
        engine = self.ctx.engine
        if engine.busy:
            # fwupd ignores the request while an update runs and still answers success
            log.warning("quit_ignored", reason="an install or activation is in flight")
            return
        log.info("quit_requested", sender=self._sender())
        signals.raise_signal(signals.SIGTERM)  # the daemon's own orderly stop

    @method()
    @fwupd_errors
    async def VerifyUpdate(self, device_id: "s") -> None:
        device = self._device(device_id)
        raise NotSupported(
            f"{device.name} cannot be read back (the kernel interface has no firmware "
            "read), so there is no checksum to store"
        )

    @method()
    @fwupd_errors
    async def ModifyConfig(self, section: "s", key: "s", value: "s") -> None:
        if section != "fwupd":
            self._config_section(section, key)
        tables, name, parsed = config_change(key, value)
        await self.ctx.authorize("org.freedesktop.fwupd.modify-config")
        self.ctx.engine.reconfigure(self.fwupd_config.modify(tables, name, parsed))
        log.info("config_modified", key=key, value=parsed, live=key in CONFIG_LIVE,
                 sender=self._sender())  # fmt: skip
        self.cache.drop()

    def _config_section(self, section: str, key: str) -> None:
        """A section other than ``[fwupd]``: fwupd's answers (a plugin's, or no such)."""
        if section in self.ctx.engine.plugins:
            raise NotSupported(f"config key {key[:64]} not supported")
        raise NotFound(f"no plugin {section[:64]} found")

    @method()
    @fwupd_errors
    async def ResetConfig(self, section: "s") -> None:
        await self.ctx.authorize("org.freedesktop.fwupd.reset-config")
        if section != "fwupd":
            return  # fwupd answers success: livefw keeps nothing for other sections
        self.ctx.engine.reconfigure(self.fwupd_config.reset())
        log.info("config_reset", section=section, sender=self._sender())
        self.cache.drop()

    @method()
    @fwupd_errors
    async def CleanRemote(self, remote_id: "s") -> None:
        ids = {r.id for r in self.ctx.engine.releases.remotes()} | {LVFS_REMOTE_ID}
        if remote_id not in ids:
            raise NotFound(f"No remote '{remote_id[:64]}' found in search paths")
        raise NothingToDo(
            f"{remote_id} has no cached metadata: livefw reads directory remotes directly"
        )

    @method()
    @fwupd_errors
    async def GetBiosSettings(self) -> "aa{sv}":
        raise NotSupported("livefw does not manage BIOS settings (/sys/class/firmware-attributes)")

    @method()
    @fwupd_errors
    async def SetBiosSettings(self, settings: "a{ss}") -> None:
        raise NotSupported("livefw does not manage BIOS settings (/sys/class/firmware-attributes)")

    @method()
    @fwupd_errors
    async def SelfSign(self, data: "s", options: "a{sv}") -> "s":
        raise NotSupported("livefw has no client certificate to sign reports with")

    @method()
    @fwupd_errors
    async def EmulationLoad(self, handle: "h") -> None:
        for fd in list(self.ctx.message().unix_fds or []):
            os.close(fd)
        raise NotSupported(
            "livefw has no device emulation; use the simulated machine (livefwd --simulate)"
        )

    @method()
    @fwupd_errors
    async def EmulationSave(self, handle: "h") -> None:
        for fd in list(self.ctx.message().unix_fds or []):
            os.close(fd)
        raise NotSupported(
            "livefw has no device emulation; use the simulated machine (livefwd --simulate)"
        )

    @method()
    @fwupd_errors
    async def Search(self, token: "s") -> "aa{sv}":
        needle = token.strip().lower()[:256]
        if not needle:
            raise NothingToDo("no search term")
        found = []
        for candidate in await self.ctx.engine.releases.available():
            release = candidate.release
            text = " ".join((release.appstream_id, release.name, release.summary)).lower()
            if needle in text:
                found.append(release_dict(candidate))
        if not found:
            raise NothingToDo(f"No releases match {token[:64]!r}")
        return found

    # ------------------------------------------------------------ HSI and lists

    async def _security_attrs(self) -> list[Any]:
        engine = self.ctx.engine
        attrs = await security_attrs(engine.provider, list(engine.devices.values()))
        self._host_security_id = host_security_id(attrs)
        return attrs

    def _attr_dict(self, attr: Any) -> dict[str, Variant]:
        return {
            "AppstreamId": Variant("s", attr.appstream_id),
            "Name": Variant("s", attr.name),
            "Summary": Variant("s", attr.summary),
            "Plugin": Variant("s", attr.plugin),
            "Created": Variant("t", int(time.time())),
            "HsiLevel": Variant("u", attr.level),
            "HsiResult": Variant("u", HSI_RESULT.get(attr.result, 0)),
            "HsiResultSuccess": Variant("u", HSI_RESULT.get(attr.success_result, 0)),
            "Flags": Variant("t", attr.flags()),
        }

    # ----------------------------------------------------------------- signals

    @signal()
    def Changed(self) -> None:
        return None

    @signal()
    def DeviceAdded(self, device: "a{sv}") -> "a{sv}":
        return device

    @signal()
    def DeviceRemoved(self, device: "a{sv}") -> "a{sv}":
        return device

    @signal()
    def DeviceChanged(self, device: "a{sv}") -> "a{sv}":
        return device

    @signal()
    def DeviceRequest(self, request: "a{sv}") -> "a{sv}":
        return request


#: a unique name losing its owner: the client disconnected.
_DEPARTURES = (
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',path='/org/freedesktop/DBus',arg2=''"
)


class CompatService:
    """A second bus connection that owns ``org.freedesktop.fwupd`` and serves ``/``.

    A connection of its own keeps fwupd's name, object and signals apart from
    ``org.livefw.Daemon1`` (no stray InterfacesAdded on the native ObjectManager).
    """

    def __init__(
        self,
        engine: Any,
        authorizer: Any,
        bus_address: str | None,
        state_dir: str,
        config_path: str | None = None,
    ) -> None:
        self.engine = engine
        self.config_path = config_path
        self.authorizer = authorizer
        self.bus_address = bus_address
        self.state_dir = state_dir
        self.bus: LivefwBus | None = None
        self.interface: CompatInterface | None = None

    async def start(self) -> bool:
        """Connect, export ``/`` and request the name; False if it is taken."""
        bus = LivefwBus(
            bus_address=self.bus_address, bus_type=BusType.SYSTEM, object_manager_path=PATH
        )
        try:
            await bus.connect()
        except (OSError, ValueError) as error:
            log.error("fwupd_compat_unavailable", error=str(error))
            return False
        self.bus = bus
        ctx = BusContext(self.engine, bus, self.authorizer)
        self.interface = CompatInterface(ctx, self.state_dir, self.config_path)
        bus.hand_over_fd_list(INTERFACE)  # fwupd's fd convention: see _take_fd
        await self.interface.load_host()
        bus.export(PATH, self.interface)
        self.interface.attach()
        await self._follow_departures(bus)
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            log.error(
                "fwupd_name_taken",
                name=BUS_NAME,
                hint="fwupd.service (or another livefwd) owns it: stop and mask fwupd.service "
                "to use livefwd's fwupd-compatible API",
            )
            return False
        log.info("bus_name_owned", name=BUS_NAME)
        return True

    async def _follow_departures(self, bus: LivefwBus) -> None:
        """Forget a client's hints and flags when its unique name leaves the bus."""
        reply = await call(
            bus,
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[_DEPARTURES],
            ),
        )
        if reply.message_type == MessageType.ERROR:
            log.warning("fwupd_departures_not_followed", error=reply.error_name)
            return
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type != MessageType.SIGNAL
            or msg.member != "NameOwnerChanged"
            or msg.sender != "org.freedesktop.DBus"
            or msg.signature != "sss"
            or self.interface is None
        ):
            return
        name, _old, new = msg.body
        if new == "" and str(name).startswith(":") and self.interface.forget_client(str(name)):
            log.debug("fwupd_client_forgotten", sender=str(name))

    def stop(self) -> None:
        """Disconnect."""
        if self.bus is not None and self.bus.connected:
            disconnect(self.bus)
        self.bus = None
