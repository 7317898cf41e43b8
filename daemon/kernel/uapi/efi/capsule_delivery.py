"""How the OS asks for a capsule and learns its result: OsIndications, capsule results.

OsIndications and its bits (UEFI 2.10 §8.5.4 "Exchanging information between the OS
and Firmware"), the capsule-on-disk directory, the ``Capsule####`` result variables
(§8.5.6) and their EFI_STATUS, mapped to an ESRT last_attempt_status as fwupd does
(fu-uefi-common.c).
"""

from __future__ import annotations

import struct

from livefw.kernel.uapi.capsule import guid_from_efi, guid_to_efi
from livefw.kernel.uapi.efi.efitime import EfiTime
from livefw.kernel.uapi.efi.esrt import (
    LAST_ATTEMPT_AUTH_ERROR,
    LAST_ATTEMPT_INCORRECT_VERSION,
    LAST_ATTEMPT_INSUFFICIENT_RESOURCES,
    LAST_ATTEMPT_INVALID_FORMAT,
    LAST_ATTEMPT_SUCCESS,
    LAST_ATTEMPT_UNSUCCESSFUL,
)
from livefw.record import Frozen

__all__ = [
    "CAPSULE_LAST",
    "CAPSULE_MAX",
    "CAPSULE_ON_DISK_DIR",
    "CAPSULE_RESULT_FMP",
    "CAPSULE_RESULT_HEADER",
    "EFI_ABORTED",
    "EFI_ACCESS_DENIED",
    "EFI_BAD_BUFFER_SIZE",
    "EFI_BUFFER_TOO_SMALL",
    "EFI_DEVICE_ERROR",
    "EFI_ERROR_BIT",
    "EFI_INCOMPATIBLE_VERSION",
    "EFI_INVALID_PARAMETER",
    "EFI_LOAD_ERROR",
    "EFI_OUT_OF_RESOURCES",
    "EFI_SECURITY_VIOLATION",
    "EFI_SUCCESS",
    "EFI_UNSUPPORTED",
    "EFI_VOLUME_FULL",
    "OS_INDICATIONS",
    "OS_INDICATIONS_BOOT_TO_FW_UI",
    "OS_INDICATIONS_CAPSULE_RESULT_VAR_SUPPORTED",
    "OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED",
    "OS_INDICATIONS_FMP_CAPSULE_SUPPORTED",
    "OS_INDICATIONS_JSON_CONFIG_DATA_REFRESH",
    "OS_INDICATIONS_START_OS_RECOVERY",
    "OS_INDICATIONS_START_PLATFORM_RECOVERY",
    "OS_INDICATIONS_SUPPORTED",
    "OS_INDICATIONS_TIMESTAMP_REVOCATION",
    "CapsuleResult",
    "capsule_result_name",
    "efi_status_to_last_attempt",
]

OS_INDICATIONS = "OsIndications"
OS_INDICATIONS_SUPPORTED = "OsIndicationsSupported"

#: EFI_OS_INDICATIONS_* (UEFI 2.10 §8.5.4 "Exchanging information between the OS and Firmware").
OS_INDICATIONS_BOOT_TO_FW_UI = 0x01
OS_INDICATIONS_TIMESTAMP_REVOCATION = 0x02
OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED = 0x04
OS_INDICATIONS_FMP_CAPSULE_SUPPORTED = 0x08
OS_INDICATIONS_CAPSULE_RESULT_VAR_SUPPORTED = 0x10
OS_INDICATIONS_START_OS_RECOVERY = 0x20
OS_INDICATIONS_START_PLATFORM_RECOVERY = 0x40
OS_INDICATIONS_JSON_CONFIG_DATA_REFRESH = 0x80

#: capsule on disk: files the firmware scans on the ESP of the active boot option.
CAPSULE_ON_DISK_DIR = "EFI/UpdateCapsule"

CAPSULE_LAST = "CapsuleLast"
CAPSULE_MAX = "CapsuleMax"
#: EFI_CAPSULE_RESULT_VARIABLE_HEADER: VariableTotalSize, Reserved, CapsuleGuid,
#: CapsuleProcessed (EFI_TIME), CapsuleStatus (EFI_STATUS, u64).
CAPSULE_RESULT_HEADER = struct.Struct("<II16s16sQ")
#: EFI_CAPSULE_RESULT_VARIABLE_FMP: Version, PayloadIndex, UpdateImageIndex, UpdateImageTypeId.
CAPSULE_RESULT_FMP = struct.Struct("<HBB16s")

