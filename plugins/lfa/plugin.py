"""Arm LFA: find the activatable firmware images; settle interrupted activations.

The plugin's part is the device lifecycle: probe for ``/sys/firmware/lfa``, one
device per image directory at coldplug, rescan when the tree can have changed, and
reconcile an activation a stopped daemon left unfinished.

The kernel announces no change of the tree (no uevent for ``/sys/firmware/lfa`` or an
image directory, no ``sysfs_notify()``; docs/kernel.md, Uevents), so the images are
enumerated again (:meth:`LfaContext.rescan`) on the signals that exist:

* livefwd's own activation (:meth:`LfaDevice.activate`): the driver re-enumerated;
* ``Refresh`` (``livefw refresh``) and the engine's rescan after lost uevents;
* ``add``/``remove`` of module ``lfa_fw`` (a reload rebuilds or drops the tree);
* ``GetDevice`` of an image whose directory is gone (:meth:`LfaDevice.refresh`).

An activation made by another process or by the driver's ``auto_activate`` is seen
at the next of these; ``GetDevices`` does not rescan (see the README). The
operations (activate, cancel, the activation settings) live on :class:`LfaDevice`
(``device.py``); the image inventory the devices share lives in their
:class:`LfaContext` (``context.py``).
"""

from __future__ import annotations

from livefw.errors import NotSupported
from livefw.kernel import UEvent
from livefw.kernel.uapi import lfa as uapi
from livefw.plugin import (
    HistoryEntry,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    UEventMatch,
    UpdateState,
)
from livefw.plugins.lfa.context import LfaContext

__all__ = ["LfaPlugin"]


class LfaPlugin(Plugin):
    """Devices from ``/sys/firmware/lfa``."""

    name = "lfa"
    #: lfa_fw.c (every posting up to v3) sends no uevent for /sys/firmware/lfa: it is
    #: a kset below firmware_kobj, which belongs to no kset, so kset_register() ->
    #: lib/kobject_uevent.c ``kobject_uevent_env()`` refuses ("attempted to send uevent
    #: without kset"); nor for the image directories (``kobject_init_and_add()`` sends
    #: none and the driver never calls kobject_uevent()). What can bring the directory
    #: while livefwd runs is loading lfa_fw.ko, whose init (v3: the smccc driver's
    #: probe, run by driver registration) creates it before kernel/module/main.c
    #: ``do_init_module()`` sends the module's ``add`` (DEVPATH=/module/lfa_fw).
    #: Built in, it exists before livefwd starts. docs/kernel.md, Uevents.
    probe_uevents = (UEventMatch(subsystem="module", devpath=f"module/{uapi.LFA_MODULE}"),)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        #: what the devices share: the image inventory.
        self.device_ctx = LfaContext(ctx)

    async def probe(self) -> Probe:
        """The driver creates /sys/firmware/lfa only when the agent answers LFA_VERSION.

        (lfa_fw.c ``lfa_init()`` in the posted series; docs/kernel.md, Arm LFA.)
        """
        if not await self.ctx.provider.exists(uapi.LFA_SYSFS):
            return Probe.unsupported(
                "no /sys/firmware/lfa: the firmware has no LFA agent or the kernel lacks "
                "CONFIG_ARM_LFA (arm64 only, not in mainline yet)"
            )
        return Probe.ok()

    async def coldplug(self) -> None:
        """One device per image directory."""
        for guid in await self.device_ctx.guids():
            await self.device_ctx.add_image(guid)

    async def refresh(self) -> None:
        """Re-list images and re-read each, with the administrator's settings."""
        await self.device_ctx.rescan(options=True)

    async def on_uevent(self, event: UEvent) -> None:
        """lfa_fw.ko loaded or unloaded: the whole tree was rebuilt or removed.

        The module's own ``add``/``remove`` (kernel/module/main.c
        ``do_init_module()``; kernel/module/sysfs.c ``mod_sysfs_teardown()``) are the
        only uevents that say anything about ``/sys/firmware/lfa``; a reload makes new
        image objects (settings back to their defaults), so every image is re-read.
        """
        if event.subsystem != "module" or event.devpath.strip("/") != self._module_devpath:
            return
        if event.action in ("add", "remove"):
            self.device_ctx.log.info("lfa_rescan", reason=f"module {event.action}")
            await self.device_ctx.rescan(options=True)

    _module_devpath = f"module/{uapi.LFA_MODULE}"

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """An activation interrupted by a daemon crash: did the version change?"""
        if entry.kind != "activate":
            raise NotSupported(f"lfa does not know history rows of kind {entry.kind}")
        guid = entry.physical_id
        device = self.device_ctx.images.get(guid)
        if device is None:
            raise NotSupported(f"LFA image {guid} is gone; the outcome cannot be read back")
        await device.refresh()
        if entry.version_new and device.version == entry.version_new:
            return Reconciliation(UpdateState.SUCCESS, "activated", device.version)
        if device.version == entry.version_old and "needs-activation" in device.flags:
            return Reconciliation(
                UpdateState.FAILED,
                f"activation did not complete: {device.version} still runs and "
                f"{device.version_pending or 'the image'} is still pending",
                device.version,
            )
        raise NotSupported(
            f"{device.name} runs {device.version or 'an unknown version'}, neither the old "
            f"{entry.version_old} nor the new {entry.version_new}"
        )
