"""ACPI PFRU: stage and activate platform firmware at runtime; read PFRT telemetry.

Platform Firmware Runtime Update stages and activates platform firmware capsules
without a reboot; its companion exposes the firmware's telemetry log.

One device per update type the firmware reports with a non-zero image-type GUID
(code injection, driver update). A capsule is validated in the daemon first (the
kernel checks little and the communication buffer size is not exposed), written to
``/dev/acpi_pfr_update0`` in one ``write()``, staged, and activated now or later.
The firmware holds one staged capsule at a time and has no way to discard it, so a
staged capsule blocks the other update type until it is activated or the machine
reboots.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass
from typing import Any, ClassVar

from livefw.errors import (
    ActivationFailed,
    Busy,
    ConfigError,
    Internal,
    InvalidArgument,
    InvalidFile,
    KernelError,
    LivefwError,
    NothingToDo,
    NotSupported,
    PermissionDenied,
    VersionNewer,
    VersionSame,
)
from livefw.kernel import Handle, OpenFlags, UEvent
from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi
from livefw.plugin import (
    Device,
    HistoryEntry,
    InstallOptions,
    InstallResult,
    Operation,
    Payload,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    Status,
    UpdateState,
)

__all__ = [
    "DEFAULT_MAX_CAPSULE_SIZE",
    "KERNEL_REVISIONS",
    "PFRU_INTERFACE",
    "PROTOCOL",
    "TELEMETRY_INTERFACE",
    "PfruDevice",
    "PfruPlugin",
    "PfruTelemetryDevice",
    "Revisions",
    "TelemetryRead",
    "level_name",
    "parse_level",
    "parse_log_type",
    "parse_revision",
    "type_name",
]

PROTOCOL = "org.livefw.pfru"
TELEMETRY_INTERFACE = "org.livefw.Daemon1.Telemetry"
PFRU_INTERFACE = "org.livefw.Daemon1.Pfru"
#: the ``_DSM`` revisions the kernel accepts: pfr_update.c ``pfru_valid_revid()`` and
#: pfr_telemetry.c ``valid_log_revid()`` (PFRU_REVID_1/2, PFRT_REVID_1/2).
KERNEL_REVISIONS = (uapi.REVID_1, uapi.REVID_2)
#: default ``[plugins.pfru] max_capsule_size``: real communication buffers are a few
#: MiB; the kernel does not tell user space their size.
DEFAULT_MAX_CAPSULE_SIZE = 32 * 1024 * 1024
#: how often a telemetry read retries when the firmware appended while it copied.
TELEMETRY_READ_ATTEMPTS = 5
#: telemetry cursors: reset count in the top 16 bits, bytes written in the low 48.
_CURSOR_SHIFT = 48
_CURSOR_MASK = (1 << _CURSOR_SHIFT) - 1
_CURSOR_RESET_MASK = 0xFFFF

_TYPE_SLUG = {
    uapi.UpdateType.CODE_INJECTION: "code-injection",
    uapi.UpdateType.DRIVER_UPDATE: "driver-update",
}
_TYPE_TITLE = {
    uapi.UpdateType.CODE_INJECTION: "code injection",
    uapi.UpdateType.DRIVER_UPDATE: "driver update",
}
_LEVEL_NAMES = {
    uapi.LogLevel.ERROR: "error",
    uapi.LogLevel.WARNING: "warning",
    uapi.LogLevel.INFO: "info",
    uapi.LogLevel.VERBOSE: "verbose",
}
_LOG_TYPE_NAMES = {uapi.LogType.EXECUTION: "execution", uapi.LogType.HISTORY: "history"}


def level_name(level: int) -> str:
    """A log level as its wire name (``error`` ... ``verbose``), or ``unknown``."""
    try:
        return _LEVEL_NAMES[uapi.LogLevel(level)]
    except ValueError:
        return "unknown"


def type_name(log_type: int) -> str:
    """A log type as its wire name (``execution``/``history``), or ``unknown``."""
    try:
        return _LOG_TYPE_NAMES[uapi.LogType(log_type)]
    except ValueError:
        return "unknown"


def parse_level(text: str) -> uapi.LogLevel:
    """``error``/``warning``/``info``/``verbose`` or 0/1/2/4.

    Raises:
        InvalidArgument: anything else.
    """
    for level, name in _LEVEL_NAMES.items():
        if text.strip().lower() in (name, str(int(level))):
            return level
    raise InvalidArgument(
        f"unknown telemetry log level {text!r}: use error, warning, info or verbose (0, 1, 2, 4)"
    )


def parse_log_type(text: str) -> uapi.LogType:
    """``execution``/``history`` or 0/1.

    Raises:
        InvalidArgument: anything else.
    """
    for log_type, name in _LOG_TYPE_NAMES.items():
        if text.strip().lower() in (name, str(int(log_type))):
            return log_type
    raise InvalidArgument(f"unknown telemetry log type {text!r}: use execution or history (0, 1)")


def parse_revision(value: int, what: str = "PFRU _DSM revision") -> int:
    """A ``_DSM`` revision the kernel accepts (1 or 2).

    The update driver answers EINVAL for others, the telemetry driver ignores them
    silently (pfr_telemetry.c ``valid_log_revid()``); livefw refuses both up front.

    Raises:
        InvalidArgument: anything but 1 or 2.
    """
    if value not in KERNEL_REVISIONS:
        raise InvalidArgument(
            f"{what} {value} is not one the kernel accepts (1 or 2; pfrut.h PFRU_REVID_*)"
        )
    return value


@dataclass(frozen=True)
class Revisions:
    """Which ``_DSM`` revisions the kernel accepts and the firmware answers.

    Attributes:
        update_revision: the revision livefw set on the update device (0: livefw has
            not set one; the kernel has no getter, and the driver starts at 1).
        update_firmware: revisions at which the firmware answered QUERY_CAP.
        telemetry_revision: the telemetry driver's log revision (GET_INFO), 0
            without a telemetry device.
        telemetry_firmware: revisions at which the firmware answered GET_DATA_INFO.
    """

    update_revision: int
    update_firmware: tuple[int, ...]
    telemetry_revision: int
    telemetry_firmware: tuple[int, ...]
    kernel: tuple[int, ...] = KERNEL_REVISIONS


@dataclass(frozen=True)
class TelemetryRead:
    """A consistent copy of the telemetry log.

    Attributes:
        data: the log in chronological order (chunk1, then chunk2).
        cursor: where this read ended; pass it to the next delta read.
        lost: records the caller had not read were overwritten (or the service reset).
        info: the data info the copy is consistent with.
    """

    data: bytes
    cursor: int
    lost: bool
    info: uapi.LogDataInfo


class PfruDevice(Device):
    """One PFRU update type (code injection or driver update)."""

    interfaces: ClassVar[tuple[str, ...]] = (PFRU_INTERFACE,)

    def __init__(
        self, plugin: PfruPlugin, update_type: uapi.UpdateType, cap: uapi.UpdateCapInfo
    ) -> None:
        slug = _TYPE_SLUG[update_type]
        super().__init__(
            PfruPlugin.name,
            f"{uapi.UPDATE_NODE.removeprefix('dev/')}/{slug}",
            name=f"Platform firmware runtime {_TYPE_TITLE[update_type]}",
            summary=f"Platform firmware updated at runtime through ACPI PFRU "
            f"({_TYPE_TITLE[update_type]})",
            protocol=PROTOCOL,
            flags=("updatable", "internal", "activation-capable"),
        )
        self._plugin = plugin
        self.update_type = update_type
        self.cap = cap
        #: the running version when the staged capsule was staged (a reinstall stages
        #: the version that already runs: apply_cap must not take it as activated)
        self._staged_over = ""
        self.apply_cap(cap)

    @property
    def pfru(self) -> PfruPlugin:
        """The plugin (shared state of both update types: revision, staged capsule)."""
        return self._plugin

    # ------------------------------------------------------------------ state

    def running_version(self, cap: uapi.UpdateCapInfo) -> int:
        """The value the kernel's version gate compares for this update type."""
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            return cap.code_rt_version
        if self._plugin.driver_gate == "rt":
            return cap.drv_rt_version
        return cap.drv_svn

    def apply_cap(self, cap: uapi.UpdateCapInfo) -> None:
        """Publish what QUERY_CAP reported."""
        self.cap = cap
        metadata = {
            "update-type": _TYPE_SLUG[self.update_type],
            "image-type": cap.image_type(self.update_type),
            "platform-id": cap.platform_id,
            "oem-id": cap.oem_id,
            "oem-info-length": str(cap.oem_info_len),
            "update-capability": f"0x{cap.update_cap:08x}",
            "fw-version": f"0x{cap.fw_version:08x}",
            "device-node": "/" + uapi.UPDATE_NODE,
        }
        if TELEMETRY_INTERFACE in type(self).interfaces:
            metadata["telemetry-node"] = "/" + uapi.TELEMETRY_NODE
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            metadata["code-rt-version"] = str(cap.code_rt_version)
        else:
            metadata["drv-rt-version"] = str(cap.drv_rt_version)
            metadata["drv-svn"] = str(cap.drv_svn)
            metadata["version-gate"] = self._plugin.driver_gate
        version = str(self.running_version(cap))
        changes: dict[str, Any] = {
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
            if self._plugin.staged == self.update_type:
                self._plugin.staged = None
        self.update(**changes)

    def mark_staged(self, version: str, over: str | None = None) -> None:
        """The firmware holds a capsule of this type, waiting for ACTIVATE.

        ``over``: the version that ran when it was staged (default: the current one).
        """
        self._plugin.staged = self.update_type
        self._staged_over = self.version if over is None else over
        self.update(version_pending=version, flags=self.flags | {"needs-activation"})

    def clear_staged(self) -> None:
        """Nothing of this type is staged any more."""
        if self._plugin.staged == self.update_type:
            self._plugin.staged = None
        self.update(version_pending="", flags=self.flags - {"needs-activation"})

    async def refresh(self) -> None:
        """Re-query the capability (versions change after an activation)."""
        self.apply_cap(await self._plugin.query_cap())

    # --------------------------------------------------------------- validation

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        """Validate a capsule for this device without touching the kernel.

        Raises:
            InvalidFile: over the size cap, malformed, not for this update type or
                platform, FMP image header version 3, unsigned.
            VersionNewer: older than the running version (anti-rollback; always).
            VersionSame: the running version, unless ``allow_reinstall``.
            Busy: the firmware holds a staged capsule of the other update type.
        """
        return self.validate(payload, options, self.cap)

    def validate(self, payload: Payload, options: InstallOptions, cap: uapi.UpdateCapInfo) -> str:
        """:meth:`check_install` against ``cap``; returns the capsule's version."""
        data = payload.data
        limit = self._plugin.max_capsule_size
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
            raise InvalidFile(
                f"this is a PFRU {_TYPE_TITLE[walked.update_type]} capsule, not a "
                f"{_TYPE_TITLE[self.update_type]} capsule"
            )
        if walked.payload.platform_id != cap.platform_id:
            raise InvalidFile(
                f"the capsule is for platform {walked.payload.platform_id}, but this "
                f"machine is platform {cap.platform_id}"
            )
        staged = self._plugin.staged
        if staged is not None and staged != self.update_type:
            raise Busy(
                f"a PFRU {_TYPE_TITLE[staged]} capsule is staged and waiting for activation; "
                "the firmware holds one staged capsule at a time and cannot discard it: "
                "activate it first (`livefw activate`) or reboot"
            )
        return self._check_version(walked.payload, options, cap)

    def _check_version(
        self, payload: uapi.PayloadHeader, options: InstallOptions, cap: uapi.UpdateCapInfo
    ) -> str:
        running = self.running_version(cap)
        if self.update_type == uapi.UpdateType.CODE_INJECTION:
            offered, field = payload.rt_ver, "runtime version"
        elif self._plugin.driver_gate == "rt":
            offered, field = payload.rt_ver, "runtime version"
            if payload.svn_ver < cap.drv_svn:
                raise VersionNewer(
                    f"the capsule's security version {payload.svn_ver} is below the running "
                    f"{cap.drv_svn}: PFRU firmware enforces anti-rollback, so it is refused "
                    "whatever the options"
                )
        else:
            offered, field = payload.svn_ver, "security version (SVN)"
        if offered < running:
            raise VersionNewer(
                f"{self.name} runs {field} {running}, newer than the capsule's {offered}: "
                "PFRU firmware enforces anti-rollback, so older capsules are refused "
                "whatever the options (--allow-older does not apply)"
            )
        if offered == running and not options.allow_reinstall:
            raise VersionSame(
                f"{self.name} already runs {field} {running}; use --allow-reinstall "
                "(allow-reinstall) to stage it again"
            )
        return str(offered)

    # ------------------------------------------------------------------ install

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        """Write the capsule in one call, stage it, and activate it if asked."""
        async with self._plugin.update_lock:
            return await self._install(payload, options, op)

    async def _install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        plugin = self._plugin
        op.progress(Status.LOADING, 5)
        cap = await plugin.query_cap()
        self.apply_cap(cap)
        version = self.validate(payload, options, cap)
        handle = await plugin.open_update()
        try:
            op.record(
                pfru_update_type=_TYPE_SLUG[self.update_type],
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
            plugin.ctx.log.info(
                "pfru_capsule_staged", device_id=self.id, version=version, op_id=op.id
            )
            if not options.activate:
                op.progress(Status.DEVICE_WRITE, 100)
                return InstallResult(UpdateState.PENDING, version)
            op.progress(Status.DEVICE_ACTIVATE, 60)
            op.record(pfru_step="activating")
            await self._ioctl(handle, uapi.PFRU_IOC_ACTIVATE, "activate")
            op.record(pfru_step="activated")
        finally:
            await handle.close()
        op.progress(Status.DEVICE_VERIFY, 90)
        await self._after_activation(version)
        return InstallResult(UpdateState.SUCCESS, self.version)

    async def _write(self, handle: Handle, data: bytes) -> None:
        try:
            written = await handle.write(data)
        except KernelError as error:
            if error.errno == errno.EINVAL:
                raise InvalidFile(
                    "the kernel refused the capsule (EINVAL): it is larger than the "
                    "firmware's communication buffer or failed the kernel's header or "
                    "version checks; nothing was staged"
                ) from error
            raise _map_errno(error, "load the capsule") from error
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
            raise _map_errno(error, step) from error

    async def _after_activation(self, version: str) -> None:
        cap = await self._plugin.query_cap()
        self.apply_cap(cap)
        self.clear_staged()
        if self.version != version:
            self._plugin.ctx.log.warning(
                "pfru_version_unexpected", device_id=self.id, expected=version, got=self.version
            )

    # ----------------------------------------------------------------- activate

    def check_activate(self) -> None:
        """Only a capsule of this type that we staged can be activated.

        Raises:
            NothingToDo: nothing is staged for this update type.
        """
        if "needs-activation" not in self.flags or self._plugin.staged != self.update_type:
            raise NothingToDo(
                f"no capsule is staged for {self.name}; install one first (`livefw install FILE`)"
            )

    async def activate(self, op: Operation) -> str:
        """PFRU_IOC_ACTIVATE, then re-query the capability for the new version."""
        async with self._plugin.update_lock:
            return await self._activate(op)

    async def _activate(self, op: Operation) -> str:
        pending = self.version_pending
        op.record(pfru_update_type=_TYPE_SLUG[self.update_type], pfru_version=pending)
        op.progress(Status.DEVICE_ACTIVATE, 10)
        handle = await self._plugin.open_update()
        try:
            op.record(pfru_step="activating")
            await self._ioctl(handle, uapi.PFRU_IOC_ACTIVATE, "activate")
            op.record(pfru_step="activated")
        finally:
            await handle.close()
        op.progress(Status.DEVICE_VERIFY, 90)
        await self._after_activation(pending)
        return self.version

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


class PfruTelemetryDevice(PfruDevice):
    """The update device that also carries the firmware's telemetry log (PFRT)."""

    interfaces = (PFRU_INTERFACE, TELEMETRY_INTERFACE)

    def __init__(
        self, plugin: PfruPlugin, update_type: uapi.UpdateType, cap: uapi.UpdateCapInfo
    ) -> None:
        super().__init__(plugin, update_type, cap)
        #: last values read from the telemetry device (the D-Bus properties).
        self.log_level = -1
        self.log_type = -1
        self.log_revid = 0
        self._telemetry_listeners: list[Any] = []

    def add_telemetry_listener(self, listener: Any) -> None:
        """Call ``listener()`` whenever the cached log level or type changes."""
        self._telemetry_listeners.append(listener)

    def _set_log_info(self, info: uapi.LogInfo) -> None:
        level = info.log_level if info.log_level < 1 << 31 else self.log_level
        current = (level, info.log_type, info.log_revid)
        if current != (self.log_level, self.log_type, self.log_revid):
            self.log_level, self.log_type, self.log_revid = current
            for listener in list(self._telemetry_listeners):
                listener()

    async def telemetry_info(self) -> uapi.LogInfo:
        """PFRT_LOG_IOC_GET_INFO (level read live from the firmware).

        Raises:
            Busy: the firmware did not report its level (the driver stores -EBUSY).
        """
        info = await self._plugin.telemetry_get_info()
        self._set_log_info(info)
        if info.log_level >= 1 << 31:
            code = (1 << 32) - info.log_level
            raise Busy(
                f"the firmware did not report its telemetry log level "
                f"({errno.errorcode.get(code, code)}); try again later"
            )
        return info

    async def set_telemetry(
        self,
        level: uapi.LogLevel | None = None,
        log_type: uapi.LogType | None = None,
        revision: int | None = None,
    ) -> uapi.LogInfo:
        """PFRT_LOG_IOC_SET_INFO; unchanged fields are passed as invalid values.

        A new log revision is set on its own first and checked by reading the level
        the firmware reports at that revision; when the firmware does not answer, the
        previous revision is put back and nothing else changes.

        Raises:
            InvalidArgument: a revision other than 1 or 2.
            NotSupported: the firmware does not answer at ``revision``.
        """
        if revision is not None:
            await self._plugin.telemetry_set_revision(parse_revision(revision, "log revision"))
        if level is not None or log_type is not None:
            await self._plugin.telemetry_set_info(level, log_type)
        return await self.telemetry_info()

    async def telemetry_data_info(self) -> uapi.LogDataInfo:
        """PFRT_LOG_IOC_GET_DATA_INFO for the selected log type."""
        return await self._plugin.telemetry_data_info()

    async def read_telemetry(self, cursor: int = 0) -> TelemetryRead:
        """The log since ``cursor`` (0: everything available); see :class:`TelemetryRead`.

        Raises:
            NotFound/Busy/NotSupported: the telemetry device failed; InvalidArgument:
                a cursor this device never returned.
        """
        return await self._plugin.telemetry_read(cursor)


class PfruPlugin(Plugin):
    """Devices for ``/dev/acpi_pfr_update0``; telemetry from ``/dev/acpi_pfr_telemetry0``."""

    name = "pfru"
    requires = (uapi.UPDATE_NODE, uapi.TELEMETRY_NODE)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        config = dict(ctx.config)
        unknown = set(config) - {
            "max_capsule_size",
            "driver_version_gate",
            "update_revision",
            "telemetry_revision",
        }
        if unknown:
            raise ConfigError(f"livefw.conf: plugins.pfru: unknown keys {sorted(unknown)}")
        size = config.get("max_capsule_size", DEFAULT_MAX_CAPSULE_SIZE)
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError(
                "livefw.conf: plugins.pfru.max_capsule_size must be a positive number of bytes"
            )
        gate = config.get("driver_version_gate", "svn")
        if gate not in ("svn", "rt"):
            raise ConfigError(
                'livefw.conf: plugins.pfru.driver_version_gate must be "svn" (Linux 6.17+) '
                'or "rt" (older kernels)'
            )
        revisions: dict[str, int] = {}
        for key in ("update_revision", "telemetry_revision"):
            value = config.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or value not in KERNEL_REVISIONS:
                raise ConfigError(
                    f"livefw.conf: plugins.pfru.{key} must be 1 or 2 (the _DSM revisions "
                    "the kernel accepts)"
                )
            revisions[key] = int(value)
        self.configured_revisions = revisions
        self.max_capsule_size: int = size
        self.driver_gate: str = gate
        #: the update _DSM revision livefw set (0: not set by livefw).
        self.revision = 0
        #: serialises revision changes and probes with installs and activations.
        self.update_lock = asyncio.Lock()
        self._revision_listeners: list[Any] = []
        #: the update type the firmware holds staged (one at a time), as far as we know.
        self.staged: uapi.UpdateType | None = None
        self.telemetry = False
        self._devices: dict[uapi.UpdateType, PfruDevice] = {}

    # ------------------------------------------------------------------ kernel

    async def open_update(self) -> Handle:
        """Open the update node read-write."""
        try:
            return await self.ctx.provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
        except KernelError as error:
            raise _map_errno(error, "open the PFRU update device") from error

    async def query_cap(self) -> uapi.UpdateCapInfo:
        """PFRU_IOC_QUERY_CAP.

        Raises:
            Busy: the firmware answered with a non-zero status (EBUSY).
        """
        handle = await self.open_update()
        try:
            arg = bytearray(uapi.CAP_INFO.size)
            await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, arg)
        except KernelError as error:
            raise _map_errno(error, "query the PFRU capability") from error
        finally:
            await handle.close()
        return uapi.UpdateCapInfo.unpack(arg)

    # ------------------------------------------------------------ revisions

    def add_revision_listener(self, listener: Any) -> None:
        """Call ``listener()`` when the update ``_DSM`` revision livefw set changes."""
        self._revision_listeners.append(listener)

    async def _set_rev(self, handle: Handle, revision: int) -> None:
        arg = bytearray(revision.to_bytes(4, "little"))  # a u32 (pfrut.h)
        try:
            await handle.ioctl(uapi.PFRU_IOC_SET_REV, arg)
        except KernelError as error:
            raise _map_errno(error, f"set the PFRU _DSM revision to {revision}") from error

    async def _answers_at(self, handle: Handle, revision: int) -> bool:
        """SET_REV ``revision`` and QUERY_CAP: whether the firmware answers there.

        EINVAL from QUERY_CAP is the driver's answer when the firmware returns no
        package (it does not implement that revision); other errors propagate.
        """
        await self._set_rev(handle, revision)
        arg = bytearray(uapi.CAP_INFO.size)
        try:
            await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, arg)
        except KernelError as error:
            if error.errno == errno.EINVAL:
                return False
            raise _map_errno(error, f"query the PFRU capability at revision {revision}") from error
        return True

    async def set_revision(self, revision: int) -> None:
        """PFRU_IOC_SET_REV, checked with a QUERY_CAP at the new revision.

        The revision belongs to the driver (every opener, pfrut too) until it binds
        again; livefw keeps what it set in :attr:`revision`.

        Raises:
            InvalidArgument: not 1 or 2 (nothing is sent).
            NotSupported: the firmware does not answer at ``revision``; the previous
                revision (or the driver's default 1) is put back.
        """
        parse_revision(revision)
        async with self.update_lock:
            handle = await self.open_update()
            try:
                previous = self.revision or uapi.DEFAULT_REVID
                if not await self._answers_at(handle, revision):
                    await self._set_rev(handle, previous)
                    raise NotSupported(
                        f"the firmware does not answer the PFRU _DSM at revision {revision} "
                        f"(the capability query fails there); the revision stays {previous}"
                    )
            finally:
                await handle.close()
            self._note_revision(revision)

    def _note_revision(self, revision: int) -> None:
        changed = revision != self.revision
        self.revision = revision
        self.ctx.log.info("pfru_revision_set", revision=revision)
        if changed:
            for listener in list(self._revision_listeners):
                listener()

    async def telemetry_set_revision(self, revision: int) -> None:
        """PFRT_LOG_IOC_SET_INFO with only ``log_revid``, checked by GET_INFO.

        The driver stores the revision without asking the firmware
        (pfr_telemetry.c ``pfrt_log_ioctl()``); GET_INFO then reads the level from the
        firmware at that revision and reports a negative errno when it gets no answer.

        Raises:
            NotSupported: the firmware does not answer; the previous revision is back.
        """
        before = await self.telemetry_get_info()
        await self._telemetry_set(uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, revision))
        after = await self.telemetry_get_info()
        if after.log_level >= 1 << 31:
            await self._telemetry_set(
                uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, before.log_revid)
            )
            raise NotSupported(
                f"the firmware does not answer the telemetry _DSM at revision {revision}; "
                f"the log revision stays {before.log_revid}"
            )
        self.ctx.log.info("pfru_telemetry_revision_set", revision=revision)

    async def _telemetry_set(self, info: uapi.LogInfo) -> None:
        arg = bytearray(info.pack())
        await self._telemetry_ioctl(uapi.PFRT_LOG_IOC_SET_INFO, arg, "set the telemetry settings")

    async def query_revisions(self) -> Revisions:
        """Probe every revision the kernel accepts on both devices, then restore.

        The kernel cannot list the revisions a firmware implements (``_DSM`` function
        0 is not reachable from user space), so each one is tried: SET_REV and
        QUERY_CAP on the update device, the log revision and GET_DATA_INFO on the
        telemetry device. Afterwards the update device is back at livefw's revision
        (1 when livefw never set one) and the telemetry device at its previous one.
        """
        async with self.update_lock:
            update: list[int] = []
            handle = await self.open_update()
            try:
                try:
                    for revision in KERNEL_REVISIONS:
                        if await self._answers_at(handle, revision):
                            update.append(revision)
                finally:
                    await self._set_rev(handle, self.revision or uapi.DEFAULT_REVID)
            finally:
                await handle.close()
            telemetry: list[int] = []
            current = 0
            if self.telemetry:
                current = (await self.telemetry_get_info()).log_revid
                try:
                    for revision in KERNEL_REVISIONS:
                        await self._telemetry_set(
                            uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, revision)
                        )
                        try:
                            await self.telemetry_data_info()
                        except InvalidArgument:
                            continue
                        telemetry.append(revision)
                finally:
                    await self._telemetry_set(
                        uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, current)
                    )
        return Revisions(self.revision, tuple(update), current, tuple(telemetry))

    async def apply_configured_revisions(self) -> None:
        """``[plugins.pfru] update_revision`` / ``telemetry_revision`` at start-up."""
        revision = self.configured_revisions.get("update_revision")
        if revision is not None:
            try:
                await self.set_revision(revision)
            except LivefwError as error:
                self.ctx.log.warning("pfru_revision_config_failed", error=error.message)
        revision = self.configured_revisions.get("telemetry_revision")
        if revision is not None and self.telemetry:
            try:
                await self.telemetry_set_revision(revision)
            except LivefwError as error:
                self.ctx.log.warning("pfru_telemetry_revision_config_failed", error=error.message)

    async def _telemetry_ioctl(self, request: int, arg: bytearray, what: str) -> None:
        try:
            handle = await self.ctx.provider.open(uapi.TELEMETRY_NODE, OpenFlags.RDWR)
        except KernelError as error:
            raise _map_errno(error, "open the PFRT telemetry device") from error
        try:
            await handle.ioctl(request, arg)
        except KernelError as error:
            raise _map_errno(error, what) from error
        finally:
            await handle.close()

    async def telemetry_get_info(self) -> uapi.LogInfo:
        """PFRT_LOG_IOC_GET_INFO."""
        arg = bytearray(uapi.LOG_INFO.size)
        await self._telemetry_ioctl(uapi.PFRT_LOG_IOC_GET_INFO, arg, "read the telemetry settings")
        return uapi.LogInfo.unpack(arg)

    async def telemetry_set_info(
        self, level: uapi.LogLevel | None, log_type: uapi.LogType | None
    ) -> None:
        """PFRT_LOG_IOC_SET_INFO with ``None`` fields left unchanged."""
        info = uapi.LogInfo(
            uapi.LOG_UNCHANGED if level is None else int(level),
            uapi.LOG_UNCHANGED if log_type is None else int(log_type),
            uapi.LOG_UNCHANGED,
        )
        arg = bytearray(info.pack())
        await self._telemetry_ioctl(uapi.PFRT_LOG_IOC_SET_INFO, arg, "set the telemetry log level")
        self.ctx.log.info(
            "pfru_telemetry_configured",
            level=None if level is None else level_name(level),
            log_type=None if log_type is None else type_name(log_type),
        )

    async def telemetry_data_info(self) -> uapi.LogDataInfo:
        """PFRT_LOG_IOC_GET_DATA_INFO."""
        arg = bytearray(uapi.LOG_DATA_INFO.size)
        await self._telemetry_ioctl(
            uapi.PFRT_LOG_IOC_GET_DATA_INFO, arg, "read the telemetry data info"
        )
        return uapi.LogDataInfo.unpack(arg)

    async def telemetry_snapshot(self) -> tuple[bytes, uapi.LogDataInfo]:
        """A consistent copy of the log: data info, copy, data info again.

        The firmware may append while we copy; when the second data info differs from
        the first (new data, a wrap, a reset), the copy is thrown away and retried.

        Raises:
            Busy: the firmware kept appending for every attempt.
        """
        try:
            handle = await self.ctx.provider.open(uapi.TELEMETRY_NODE, OpenFlags.READ)
        except KernelError as error:
            raise _map_errno(error, "open the PFRT telemetry device") from error
        try:
            for _attempt in range(TELEMETRY_READ_ATTEMPTS):
                first = await self._data_info_on(handle)
                if first.chunk2_addr == 0 or first.max_data_size == 0:
                    return b"", first  # the telemetry service has not produced data
                try:
                    view = await handle.mmap(first.max_data_size)
                except KernelError as error:
                    raise _map_errno(error, "map the telemetry buffer") from error
                try:
                    data = _chronological(view, first)
                finally:
                    view.release()
                second = await self._data_info_on(handle)
                if first.same_window(second):
                    return data, first
                self.ctx.log.debug("pfru_telemetry_retry", attempt=_attempt)
        finally:
            await handle.close()
        raise Busy("the firmware kept appending to its telemetry log while it was read; try again")

    async def _data_info_on(self, handle: Handle) -> uapi.LogDataInfo:
        arg = bytearray(uapi.LOG_DATA_INFO.size)
        try:
            await handle.ioctl(uapi.PFRT_LOG_IOC_GET_DATA_INFO, arg)
        except KernelError as error:
            raise _map_errno(error, "read the telemetry data info") from error
        return uapi.LogDataInfo.unpack(arg)

    async def telemetry_read(self, cursor: int = 0) -> TelemetryRead:
        """The log since ``cursor`` (delta retrieval); ``0`` returns all there is."""
        if cursor < 0 or cursor >= 1 << 64:
            raise InvalidArgument("a telemetry cursor is an unsigned 64-bit number")
        data, info = await self.telemetry_snapshot()
        written = info.rollover_cnt * info.max_data_size + info.chunk2_size
        resets = info.reset_cnt & _CURSOR_RESET_MASK
        now = (resets << _CURSOR_SHIFT) | (written & _CURSOR_MASK)
        if cursor == 0:
            since_reset, since = resets, 0
        else:
            since_reset, since = cursor >> _CURSOR_SHIFT, cursor & _CURSOR_MASK
        if since_reset != resets:
            # the service reset since the caller's read: all there is now is new, and
            # what was written between that read and the reset is gone.
            return TelemetryRead(data, now, True, info)
        if since > written:
            raise InvalidArgument(
                f"telemetry cursor {cursor} is ahead of the log; pass 0 or a cursor "
                "returned by this device"
            )
        missing = written - since
        if missing > len(data):
            return TelemetryRead(data, now, True, info)
        return TelemetryRead(data[len(data) - missing :] if missing else b"", now, False, info)

    # ------------------------------------------------------------------ plugin

    async def probe(self) -> Probe:
        """The update node must exist; telemetry is optional."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.UPDATE_NODE):
            return Probe.unsupported(
                f"no /{uapi.UPDATE_NODE}: the platform has no ACPI PFRU device "
                f"({uapi.UPDATE_HID}) with a _DSM, or the kernel lacks CONFIG_ACPI_PFRUT "
                "(x86_64, Linux 5.17+)"
            )
        self.telemetry = await provider.exists(uapi.TELEMETRY_NODE)
        if not self.telemetry:
            return Probe.ok(
                f"no /{uapi.TELEMETRY_NODE} (ACPI {uapi.TELEMETRY_HID}): firmware "
                "telemetry is unavailable"
            )
        return Probe.ok()

    async def coldplug(self) -> None:
        """Apply configured ``_DSM`` revisions; one device per non-zero image type."""
        if await self.ctx.provider.exists(uapi.UPDATE_NODE):
            await self.apply_configured_revisions()
        await self.refresh()

    async def on_uevent(self, event: UEvent) -> None:
        """The drivers' misc devices come and go when the ACPI devices (un)bind."""
        if event.devpath in (uapi.UPDATE_DEVPATH, uapi.TELEMETRY_DEVPATH) and event.action in (
            "add",
            "remove",
        ):
            self.ctx.log.info("pfru_uevent", action=event.action, devpath=event.devpath)
            await self.refresh()

    def _drop(self, update_type: uapi.UpdateType) -> None:
        device = self._devices.pop(update_type, None)
        if device is not None:
            if self.staged == update_type:
                self.staged = None
            self.ctx.remove_device(device.id)
            self.ctx.log.info("pfru_device_removed", update_type=_TYPE_SLUG[update_type])

    async def refresh(self) -> None:
        """Re-query the capability; add or remove devices as nodes and image types change."""
        provider = self.ctx.provider
        if not await provider.exists(uapi.UPDATE_NODE):
            for update_type in list(self._devices):
                self._drop(update_type)
            return
        telemetry = await provider.exists(uapi.TELEMETRY_NODE)
        if telemetry != self.telemetry:
            # the Telemetry interface comes with the device object: publish it again
            self.telemetry = telemetry
            for update_type in list(self._devices):
                self._drop(update_type)
        try:
            cap = await self.query_cap()
        except Busy as error:
            # a transient firmware state: keep what we have; `livefw refresh` retries
            self.ctx.log.warning("pfru_query_failed", error=error.message)
            return
        for update_type in uapi.UpdateType:
            device = self._devices.get(update_type)
            if not cap.has_type(update_type):
                self._drop(update_type)
                continue
            if device is not None:
                device.apply_cap(cap)
                continue
            telemetry_here = self.telemetry and (
                update_type == uapi.UpdateType.CODE_INJECTION
                or not cap.has_type(uapi.UpdateType.CODE_INJECTION)
            )
            cls = PfruTelemetryDevice if telemetry_here else PfruDevice
            device = cls(self, update_type, cap)
            if isinstance(device, PfruTelemetryDevice):
                try:
                    await device.telemetry_info()
                except LivefwError as error:
                    self.ctx.log.warning("pfru_telemetry_info_failed", error=str(error))
            self._devices[update_type] = device
            self.ctx.add_device(device)
            self.ctx.log.info(
                "pfru_device_added",
                update_type=_TYPE_SLUG[update_type],
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
            if self.staged not in (None, update_type):
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
    for update_type, name in _TYPE_SLUG.items():
        if name == slug:
            return update_type
    return None


def _chronological(view: memoryview, info: uapi.LogDataInfo) -> bytes:
    """chunk1 (older, after a wrap) then chunk2 (newer, at the mapped base)."""
    size = info.max_data_size
    c2 = info.chunk2_size
    c1 = info.chunk1_size
    offset = info.chunk1_addr - info.chunk2_addr if c1 else 0
    if c2 > size or c1 > size or offset < 0 or offset + c1 > size:
        raise Internal(
            "the firmware reported a telemetry layout outside its buffer "
            f"(chunk1 {c1} bytes at +{offset}, chunk2 {c2} bytes, buffer {size} bytes)"
        )
    return bytes(view[offset : offset + c1]) + bytes(view[:c2])


def _map_errno(error: KernelError, what: str) -> LivefwError:
    """PFRU/PFRT errnos as the errors a client sees."""
    code = error.errno
    if code == errno.EBUSY:
        return Busy(f"the firmware is busy and could not {what} (non-zero _DSM status); retry")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        if "telemetry" in what and code == errno.ENODEV:
            return NotSupported(
                f"could not {what}: the firmware's telemetry service has not started yet"
            )
        return NotSupported(f"could not {what}: the device is gone ({error.message})")
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"the kernel refused to {what}: {error.message}")
    if code == errno.ENOTTY:
        return NotSupported(f"the kernel does not support the request to {what}")
    if code == errno.EINVAL:
        return InvalidArgument(f"the kernel refused to {what} (EINVAL): {error.message}")
    if code == errno.EAGAIN and "telemetry buffer" in what:
        # pfrt_log_mmap(): io_remap_pfn_range refused the uncached mapping (x86 PAT
        # memory-type conflict, seen on a real 7.2.13): a retry meets the same conflict
        return NotSupported(
            f"the kernel could not {what} (EAGAIN): the platform maps the telemetry memory "
            "with a conflicting memory type (see the kernel log for the PAT message); "
            "retrying does not help, report it to the platform vendor"
        )
    return error
