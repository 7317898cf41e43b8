"""PFRT telemetry: the firmware's log, on the PFRU device that carries it.

drivers/acpi/pfr_telemetry.c exposes ``/dev/acpi_pfr_telemetry0``: ioctls for the log
settings (``pfrt_log_ioctl()``: GET_INFO, SET_INFO, GET_DATA_INFO) and a read-only
``mmap()`` of the firmware's ring buffer (``pfrt_log_mmap()``). The log belongs to
the platform, not to one update type, so it is published on one PFRU device object
(code injection when the firmware reports it, else driver update): a
:class:`PfruTelemetryDevice`.
"""

from __future__ import annotations

import errno
from typing import Any

from livefw.errors import Busy, Internal, InvalidArgument, KernelError
from livefw.kernel import Handle, OpenFlags
from livefw.kernel.uapi import pfru as uapi
from livefw.plugins.pfru.context import PfruContext, map_errno, parse_revision
from livefw.plugins.pfru.device import PFRU_INTERFACE, PfruDevice
from livefw.record import Frozen

__all__ = [
    "TELEMETRY_INTERFACE",
    "PfruTelemetryDevice",
    "TelemetryRead",
    "level_name",
    "parse_level",
    "parse_log_type",
    "type_name",
]

TELEMETRY_INTERFACE = "org.livefw.Daemon1.Telemetry"
#: how often a telemetry read retries when the firmware appended while it copied.
TELEMETRY_READ_ATTEMPTS = 5
#: telemetry cursors: reset count in the top 16 bits, bytes written in the low 48.
_CURSOR_SHIFT = 48
_CURSOR_MASK = (1 << _CURSOR_SHIFT) - 1
_CURSOR_RESET_MASK = 0xFFFF

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


class TelemetryRead(Frozen):
    """A consistent copy of the telemetry log.

    Attributes:
        data: the log in chronological order (chunk1, then chunk2).
        cursor: where this read ended; pass it to the next delta read.
        lost: records the caller had not read were overwritten (or the service reset).
        info: the data info the copy is consistent with.
    """

    _FIELDS = ("data", "cursor", "lost", "info")
    data: bytes
    cursor: int
    lost: bool
    info: uapi.LogDataInfo

    def __init__(self, data: bytes, cursor: int, lost: bool, info: uapi.LogDataInfo) -> None:
        _set = object.__setattr__
        _set(self, "data", data)
        _set(self, "cursor", cursor)
        _set(self, "lost", lost)
        _set(self, "info", info)


class PfruTelemetryDevice(PfruDevice):
    """The update device that also carries the firmware's telemetry log (PFRT)."""

    interfaces = (PFRU_INTERFACE, TELEMETRY_INTERFACE)
    telemetry_node = "/" + uapi.TELEMETRY_NODE

    def __init__(
        self, ctx: PfruContext, update_type: uapi.UpdateType, cap: uapi.UpdateCapInfo
    ) -> None:
        super().__init__(ctx, update_type, cap)
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

    # ----------------------------------------------------------------- settings

    async def telemetry_info(self) -> uapi.LogInfo:
        """PFRT_LOG_IOC_GET_INFO (level read live from the firmware).

        Raises:
            Busy: the firmware did not report its level (pfr_telemetry.c
                ``pfrt_log_ioctl()`` copies ``get_pfrt_log_level()``'s negative errno
                into ``log_level``).
        """
        info = await self.ctx.telemetry_get_info()
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
            await self.ctx.set_telemetry_revision(parse_revision(revision, "log revision"))
        if level is not None or log_type is not None:
            info = uapi.LogInfo(
                uapi.LOG_UNCHANGED if level is None else int(level),
                uapi.LOG_UNCHANGED if log_type is None else int(log_type),
                uapi.LOG_UNCHANGED,
            )
            arg = bytearray(info.pack())
            await self.ctx.telemetry_ioctl(
                uapi.PFRT_LOG_IOC_SET_INFO, arg, "set the telemetry log level"
            )
            self.ctx.log.info(
                "pfru_telemetry_configured",
                level=None if level is None else level_name(level),
                log_type=None if log_type is None else type_name(log_type),
            )
        return await self.telemetry_info()

    # -------------------------------------------------------------------- reads

    async def telemetry_data_info(self) -> uapi.LogDataInfo:
        """PFRT_LOG_IOC_GET_DATA_INFO for the selected log type."""
        return await self.ctx.telemetry_data_info()

    async def read_telemetry(self, cursor: int = 0) -> TelemetryRead:
        """The log since ``cursor`` (0: everything available); see :class:`TelemetryRead`.

        Raises:
            NotFound/Busy/NotSupported: the telemetry device failed; InvalidArgument:
                a cursor this device never returned.
        """
        if cursor < 0 or cursor >= 1 << 64:
            raise InvalidArgument("a telemetry cursor is an unsigned 64-bit number")
        data, info = await self._snapshot()
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

    async def _snapshot(self) -> tuple[bytes, uapi.LogDataInfo]:
        """A consistent copy of the log: data info, copy, data info again.

        The firmware may append while we copy; when the second data info differs from
        the first (new data, a wrap, a reset), the copy is thrown away and retried.

        Raises:
            Busy: the firmware kept appending for every attempt.
        """
        try:
            handle = await self.ctx.provider.open(uapi.TELEMETRY_NODE, OpenFlags.READ)
        except KernelError as error:
            raise map_errno(error, "open the PFRT telemetry device") from error
        try:
            for _attempt in range(TELEMETRY_READ_ATTEMPTS):
                first = await _data_info_on(handle)
                if first.chunk2_addr == 0 or first.max_data_size == 0:
                    return b"", first  # the telemetry service has not produced data
                try:
                    view = await handle.mmap(first.max_data_size)
                except KernelError as error:
                    raise map_errno(error, "map the telemetry buffer") from error
                try:
                    data = _chronological(view, first)
                finally:
                    view.release()
                second = await _data_info_on(handle)
                if first.same_window(second):
                    return data, first
                self.ctx.log.debug("pfru_telemetry_retry", attempt=_attempt)
        finally:
            await handle.close()
        raise Busy("the firmware kept appending to its telemetry log while it was read; try again")


async def _data_info_on(handle: Handle) -> uapi.LogDataInfo:
    arg = bytearray(uapi.LOG_DATA_INFO.size)
    try:
        await handle.ioctl(uapi.PFRT_LOG_IOC_GET_DATA_INFO, arg)
    except KernelError as error:
        raise map_errno(error, "read the telemetry data info") from error
    return uapi.LogDataInfo.unpack(arg)


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
