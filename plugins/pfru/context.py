"""What both PFRU devices share: one update driver, one staged capsule, one telemetry node.

The firmware exposes one update device (``/dev/acpi_pfr_update0``) for both update
types and one telemetry device (``/dev/acpi_pfr_telemetry0``). The ``_DSM`` revision
the update driver evaluates belongs to the driver, not to an open file
(drivers/acpi/pfr_update.c: ``pfru_ioctl()`` stores ``PFRU_IOC_SET_REV`` in the
``pfru_device``), and the firmware holds one staged capsule whatever its type. So the
devices share a :class:`PfruContext`: the plugin creates one and hands it to every
device it creates; the devices never reach the plugin.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from livefw.errors import (
    Busy,
    ConfigError,
    InvalidArgument,
    KernelError,
    LivefwError,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel import Handle, OpenFlags
from livefw.kernel.uapi import pfru as uapi
from livefw.plugin import DeviceContext, PluginContext
from livefw.record import Frozen

__all__ = [
    "DEFAULT_MAX_CAPSULE_SIZE",
    "KERNEL_REVISIONS",
    "PfruContext",
    "Revisions",
    "map_errno",
    "parse_revision",
]

#: the ``_DSM`` revisions the kernel accepts: drivers/acpi/pfr_update.c
#: ``pfru_valid_revid()`` and drivers/acpi/pfr_telemetry.c ``valid_log_revid()``
#: (PFRU_REVID_1/2, PFRT_REVID_1/2).
KERNEL_REVISIONS = (uapi.REVID_1, uapi.REVID_2)
#: default ``[plugins.pfru] max_capsule_size``: real communication buffers are a few
#: MiB; the kernel does not tell user space their size (pfr_update.c ``pfru_write()``
#: compares with the buffer size ``query_buffer()`` got and answers only EINVAL).
DEFAULT_MAX_CAPSULE_SIZE = 32 * 1024 * 1024
_CONFIG_KEYS = frozenset(
    {"max_capsule_size", "driver_version_gate", "update_revision", "telemetry_revision"}
)


def parse_revision(value: int, what: str = "PFRU _DSM revision") -> int:
    """A ``_DSM`` revision the kernel accepts (1 or 2).

    The update driver answers EINVAL for others (pfr_update.c ``pfru_ioctl()``), the
    telemetry driver ignores them silently (pfr_telemetry.c ``valid_log_revid()``);
    livefw refuses both up front.

    Raises:
        InvalidArgument: anything but 1 or 2.
    """
    if value not in KERNEL_REVISIONS:
        raise InvalidArgument(
            f"{what} {value} is not one the kernel accepts (1 or 2: PFRU_REVID_1/2 in "
            "drivers/acpi/pfr_update.c)"
        )
    return value


class Revisions(Frozen):
    """Which ``_DSM`` revisions the kernel accepts and the firmware answers.

    Attributes:
        update_revision: the revision livefw set on the update device (0: livefw has
            not set one; the kernel has no getter, and the driver starts at 1).
        update_firmware: revisions at which the firmware answered QUERY_CAP.
        telemetry_revision: the telemetry driver's log revision (GET_INFO), 0
            without a telemetry device.
        telemetry_firmware: revisions at which the firmware answered GET_DATA_INFO.
    """

    _FIELDS = (
        "update_revision",
        "update_firmware",
        "telemetry_revision",
        "telemetry_firmware",
        "kernel",
    )
    update_revision: int
    update_firmware: tuple[int, ...]
    telemetry_revision: int
    telemetry_firmware: tuple[int, ...]
    kernel: tuple[int, ...] = KERNEL_REVISIONS

    def __init__(
        self,
        update_revision: int,
        update_firmware: tuple[int, ...],
        telemetry_revision: int,
        telemetry_firmware: tuple[int, ...],
        kernel: tuple[int, ...] = KERNEL_REVISIONS,
    ) -> None:
        _set = object.__setattr__
        _set(self, "update_revision", update_revision)
        _set(self, "update_firmware", update_firmware)
        _set(self, "telemetry_revision", telemetry_revision)
        _set(self, "telemetry_firmware", telemetry_firmware)
        _set(self, "kernel", kernel)


class PfruContext(DeviceContext):
    """The PFRU state both update types share, and the calls on the two device nodes.

    Attributes:
        max_capsule_size: ``[plugins.pfru] max_capsule_size``.
        driver_gate: ``svn`` or ``rt``: which driver-update version the kernel's gate
            compares (``[plugins.pfru] driver_version_gate``; docs/kernel.md, PFRU).
        configured_revisions: ``update_revision``/``telemetry_revision`` from the config.
        revision: the update ``_DSM`` revision livefw set (0: not set by livefw).
        update_lock: serialises revision changes and probes with stages and activations.
        staged: the update type the firmware holds staged (one at a time), as far as
            livefw knows.
        telemetry: the telemetry node exists.

    Raises:
        ConfigError: (constructor) a bad ``[plugins.pfru]`` section.
    """

    def __init__(self, plugin: PluginContext) -> None:
        super().__init__(plugin)
        config = dict(plugin.config)
        unknown = set(config) - _CONFIG_KEYS
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
        self.revision = 0
        self.update_lock = asyncio.Lock()
        self.staged: uapi.UpdateType | None = None
        self.telemetry = False
        self._revision_listeners: list[Any] = []

    # ------------------------------------------------------------ update node

    async def open_update(self) -> Handle:
        """Open the update node read-write."""
        try:
            return await self.provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
        except KernelError as error:
            raise map_errno(error, "open the PFRU update device") from error

    async def query_cap(self) -> uapi.UpdateCapInfo:
        """PFRU_IOC_QUERY_CAP (pfr_update.c ``query_capability()``).

        Raises:
            Busy: the firmware answered with a non-zero status (EBUSY).
        """
        handle = await self.open_update()
        try:
            arg = bytearray(uapi.CAP_INFO.size)
            await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, arg)
        except KernelError as error:
            raise map_errno(error, "query the PFRU capability") from error
        finally:
            await handle.close()
        return uapi.UpdateCapInfo.unpack(arg)

    # -------------------------------------------------------------- revisions

    def add_revision_listener(self, listener: Any) -> None:
        """Call ``listener()`` when the update ``_DSM`` revision livefw set changes."""
        self._revision_listeners.append(listener)

    async def set_rev(self, handle: Handle, revision: int) -> None:
        """PFRU_IOC_SET_REV on an open update node (the argument is a u32, pfrut.h)."""
        arg = bytearray(revision.to_bytes(4, "little"))
        try:
            await handle.ioctl(uapi.PFRU_IOC_SET_REV, arg)
        except KernelError as error:
            raise map_errno(error, f"set the PFRU _DSM revision to {revision}") from error

    async def answers_at(self, handle: Handle, revision: int) -> bool:
        """SET_REV ``revision`` and QUERY_CAP: whether the firmware answers there.

        EINVAL from QUERY_CAP is the driver's answer when the firmware returns no
        package (pfr_update.c ``query_capability()``: ``acpi_evaluate_dsm_typed()``
        gave nothing, so the firmware lacks that revision); other errors propagate.
        """
        await self.set_rev(handle, revision)
        arg = bytearray(uapi.CAP_INFO.size)
        try:
            await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, arg)
        except KernelError as error:
            if error.errno == errno.EINVAL:
                return False
            raise map_errno(error, f"query the PFRU capability at revision {revision}") from error
        return True

    async def set_update_revision(self, revision: int) -> None:
        """PFRU_IOC_SET_REV, checked with a QUERY_CAP at the new revision.

        The revision belongs to the driver (every opener, pfrut too) until it binds
        again (pfr_update.c ``acpi_pfru_probe()`` starts at PFRU_DEFAULT_REV_ID);
        livefw keeps what it set in :attr:`revision`.

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
                if not await self.answers_at(handle, revision):
                    await self.set_rev(handle, previous)
                    raise NotSupported(
                        f"the firmware does not answer the PFRU _DSM at revision {revision} "
                        f"(the capability query fails there); the revision stays {previous}"
                    )
            finally:
                await handle.close()
            changed = revision != self.revision
            self.revision = revision
            self.log.info("pfru_revision_set", revision=revision)
            if changed:
                for listener in list(self._revision_listeners):
                    listener()

    async def set_telemetry_revision(self, revision: int) -> None:
        """PFRT_LOG_IOC_SET_INFO with only ``log_revid``, checked by GET_INFO.

        The driver stores the revision without asking the firmware
        (pfr_telemetry.c ``pfrt_log_ioctl()``); GET_INFO then reads the level from the
        firmware at that revision and reports a negative errno when it gets no answer.

        Raises:
            NotSupported: the firmware does not answer; the previous revision is back.
        """
        before = await self.telemetry_get_info()
        await self.telemetry_set(uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, revision))
        after = await self.telemetry_get_info()
        if after.log_level >= 1 << 31:
            await self.telemetry_set(
                uapi.LogInfo(uapi.LOG_UNCHANGED, uapi.LOG_UNCHANGED, before.log_revid)
            )
            raise NotSupported(
                f"the firmware does not answer the telemetry _DSM at revision {revision}; "
                f"the log revision stays {before.log_revid}"
            )
        self.log.info("pfru_telemetry_revision_set", revision=revision)

    async def apply_configured_revisions(self) -> None:
        """``[plugins.pfru] update_revision`` / ``telemetry_revision`` at start-up."""
        revision = self.configured_revisions.get("update_revision")
        if revision is not None:
            try:
                await self.set_update_revision(revision)
            except LivefwError as error:
                self.log.warning("pfru_revision_config_failed", error=error.message)
        revision = self.configured_revisions.get("telemetry_revision")
        if revision is not None and self.telemetry:
            try:
                await self.set_telemetry_revision(revision)
            except LivefwError as error:
                self.log.warning("pfru_telemetry_revision_config_failed", error=error.message)

    # --------------------------------------------------------- telemetry node

    async def telemetry_ioctl(self, request: int, arg: bytearray, what: str) -> None:
        """One ioctl on its own open of the telemetry node.

        pfr_telemetry.c ``pfrt_log_ioctl()`` answers GET_INFO, SET_INFO and GET_DATA_INFO.
        """
        try:
            handle = await self.provider.open(uapi.TELEMETRY_NODE, OpenFlags.RDWR)
        except KernelError as error:
            raise map_errno(error, "open the PFRT telemetry device") from error
        try:
            await handle.ioctl(request, arg)
        except KernelError as error:
            raise map_errno(error, what) from error
        finally:
            await handle.close()

    async def telemetry_get_info(self) -> uapi.LogInfo:
        """PFRT_LOG_IOC_GET_INFO."""
        arg = bytearray(uapi.LOG_INFO.size)
        await self.telemetry_ioctl(uapi.PFRT_LOG_IOC_GET_INFO, arg, "read the telemetry settings")
        return uapi.LogInfo.unpack(arg)

    async def telemetry_set(self, info: uapi.LogInfo) -> None:
        """PFRT_LOG_IOC_SET_INFO (fields at ``LOG_UNCHANGED`` stay as they are)."""
        arg = bytearray(info.pack())
        await self.telemetry_ioctl(uapi.PFRT_LOG_IOC_SET_INFO, arg, "set the telemetry settings")

    async def telemetry_data_info(self) -> uapi.LogDataInfo:
        """PFRT_LOG_IOC_GET_DATA_INFO for the selected log type."""
        arg = bytearray(uapi.LOG_DATA_INFO.size)
        await self.telemetry_ioctl(
            uapi.PFRT_LOG_IOC_GET_DATA_INFO, arg, "read the telemetry data info"
        )
        return uapi.LogDataInfo.unpack(arg)


def map_errno(error: KernelError, what: str) -> LivefwError:
    """PFRU/PFRT errnos as the errors a client sees (docs/kernel.md, PFRU and PFRT)."""
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
        # pfr_telemetry.c pfrt_log_mmap(): io_remap_pfn_range refused the uncached
        # mapping (x86 PAT memory-type conflict, seen on a real 7.2.13): a retry meets
        # the same conflict
        return NotSupported(
            f"the kernel could not {what} (EAGAIN): the platform maps the telemetry memory "
            "with a conflicting memory type (see the kernel log for the PAT message); "
            "retrying does not help, report it to the platform vendor"
        )
    return error
