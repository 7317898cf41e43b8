"""Arm LFA: list activatable firmware images and activate pending ones without a reboot.

LFA is activate-only: images arrive out of band (a BMC or the firmware itself puts
them in place), so LFA devices are never ``updatable``. Pending state is live in
sysfs and is re-read when a client asks (``GetDevice``, ``Refresh``) and after an
activation, never on a timer.
"""

from __future__ import annotations

import errno
import uuid

from livefw.errors import (
    ActivationFailed,
    Busy,
    KernelError,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel import UEvent
from livefw.kernel.uapi import lfa as uapi
from livefw.plugin import (
    Device,
    HistoryEntry,
    Operation,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    Status,
    UpdateState,
)

PROTOCOL = "org.livefw.lfa"
VENDOR = "Arm"


class LfaDevice(Device):
    """One firmware image under ``/sys/firmware/lfa/<guid>``."""

    def __init__(self, plugin: LfaPlugin, guid: str, name: str) -> None:
        super().__init__(
            LfaPlugin.name,
            guid,
            name=name,
            vendor=VENDOR,
            summary="Firmware image activatable at runtime (Arm LFA)",
            protocol=PROTOCOL,
            guids=(guid,),
            flags=("internal",),
            metadata={"sysfs": f"/{uapi.LFA_SYSFS}/{guid}"},
        )
        self._plugin = plugin
        self.guid = guid

    def _attr(self, name: str) -> str:
        return f"{uapi.LFA_SYSFS}/{self.guid}/{name}"

    async def _read(self, name: str, default: str = "") -> str:
        provider = self._plugin.ctx.provider
        path = self._attr(name)
        if not await provider.exists(path):
            return default  # older postings lack current/pending_version
        return (await provider.read_attr(path)).strip()

    async def refresh(self) -> None:
        """Re-read every attribute; pending state is queried live by the kernel."""
        capable = await self._read(uapi.ATTR_ACTIVATION_CAPABLE, "0") == "1"
        pending = await self._read(uapi.ATTR_ACTIVATION_PENDING, "0") == "1"
        may_reset = await self._read(uapi.ATTR_MAY_RESET_CPU, "0") == "1"
        rendezvous = await self._read(uapi.ATTR_CPU_RENDEZVOUS, "1") == "1"
        current = await self._read(uapi.ATTR_CURRENT_VERSION)
        pending_version = await self._read(uapi.ATTR_PENDING_VERSION)
        if pending_version == uapi.PENDING_NONE or not pending:
            pending_version = ""
        flags = {"internal"}
        if capable:
            flags.add("activation-capable")
        if capable and pending and not may_reset:
            flags.add("needs-activation")
        if may_reset:
            flags.add("may-reset-cpu")
        if rendezvous:
            flags.add("cpu-rendezvous")
        metadata = dict(self.metadata)
        metadata["activation-pending"] = "true" if pending else "false"
        self.update(
            version=current, version_pending=pending_version, flags=flags, metadata=metadata
        )

    def check_activate(self) -> None:
        """Refuse what the kernel would refuse, before touching anything."""
        if "activation-capable" not in self.flags:
            raise NotSupported(
                f"{self.name} is not activation-capable: the firmware can only switch it at reboot"
            )
        if "may-reset-cpu" in self.flags:
            raise NotSupported(
                f"{self.name} may reset CPUs during activation, which the kernel refuses; "
                "apply it with a reboot"
            )
        if "needs-activation" not in self.flags:
            raise NothingToDo(f"{self.name} has no pending image to activate")

    async def activate(self, op: Operation) -> str:
        """Write ``1`` to ``activate``: the kernel primes and activates (may take long)."""
        op.record(guid=self.guid, version_pending=self.version_pending)
        op.progress(Status.DEVICE_ACTIVATE, 10)
        try:
            await self._plugin.ctx.provider.write_attr(self._attr(uapi.ATTR_ACTIVATE), "1")
        except KernelError as error:
            raise _map_activate_error(self.name, error) from error
        op.progress(Status.DEVICE_VERIFY, 90)
        await self._plugin.refresh()
        return self.version

    def check_cancel(self) -> None:
        """LFA has a cancel attribute on capable images."""
        if "activation-capable" not in self.flags:
            raise NotSupported(f"{self.name} is not activation-capable: nothing to cancel")

    async def cancel(self) -> None:
        """Write ``cancel``; the agent refuses (EINVAL) when nothing is primed."""
        try:
            await self._plugin.ctx.provider.write_attr(self._attr(uapi.ATTR_CANCEL), "1")
        except KernelError as error:
            if error.errno == errno.EINVAL:
                raise NothingToDo(
                    f"{self.name}: the firmware has no activation in progress to cancel"
                ) from error
            raise
        await self.refresh()


def _map_activate_error(name: str, error: KernelError) -> Exception:
    """The driver reports every agent failure as ECANCELED (spec §2.3)."""
    if error.errno == errno.ECANCELED:
        return ActivationFailed(
            f"the firmware refused or failed to activate {name} (ECANCELED); "
            "the previous image keeps running, see the kernel log for the agent's status"
        )
    if error.errno in (errno.EAGAIN, errno.EBUSY):
        return Busy(f"another activation is in progress on this machine; retry {name} later")
    if error.errno in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"{name} disappeared from /sys/firmware/lfa during activation")
    if error.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"the kernel refused to activate {name}: {error.message}")
    if error.errno == errno.EINVAL:
        return NotSupported(f"the kernel refused to activate {name} (EINVAL): may reset CPUs")
    return error


