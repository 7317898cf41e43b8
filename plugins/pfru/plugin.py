"""ACPI PFRU: find the update types and the telemetry node; settle unfinished rows.

Platform Firmware Runtime Update stages and activates platform firmware capsules
without a reboot (drivers/acpi/pfr_update.c); its companion exposes the firmware's
telemetry log (drivers/acpi/pfr_telemetry.c). The plugin's part is the device
lifecycle: probe for the nodes, one device per update type the firmware reports,
follow the drivers binding and unbinding, and reconcile history rows a stopped
daemon left. The operations live on the devices (``device.py``, ``telemetry.py``);
the state both update types share lives in their :class:`PfruContext`
(``context.py``).
"""

from __future__ import annotations

from livefw.errors import Busy, LivefwError, NotSupported
from livefw.kernel import UEvent
from livefw.kernel.uapi import pfru as uapi
from livefw.plugin import (
    HistoryEntry,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    UEventMatch,
    UpdateState,
)
from livefw.plugins.pfru.context import PfruContext
from livefw.plugins.pfru.device import TYPE_SLUG, PfruDevice
from livefw.plugins.pfru.telemetry import PfruTelemetryDevice

__all__ = ["PfruPlugin"]


class PfruPlugin(Plugin):
    """Devices for ``/dev/acpi_pfr_update0``; telemetry from ``/dev/acpi_pfr_telemetry0``."""

    name = "pfru"
    #: the update node appears when pfr_update binds its ACPI device (module loaded
    #: late, ACPI hotplug): drivers/acpi/pfr_update.c ``acpi_pfru_probe()`` registers
    #: a misc device named ``pfru<N>`` with the node name ``acpi_pfr_update<N>``, and
    #: drivers/char/misc.c ``misc_register()`` -> device_create() sends ``add`` with
    #: SUBSYSTEM=misc and DEVNAME=acpi_pfr_update0 (docs/kernel.md, Uevents). The
    #: telemetry node is no trigger: without the update node the probe fails anyway,
    #: and with it the plugin is loaded and follows telemetry in on_uevent.
    probe_uevents = (UEventMatch(subsystem="misc", devname=uapi.UPDATE_NODE.removeprefix("dev/")),)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        #: what the devices share (raises ConfigError for a bad [plugins.pfru]).
        self.device_ctx = PfruContext(ctx)
        self._devices: dict[uapi.UpdateType, PfruDevice] = {}
        #: the update node was there at the last enumeration and answered QUERY_CAP
        self._update_known = False

    async def probe(self) -> Probe:
        """The update node must exist; telemetry is optional."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.UPDATE_NODE):
            return Probe.unsupported(
                f"no /{uapi.UPDATE_NODE}: the platform has no ACPI PFRU device "
                f"({uapi.UPDATE_HID}) with a _DSM, or the kernel lacks CONFIG_ACPI_PFRUT "
                "(x86_64, Linux 5.17+)"
            )
        self.device_ctx.telemetry = await provider.exists(uapi.TELEMETRY_NODE)
        if not self.device_ctx.telemetry:
            return Probe.ok(
                f"no /{uapi.TELEMETRY_NODE} (ACPI {uapi.TELEMETRY_HID}): firmware "
                "telemetry is unavailable"
            )
        return Probe.ok()

    async def coldplug(self) -> None:
        """Apply configured ``_DSM`` revisions; one device per non-zero image type."""
        if await self.ctx.provider.exists(uapi.UPDATE_NODE):
            await self.device_ctx.apply_configured_revisions()
        await self.refresh()

    async def on_uevent(self, event: UEvent) -> None:
        """The drivers' misc devices come and go when the ACPI devices (un)bind.

        An ``add`` for a node already enumerated and a ``remove`` for one that is not
        known change nothing (udev's rule; the engine subscribes before coldplug, so
        a node that appeared during coldplug is reported again afterwards).
        """
        if event.action not in ("add", "remove"):
            return
        if event.devpath == uapi.UPDATE_DEVPATH:
            known = self._update_known
        elif event.devpath == uapi.TELEMETRY_DEVPATH:
            known = self.device_ctx.telemetry
        else:
            return
        if known == (event.action == "add"):
            return
        self.ctx.log.info("pfru_uevent", action=event.action, devpath=event.devpath)
        await self.refresh()

    def _drop(self, update_type: uapi.UpdateType) -> None:
        device = self._devices.pop(update_type, None)
        if device is not None:
            if self.device_ctx.staged == update_type:
                self.device_ctx.staged = None
            self.ctx.remove_device(device.id)
            self.ctx.log.info("pfru_device_removed", update_type=TYPE_SLUG[update_type])

    async def refresh(self) -> None:
        """Re-query the capability; add or remove devices as nodes and image types change."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.UPDATE_NODE):
            self._update_known = False
            for update_type in list(self._devices):
                self._drop(update_type)
            return
        telemetry = await provider.exists(uapi.TELEMETRY_NODE)
        if telemetry != self.device_ctx.telemetry:
            # the Telemetry interface comes with the device object: publish it again
            self.device_ctx.telemetry = telemetry
            for update_type in list(self._devices):
                self._drop(update_type)
        try:
            cap = await self.device_ctx.query_cap()
        except Busy as error:
            # a transient firmware state: keep what we have; `livefw refresh` (or the
            # node's next uevent) retries
            self.ctx.log.warning("pfru_query_failed", error=error.message)
            self._update_known = False
            return
        self._update_known = True
        for update_type in uapi.UpdateType:
            device = self._devices.get(update_type)
            if not cap.has_type(update_type):
                self._drop(update_type)
                continue
            if device is not None:
                device.apply_cap(cap)
                continue
            telemetry_here = self.device_ctx.telemetry and (
                update_type == uapi.UpdateType.CODE_INJECTION
                or not cap.has_type(uapi.UpdateType.CODE_INJECTION)
            )
            cls = PfruTelemetryDevice if telemetry_here else PfruDevice
            device = cls(self.device_ctx, update_type, cap)
            if isinstance(device, PfruTelemetryDevice):
                try:
                    await device.telemetry_info()
                except LivefwError as error:
                    self.ctx.log.warning("pfru_telemetry_info_failed", error=str(error))
            self._devices[update_type] = device
            self.ctx.add_device(device)
            self.ctx.log.debug(
                "pfru_device_added",
                update_type=TYPE_SLUG[update_type],
                version=device.version,
                device_id=device.id,
            )

    def device(self, update_type: uapi.UpdateType) -> PfruDevice | None:
        """The device of ``update_type``, if the firmware reports it."""
        return self._devices.get(update_type)

    # ------------------------------------------------------------ reconciliation

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """Decide from QUERY_CAP versions what an unfinished install or activation did.

        A staged capsule lives in firmware runtime memory: it survives a daemon
        restart but not a reboot.
        """
        update_type = _type_of(entry)
        device = self._devices.get(update_type) if update_type else None
        if device is None:
            raise NotSupported(
                f"the PFRU {entry.physical_id or 'device'} is gone; the outcome cannot be read"
            )
        await device.refresh()
        step = str(entry.data.get("pfru_step", ""))
        if entry.version_new and device.version == entry.version_new != entry.version_old:
            device.clear_staged()
            return Reconciliation(UpdateState.SUCCESS, "activated", device.version)
        if boot_changed:
            if entry.state == "staged" or step in ("staged", "activating"):
                return Reconciliation(
                    UpdateState.FAILED,
                    "the machine rebooted before the staged capsule was activated; PFRU "
                    "stages into firmware runtime memory, so install it again",
                    device.version,
                )
            return Reconciliation(
                UpdateState.FAILED,
                f"interrupted by a reboot; {device.name} still runs {device.version}",
                device.version,
            )
        if step == "activated":
            device.clear_staged()
            return Reconciliation(UpdateState.SUCCESS, "activated", device.version)
        if entry.state == "staged":
            if self.device_ctx.staged not in (None, update_type):
                return Reconciliation(
                    UpdateState.FAILED,
                    "replaced: a capsule of the other update type was staged later",
                    device.version,
                )
            device.mark_staged(entry.version_new, entry.version_old)
            return None  # still staged, waiting for Activate
        if step in ("staged", "activating") and entry.kind == "install":
            # the capsule was staged and not (or not yet) activated: the firmware holds
            # it, so this row owns it until an activation or a reboot settles it
            device.mark_staged(entry.version_new, entry.version_old)
            return Reconciliation(
                UpdateState.PENDING,
                "staged; the daemon stopped before it finished: run `livefw activate` to apply it",
                entry.version_new,
            )
        if step in ("staged", "activating"):
            # the firmware may still hold the staged capsule: offer the activation again.
            device.mark_staged(entry.version_new, entry.version_old)
            return Reconciliation(
                UpdateState.FAILED,
                "interrupted after the capsule was staged; the firmware still holds it: "
                "run `livefw activate` to apply it, or install again",
                device.version,
            )
        if step in ("", "writing", "written"):
            return Reconciliation(
                UpdateState.FAILED,
                f"interrupted before the capsule was staged; {device.name} still runs "
                f"{device.version}",
                device.version,
            )
        raise NotSupported(f"unknown PFRU step {step!r} in the history row")


def _type_of(entry: HistoryEntry) -> uapi.UpdateType | None:
    slug = str(entry.data.get("pfru_update_type", "")) or entry.physical_id.rsplit("/", 1)[-1]
    for update_type, name in TYPE_SLUG.items():
        if name == slug:
            return update_type
    return None
