"""EFI capsule and FMP (Firmware Management Protocol) capsule structures.

Shared by the PFRU and UEFI-capsule code. Source: the kernel's
``include/linux/efi.h`` (``efi_capsule_header_t``, ``struct
efi_manage_capsule_header``, ``struct efi_manage_capsule_image_header``, ``struct
efi_image_auth``, used by ``drivers/acpi/pfr_update.c`` ``valid_version()``),
UEFI 2.10 §23.3 "Delivering Capsules Containing Updates to Firmware Management
Protocol" (the FMP capsule format) and §8.5.3 "Update Capsule"
(EFI_CAPSULE_HEADER). All integers are little-endian; every GUID in these
structures is in EFI (mixed-endian) byte order: the first three fields
little-endian, as the kernel's ``efi_guid_t``.

The parsers never trust a length field: every offset is checked against the
buffer and a :class:`CapsuleError` (a ``ValueError``) names the field that is out
of bounds, so a truncated or corrupt file is refused before anything uses it.
"""

from __future__ import annotations

import struct
import uuid

from livefw.record import Frozen

__all__ = [
    "CAPSULE_FLAG_INITIATE_RESET",
    "CAPSULE_FLAG_PERSIST_ACROSS_RESET",
    "CAPSULE_FLAG_POPULATE_SYSTEM_TABLE",
    "CAPSULE_HEADER",
    "CERT_TYPE_PKCS7_GUID",
    "FMP_CAPSULE_GUID",
    "FMP_CAPSULE_HEADER",
    "FMP_IMAGE_HEADER_SIZES",
    "IMAGE_AUTH",
    "WIN_CERT_REVISION",
    "WIN_CERT_TYPE_EFI_GUID",
    "CapsuleError",
    "CapsuleHeader",
    "FmpCapsuleHeader",
    "FmpImageHeader",
    "ImageAuth",
    "guid_from_efi",
    "guid_to_efi",
    "pack_capsule_header",
    "pack_fmp_capsule_header",
    "pack_fmp_image_header",
    "pack_image_auth",
    "parse_capsule_header",
    "parse_fmp_capsule_header",
    "parse_fmp_image_header",
    "parse_image_auth",
]

#: EFI_CAPSULE_HEADER: CapsuleGuid, HeaderSize, Flags, CapsuleImageSize (28 bytes).
CAPSULE_HEADER = struct.Struct("<16sIII")
#: EFI_FIRMWARE_MANAGEMENT_CAPSULE_HEADER without ItemOffsetList: Version,
#: EmbeddedDriverCount, PayloadItemCount (8 bytes); then n x u64 offsets.
FMP_CAPSULE_HEADER = struct.Struct("<IHH")
_OFFSET = struct.Struct("<Q")
#: EFI_FIRMWARE_MANAGEMENT_CAPSULE_IMAGE_HEADER v3 (48 bytes): Version,
#: UpdateImageTypeId, UpdateImageIndex, reserved[3], UpdateImageSize,
#: UpdateVendorCodeSize, UpdateHardwareInstance (v2+), ImageCapsuleSupport (v3+).
_IMAGE_HEADER_V3 = struct.Struct("<I16sB3xIIQQ")
#: size of the image header by version (v1 lacks the last two u64, v2 the last one).
FMP_IMAGE_HEADER_SIZES = {1: 32, 2: 40, 3: 48}
#: EFI_FIRMWARE_IMAGE_AUTHENTICATION up to CertData: MonotonicCount,
#: WIN_CERTIFICATE{dwLength, wRevision, wCertificateType}, CertType (32 bytes).
IMAGE_AUTH = struct.Struct("<QIHH16s")
#: WIN_CERTIFICATE header (dwLength, wRevision, wCertificateType) plus CertType.
_WIN_CERT_UEFI_GUID_HEADER = 8 + 16

