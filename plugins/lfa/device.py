"""One Arm LFA firmware image as a device: read it, activate it, change its settings.

Everything here is a file in the image's directory ``/sys/firmware/lfa/<guid>/``
(the posted driver, ``drivers/firmware/smccc/lfa_fw.c``; the files in
``Documentation/ABI/testing/sysfs-firmware-lfa``; docs/kernel.md, Arm LFA). LFA is
activate-only: images arrive out of band (a BMC or the firmware itself puts them in
place), so LFA devices are never ``updatable``. Pending state is live in sysfs and is
re-read when a client asks (``GetDevice``, ``Refresh``) and after an activation,
never on a timer.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar

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
from livefw.kernel.uapi import lfa as uapi
from livefw.plugin import Device, Operation, Status

if TYPE_CHECKING:
    from livefw.plugins.lfa.context import LfaContext

__all__ = ["LFA_INTERFACE", "PROTOCOL", "VENDOR", "LfaDevice"]

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

    def __init__(self, ctx: LfaContext, guid: str, name: str) -> None:
        super().__init__(
            ctx.plugin.name,
            guid,
            name=name,
            vendor=VENDOR,
            summary="Firmware image activatable at runtime (Arm LFA)",
            protocol=PROTOCOL,
            guids=(guid,),
            flags=("internal",),
            metadata={"sysfs": f"/{uapi.LFA_SYSFS}/{guid}"},
        )
        self.ctx = ctx
        self.guid = guid
        self.force_cpu_rendezvous: bool | None = None
        self.auto_activate: bool | None = None
        self.cpu_rendezvous = True

    def _attr(self, name: str) -> str:
        return f"{uapi.LFA_SYSFS}/{self.guid}/{name}"

    async def _read(self, name: str, default: str = "") -> str:
        provider = self.ctx.provider
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
        """Re-read the image (``GetDevice``, after livefw wrote to it).

        When its directory is gone the kernel re-enumerated without telling anyone
        (an activation by another process or by ``auto_activate``; docs/kernel.md,
        Uevents): the whole inventory is read again, so images that came with it
        appear too, and the caller learns that this one is gone.

        Raises:
            NotFound: the image's directory no longer exists.
        """
        try:
            await self.read_state()
        except KernelError as error:
            if error.errno not in (errno.ENOENT, errno.ENODEV):
                raise
            self.ctx.log.info("lfa_rescan", reason="image gone", guid=self.guid)
            await self.ctx.rescan()
            raise NotFound(
                f"{self.name} is no longer in /sys/firmware/lfa: the kernel enumerated the "
                "images again (after an activation made outside livefwd)"
            ) from error

    async def read_state(self) -> None:
        """Read every attribute; pending state is queried live by the kernel.

        Raises:
            KernelError: ENOENT when the image's directory does not exist.
        """
        base = f"{uapi.LFA_SYSFS}/{self.guid}"
        if not await self.ctx.provider.is_dir(base):
            raise KernelError(errno.ENOENT, "read", base)
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
            await self.ctx.provider.write_attr(self._attr(uapi.ATTR_ACTIVATE), "1")
        except KernelError as error:
            raise _map_activate_error(self.name, error) from error
        op.progress(Status.DEVICE_VERIFY, 90)
        # the driver enumerates again after a successful activation (lfa_fw.c
        # update_fw_images_tree()): images may come or go, not only this one change;
        # the ones it dropped are deleted from a workqueue, maybe not yet
        await self.ctx.await_removals()
        await self.ctx.rescan()
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
                await self.ctx.provider.write_attr(self._attr(name), "1" if value else "0")
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
            self.ctx.log.info("lfa_option_set", guid=self.guid, option=name, value=int(value))
        await self.read_options()
        await self.refresh()

    def check_cancel(self) -> None:
        """LFA has a cancel attribute on capable images."""
        if "activation-capable" not in self.flags:
            raise NotSupported(f"{self.name} is not activation-capable: nothing to cancel")

    async def cancel(self) -> None:
        """Write ``cancel``; the agent refuses (EINVAL) when nothing is primed."""
        try:
            await self.ctx.provider.write_attr(self._attr(uapi.ATTR_CANCEL), "1")
        except KernelError as error:
            if error.errno == errno.EINVAL:
                raise NothingToDo(
                    f"{self.name}: the firmware has no activation in progress to cancel"
                ) from error
            raise
        await self.refresh()


def _map_activate_error(name: str, error: KernelError) -> Exception:
    """What a failed write to ``activate`` means (docs/kernel.md, Arm LFA).

    The v3 driver reports every agent failure as ECANCELED: ``activate_store()`` cancels
    and returns it when ``prime_fw_image()`` or ``activate_fw_image()`` fails.
    """
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
