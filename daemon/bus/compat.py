"""``org.freedesktop.fwupd`` at ``/``: the fwupd-compatible subset real clients use.

With ``--fwupd-compat`` (or ``[daemon] fwupd_compat``) livefwd also owns
``org.freedesktop.fwupd`` so fwupdmgr, gnome-firmware, gnome-software and Discover
drive it as if it were fwupd (docs/compat.md has every method beside fwupd's). This
module is the mapping only: each method parses its arguments, calls one method of
livefw.fwupd_service (which does the work on the engine and keeps its state in
livefw.compat_state) and maps the result with livefw.bus.fwupd_map. Wire rules kept
here: exact dictionary types; empty results are ``NothingToDo`` errors (except
GetRemotes, which returns ``[]``); Install and GetDetails take fd 0 of the message
whatever the ``h`` value says; errors carry fwupd's names only (codes 0-17, what 1.8
clients know: livefw.bus.errors.fwupd_errors); methods check fwupd's own polkit action
ids.

Devices: PFRU and LFA use ``needs-activation`` (``updatable`` cleared and
``updatable-hidden`` set while staged), UEFI capsule devices carry ``needs-reboot``
as a capability; fwctl and live-update devices are not shown.
"""

import contextlib
import os
from collections.abc import Iterator

from livefw.bus.backend import (
    DBusError,
    PropertyAccess,
    Variant,
    dbus_property,
    method,
    signal,
)
from livefw.bus.compat_refusals import CompatRefusals
from livefw.bus.context import BusContext
from livefw.bus.errors import FWUPD_ERROR_PREFIX, fwupd_errors
from livefw.bus.fwupd_map import (
    STATUS,
    detail_dict,
    device_dict,
    history_dict,
    install_options,
    release_dict,
    remote_dicts,
    security_attr_dict,
)
from livefw.bus.prebuilt import ArrayElement, ArrayReply
from livefw.device import Device
from livefw.errors import LivefwError
from livefw.fwupd_service import FwupdEvents, FwupdService

BUS_NAME = "org.freedesktop.fwupd"
PATH = "/"
INTERFACE = "org.freedesktop.fwupd"