#: EFI_FIRMWARE_MANAGEMENT_CAPSULE_ID_GUID (UEFI 2.10 §23.3).
FMP_CAPSULE_GUID = "6dcbd5ed-e82d-4c44-bda1-7194199ad92a"
#: EFI_CERT_TYPE_PKCS7_GUID (UEFI 2.10 §32.2.4 "Code Definitions").
CERT_TYPE_PKCS7_GUID = "4aafd29d-68df-49ee-8aa9-347d375665a7"
#: WIN_CERT_TYPE_EFI_GUID and WIN_CERT_REVISION 2.0 (UEFI 2.10 §32.2.4).
WIN_CERT_TYPE_EFI_GUID = 0x0EF1
WIN_CERT_REVISION = 0x0200

#: EFI_CAPSULE_HEADER.Flags (UEFI 2.10 §8.5.3 "Update Capsule"; include/linux/efi.h
#: EFI_CAPSULE_PERSIST_ACROSS_RESET and siblings).
CAPSULE_FLAG_PERSIST_ACROSS_RESET = 0x00010000
CAPSULE_FLAG_POPULATE_SYSTEM_TABLE = 0x00020000
CAPSULE_FLAG_INITIATE_RESET = 0x00040000


class CapsuleError(ValueError):
    """A capsule structure is truncated, out of bounds or of an unknown version."""


def guid_to_efi(text: str) -> bytes:
    """A GUID string as the 16 bytes EFI structures hold (mixed-endian)."""
    return uuid.UUID(text).bytes_le


def guid_from_efi(raw: bytes | memoryview) -> str:
    """16 bytes in EFI order as the usual lowercase GUID string."""
    return str(uuid.UUID(bytes_le=bytes(raw)))