#: EFI_STATUS codes (UEFI Appendix D); errors have the high bit set on real firmware.
EFI_SUCCESS = 0
EFI_LOAD_ERROR = 1
EFI_INVALID_PARAMETER = 2
EFI_UNSUPPORTED = 3
EFI_BAD_BUFFER_SIZE = 4
EFI_BUFFER_TOO_SMALL = 5
EFI_DEVICE_ERROR = 7
EFI_OUT_OF_RESOURCES = 9
EFI_VOLUME_FULL = 11
EFI_ACCESS_DENIED = 15
EFI_ABORTED = 21
EFI_INCOMPATIBLE_VERSION = 25
EFI_SECURITY_VIOLATION = 26
EFI_ERROR_BIT = 1 << 63


def capsule_result_name(number: int) -> str:
    """``Capsule####`` (four uppercase hex digits)."""
    return f"Capsule{number:04X}"


def efi_status_to_last_attempt(status: int) -> int:
    """Map a capsule-on-disk CapsuleStatus to an ESRT status as fwupd does (fu-uefi-common.c).

    Bit 63 (the EFI error bit) is masked off first, as real firmware sets it.
    """
    code = status & ~EFI_ERROR_BIT
    if code == EFI_SUCCESS:
        return LAST_ATTEMPT_SUCCESS
    if code in (EFI_OUT_OF_RESOURCES, EFI_VOLUME_FULL):
        return LAST_ATTEMPT_INSUFFICIENT_RESOURCES
    if code == EFI_INCOMPATIBLE_VERSION:
        return LAST_ATTEMPT_INCORRECT_VERSION
    if code in (
        EFI_LOAD_ERROR,
        EFI_UNSUPPORTED,
        EFI_BAD_BUFFER_SIZE,
        EFI_INVALID_PARAMETER,
        EFI_BUFFER_TOO_SMALL,
    ):
        return LAST_ATTEMPT_INVALID_FORMAT
    if code in (EFI_ACCESS_DENIED, EFI_SECURITY_VIOLATION):
        return LAST_ATTEMPT_AUTH_ERROR
    return LAST_ATTEMPT_UNSUCCESSFUL


class CapsuleResult(Frozen):
    """EFI_CAPSULE_RESULT_VARIABLE_HEADER (+ the FMP part when present)."""

    _FIELDS = ("capsule_guid", "processed", "status", "fmp")
    capsule_guid: str
    processed: EfiTime
    status: int
    fmp: tuple[int, int, int, str] | None = None

    def __init__(
        self,
        capsule_guid: str,
        processed: EfiTime,
        status: int,
        fmp: tuple[int, int, int, str] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "capsule_guid", capsule_guid)
        _set(self, "processed", processed)
        _set(self, "status", status)
        _set(self, "fmp", fmp)

    def pack(self) -> bytes:
        """Header (with VariableTotalSize) and the optional FMP part."""
        tail = b""
        if self.fmp is not None:
            version, payload_index, image_index, type_id = self.fmp
            tail = CAPSULE_RESULT_FMP.pack(
                version, payload_index, image_index, guid_to_efi(type_id)
            )
        total = CAPSULE_RESULT_HEADER.size + len(tail)
        return (
            CAPSULE_RESULT_HEADER.pack(
                total, 0, guid_to_efi(self.capsule_guid), self.processed.pack(), self.status
            )
            + tail
        )

    @classmethod
    def unpack(cls, data: bytes) -> CapsuleResult:
        """Decode; raises ValueError when truncated."""
        if len(data) < CAPSULE_RESULT_HEADER.size:
            raise ValueError("capsule result variable truncated")
        total, _, guid, stamp, status = CAPSULE_RESULT_HEADER.unpack_from(data)
        fmp = None
        end = CAPSULE_RESULT_HEADER.size + CAPSULE_RESULT_FMP.size
        if total >= end and len(data) >= end:
            version, payload_index, image_index, type_id = CAPSULE_RESULT_FMP.unpack_from(
                data, CAPSULE_RESULT_HEADER.size
            )
            fmp = (version, payload_index, image_index, guid_from_efi(type_id))
        return cls(guid_from_efi(guid), EfiTime.unpack(stamp), status, fmp)
