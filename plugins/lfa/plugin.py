"""Arm LFA: list activatable firmware images and activate pending ones without a reboot.

LFA is activate-only: images arrive out of band (a BMC or the firmware itself puts
them in place), so LFA devices are never ``updatable``. Pending state is live in
sysfs and is re-read when a client asks (``GetDevice``, ``Refresh``) and after an
activation, never on a timer.
"""

from __future__ import annotations

import errno
import uuid
from typing import ClassVar

from livefw.errors import (
    ActivationFailed,
    Busy,
    InvalidArgument,
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
LFA_INTERFACE = "org.livefw.Daemon1.Lfa"


class LfaDevice(Device):
    """One firmware image under ``/sys/firmware/lfa/<guid>``.

    Attributes:
        force_cpu_rendezvous / auto_activate: the two settings the administrator may
            choose (``None`` when this kernel's posting has no such file).
        cpu_rendezvous: the firmware requires all CPUs to rendezvous (cached flag).
    """

    interfaces: ClassVar[tuple[str, ...]] = (LFA_INTERFACE,)

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
        self.force_cpu_rendezvous: bool | None = None
        self.auto_activate: bool | None = None
        self.cpu_rendezvous = True

    def _attr(self, name: str) -> str:
        return f"{uapi.LFA_SYSFS}/{self.guid}/{name}"

    async def _read(self, name: str, default: str = "") -> str:
        provider = self._plugin.ctx.provider
        path = self._attr(name)
        if not await provider.exists(path):
            return default  # older postings lack current/pending_version
        return (await provider.read_attr(path)).strip()

    async def read_options(self) -> None:
        """Read ``force_cpu_rendezvous`` and ``auto_activate`` (absent: ``None``).

        Only the administrator changes them, so they are read when the image appears,
        on a plugin refresh (``livefw refresh``) and after livefw wrote them, not on
        every device refresh (an activation re-reads the device twice).
        """
        force = await self._read(uapi.ATTR_FORCE_CPU_RENDEZVOUS)
        auto = await self._read(uapi.ATTR_AUTO_ACTIVATE)
        self.force_cpu_rendezvous = None if force == "" else force == "1"
        self.auto_activate = None if auto == "" else auto == "1"

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
        self.cpu_rendezvous = rendezvous
        metadata = dict(self.metadata)
        metadata["activation-pending"] = "true" if pending else "false"
        for key, value in (
            ("force-cpu-rendezvous", self.force_cpu_rendezvous),
            ("auto-activate", self.auto_activate),
        ):
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = "true" if value else "false"
        # whether the next activation stops every CPU (RFC v1: always)
        stops = rendezvous or self.force_cpu_rendezvous in (None, True)
        metadata["activation-stops-cpus"] = "true" if stops else "false"
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
        await self._plugin.rescan()
        return self.version

    async def set_activation_options(
        self, force_cpu_rendezvous: bool | None = None, auto_activate: bool | None = None
    ) -> None:
        """Write the administrator's settings (v3 ``sysfs-firmware-lfa``).

        ``force_cpu_rendezvous`` 0 lets the kernel activate without stopping every CPU
        when the firmware does not require a rendezvous; ``auto_activate`` 1 lets the
        driver activate a new pending image by itself on the platform's notification.

        Raises:
            NotSupported: the kernel's posting has no such file (force: RFC v2+,
                auto: v2+), force 0 on an image whose firmware requires a rendezvous
                (the kernel would ignore it), auto 1 on an image the kernel cannot
                activate (not capable, or may reset CPUs).
            InvalidArgument: the kernel refused the value (EINVAL).
        """
        await self.read_options()
        await self.refresh()
        if force_cpu_rendezvous is not None:
            if self.force_cpu_rendezvous is None:
                raise NotSupported(
                    f"{self.name}: this kernel's LFA driver has no force_cpu_rendezvous "
                    "(added in the RFC v2 posting): every activation stops all CPUs"
                )
            if not force_cpu_rendezvous and self.cpu_rendezvous:
                raise NotSupported(
                    f"{self.name}: the firmware requires a CPU rendezvous for this image "
                    "(cpu_rendezvous is 1), so the kernel stops all CPUs whatever "
                    "force_cpu_rendezvous says; livefw leaves it unchanged"
                )
        if auto_activate is not None:
            if self.auto_activate is None:
                raise NotSupported(
                    f"{self.name}: this kernel's LFA driver has no auto_activate (added in "
                    "the v2 posting)"
                )
            if auto_activate and "activation-capable" not in self.flags:
                raise NotSupported(
                    f"{self.name} is not activation-capable: it can never be activated "
                    "automatically"
                )
            if auto_activate and "may-reset-cpu" in self.flags:
                raise NotSupported(
                    f"{self.name} may reset CPUs during activation, which the kernel "
                    "refuses: an automatic activation would fail each time"
                )
        for name, value in (
            (uapi.ATTR_FORCE_CPU_RENDEZVOUS, force_cpu_rendezvous),
            (uapi.ATTR_AUTO_ACTIVATE, auto_activate),
        ):
            if value is None:
                continue
            try:
                await self._plugin.ctx.provider.write_attr(self._attr(name), "1" if value else "0")
            except KernelError as error:
                if error.errno == errno.EINVAL:
                    raise InvalidArgument(
                        f"the kernel refused {name} = {int(value)} for {self.name}"
                    ) from error
                if error.errno in (errno.ENODEV, errno.ENOENT):
                    raise NotFound(f"{self.name} disappeared from /sys/firmware/lfa") from error
                if error.errno in (errno.EPERM, errno.EACCES):
                    raise PermissionDenied(
                        f"the kernel refused to write {name} for {self.name}: {error.message}"
                    ) from error
                raise
            self._plugin.ctx.log.info(
                "lfa_option_set", guid=self.guid, option=name, value=int(value)
            )
        await self.read_options()
        await self.refresh()

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
        await device.read_options()
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
        """Re-list images and re-read each, with the administrator's settings."""
        for device in list(self._devices.values()):
            try:
                await device.read_options()
            except KernelError as error:
                if error.errno not in (errno.ENOENT, errno.ENODEV):
                    raise  # a vanished image is removed by the rescan
        await self.rescan()

    async def rescan(self) -> None:
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
