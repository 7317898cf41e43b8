"""Simulated PFRU/PFRT: the kernel half, the drivers' file operations.

As ``drivers/acpi/pfr_update.c`` and ``pfr_telemetry.c`` (each behaviour and whether it
is modelled: docs/kernel.md, PFRU / PFRT): the update node's ``write()`` (through
:meth:`PfruComponent.load`) and its ioctls (QUERY_CAP, SET_REV: 1 or 2, kept per
device; STAGE, ACTIVATE, STAGE_ACTIVATE), the kernel's capsule walk and version gate
exactly as ``applicable_image()`` does them (:func:`kernel_applicable_image`: no
length or count checks; what the kernel accepts, this accepts), and the telemetry
node's ioctls and read-only mmap. The ``_DSM`` calls they make go to the firmware
(livefw.kernel.sim.pfru.PfruComponent).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from livefw.kernel.sim.pfru_model import KEY_TELEMETRY, KEY_UPDATE
from livefw.kernel.sim.vfs import SimHandle, fail
from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi

if TYPE_CHECKING:
    from livefw.kernel.sim.pfru import PfruComponent

__all__ = ["TelemetryHandle", "UpdateHandle", "kernel_applicable_image"]


def _i32(value: int) -> int:
    """``value`` stored in a C ``int`` (the kernel's offsets are ``int size``)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


#: sizeof(struct efi_manage_capsule_image_header) in include/linux/efi.h: the v3
#: layout (48 bytes); adjust_efi_size() subtracts 16 for v1 and 8 for v2.
_KERNEL_IMAGE_HEADER_SIZE = 48


def kernel_applicable_image(
    read: Callable[[int, int], bytes], cap: uapi.UpdateCapInfo, driver_gate: str
) -> str:
    """drivers/acpi/pfr_update.c ``applicable_image()``: ``""`` when it accepts.

    Follows the kernel step by step, with no bounds and no counts checked: HeaderSize,
    then 8 + 8 x (EmbeddedDriverCount + PayloadItemCount) (a PayloadItemCount of 0 is
    fine), the image-type GUID (``get_image_type()``), the header version
    (``adjust_efi_size()``: 1 or 2), 8 + WIN_CERTIFICATE.dwLength, and the version
    gate on ``pfru_payload_hdr``: code injection compares ``rt_ver`` with
    ``code_rt_version``; driver update compares ``svn_ver`` with ``drv_svn`` since
    "ACPI: pfr_update: Fix the driver update version check" (6.17), ``rt_ver`` with
    ``drv_rt_version`` before (``driver_gate`` ``svn``/``rt``). Offsets are C ``int``
    arithmetic, as in the kernel.

    Returns:
        why the kernel refuses (its write() then fails with EINVAL), or ``""``.
    """
    u32 = struct.Struct("<I")
    u16x2 = struct.Struct("<HH")
    size = _i32(u32.unpack(read(16, 4))[0])  # efi_capsule_header_t.headersize
    drivers, payloads = u16x2.unpack(read(size + 4, 4))
    size = _i32(size + 8 + (drivers + payloads) * 8)
    version = u32.unpack(read(size, 4))[0]
    image_type = capsule.guid_from_efi(read(size + 4, 16))
    update_type = next((t for t, guid in uapi.IMAGE_TYPES.items() if guid == image_type), None)
    if update_type is None:
        return f"get_image_type: image type {image_type} is not a PFRU type"
    if version not in (1, 2):
        return f"adjust_efi_size: FMP image header version {version} is not 1 or 2"
    size = _i32(size + _KERNEL_IMAGE_HEADER_SIZE - (16 if version == 1 else 8))
    cert_length = u32.unpack(read(size + 8, 4))[0]  # auth_info.hdr.len
    size = _i32(size + 8 + cert_length)
    payload = read(size, uapi.PAYLOAD_HDR.size)
    rt_ver = u32.unpack_from(payload, 16)[0]
    svn_ver = u32.unpack_from(payload, 36)[0]
    if update_type == uapi.UpdateType.CODE_INJECTION:
        ok, field, running = rt_ver >= cap.code_rt_version, rt_ver, cap.code_rt_version
    elif driver_gate == "rt":
        ok, field, running = rt_ver >= cap.drv_rt_version, rt_ver, cap.drv_rt_version
    else:
        ok, field, running = svn_ver >= cap.drv_svn, svn_ver, cap.drv_svn
    if not ok:
        return f"capsule version {field} below the running {running}"
    return ""


class UpdateHandle(SimHandle):
    """An open ``/dev/acpi_pfr_update0``."""

    def __init__(self, component: PfruComponent, path: str) -> None:
        super().__init__(path)
        self._component = component

    def do_write(self, data: bytes) -> int:
        """pfru_write(): into the firmware's communication buffer, then the walk."""
        return self._component.load(bytes(data), self.path)

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        """pfru_ioctl(): QUERY_CAP, SET_REV, STAGE, ACTIVATE, STAGE_ACTIVATE."""
        component = self._component
        if request == uapi.PFRU_IOC_QUERY_CAP:
            if arg is None or len(arg) < uapi.CAP_INFO.size:
                raise fail(errno.EFAULT, "ioctl", self.path, "PFRU_IOC_QUERY_CAP")
            component.update_dsm_check("ioctl", self.path)
            if component.dsm_fault(KEY_UPDATE, "busy"):
                raise fail(errno.EBUSY, "ioctl", self.path, "_DSM query capability failed")
            arg[: uapi.CAP_INFO.size] = component.cap_info().pack()
            return 0
        if request == uapi.PFRU_IOC_SET_REV:
            if arg is None or len(arg) < 4:
                raise fail(errno.EFAULT, "ioctl", self.path, "PFRU_IOC_SET_REV")
            (rev,) = struct.unpack_from("<I", arg)
            if rev not in (uapi.REVID_1, uapi.REVID_2):
                raise fail(errno.EINVAL, "ioctl", self.path, f"revision {rev} is not 1 or 2")
            component.state.rev_id = rev
            component.machine.changed(component.name)
            return 0
        actions = {
            uapi.PFRU_IOC_STAGE: uapi.StartAction.STAGE,
            uapi.PFRU_IOC_ACTIVATE: uapi.StartAction.ACTIVATE,
            uapi.PFRU_IOC_STAGE_ACTIVATE: uapi.StartAction.STAGE_ACTIVATE,
        }
        if request in actions:
            component.start_update(actions[request], self.path)
            return 0
        raise fail(errno.ENOTTY, "ioctl", self.path)


class TelemetryHandle(SimHandle):
    """An open ``/dev/acpi_pfr_telemetry0`` (no read or write: mmap and ioctl)."""

    def __init__(self, component: PfruComponent, path: str) -> None:
        super().__init__(path)
        self._component = component

    def _data_info(self, op: str = "ioctl") -> uapi.LogDataInfo:
        component = self._component
        if not component.telemetry_dsm_ok():
            raise fail(errno.EINVAL, op, self.path, "_DSM get data info: no package")
        if component.dsm_fault(KEY_TELEMETRY, "telemetry-busy"):
            raise fail(errno.EBUSY, "ioctl", self.path, "_DSM get data info failed")
        if component.dsm_fault(KEY_TELEMETRY, "telemetry-reset"):
            component.reset_telemetry()
            component.machine.changed(component.name)
        return component.data_info(component.state.log_type)

    def do_ioctl(
        self, request: int, arg: bytearray | None, pointers: Mapping[int, bytearray]
    ) -> int:
        """pfrt_log_ioctl(): SET_INFO, GET_INFO, GET_DATA_INFO."""
        component = self._component
        state = component.state
        if request == uapi.PFRT_LOG_IOC_SET_INFO:
            if arg is None or len(arg) < uapi.LOG_INFO.size:
                raise fail(errno.EFAULT, "ioctl", self.path, "PFRT_LOG_IOC_SET_INFO")
            info = uapi.LogInfo.unpack(arg[: uapi.LOG_INFO.size])
            # each field applies only when valid; invalid values are ignored.
            if info.log_revid in (uapi.REVID_1, uapi.REVID_2):
                state.log_revid = info.log_revid
            if info.log_level in set(uapi.LogLevel):
                if not component.telemetry_dsm_ok():
                    component.machine.changed(component.name)
                    raise fail(errno.EINVAL, "ioctl", self.path, "_DSM set log level: no package")
                if component.dsm_fault(KEY_TELEMETRY, "telemetry-busy"):
                    component.machine.changed(component.name)
                    raise fail(errno.EBUSY, "ioctl", self.path, "_DSM set log level failed")
                state.log_level = info.log_level
                component._log(uapi.LogLevel.INFO, f"log level set to {info.log_level}")
            if info.log_type in set(uapi.LogType):
                state.log_type = info.log_type
            component.machine.changed(component.name)
            return 0
        if request == uapi.PFRT_LOG_IOC_GET_INFO:
            if arg is None or len(arg) < uapi.LOG_INFO.size:
                raise fail(errno.EFAULT, "ioctl", self.path, "PFRT_LOG_IOC_GET_INFO")
            level = state.log_level
            if not component.telemetry_dsm_ok():
                level = (-errno.EINVAL) & 0xFFFFFFFF  # get_pfrt_log_level(): no package
            elif component.dsm_fault(KEY_TELEMETRY, "telemetry-busy"):
                level = (-errno.EBUSY) & 0xFFFFFFFF  # the driver stores the errno
            arg[: uapi.LOG_INFO.size] = uapi.LogInfo(level, state.log_type, state.log_revid).pack()
            return 0
        if request == uapi.PFRT_LOG_IOC_GET_DATA_INFO:
            if arg is None or len(arg) < uapi.LOG_DATA_INFO.size:
                raise fail(errno.EFAULT, "ioctl", self.path, "PFRT_LOG_IOC_GET_DATA_INFO")
            data_info = self._data_info()
            arg[: uapi.LOG_DATA_INFO.size] = data_info.pack()
            if component.dsm_fault(KEY_TELEMETRY, "append-race"):
                component.append_record("firmware event while a reader copies the log")
                component.machine.changed(component.name)
            return 0
        raise fail(errno.ENOTTY, "ioctl", self.path)

    def do_mmap(self, length: int) -> memoryview:
        """pfrt_log_mmap() (drivers/acpi/pfr_telemetry.c): checks, then an uncached map.

        The kernel maps the log with ``pgprot_noncached`` through
        ``io_remap_pfn_range``; on x86 a memory-type conflict with a mapping of the same
        pages the kernel already holds (arch/x86/mm/pat/memtype.c
        ``is_new_memtype_allowed()``) makes it fail with EAGAIN, which retrying does not
        cure (fault ``mmap-memtype-conflict``).
        """
        info = self._data_info("mmap")
        if info.chunk2_addr == 0:
            raise fail(errno.ENODEV, "mmap", self.path, "telemetry has not started")
        if info.chunk2_addr % uapi.PAGE_SIZE or info.max_data_size % uapi.PAGE_SIZE:
            raise fail(errno.ENODEV, "mmap", self.path, "buffer not page aligned")
        if length <= 0:
            raise fail(errno.EINVAL, "mmap", self.path)
        pages = -(-length // uapi.PAGE_SIZE) * uapi.PAGE_SIZE
        if pages > info.max_data_size:
            raise fail(
                errno.EINVAL,
                "mmap",
                self.path,
                f"{length} bytes > max_data_size {info.max_data_size}",
            )
        if self._component.dsm_fault(KEY_TELEMETRY, "mmap-memtype-conflict"):
            raise fail(errno.EAGAIN, "mmap", self.path, "memory type conflict (PAT)")
        return self._component.mapping(self._component.state.log_type)[:length].toreadonly()