def _need(data: bytes | memoryview, offset: int, size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise CapsuleError(
            f"{what} at byte {offset} needs {size} bytes but the file has {len(data)}: "
            "the capsule is truncated or corrupt"
        )


class CapsuleHeader(Frozen):
    """EFI_CAPSULE_HEADER."""

    _FIELDS = ("guid", "header_size", "flags", "image_size")
    guid: str
    header_size: int
    flags: int
    image_size: int

    def __init__(self, guid: str, header_size: int, flags: int, image_size: int) -> None:
        _set = object.__setattr__
        _set(self, "guid", guid)
        _set(self, "header_size", header_size)
        _set(self, "flags", flags)
        _set(self, "image_size", image_size)


def parse_capsule_header(data: bytes | memoryview) -> CapsuleHeader:
    """Parse and bounds-check EFI_CAPSULE_HEADER at offset 0.

    Raises:
        CapsuleError: shorter than 28 bytes, HeaderSize below 28 or beyond the file,
            CapsuleImageSize beyond the file or smaller than HeaderSize.
    """
    _need(data, 0, CAPSULE_HEADER.size, "EFI_CAPSULE_HEADER")
    raw_guid, header_size, flags, image_size = CAPSULE_HEADER.unpack_from(data, 0)
    if header_size < CAPSULE_HEADER.size:
        raise CapsuleError(f"EFI_CAPSULE_HEADER.HeaderSize is {header_size}, below 28 bytes")
    if header_size > len(data):
        raise CapsuleError(
            f"EFI_CAPSULE_HEADER.HeaderSize is {header_size} but the file has {len(data)} bytes"
        )
    if image_size < header_size or image_size > len(data):
        raise CapsuleError(
            f"EFI_CAPSULE_HEADER.CapsuleImageSize is {image_size} but the file has "
            f"{len(data)} bytes: the capsule is truncated or corrupt"
        )
    return CapsuleHeader(guid_from_efi(raw_guid), header_size, flags, image_size)


def pack_capsule_header(guid: str, header_size: int, flags: int, image_size: int) -> bytes:
    """EFI_CAPSULE_HEADER padded with zeros to ``header_size``."""
    head = CAPSULE_HEADER.pack(guid_to_efi(guid), header_size, flags, image_size)
    return head + bytes(max(0, header_size - len(head)))


class FmpCapsuleHeader(Frozen):
    """EFI_FIRMWARE_MANAGEMENT_CAPSULE_HEADER.

    Attributes:
        size: bytes taken by the header including ItemOffsetList.
    """

    _FIELDS = ("version", "embedded_drivers", "payloads", "offsets", "size")
    version: int
    embedded_drivers: int
    payloads: int
    offsets: tuple[int, ...]
    size: int

    def __init__(
        self,
        version: int,
        embedded_drivers: int,
        payloads: int,
        offsets: tuple[int, ...],
        size: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "version", version)
        _set(self, "embedded_drivers", embedded_drivers)
        _set(self, "payloads", payloads)
        _set(self, "offsets", offsets)
        _set(self, "size", size)


def parse_fmp_capsule_header(data: bytes | memoryview, offset: int) -> FmpCapsuleHeader:
    """Parse EFI_FIRMWARE_MANAGEMENT_CAPSULE_HEADER and its ItemOffsetList.

    Raises:
        CapsuleError: the header or the offset list runs past the file.
    """
    _need(data, offset, FMP_CAPSULE_HEADER.size, "EFI_FIRMWARE_MANAGEMENT_CAPSULE_HEADER")
    version, drivers, payloads = FMP_CAPSULE_HEADER.unpack_from(data, offset)
    count = drivers + payloads
    list_at = offset + FMP_CAPSULE_HEADER.size
    _need(data, list_at, count * _OFFSET.size, "FMP ItemOffsetList")
    offsets = tuple(
        _OFFSET.unpack_from(data, list_at + index * _OFFSET.size)[0] for index in range(count)
    )
    return FmpCapsuleHeader(
        version, drivers, payloads, offsets, FMP_CAPSULE_HEADER.size + count * _OFFSET.size
    )


def pack_fmp_capsule_header(
    offsets: list[int], *, embedded_drivers: int = 0, version: int = 1
) -> bytes:
    """The FMP capsule header with ItemOffsetList (payload count = the rest)."""
    payloads = len(offsets) - embedded_drivers
    head = FMP_CAPSULE_HEADER.pack(version, embedded_drivers, payloads)
    return head + b"".join(_OFFSET.pack(value) for value in offsets)


class FmpImageHeader(Frozen):
    """EFI_FIRMWARE_MANAGEMENT_CAPSULE_IMAGE_HEADER (any version).

    Attributes:
        size: the header's size for its version (32, 40 or 48).
        hardware_instance: 0 for v1; capsule_support: 0 below v3.
    """

    _FIELDS = (
        "version",
        "image_type",
        "image_index",
        "image_size",
        "vendor_code_size",
        "hardware_instance",
        "capsule_support",
        "size",
    )
    version: int
    image_type: str
    image_index: int
    image_size: int
    vendor_code_size: int
    hardware_instance: int
    capsule_support: int
    size: int

    def __init__(
        self,
        version: int,
        image_type: str,
        image_index: int,
        image_size: int,
        vendor_code_size: int,
        hardware_instance: int,
        capsule_support: int,
        size: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "version", version)
        _set(self, "image_type", image_type)
        _set(self, "image_index", image_index)
        _set(self, "image_size", image_size)
        _set(self, "vendor_code_size", vendor_code_size)
        _set(self, "hardware_instance", hardware_instance)
        _set(self, "capsule_support", capsule_support)
        _set(self, "size", size)


def parse_fmp_image_header(data: bytes | memoryview, offset: int) -> FmpImageHeader:
    """Parse an FMP image header of version 1, 2 or 3.

    Raises:
        CapsuleError: unknown version, or the header runs past the file.
    """
    _need(data, offset, 4, "FMP image header version")
    (version,) = struct.unpack_from("<I", data, offset)
    size = FMP_IMAGE_HEADER_SIZES.get(version)
    if size is None:
        raise CapsuleError(f"FMP image header version {version} is unknown (known: 1, 2, 3)")
    _need(data, offset, size, f"FMP image header v{version}")
    padded = bytes(data[offset : offset + size]) + bytes(_IMAGE_HEADER_V3.size - size)
    _, raw_type, index, image_size, vendor_size, instance, support = _IMAGE_HEADER_V3.unpack(padded)
    return FmpImageHeader(
        version, guid_from_efi(raw_type), index, image_size, vendor_size, instance, support, size
    )


def pack_fmp_image_header(
    version: int,
    image_type: str,
    image_size: int,
    *,
    image_index: int = 1,
    vendor_code_size: int = 0,
    hardware_instance: int = 0,
    capsule_support: int = 0,
) -> bytes:
    """An FMP image header of ``version`` (1, 2 or 3; other values pack as v3 size)."""
    full = _IMAGE_HEADER_V3.pack(
        version,
        guid_to_efi(image_type),
        image_index,
        image_size,
        vendor_code_size,
        hardware_instance,
        capsule_support,
    )
    return full[: FMP_IMAGE_HEADER_SIZES.get(version, _IMAGE_HEADER_V3.size)]


class ImageAuth(Frozen):
    """EFI_FIRMWARE_IMAGE_AUTHENTICATION.

    Attributes:
        cert_length: WIN_CERTIFICATE.dwLength (header, CertType and CertData).
        size: bytes taken by the whole structure (8 + cert_length).
    """

    _FIELDS = (
        "monotonic_count",
        "cert_length",
        "revision",
        "cert_type",
        "cert_guid",
        "cert_data",
        "size",
    )
    monotonic_count: int
    cert_length: int
    revision: int
    cert_type: int
    cert_guid: str
    cert_data: bytes
    size: int

    def __init__(
        self,
        monotonic_count: int,
        cert_length: int,
        revision: int,
        cert_type: int,
        cert_guid: str,
        cert_data: bytes,
        size: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "monotonic_count", monotonic_count)
        _set(self, "cert_length", cert_length)
        _set(self, "revision", revision)
        _set(self, "cert_type", cert_type)
        _set(self, "cert_guid", cert_guid)
        _set(self, "cert_data", cert_data)
        _set(self, "size", size)


def parse_image_auth(data: bytes | memoryview, offset: int) -> ImageAuth:
    """Parse EFI_FIRMWARE_IMAGE_AUTHENTICATION with its certificate.

    Raises:
        CapsuleError: dwLength too small for a WIN_CERTIFICATE_UEFI_GUID or past the file.
    """
    _need(data, offset, IMAGE_AUTH.size, "EFI_FIRMWARE_IMAGE_AUTHENTICATION")
    count, length, revision, cert_type, raw_guid = IMAGE_AUTH.unpack_from(data, offset)
    if length < _WIN_CERT_UEFI_GUID_HEADER:
        raise CapsuleError(
            f"WIN_CERTIFICATE.dwLength is {length}, too small for a certificate "
            f"(at least {_WIN_CERT_UEFI_GUID_HEADER} bytes)"
        )
    _need(data, offset + 8, length, "WIN_CERTIFICATE")
    data_at = offset + IMAGE_AUTH.size
    cert_data = bytes(data[data_at : offset + 8 + length])
    return ImageAuth(
        count, length, revision, cert_type, guid_from_efi(raw_guid), cert_data, 8 + length
    )


def pack_image_auth(
    monotonic_count: int,
    cert_data: bytes,
    *,
    cert_guid: str = CERT_TYPE_PKCS7_GUID,
    revision: int = WIN_CERT_REVISION,
    cert_type: int = WIN_CERT_TYPE_EFI_GUID,
) -> bytes:
    """EFI_FIRMWARE_IMAGE_AUTHENTICATION with a WIN_CERTIFICATE_UEFI_GUID."""
    length = _WIN_CERT_UEFI_GUID_HEADER + len(cert_data)
    return (
        IMAGE_AUTH.pack(monotonic_count, length, revision, cert_type, guid_to_efi(cert_guid))
        + cert_data
    )