class LfaPlugin(Plugin):
    """Devices from ``/sys/firmware/lfa``."""

    name = "lfa"
    requires = (uapi.LFA_SYSFS,)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self._devices: dict[str, LfaDevice] = {}

    async def probe(self) -> Probe:
        """The driver creates /sys/firmware/lfa only when the agent answers LFA_VERSION."""
        if not await self.ctx.provider.exists(uapi.LFA_SYSFS):
            return Probe.unsupported(
                "no /sys/firmware/lfa: the firmware has no LFA agent or the kernel lacks "
                "CONFIG_ARM_LFA (arm64 only, not in mainline yet)"
            )
        return Probe.ok()

    async def _guids(self) -> list[str]:
        names = await self.ctx.provider.listdir(uapi.LFA_SYSFS)
        guids = []
        for entry in names:
            try:
                guids.append(str(uuid.UUID(entry)))
            except ValueError:
                self.ctx.log.warning("lfa_unexpected_entry", entry=entry)
        return guids

    async def _add(self, guid: str) -> None:
        if guid in self._devices:
            return
        base = f"{uapi.LFA_SYSFS}/{guid}"
        if not await self.ctx.provider.is_dir(base):
            return
        name = (await self.ctx.provider.read_attr(f"{base}/{uapi.ATTR_NAME}")).strip()
        if not name or name in (uapi.UNKNOWN_NAME_RFC, guid):
            name = f"LFA image {guid}"
        device = LfaDevice(self, guid, name)
        await device.refresh()
        self._devices[guid] = device
        self.ctx.add_device(device)
        self.ctx.log.info("lfa_image_added", guid=guid, name=name, version=device.version)

    def _remove(self, guid: str) -> None:
        device = self._devices.pop(guid, None)
        if device is not None:
            self.ctx.remove_device(device.id)
            self.ctx.log.info("lfa_image_removed", guid=guid)

    async def coldplug(self) -> None:
        """One device per image directory."""
        for guid in await self._guids():
            await self._add(guid)

    async def refresh(self) -> None:
        """Re-list images (activation may add or remove some) and re-read each."""
        if not await self.ctx.provider.exists(uapi.LFA_SYSFS):
            for guid in list(self._devices):
                self._remove(guid)
            return
        present = set(await self._guids())
        for guid in list(self._devices):
            if guid not in present:
                self._remove(guid)
        for guid in sorted(present):
            if guid in self._devices:
                try:
                    await self._devices[guid].refresh()
                except KernelError as error:
                    if error.errno not in (errno.ENOENT, errno.ENODEV):
                        raise
                    self._remove(guid)
            else:
                await self._add(guid)

    async def on_uevent(self, event: UEvent) -> None:
        """Image directories come and go after activations and notifications."""
        prefix = uapi.LFA_DEVPATH + "/"
        if not event.devpath.startswith(prefix):
            return
        guid = event.devpath[len(prefix) :].split("/", 1)[0]
        if event.action == "add":
            await self._add(guid)
        elif event.action == "remove":
            self._remove(guid)
        elif event.action == "change" and guid in self._devices:
            await self._devices[guid].refresh()

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """An activation interrupted by a daemon crash: did the version change?"""
        if entry.kind != "activate":
            raise NotSupported(f"lfa does not know history rows of kind {entry.kind}")
        guid = entry.physical_id
        device = self._devices.get(guid)
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
