"""ACPI Platform Firmware Runtime Update (PFRU) and Telemetry (PFRT) user-space API.

Sources: ``include/uapi/linux/pfrut.h`` (ioctls, structs, log levels and types),
``drivers/acpi/pfr_update.c`` (GUIDs, update types, the capsule walk done on
``write()``), ``drivers/acpi/pfr_telemetry.c`` (mmap rules), merged in Linux 5.17;
each behaviour with its source function in docs/kernel.md (PFRU / PFRT). Python
``struct`` strings use ``<`` with every padding byte written as ``x``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from livefw.kernel.uapi import capsule
from livefw.kernel.uapi.capsule import CapsuleError
from livefw.kernel.uapi.ioc import ior, iow
from livefw.record import Frozen

__all__ = [
    "CAP_INFO",
    "CODE_INJECTION_GUID",
    "DRIVER_UPDATE_GUID",
    "LOG_DATA_INFO",
    "LOG_INFO",
    "PAYLOAD_HDR",
    "PFRT_DSM_GUID",
    "PFRT_LOG_IOC_GET_DATA_INFO",
    "PFRT_LOG_IOC_GET_INFO",
    "PFRT_LOG_IOC_SET_INFO",
    "PFRU_DSM_GUID",
    "PFRU_IOC_ACTIVATE",
    "PFRU_IOC_QUERY_CAP",
    "PFRU_IOC_SET_REV",
    "PFRU_IOC_STAGE",
    "PFRU_IOC_STAGE_ACTIVATE",
    "TELEMETRY_NODE",
    "UPDATE_NODE",
    "CapsuleError",
    "DsmStatus",
    "LogDataInfo",
    "LogInfo",
    "LogLevel",
    "LogType",
    "PayloadHeader",
    "PfruCapsule",
    "StricterThanKernel",
    "UpdateCapInfo",
    "UpdateType",
    "walk_capsule",
]

# ----------------------------------------------------------------- names and nodes

#: device nodes (misc ``nodename``; the IDA makes the first device 0). pfr_update.c,
#: pfr_telemetry.c: "acpi_pfr_update%d" / "acpi_pfr_telemetry%d".
UPDATE_NODE = "dev/acpi_pfr_update0"
TELEMETRY_NODE = "dev/acpi_pfr_telemetry0"
#: misc device names as sysfs shows them ("pfru%d" / "pfrt%d"), not the node names.
UPDATE_MISC = "sys/class/misc/pfru0"
TELEMETRY_MISC = "sys/class/misc/pfrt0"
#: ACPI HIDs bound by the two platform drivers.
UPDATE_HID = "INTC1080"
TELEMETRY_HID = "INTC1081"
#: uevent devpaths (below /sys) of the misc devices the drivers register.
UPDATE_DEVPATH = f"devices/platform/{UPDATE_HID}:00/misc/pfru0"
TELEMETRY_DEVPATH = f"devices/platform/{TELEMETRY_HID}:00/misc/pfrt0"

#: ``_DSM`` GUIDs of the update and telemetry ACPI devices (pfr_update.c,
#: pfr_telemetry.c ``pfru_guid`` / ``pfrt_log_guid``).
PFRU_DSM_GUID = "ecf9533b-4a3c-4e89-939e-c77112601c6d"
PFRT_DSM_GUID = "75191659-8178-4d9d-b88f-ac5e5e93e8bf"
#: FMP image-type GUIDs the driver accepts (pfr_update.c ``pfru_code_inj_guid``,
#: ``pfru_drv_update_guid``); in capsules and in pfru_update_cap_info they are in EFI
#: byte order (the kernel's ``GUID_INIT()`` lays ``guid_t`` out that way and
#: ``get_image_type()`` compares the capsule's bytes with it), while ``pfrut -q``
#: prints the raw bytes (tools/power/acpi/tools/pfrut/pfrut.c ``print_cap()``:
#: ``uuid_unparse()`` of the array).
CODE_INJECTION_GUID = "b2f84b79-7b6e-4e45-885f-3fb9bb185402"
DRIVER_UPDATE_GUID = "4569dd8c-75f1-429a-a3d6-24de8097a0df"

#: ``_DSM`` revision ids accepted by PFRU_IOC_SET_REV and PFRT log_revid
#: (drivers/acpi/pfr_update.c PFRU_REVID_1/2, ``pfru_valid_revid()``;
#: drivers/acpi/pfr_telemetry.c PFRT_REVID_1/2, ``valid_log_revid()``; not in the
#: uapi header); the default is 1 (PFRU_DEFAULT_REV_ID, PFRT_DEFAULT_REV_ID).
REVID_1 = 1
REVID_2 = 2
DEFAULT_REVID = REVID_1

# ---------------------------------------------------------------------- ioctls

#: include/uapi/linux/pfrut.h: ``#define PFRUT_IOCTL_MAGIC 0xEE``.
PFRUT_IOCTL_MAGIC = 0xEE

# struct formats (include/uapi/linux/pfrut.h; sizes checked with gcc against 7.3 uapi headers).
#: struct pfru_update_cap_info: status, update_cap, code_type[16], fw_version,
#: code_rt_version, drv_type[16], drv_rt_version, drv_svn, platform_id[16],
#: oem_id[16], oem_info_len. 92 bytes.
CAP_INFO = struct.Struct("<II16sII16sII16s16sI")
#: struct pfru_com_buf_info (driver-internal): status, ext_status, addr_lo (u64),
#: addr_hi (u64), buf_size, 4 bytes of tail padding. 32 bytes.
COM_BUF_INFO = struct.Struct("<IIQQI4x")
#: struct pfru_updated_result (driver-internal, only logged). 40 bytes.
UPDATED_RESULT = struct.Struct("<IIQQQQ")
#: struct pfru_payload_hdr: sig, hdr_version, hdr_size, hw_ver, rt_ver,
#: platform_id[16], svn_ver. 40 bytes.
PAYLOAD_HDR = struct.Struct("<IIIII16sI")
#: struct pfrt_log_info: log_level, log_type, log_revid. 12 bytes.
LOG_INFO = struct.Struct("<III")
#: struct pfrt_log_data_info: status, ext_status, chunk1_addr_lo/hi (u64),
#: chunk2_addr_lo/hi (u64), max_data_size, chunk1_size, chunk2_size, rollover_cnt,
#: reset_cnt, 4 bytes of tail padding. 64 bytes.
LOG_DATA_INFO = struct.Struct("<IIQQQQIIIII4x")
_U32 = struct.Struct("<I")

#: ``_IOW(PFRUT_IOCTL_MAGIC, 0x01, unsigned int)``: set the ``_DSM`` revision (1 or 2).
PFRU_IOC_SET_REV = iow(PFRUT_IOCTL_MAGIC, 0x01, _U32.size)
#: ``_IOW(.., 0x02, unsigned int)``: stage the capsule in the comm buffer (no argument).
PFRU_IOC_STAGE = iow(PFRUT_IOCTL_MAGIC, 0x02, _U32.size)
#: ``_IOW(.., 0x03, unsigned int)``: activate the staged capsule (no argument).
PFRU_IOC_ACTIVATE = iow(PFRUT_IOCTL_MAGIC, 0x03, _U32.size)
#: ``_IOW(.., 0x04, unsigned int)``: stage and activate in one step (no argument).
PFRU_IOC_STAGE_ACTIVATE = iow(PFRUT_IOCTL_MAGIC, 0x04, _U32.size)
#: ``_IOR(.., 0x05, struct pfru_update_cap_info)``.
PFRU_IOC_QUERY_CAP = ior(PFRUT_IOCTL_MAGIC, 0x05, CAP_INFO.size)
#: ``_IOW(.., 0x06, struct pfrt_log_info)``.
PFRT_LOG_IOC_SET_INFO = iow(PFRUT_IOCTL_MAGIC, 0x06, LOG_INFO.size)
#: ``_IOR(.., 0x07, struct pfrt_log_info)``.
PFRT_LOG_IOC_GET_INFO = ior(PFRUT_IOCTL_MAGIC, 0x07, LOG_INFO.size)
#: ``_IOR(.., 0x08, struct pfrt_log_data_info)``.
PFRT_LOG_IOC_GET_DATA_INFO = ior(PFRUT_IOCTL_MAGIC, 0x08, LOG_DATA_INFO.size)

#: PFRT_LOG_IOC_SET_INFO field value that is not valid, hence ignored by the driver
#: (pfrut passes it to leave a field unchanged).
LOG_UNCHANGED = 0xFFFFFFFF

#: the telemetry mmap works in pages (pfr_telemetry.c: PAGE_ALIGNED checks).
PAGE_SIZE = 4096


class DsmStatus(IntEnum):
    """``enum pfru_dsm_status`` (pfrut.h): status word of every ``_DSM`` reply."""

    SUCCEED = 0
    FUNC_NOT_SUPPORT = 1
    INVAL_INPUT = 2
    HARDWARE_ERR = 3
    RETRY_SUGGESTED = 4
    UNKNOWN = 5
    FUNC_SPEC_ERR = 6


class UpdateType(IntEnum):
    """pfr_update.c ``PFRU_CODE_INJECT_TYPE`` / ``PFRU_DRIVER_UPDATE_TYPE``."""

    CODE_INJECTION = 1
    DRIVER_UPDATE = 2


class StartAction(IntEnum):
    """pfr_update.c ``START_STAGE`` ... (the argument of ``_DSM`` fn 3)."""

    STAGE = 0
    ACTIVATE = 1
    STAGE_ACTIVATE = 2


class LogLevel(IntEnum):
    """pfrut.h ``PFRT_LOG_ERR`` ... ``PFRT_LOG_VERB`` (3 is not a valid level)."""

    ERROR = 0
    WARNING = 1
    INFO = 2
    VERBOSE = 4


class LogType(IntEnum):
    """pfrut.h ``PFRT_LOG_EXEC_IDX`` / ``PFRT_LOG_HISTORY_IDX``."""

    EXECUTION = 0
    HISTORY = 1


#: image-type GUID of each update type.
IMAGE_TYPES = {
    UpdateType.CODE_INJECTION: CODE_INJECTION_GUID,
    UpdateType.DRIVER_UPDATE: DRIVER_UPDATE_GUID,
}

_ZERO_GUID = "00000000-0000-0000-0000-000000000000"


# ------------------------------------------------------------------ structs


class UpdateCapInfo(Frozen):
    """``struct pfru_update_cap_info`` with GUIDs as strings (EFI byte order decoded)."""

    _FIELDS = (
        "status",
        "update_cap",
        "code_type",
        "fw_version",
        "code_rt_version",
        "drv_type",
        "drv_rt_version",
        "drv_svn",
        "platform_id",
        "oem_id",
        "oem_info_len",
    )
    status: int
    update_cap: int
    code_type: str
    fw_version: int
    code_rt_version: int
    drv_type: str
    drv_rt_version: int
    drv_svn: int
    platform_id: str
    oem_id: str
    oem_info_len: int

    def __init__(
        self,
        status: int,
        update_cap: int,
        code_type: str,
        fw_version: int,
        code_rt_version: int,
        drv_type: str,
        drv_rt_version: int,
        drv_svn: int,
        platform_id: str,
        oem_id: str,
        oem_info_len: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "status", status)
        _set(self, "update_cap", update_cap)
        _set(self, "code_type", code_type)
        _set(self, "fw_version", fw_version)
        _set(self, "code_rt_version", code_rt_version)
        _set(self, "drv_type", drv_type)
        _set(self, "drv_rt_version", drv_rt_version)
        _set(self, "drv_svn", drv_svn)
        _set(self, "platform_id", platform_id)
        _set(self, "oem_id", oem_id)
        _set(self, "oem_info_len", oem_info_len)

    @classmethod
    def unpack(cls, raw: bytes | bytearray) -> UpdateCapInfo:
        """Decode the 92 bytes PFRU_IOC_QUERY_CAP returns."""
        fields = CAP_INFO.unpack(bytes(raw))
        return cls(
            status=fields[0],
            update_cap=fields[1],
            code_type=capsule.guid_from_efi(fields[2]),
            fw_version=fields[3],
            code_rt_version=fields[4],
            drv_type=capsule.guid_from_efi(fields[5]),
            drv_rt_version=fields[6],
            drv_svn=fields[7],
            platform_id=capsule.guid_from_efi(fields[8]),
            oem_id=capsule.guid_from_efi(fields[9]),
            oem_info_len=fields[10],
        )

    def pack(self) -> bytes:
        """Encode as the kernel copies it to user space."""
        return CAP_INFO.pack(
            self.status,
            self.update_cap,
            capsule.guid_to_efi(self.code_type),
            self.fw_version,
            self.code_rt_version,
            capsule.guid_to_efi(self.drv_type),
            self.drv_rt_version,
            self.drv_svn,
            capsule.guid_to_efi(self.platform_id),
            capsule.guid_to_efi(self.oem_id),
            self.oem_info_len,
        )

    def image_type(self, update_type: UpdateType) -> str:
        """The image-type GUID the firmware reports for ``update_type`` (may be zero)."""
        return self.code_type if update_type == UpdateType.CODE_INJECTION else self.drv_type

    def has_type(self, update_type: UpdateType) -> bool:
        """Whether the firmware reports a non-zero image type for ``update_type``."""
        return self.image_type(update_type) != _ZERO_GUID


class LogInfo(Frozen):
    """``struct pfrt_log_info``."""

    _FIELDS = ("log_level", "log_type", "log_revid")
    log_level: int
    log_type: int
    log_revid: int

    def __init__(self, log_level: int, log_type: int, log_revid: int) -> None:
        _set = object.__setattr__
        _set(self, "log_level", log_level)
        _set(self, "log_type", log_type)
        _set(self, "log_revid", log_revid)

    @classmethod
    def unpack(cls, raw: bytes | bytearray) -> LogInfo:
        """Decode 12 bytes."""
        return cls(*LOG_INFO.unpack(bytes(raw)))

    def pack(self) -> bytes:
        """Encode 12 bytes."""
        return LOG_INFO.pack(self.log_level, self.log_type, self.log_revid)


class LogDataInfo(Frozen):
    """``struct pfrt_log_data_info`` with the lo/hi address pairs combined."""

    _FIELDS = (
        "status",
        "ext_status",
        "chunk1_addr",
        "chunk2_addr",
        "max_data_size",
        "chunk1_size",
        "chunk2_size",
        "rollover_cnt",
        "reset_cnt",
    )
    status: int
    ext_status: int
    chunk1_addr: int
    chunk2_addr: int
    max_data_size: int
    chunk1_size: int
    chunk2_size: int
    rollover_cnt: int
    reset_cnt: int

    def __init__(
        self,
        status: int,
        ext_status: int,
        chunk1_addr: int,
        chunk2_addr: int,
        max_data_size: int,
        chunk1_size: int,
        chunk2_size: int,
        rollover_cnt: int,
        reset_cnt: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "status", status)
        _set(self, "ext_status", ext_status)
        _set(self, "chunk1_addr", chunk1_addr)
        _set(self, "chunk2_addr", chunk2_addr)
        _set(self, "max_data_size", max_data_size)
        _set(self, "chunk1_size", chunk1_size)
        _set(self, "chunk2_size", chunk2_size)
        _set(self, "rollover_cnt", rollover_cnt)
        _set(self, "reset_cnt", reset_cnt)

    @classmethod
    def unpack(cls, raw: bytes | bytearray) -> LogDataInfo:
        """Decode 64 bytes (physical address = ``hi << 32 | lo``)."""
        (status, ext, c1_lo, c1_hi, c2_lo, c2_hi, size, c1, c2, roll, reset) = LOG_DATA_INFO.unpack(
            bytes(raw)
        )
        return cls(
            status,
            ext,
            (c1_hi << 32) | c1_lo,
            (c2_hi << 32) | c2_lo,
            size,
            c1,
            c2,
            roll,
            reset,
        )

    def pack(self) -> bytes:
        """Encode 64 bytes (addresses split into 32-bit halves held in u64 fields)."""
        mask = 0xFFFFFFFF
        return LOG_DATA_INFO.pack(
            self.status,
            self.ext_status,
            self.chunk1_addr & mask,
            self.chunk1_addr >> 32,
            self.chunk2_addr & mask,
            self.chunk2_addr >> 32,
            self.max_data_size,
            self.chunk1_size,
            self.chunk2_size,
            self.rollover_cnt,
            self.reset_cnt,
        )

    def same_window(self, other: LogDataInfo) -> bool:
        """Whether nothing was appended, wrapped or reset between two queries."""
        return (
            self.chunk1_addr,
            self.chunk2_addr,
            self.chunk1_size,
            self.chunk2_size,
            self.rollover_cnt,
            self.reset_cnt,
            self.max_data_size,
        ) == (
            other.chunk1_addr,
            other.chunk2_addr,
            other.chunk1_size,
            other.chunk2_size,
            other.rollover_cnt,
            other.reset_cnt,
            other.max_data_size,
        )


class PayloadHeader(Frozen):
    """``struct pfru_payload_hdr``: the PFRU header inside the FMP image."""

    _FIELDS = ("sig", "hdr_version", "hdr_size", "hw_ver", "rt_ver", "platform_id", "svn_ver")
    sig: int
    hdr_version: int
    hdr_size: int
    hw_ver: int
    rt_ver: int
    platform_id: str
    svn_ver: int

    def __init__(
        self,
        sig: int,
        hdr_version: int,
        hdr_size: int,
        hw_ver: int,
        rt_ver: int,
        platform_id: str,
        svn_ver: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "sig", sig)
        _set(self, "hdr_version", hdr_version)
        _set(self, "hdr_size", hdr_size)
        _set(self, "hw_ver", hw_ver)
        _set(self, "rt_ver", rt_ver)
        _set(self, "platform_id", platform_id)
        _set(self, "svn_ver", svn_ver)

    @classmethod
    def unpack_from(cls, data: bytes | memoryview, offset: int) -> PayloadHeader:
        """Decode 40 bytes at ``offset`` (the caller checked the bounds)."""
        sig, version, size, hw_ver, rt_ver, raw_platform, svn = PAYLOAD_HDR.unpack_from(
            data, offset
        )
        return cls(sig, version, size, hw_ver, rt_ver, capsule.guid_from_efi(raw_platform), svn)

    def pack(self) -> bytes:
        """Encode 40 bytes."""
        return PAYLOAD_HDR.pack(
            self.sig,
            self.hdr_version,
            self.hdr_size,
            self.hw_ver,
            self.rt_ver,
            capsule.guid_to_efi(self.platform_id),
            self.svn_ver,
        )


# --------------------------------------------------------------- capsule walk


class PfruCapsule(Frozen):
    """What :func:`walk_capsule` found, at the offsets the kernel uses.

    Attributes:
        update_type: from the first image header's UpdateImageTypeId.
        image_offset: where the first image header starts (as the kernel computes
            it: right after the FMP ItemOffsetList).
        auth_offset, payload_offset: where the kernel reads them.
        image_end: end of the image data (header + UpdateImageSize + vendor code).
    """

    _FIELDS = (
        "header",
        "fmp",
        "image",
        "auth",
        "payload",
        "update_type",
        "image_offset",
        "auth_offset",
        "payload_offset",
        "image_end",
    )
    header: capsule.CapsuleHeader
    fmp: capsule.FmpCapsuleHeader
    image: capsule.FmpImageHeader
    auth: capsule.ImageAuth
    payload: PayloadHeader
    update_type: UpdateType
    image_offset: int
    auth_offset: int
    payload_offset: int
    image_end: int

    def __init__(
        self,
        header: capsule.CapsuleHeader,
        fmp: capsule.FmpCapsuleHeader,
        image: capsule.FmpImageHeader,
        auth: capsule.ImageAuth,
        payload: PayloadHeader,
        update_type: UpdateType,
        image_offset: int,
        auth_offset: int,
        payload_offset: int,
        image_end: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "header", header)
        _set(self, "fmp", fmp)
        _set(self, "image", image)
        _set(self, "auth", auth)
        _set(self, "payload", payload)
        _set(self, "update_type", update_type)
        _set(self, "image_offset", image_offset)
        _set(self, "auth_offset", auth_offset)
        _set(self, "payload_offset", payload_offset)
        _set(self, "image_end", image_end)


class StricterThanKernel(CapsuleError):
    """A capsule livefw refuses although the kernel's ``applicable_image()`` may accept it.

    drivers/acpi/pfr_update.c ``applicable_image()`` checks no length and no count: it
    follows HeaderSize, the FMP item counts and the certificate length wherever they
    point inside the communication buffer (bytes past the capsule are whatever an
    earlier write left there). livefw refuses such capsules so that the firmware never
    parses bytes that are not part of the file; docs/kernel.md lists each check.
    """


def walk_capsule(data: bytes | memoryview) -> PfruCapsule:
    """Walk a capsule as pfr_update.c ``applicable_image()`` does, with bounds.

    The kernel reads EFI_CAPSULE_HEADER, skips ``HeaderSize``; skips the FMP capsule
    header and its ItemOffsetList (8 + 8 x (drivers + payloads)); checks the first
    image header's type GUID (code injection or driver update) and version (1 or 2
    only); skips EFI_FIRMWARE_IMAGE_AUTHENTICATION (8 + dwLength) and finds
    ``pfru_payload_hdr``. It checks no length on the way; this walk checks every one
    and also that the authentication and payload header lie inside the image.

    Raises:
        CapsuleError: the image type or header version the kernel refuses too.
        StricterThanKernel: a check the kernel does not make (a length, a count).
    """
    try:
        header = capsule.parse_capsule_header(data)
        fmp = capsule.parse_fmp_capsule_header(data, header.header_size)
    except StricterThanKernel:
        raise
    except CapsuleError as error:
        raise StricterThanKernel(str(error)) from error
    image_offset = header.header_size + fmp.size
    if fmp.payloads < 1:
        raise StricterThanKernel("the FMP capsule carries no payload (PayloadItemCount is 0)")
    # the kernel reads the type before the version; do the same so errors agree.
    if image_offset + 20 > len(data):
        raise StricterThanKernel(
            f"the FMP image header at byte {image_offset} runs past the end of the "
            f"{len(data)}-byte file: the capsule is truncated"
        )
    version = _U32.unpack_from(data, image_offset)[0]
    image_type = capsule.guid_from_efi(data[image_offset + 4 : image_offset + 20])
    update_type = next((t for t, guid in IMAGE_TYPES.items() if guid == image_type), None)
    if update_type is None:
        raise CapsuleError(
            f"the image type {image_type} is neither PFRU code injection "
            f"({CODE_INJECTION_GUID}) nor driver update ({DRIVER_UPDATE_GUID}): "
            "this is not a PFRU capsule"
        )
    if version == 3:
        raise CapsuleError(
            "the FMP image header is version 3, which the kernel's PFRU driver refuses "
            "(it accepts versions 1 and 2 only); the capsule must be rebuilt with a "
            "version 1 or 2 image header"
        )
    if version not in (1, 2):
        raise CapsuleError(f"the FMP image header version {version} is not 1 or 2")
    try:
        image = capsule.parse_fmp_image_header(data, image_offset)
        auth_offset = image_offset + image.size
        image_end = auth_offset + image.image_size + image.vendor_code_size
        if image_end > len(data) or image_end > header.image_size:
            raise StricterThanKernel(
                f"the FMP image claims {image.image_size} bytes from byte {auth_offset} but "
                f"the capsule ends at byte {min(len(data), header.image_size)}: it is "
                "truncated"
            )
        auth = capsule.parse_image_auth(data, auth_offset)
    except StricterThanKernel:
        raise
    except CapsuleError as error:
        raise StricterThanKernel(str(error)) from error
    payload_offset = auth_offset + auth.size
    if payload_offset + PAYLOAD_HDR.size > image_end:
        raise StricterThanKernel(
            f"the PFRU payload header at byte {payload_offset} lies outside the image "
            f"(which ends at byte {image_end}): the capsule is truncated or corrupt"
        )
    payload = PayloadHeader.unpack_from(data, payload_offset)
    return PfruCapsule(
        header,
        fmp,
        image,
        auth,
        payload,
        update_type,
        image_offset,
        auth_offset,
        payload_offset,
        image_end,
    )
