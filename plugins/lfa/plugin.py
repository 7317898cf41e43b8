"""Arm LFA: find the activatable firmware images; settle interrupted activations.

The plugin's part is the device lifecycle: probe for ``/sys/firmware/lfa``, one
device per image directory at coldplug, follow the directories' uevents, re-read on
``livefw refresh``, and reconcile an activation a stopped daemon left unfinished. The
operations (activate, cancel, the activation settings) live on :class:`LfaDevice`
(``device.py``); the image inventory the devices share lives in their
:class:`LfaContext` (``context.py``).
"""

from __future__ import annotations

import errno

from livefw.errors import KernelError, NotSupported
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
        for device in list(self.device_ctx.images.values()):
            try:
                await device.read_options()
            except KernelError as error:
                if error.errno not in (errno.ENOENT, errno.ENODEV):
                    raise  # a vanished image is removed by the rescan
        await self.device_ctx.rescan()

    async def on_uevent(self, event: UEvent) -> None:
        """Image directories come and go after activations and notifications."""
        prefix = uapi.LFA_DEVPATH + "/"
        if not event.devpath.startswith(prefix):
            return
        guid = event.devpath[len(prefix) :].split("/", 1)[0]
        images = self.device_ctx.images
        if event.action == "add":
            await self.device_ctx.add_image(guid)
        elif event.action == "remove":
            self.device_ctx.remove_image(guid)
        elif event.action == "change" and guid in images:
            await images[guid].refresh()

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