class CompatInterface(CompatRefusals, FwupdEvents):
    """The ``org.freedesktop.fwupd`` interface, backed by :class:`FwupdService`.

    The methods livefw answers without the engine are in
    :class:`livefw.bus.compat_refusals.CompatRefusals`.
    """

    def __init__(self, ctx: BusContext, service: FwupdService) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.service = service
        self._devices = ArrayReply("aa{sv}")

    # ---------------------------------------------------- events -> signals

    def _dict(self, device: Device) -> dict[str, Variant]:
        return device_dict(device, self.service.supported(device), self.service.created)

    def _listed(self, device: Device) -> ArrayElement:
        """GetDevices' dict of a device, with the held inhibits: cached, marshalled once."""
        service = self.service
        listed: ArrayElement = service.cache.lookup(
            device,
            lambda: ArrayElement(
                "a{sv}",
                device_dict(
                    device, service.supported(device), service.created, service.engine.inhibits
                ),
            ),
        )
        return listed

    def device_added(self, device: Device) -> None:
        self.DeviceAdded(self._dict(device))

    def device_removed(self, device: Device) -> None:
        self.DeviceRemoved(self._dict(device))

    def device_changed(self, device: Device) -> None:
        self.DeviceChanged(self._dict(device))

    def changed(self) -> None:
        self.Changed()

    def progress_changed(self, names: frozenset[str]) -> None:
        """PropertiesChanged with values, one property per signal (as fwupd)."""
        engine = self.service.engine
        if "status" in names:
            self.emit_properties_changed({"Status": STATUS.get(str(engine.status), 0)})
        if "percentage" in names:
            self.emit_properties_changed({"Percentage": engine.percentage})
            self.emit_properties_changed({"PercentageFull": float(engine.percentage)})

    # ------------------------------------------------------------ the call

    def _sender(self) -> str:
        try:
            return self.ctx.sender()
        except LivefwError:
            return ""

    @contextlib.contextmanager
    def _fd(self) -> Iterator[int]:
        """Fd 0 of the message (the ``h`` value is the client's own number), closed after."""
        fds = self._fds()
        if len(fds) != 1:
            self._close_fds()
            raise DBusError(
                FWUPD_ERROR_PREFIX + "Internal", f"wrong number of file descriptors: {len(fds)}"
            )
        try:
            yield fds[0]
        finally:
            os.close(fds[0])

    # --------------------------------------------------------------- properties

    @dbus_property(access=PropertyAccess.READ)
    def DaemonVersion(self) -> "s":
        return self.service.daemon_version

    @dbus_property(access=PropertyAccess.READ)
    def HostBkc(self) -> "s":
        return ""  # fwupd.conf HostBkc: livefw has no best-known-configuration tags

    @dbus_property(access=PropertyAccess.READ)
    def HostVendor(self) -> "s":
        return self.service.host.vendor

    @dbus_property(access=PropertyAccess.READ)
    def HostProduct(self) -> "s":
        return self.service.host.product

    @dbus_property(access=PropertyAccess.READ)
    def HostMachineId(self) -> "s":
        return self.service.host.machine_id

    @dbus_property(access=PropertyAccess.READ)
    def HostSecurityId(self) -> "s":
        return self.service.host_security_id

    @dbus_property(access=PropertyAccess.READ)
    def Hwids(self) -> "a(ss)":
        return [list(pair) for pair in self.service.host.hwids()]

    @dbus_property(access=PropertyAccess.READ)
    def Tainted(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Interactive(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> "u":
        return STATUS.get(str(self.service.engine.status), 0)

    @dbus_property(access=PropertyAccess.READ)
    def Percentage(self) -> "u":
        return self.service.engine.percentage

    @dbus_property(access=PropertyAccess.READ)
    def PercentageFull(self) -> "d":
        return float(self.service.engine.percentage)

    @dbus_property(access=PropertyAccess.READ)
    def BatteryLevel(self) -> "u":
        return 101

    @dbus_property(access=PropertyAccess.READ)
    def BatteryThreshold(self) -> "u":
        return 10

    @dbus_property(access=PropertyAccess.READ)
    def OnlyTrusted(self) -> "b":
        return bool(self.service.engine.config.install.only_trusted)

    # ------------------------------------------------------------------ methods

    @method()
    @fwupd_errors
    async def SetHints(self, hints: "a{ss}") -> None:
        self.service.clients.set_hints(self._sender(), dict(hints))

    @method()
    @fwupd_errors
    async def SetFeatureFlags(self, feature_flags: "t") -> None:
        self.service.clients.set_features(self._sender(), int(feature_flags))

    @method()
    @fwupd_errors
    async def GetDevices(self) -> "aa{sv}":
        return self._devices.reply_for(await self.service.devices(), self._listed)

    @method()
    @fwupd_errors
    async def GetReleases(self, device_id: "s") -> "aa{sv}":
        releases = await self.service.releases(device_id)
        return [release_dict(c, order, as_fwupd=True) for c, order in releases]

    @method()
    @fwupd_errors
    async def GetUpgrades(self, device_id: "s") -> "aa{sv}":
        return [release_dict(c, 1) for c in await self.service.upgrades(device_id)]

    @method()
    @fwupd_errors
    async def GetDowngrades(self, device_id: "s") -> "aa{sv}":
        return [release_dict(c, -1) for c in await self.service.downgrades(device_id)]

    @method()
    @fwupd_errors
    async def GetHistory(self) -> "aa{sv}":
        return [history_dict(*row) for row in self.service.history()]

    @method()
    @fwupd_errors
    async def GetResults(self, device_id: "s") -> "a{sv}":
        return history_dict(*self.service.result(device_id))

    @method()
    @fwupd_errors
    async def ClearResults(self, device_id: "s") -> None:
        self.service.clear_results(device_id)

    @method()
    @fwupd_errors
    async def ModifyDevice(self, device_id: "s", key: "s", value: "s") -> None:
        self.service.modify_device(device_id, key, value)

    @method()
    @fwupd_errors
    async def GetRemotes(self) -> "aa{sv}":
        return remote_dicts(self.service.remotes())

    @method()
    @fwupd_errors
    async def GetDetails(self, handle: "h") -> "aa{sv}":
        with self._fd() as fd:
            details = await self.service.details(fd)
        return [detail_dict(detail, self.service.created) for detail in details]

    @method()
    @fwupd_errors
    async def Install(self, device_id: "s", handle: "h", options: "a{sv}") -> None:
        with self._fd() as fd:
            parsed, name = install_options(options)
            job = await self.service.plan_install(device_id, fd, name, parsed, self.ctx.authorize)
        await self.service.install(job, self.ctx.authorize)

    @method()
    @fwupd_errors
    async def Activate(self, device_id: "s") -> None:
        await self.service.activate(device_id, self.ctx.authorize)

    @method()
    @fwupd_errors
    async def CleanRemote(self, remote_id: "s") -> None:
        self.service.clean_remote(remote_id)

    @method()
    @fwupd_errors
    async def GetApprovedFirmware(self) -> "as":
        return sorted(self.service.engine.firmware_lists.approved)

    @method()
    @fwupd_errors
    async def SetApprovedFirmware(self, checksums: "as") -> None:
        await self.service.set_firmware_list(checksums, self.ctx.authorize, approved=True)

    @method()
    @fwupd_errors
    async def GetBlockedFirmware(self) -> "as":
        return sorted(self.service.engine.firmware_lists.blocked)

    @method()
    @fwupd_errors
    async def SetBlockedFirmware(self, checksums: "as") -> None:
        await self.service.set_firmware_list(checksums, self.ctx.authorize, approved=False)

    @method()
    @fwupd_errors
    async def GetReportMetadata(self) -> "a{ss}":
        return await self.service.report_metadata()

    @method()
    @fwupd_errors
    async def GetHostSecurityAttrs(self) -> "aa{sv}":
        return [security_attr_dict(attr) for attr in await self.service.security_attrs()]

    @method()
    @fwupd_errors
    async def Inhibit(self, reason: "s") -> "s":
        return self.service.inhibit(self._sender(), reason)

    @method()
    @fwupd_errors
    async def Uninhibit(self, inhibit_id: "s") -> None:
        self.service.uninhibit(self._sender(), inhibit_id)

    @method()
    @fwupd_errors
    async def Quit(self) -> None:
        await self.service.quit(self.ctx.authorize, self._sender())

    @method()
    @fwupd_errors
    async def ModifyConfig(self, section: "s", key: "s", value: "s") -> None:
        await self.service.modify_config(section, key, value, self.ctx.authorize, self._sender())

    @method()
    @fwupd_errors
    async def ResetConfig(self, section: "s") -> None:
        await self.service.reset_config(section, self.ctx.authorize, self._sender())

    @method()
    @fwupd_errors
    async def Search(self, token: "s") -> "aa{sv}":
        return [release_dict(candidate) for candidate in await self.service.search(token)]

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
