"""The UEFI capsule plugin: one device per ESRT entry.

The plugin finds the ESRT (drivers/firmware/efi/esrt.c) and says why when there is
none (legacy boot, Xen dom0, a kernel that wants CAP_SYS_ADMIN), creates the
devices, and resolves staged history rows after a reboot. What a device does
(staging a capsule for the next boot, cancelling it, reading the result back) is
in device.py; what the devices share (EFI variables, the ESP) in context.py.
"""

from __future__ import annotations

import errno
import re

from livefw.errors import KernelError, NotSupported
from livefw.kernel.uapi import efi
from livefw.plugin import (
    HistoryEntry,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    UpdateState,
)
from livefw.plugins.uefi_capsule.context import UefiCapsuleContext
from livefw.plugins.uefi_capsule.device import UefiCapsuleDevice


class UefiCapsulePlugin(Plugin):
    """Devices from the ESRT; capsules staged for the firmware."""

    name = "uefi_capsule"
    #: no uevent can bring the ESRT: drivers/firmware/efi/esrt.c ``esrt_sysfs_init()``
    #: is a built-in initcall (CONFIG_EFI_ESRT is bool) and its kobjects hang below
    #: efi_kobj, in no kset, so they send no uevent; a mount of efivarfs sends none
    #: either. The plugin reads /proc/self/mountinfo again at each install and
    #: refresh (``UefiCapsuleContext.detect``) to learn of a late efivarfs or ESP.
    probe_uevents = ()

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        #: what every device gets instead of the plugin (ESP, variables, ESRT source)
        self.shared = UefiCapsuleContext(ctx)
        self._devices: dict[str, UefiCapsuleDevice] = {}

    async def _kernel_release(self) -> tuple[str, tuple[int, int] | None]:
        """The running kernel's release (``/proc/sys/kernel/osrelease``) and MAJOR.MINOR."""
        try:
            text = (await self.ctx.provider.read_attr(efi.OSRELEASE)).strip()[:64]
        except KernelError:
            return "unknown", None
        match = re.match(r"(\d+)\.(\d+)", text)
        return text, ((int(match.group(1)), int(match.group(2))) if match else None)

    @staticmethod
    def _at_least(version: tuple[int, int] | None, release: str) -> bool | None:
        if version is None:
            return None
        major, minor = (int(part) for part in release.split("."))
        return version >= (major, minor)

    # ------------------------------------------------------------ probing

    async def _xen_dom0(self) -> bool:
        provider = self.ctx.provider
        try:
            kind = (await provider.read_attr(efi.HYPERVISOR_TYPE)).strip()
            caps = await provider.read_attr(efi.XEN_CAPABILITIES)
        except KernelError:
            return False
        return kind == "xen" and "control_d" in caps

    async def probe(self) -> Probe:
        """Needs the ESRT; says which case it is when absent (legacy boot, Xen dom0)."""
        provider = self.ctx.provider
        xen = await self._xen_dom0()
        if not await provider.exists(efi.EFI_DIR):
            if xen:
                return Probe.unsupported(
                    "Xen PV dom0: the hypervisor does not expose EFI (no /sys/firmware/efi), "
                    "so no ESRT; update the firmware from outside Xen"
                )
            return Probe.unsupported(
                "legacy BIOS boot: no /sys/firmware/efi, so the firmware offers no ESRT or "
                "capsule updates; boot in UEFI mode to use them"
            )
        if not await provider.exists(efi.ESRT_DIR):
            if xen:
                return Probe.unsupported(await self._xen_reason())
            return Probe.unsupported(
                "no /sys/firmware/efi/esrt: the firmware publishes no ESRT or the kernel lacks "
                "CONFIG_EFI_ESRT"
            )
        denied = await self._esrt_source()
        if denied:
            return Probe.unsupported(denied)
        env = await self.shared.detect()
        if env.method == "none":
            return Probe.ok("ESRT devices listed but not updatable: " + "; ".join(env.reasons))
        if env.method == "capsule-on-disk":
            return Probe.ok("capsule-on-disk mode only: " + "; ".join(env.reasons))
        return Probe.ok()

    async def _xen_reason(self) -> str:
        """Why a Xen dom0 has no ESRT, for the kernel that runs.

        drivers/firmware/efi/esrt.c ``efi_esrt_init()`` needs the EFI memory map, which
        a Xen dom0 does not have (EFI_PARAVIRT); from 6.3 (commit 01de145dc7fb "efi:
        Actually enable the ESRT under Xen") it looks the table up through the
        hypervisor, which must have preserved it for dom0.
        """
        release, version = await self._kernel_release()
        newer = self._at_least(version, efi.ESRT_ON_XEN_SINCE)
        if newer is False:
            return (
                f"Xen PV dom0 on Linux {release}: kernels before {efi.ESRT_ON_XEN_SINCE} never "
                "expose the ESRT under Xen (/sys/firmware/efi/esrt is missing); boot Linux "
                f"{efi.ESRT_ON_XEN_SINCE} or newer on a Xen that preserves the ESRT for dom0, or "
                "update the firmware from outside Xen"
            )
        if newer:
            return (
                f"Xen PV dom0 on Linux {release}: this kernel can expose the ESRT under Xen, "
                "but /sys/firmware/efi/esrt is missing, so the hypervisor did not preserve "
                "it for dom0 (a Xen release before 4.17, or the firmware put it in memory Xen "
                "does not keep); update Xen or update the firmware from outside Xen"
            )
        return (
            "Xen PV dom0: /sys/firmware/efi/esrt is missing; kernels before "
            f"{efi.ESRT_ON_XEN_SINCE} never expose it under Xen, newer ones only when the "
            "hypervisor preserves it for dom0"
        )

    async def _esrt_source(self) -> str:
        """Choose where ESRT entries are read; ``""`` or why they cannot be read.

        Before Linux 6.5, drivers/firmware/efi/esrt.c ``esre_attr_show()`` answers
        EACCES unless the reader has CAP_SYS_ADMIN, which livefwd.service does not
        grant (it would undo the unit's mount sandboxing). The unit's ExecStartPre=+
        copies the ESRT to /run/livefw/esrt as full root at each start instead: the
        table cannot change before the next boot, and /run starts empty at each boot.
        """
        provider = self.ctx.provider
        self.shared.esrt_entries = efi.ESRT_ENTRIES
        try:
            names = await provider.listdir(efi.ESRT_ENTRIES)
        except KernelError:
            return ""
        if not names:
            return ""
        try:
            await provider.read_attr(f"{efi.ESRT_ENTRIES}/{sorted(names)[0]}/fw_class")
            return ""
        except KernelError as error:
            if error.errno not in (errno.EACCES, errno.EPERM):
                return ""
        snapshot = f"{efi.ESRT_SNAPSHOT_DIR}/entries"
        if await provider.is_dir(snapshot):
            self.shared.esrt_entries = snapshot
            self.ctx.log.info("esrt_from_snapshot", path="/" + snapshot)
            return ""
        release, _ = await self._kernel_release()
        return (
            f"the ESRT entries cannot be read: Linux {release} lets only CAP_SYS_ADMIN read "
            "them (drivers/firmware/efi/esrt.c esre_attr_show, until Linux "
            f"{efi.ESRT_WITHOUT_SYS_ADMIN_SINCE}) and livefwd runs without CAP_SYS_ADMIN; the "
            "shipped livefwd.service copies the ESRT to /run/livefw/esrt (ExecStartPre=+): "
            "restore that line if a drop-in removed it, or boot Linux "
            f"{efi.ESRT_WITHOUT_SYS_ADMIN_SINCE} or newer"
        )

    # ------------------------------------------------------------ devices

    async def _entries(self) -> list[tuple[str, efi.EsrtEntry]]:
        provider = self.ctx.provider
        if not await provider.exists(self.shared.esrt_entries):
            return []
        found = []
        names = await provider.listdir(self.shared.esrt_entries)
        for name in sorted(names, key=lambda n: int(n[5:]) if n[5:].isdigit() else 1 << 30):
            directory = f"{self.shared.esrt_entries}/{name}"
            try:
                files = {
                    key: await provider.read_attr(f"{directory}/{key}")
                    for key in efi.ESRT_ENTRY_FILES
                }
                found.append((directory, efi.EsrtEntry.parse(files)))
            except (KernelError, ValueError) as error:
                self.ctx.log.warning("esrt_entry_unreadable", entry=name, error=str(error))
        return found

    async def coldplug(self) -> None:
        """One device per ESRT entry."""
        for directory, entry in await self._entries():
            if entry.fw_class in self._devices:
                self.ctx.log.warning("esrt_duplicate_class", fw_class=entry.fw_class)
                continue
            device = UefiCapsuleDevice(self.shared, directory, entry)
            await device.update_properties()
            self._devices[entry.fw_class] = device
            self.ctx.add_device(device)
            self.ctx.log.debug(
                "esrt_device_added", fw_class=entry.fw_class, version=entry.fw_version
            )

    async def refresh(self) -> None:
        """Re-detect the ESP and loader, then re-read every entry."""
        await self.shared.detect()
        for device in list(self._devices.values()):
            await device.refresh()

    # ------------------------------------------------------- reconciliation

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """Resolve staged rows after a reboot from the ESRT; repair interrupted stagings."""
        if entry.kind != "install":
            raise NotSupported(f"uefi_capsule does not know history rows of kind {entry.kind}")
        record = entry.data.get("uefi")
        fw_class = entry.physical_id
        if not isinstance(record, dict):
            # killed before anything was recorded: nothing was written
            return Reconciliation(
                UpdateState.FAILED, "interrupted before the capsule was staged; nothing changed"
            )
        if not boot_changed:
            if entry.state == "staged":
                return None
            if await self.shared.staging_complete(record):
                return None  # every step was done; the reboot decides
            await self.shared.unstage(fw_class, record, rollback=True)
            await self._refresh_one(fw_class)
            return Reconciliation(
                UpdateState.FAILED,
                "interrupted while staging the capsule; the partial staging was removed",
            )
        try:
            device = self._devices.get(fw_class)
            if device is None:
                raise NotSupported(
                    f"the ESRT no longer lists {fw_class}; the outcome cannot be read"
                )
            return await device.outcome(entry, record)
        finally:
            # read the verdict first, then clean up, whatever the verdict; a staging the
            # daemon never finished is taken back entirely
            await self.shared.unstage(fw_class, record, rollback=entry.state == "pending")
            await self._refresh_one(fw_class)

    async def _refresh_one(self, fw_class: str) -> None:
        device = self._devices.get(fw_class)
        if device is not None:
            await device.refresh()
