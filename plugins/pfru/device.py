"""A PFRU update type as a device: validate, stage, activate, and the ``_DSM`` revision.

One device per update type the firmware reports with a non-zero image-type GUID
(code injection, driver update; drivers/acpi/pfr_update.c ``query_capability()``).
A capsule is validated in the daemon first (the kernel checks little and the
communication buffer size is not exposed), written to ``/dev/acpi_pfr_update0`` in
one ``write()`` (pfr_update.c ``pfru_write()``), staged, and activated now or later
(``pfru_ioctl()``: PFRU_IOC_STAGE, PFRU_IOC_ACTIVATE). The firmware holds one staged
capsule at a time and has no way to discard it, so a staged capsule blocks the other
update type until it is activated or the machine reboots: that state lives in the
shared :class:`~livefw.plugins.pfru.context.PfruContext`.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

from livefw.errors import (
    ActivationFailed,
    Busy,
    Internal,
    InvalidArgument,
    InvalidFile,
    KernelError,
    NothingToDo,
    NotSupported,
    PayloadMismatch,
    VersionNewer,
)
from livefw.kernel import Handle
from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi
from livefw.plugin import (
    Device,
    DeviceChanges,
    InstallOptions,
    InstallResult,
    Operation,
    Payload,
    Status,
    UpdateState,
)
from livefw.plugins.pfru.context import (
    KERNEL_REVISIONS,
    PfruContext,
    Revisions,
    map_errno,
    parse_revision,
)

__all__ = ["PFRU_INTERFACE", "PROTOCOL", "TYPE_SLUG", "TYPE_TITLE", "PfruDevice"]

PROTOCOL = "org.livefw.pfru"
PFRU_INTERFACE = "org.livefw.Daemon1.Pfru"

#: the update types by their slug in physical ids and history rows, and in words.
TYPE_SLUG = {
    uapi.UpdateType.CODE_INJECTION: "code-injection",
    uapi.UpdateType.DRIVER_UPDATE: "driver-update",
}
TYPE_TITLE = {
    uapi.UpdateType.CODE_INJECTION: "code injection",
    uapi.UpdateType.DRIVER_UPDATE: "driver update",
}


class PfruDevice(Device):
    """One PFRU update type (code injection or driver update)."""

    interfaces: ClassVar[tuple[str, ...]] = (PFRU_INTERFACE,)
    #: the telemetry node this device also publishes ("" for none).
    telemetry_node: ClassVar[str] = ""

    def __init__(
        self, ctx: PfruContext, update_type: uapi.UpdateType, cap: uapi.UpdateCapInfo
    ) -> None:
        slug = TYPE_SLUG[update_type]
        super().__init__(
            ctx.plugin.name,
            f"{uapi.UPDATE_NODE.removeprefix('dev/')}/{slug}",
            name=f"Platform firmware runtime {TYPE_TITLE[update_type]}",
            summary=f"Platform firmware updated at runtime through ACPI PFRU "
            f"({TYPE_TITLE[update_type]})",
            protocol=PROTOCOL,
            # only-version-upgrade: the firmware refuses older capsules whatever the
            # options (anti-rollback), so the engine's version rules refuse them first
            flags=("updatable", "internal", "activation-capable", "only-version-upgrade"),
        )
        self.ctx = ctx
        self.update_type = update_type
        self.cap = cap
        #: the running version when the staged capsule was staged (a reinstall stages
        #: the version that already runs: apply_cap must not take it as activated)
        self._staged_over = ""
        self.apply_cap(cap)

    # ------------------------------------------------------------------ state

    def running_version(self, cap: uapi.UpdateCapInfo) -> int:
        """The value the kernel's version gate compares for this update type."""
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            return cap.code_rt_version
        if self.ctx.driver_gate == "rt":
            return cap.drv_rt_version
        return cap.drv_svn

    def apply_cap(self, cap: uapi.UpdateCapInfo) -> None:
        """Publish what QUERY_CAP reported."""
        self.cap = cap
        metadata = {
            "update-type": TYPE_SLUG[self.update_type],
            "image-type": cap.image_type(self.update_type),
            "platform-id": cap.platform_id,
            "oem-id": cap.oem_id,
            "oem-info-length": str(cap.oem_info_len),
            "update-capability": f"0x{cap.update_cap:08x}",
            "fw-version": f"0x{cap.fw_version:08x}",
            "device-node": "/" + uapi.UPDATE_NODE,
        }
        if self.telemetry_node:
            metadata["telemetry-node"] = self.telemetry_node
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            metadata["code-rt-version"] = str(cap.code_rt_version)
        else:
            metadata["drv-rt-version"] = str(cap.drv_rt_version)
            metadata["drv-svn"] = str(cap.drv_svn)
            metadata["version-gate"] = self.ctx.driver_gate
        version = str(self.running_version(cap))
        changes: DeviceChanges = {
            "guids": (cap.image_type(self.update_type), cap.platform_id),
            "version": version,
            "metadata": metadata,
        }
        if self.version_pending and self.version_pending == version != self._staged_over:
            # the staged capsule was activated (by us or out of band, e.g. pfrut -a); a
            # reinstall of the running version shows no change: it stays staged until
            # our own activate() clears it
            changes["version_pending"] = ""
            changes["flags"] = self.flags - {"needs-activation"}
            if self.ctx.staged == self.update_type:
                self.ctx.staged = None
        self.update(**changes)

    def mark_staged(self, version: str, over: str | None = None) -> None:
        """The firmware holds a capsule of this type, waiting for ACTIVATE.

        ``over``: the version that ran when it was staged (default: the current one).
        """
        self.ctx.staged = self.update_type
        self._staged_over = self.version if over is None else over
        self.update(version_pending=version, flags=self.flags | {"needs-activation"})

    def clear_staged(self) -> None:
        """Nothing of this type is staged any more."""
        if self.ctx.staged == self.update_type:
            self.ctx.staged = None
        self.update(version_pending="", flags=self.flags - {"needs-activation"})

    async def refresh(self) -> None:
        """Re-query the capability (versions change after an activation)."""
        self.apply_cap(await self.ctx.query_cap())

    # --------------------------------------------------------------- validation

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        """Validate a capsule for this device without touching the kernel.

        Returns the version the capsule carries; the engine's planner then applies the
        version rules (the device is ``only-version-upgrade``: PFRU firmware enforces
        anti-rollback, so an older capsule is refused whatever the options).

        Raises:
            InvalidFile: over the size cap, malformed, not for this update type or
                platform, FMP image header version 3, unsigned.
            VersionNewer: a security version below the running one under the
                ``rt`` gate (the kernel would not see it).
            Busy: the firmware holds a staged capsule of the other update type.
        """
        return self.validate(payload, self.cap)

    def validate(self, payload: Payload, cap: uapi.UpdateCapInfo) -> str:
        """:meth:`check_install` against ``cap``; returns the capsule's version."""
        data = payload.data
        limit = self.ctx.max_capsule_size
        if len(data) > limit:
            raise InvalidFile(
                f"the capsule is {len(data)} bytes, over the PFRU limit of {limit} bytes "
                "([plugins.pfru] max_capsule_size in livefw.conf; the firmware's buffer "
                "size is not visible to user space)"
            )
        try:
            walked = uapi.walk_capsule(data)
        except uapi.StricterThanKernel as error:
            raise InvalidFile(
                f"not a valid PFRU capsule: {error}. The kernel's own check "
                "(drivers/acpi/pfr_update.c, applicable_image()) checks no lengths or "
                "counts and might accept it; livefw refuses it so that the firmware never "
                "parses bytes beyond the capsule (docs/kernel.md, where livefw is "
                "stricter than the kernel)"
            ) from error
        except capsule.CapsuleError as error:
            raise InvalidFile(f"not a valid PFRU capsule: {error}") from error
        if walked.fmp.embedded_drivers:
            raise InvalidFile(
                "the FMP capsule embeds drivers, which the kernel's PFRU parser does not "
                "skip: it would check the driver instead of the firmware image"
            )
        if walked.fmp.offsets[0] != walked.fmp.size:
            raise InvalidFile(
                f"the FMP ItemOffsetList places the image at byte {walked.fmp.offsets[0]} of "
                f"the FMP header, but the kernel checks the image at byte {walked.fmp.size}: "
                "kernel and firmware would look at different data"
            )
        auth = walked.auth
        if (
            auth.cert_type != capsule.WIN_CERT_TYPE_EFI_GUID
            or auth.revision != capsule.WIN_CERT_REVISION
            or auth.cert_guid != capsule.CERT_TYPE_PKCS7_GUID
        ):
            raise InvalidFile(
                "the capsule is not signed the way PFRU firmware requires "
                f"(WIN_CERTIFICATE type 0x{auth.cert_type:04x}, revision "
                f"0x{auth.revision:04x}, cert type {auth.cert_guid}; expected a PKCS7 "
                "WIN_CERT_TYPE_EFI_GUID certificate)"
            )
        if walked.update_type != self.update_type:
            raise PayloadMismatch(
                f"this is a PFRU {TYPE_TITLE[walked.update_type]} capsule, not a "
                f"{TYPE_TITLE[self.update_type]} capsule"
            )
        if walked.payload.platform_id != cap.platform_id:
            raise PayloadMismatch(
                f"the capsule is for platform {walked.payload.platform_id}, but this "
                f"machine is platform {cap.platform_id}"
            )
        staged = self.ctx.staged
        if staged is not None and staged != self.update_type:
            raise Busy(
                f"a PFRU {TYPE_TITLE[staged]} capsule is staged and waiting for activation; "
                "the firmware holds one staged capsule at a time and cannot discard it: "
                "activate it first (`livefw activate`) or reboot"
            )
        return self._carried_version(walked.payload, cap)

    def _carried_version(self, payload: uapi.PayloadHeader, cap: uapi.UpdateCapInfo) -> str:
        """The capsule's version in the field the kernel's gate compares for this type.

        The version rules (same, older, ``only-version-upgrade``) are the engine's
        (daemon/versions.py); only what those cannot see is refused here: under the
        pre-6.17 gate the kernel compares ``rt_ver`` while the firmware still refuses
        a lower SVN (docs/kernel.md, PFRU: the driver-update version gate).
        """
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            return str(payload.rt_ver)
        if self.ctx.driver_gate == "rt":
            if payload.svn_ver < cap.drv_svn:
                raise VersionNewer(
                    f"the capsule's security version {payload.svn_ver} is below the running "
                    f"{cap.drv_svn}: PFRU firmware enforces anti-rollback, so it is refused "
                    "whatever the options"
                )
            return str(payload.rt_ver)
        return str(payload.svn_ver)

    # ------------------------------------------------------------------ install

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        """Write the capsule in one call, stage it, and activate it if asked."""
        async with self.ctx.update_lock:
            return await self._install(payload, options, op)

    async def _install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        op.progress(Status.LOADING, 5)
        cap = await self.ctx.query_cap()
        self.apply_cap(cap)
        version = self.validate(payload, cap)
        handle = await self.ctx.open_update()
        try:
            op.record(
                pfru_update_type=TYPE_SLUG[self.update_type],
                pfru_version=version,
                pfru_step="writing",
            )
            op.progress(Status.DEVICE_WRITE, 20)
            await self._write(handle, payload.data)
            op.record(pfru_step="written")
            op.progress(Status.DEVICE_WRITE, 40)
            await self._ioctl(handle, uapi.PFRU_IOC_STAGE, "stage")
            self.mark_staged(version)
            op.record(pfru_step="staged")
            self.ctx.log.info(
                "pfru_capsule_staged", device_id=self.id, version=version, op_id=op.id
            )
            if not options.activate:
                op.progress(Status.DEVICE_WRITE, 100)
                return InstallResult(UpdateState.PENDING, version)
            op.progress(Status.DEVICE_ACTIVATE, 60)
            await self._activate_on(handle, op)
        finally:
            await handle.close()
        op.progress(Status.DEVICE_VERIFY, 90)
        await self._after_activation(version)
        return InstallResult(UpdateState.SUCCESS, self.version)

    async def _write(self, handle: Handle, data: bytes | memoryview) -> None:
        try:
            written = await handle.write(data)
        except KernelError as error:
            if error.errno == errno.EINVAL:
                raise InvalidFile(
                    "the kernel refused the capsule (EINVAL): it is larger than the "
                    "firmware's communication buffer or failed the kernel's header or "
                    "version checks; nothing was staged"
                ) from error
            raise map_errno(error, "load the capsule") from error
        if written != len(data):
            raise Internal(f"the kernel took {written} of {len(data)} capsule bytes")

    async def _ioctl(self, handle: Handle, request: int, step: str) -> None:
        try:
            await handle.ioctl(request)
        except KernelError as error:
            if error.errno == errno.EBUSY and step == "stage":
                raise ActivationFailed(
                    f"the firmware refused to stage the capsule for {self.name} (non-zero "
                    "_DSM status, details in the kernel log): it may be busy or reject the "
                    "capsule's signature; the running firmware is unchanged"
                ) from error
            if error.errno == errno.EBUSY:
                raise ActivationFailed(
                    f"the firmware failed to activate the staged capsule for {self.name} "
                    "(non-zero _DSM status, details in the kernel log); the previous "
                    "firmware keeps running and the capsule stays staged: retry with "
                    "`livefw activate`"
                ) from error
            raise map_errno(error, step) from error

    async def _after_activation(self, version: str) -> None:
        cap = await self.ctx.query_cap()
        self.apply_cap(cap)
        self.clear_staged()
        if self.version != version:
            self.ctx.log.warning(
                "pfru_version_unexpected", device_id=self.id, expected=version, got=self.version
            )

    # ----------------------------------------------------------------- activate

    def check_activate(self) -> None:
        """Only a capsule of this type that we staged can be activated.

        Raises:
            NothingToDo: nothing is staged for this update type.
        """
        if "needs-activation" not in self.flags or self.ctx.staged != self.update_type:
            raise NothingToDo(
                f"no capsule is staged for {self.name}; install one first (`livefw install FILE`)"
            )

    async def activate(self, op: Operation) -> str:
        """PFRU_IOC_ACTIVATE, then re-query the capability for the new version."""
        async with self.ctx.update_lock:
            return await self._activate(op)

    async def _activate(self, op: Operation) -> str:
        pending = self.version_pending
        op.record(pfru_update_type=TYPE_SLUG[self.update_type], pfru_version=pending)
        op.progress(Status.DEVICE_ACTIVATE, 10)
        handle = await self.ctx.open_update()
        try:
            await self._activate_on(handle, op)
        finally:
            await handle.close()
        op.progress(Status.DEVICE_VERIFY, 90)
        await self._after_activation(pending)
        return self.version

    async def _activate_on(self, handle: Handle, op: Operation) -> None:
        """PFRU_IOC_ACTIVATE, with the step recorded before and after it."""
        op.record(pfru_step="activating")
        await self._ioctl(handle, uapi.PFRU_IOC_ACTIVATE, "activate")
        op.record(pfru_step="activated")

    # ------------------------------------------------------------------- cancel

    def check_cancel(self) -> None:
        """PFRU cannot unstage.

        Raises:
            NotSupported: always, with the reason.
        """
        raise NotSupported(
            f"{self.name}: PFRU firmware has no way to discard a staged capsule (the "
            "interface offers stage and activate only); it stays staged until it is "
            "activated or the machine reboots"
        )

    # ---------------------------------------------------------------- revisions

    @property
    def revision(self) -> int:
        """The update ``_DSM`` revision livefw set (0: none; the driver's default is 1).

        It belongs to the update driver, so both update types show the same value.
        """
        return self.ctx.revision

    def add_revision_listener(self, listener: Any) -> None:
        """Call ``listener()`` when :attr:`revision` changes (on either device)."""
        self.ctx.add_revision_listener(listener)

    async def set_revision(self, revision: int) -> None:
        """Make every later stage and activation use ``_DSM`` revision ``revision``.

        Raises:
            InvalidArgument: not 1 or 2 (nothing is sent).
            NotSupported: the firmware does not answer at ``revision``; the previous
                revision stays.
        """
        await self.ctx.set_update_revision(parse_revision(revision))

    async def query_revisions(self) -> Revisions:
        """Probe every revision the kernel accepts on both device nodes, then restore.

        The kernel cannot list the revisions a firmware implements (``_DSM`` function
        0 is not reachable from user space), so each one is tried: SET_REV and
        QUERY_CAP on the update device, the log revision and GET_DATA_INFO on the
        telemetry device. Afterwards the update device is back at livefw's revision
        (1 when livefw never set one) and the telemetry device at its previous one.
        """
        ctx = self.ctx
        async with ctx.update_lock:
            update: list[int] = []
            handle = await ctx.open_update()
            try:
                try:
                    for revision in KERNEL_REVISIONS:
                        if await ctx.answers_at(handle, revision):
                            update.append(revision)
                finally:
                    await ctx.set_rev(handle, ctx.revision or uapi.DEFAULT_REVID)
            finally:
                await handle.close()
            telemetry: list[int] = []
            current = 0
            if ctx.telemetry:
                current = (await ctx.telemetry_get_info()).log_revid
                try:
                    for revision in KERNEL_REVISIONS:
                        await ctx.telemetry_set(
                            uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, revision)
                        )
                        try:
                            await ctx.telemetry_data_info()
                        except InvalidArgument:
                            continue
                        telemetry.append(revision)
                finally:
                    await ctx.telemetry_set(
                        uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, current)
                    )
        return Revisions(ctx.revision, tuple(update), current, tuple(telemetry))
