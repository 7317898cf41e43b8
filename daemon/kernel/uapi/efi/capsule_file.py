"""What a UEFI capsule file carries: its images, their authentication and version.

The walk over an EFI_CAPSULE_HEADER, its FMP items and each image's
EFI_FIRMWARE_IMAGE_AUTHENTICATION (codec in :mod:`livefw.kernel.uapi.capsule`), and
the FMP_PAYLOAD_HEADER (EDK2) that carries an image's version; a file without a known
capsule GUID is a bare payload, as in fwupd's fu-uefi-capsule-device.c.
"""

from __future__ import annotations

import struct

from livefw.kernel.uapi.capsule import (
    FMP_CAPSULE_GUID,
    CapsuleError,
    CapsuleHeader,
    ImageAuth,
    guid_from_efi,
    parse_capsule_header,
    parse_fmp_capsule_header,
    parse_fmp_image_header,
    parse_image_auth,
)
from livefw.record import Frozen

__all__ = [
    "CAPSULE_SUPPORT_AUTHENTICATION",
    "FMP_PAYLOAD_HEADER",
    "FMP_PAYLOAD_HEADER_SIGNATURE",
    "CapsuleImage",
    "CapsuleInfo",
    "FmpPayloadHeader",
    "inspect_capsule",
]

#: EDK2 FmpDevicePkg/Include/Library/FmpPayloadHeaderLib.h: FMP_PAYLOAD_HEADER
#: (Signature "MSS1", HeaderSize, FwVersion, LowestSupportedVersion) at the start of
#: an FMP image (after its authentication); how EDK2 capsules carry their version.
FMP_PAYLOAD_HEADER = struct.Struct("<IIII")
FMP_PAYLOAD_HEADER_SIGNATURE = 0x3153534D  # SIGNATURE_32('M', 'S', 'S', '1')


class FmpPayloadHeader(Frozen):
    """FMP_PAYLOAD_HEADER v1."""

    _FIELDS = ("fw_version", "lowest_supported_version", "header_size")
    fw_version: int
    lowest_supported_version: int
    header_size: int = FMP_PAYLOAD_HEADER.size

    def __init__(
        self,
        fw_version: int,
        lowest_supported_version: int,
        header_size: int = FMP_PAYLOAD_HEADER.size,
    ) -> None:
        _set = object.__setattr__
        _set(self, "fw_version", fw_version)
        _set(self, "lowest_supported_version", lowest_supported_version)
        _set(self, "header_size", header_size)

    def pack(self) -> bytes:
        """16 bytes."""
        return FMP_PAYLOAD_HEADER.pack(
            FMP_PAYLOAD_HEADER_SIGNATURE,
            self.header_size,
            self.fw_version,
            self.lowest_supported_version,
        )

    @classmethod
    def find(cls, data: bytes | memoryview, offset: int = 0) -> FmpPayloadHeader | None:
        """The header at ``offset``, or None when there is none (no signature)."""
        if offset < 0 or len(data) < offset + FMP_PAYLOAD_HEADER.size:
            return None
        signature, size, version, lowest = FMP_PAYLOAD_HEADER.unpack_from(data, offset)
        if signature != FMP_PAYLOAD_HEADER_SIGNATURE or size < FMP_PAYLOAD_HEADER.size:
            return None
        return cls(version, lowest, size)


# ------------------------------------------------------------ capsule walk

#: ImageCapsuleSupport bit 0 (FmpCapsule.h, v3 image headers).
CAPSULE_SUPPORT_AUTHENTICATION = 0x1


class CapsuleImage(Frozen):
    """One firmware image a capsule carries.

    Attributes:
        image_type: the ESRT fw_class it is for (FMP UpdateImageTypeId, or the
            CapsuleGuid of a non-FMP capsule; ``""`` for a payload without header).
        auth: its EFI_FIRMWARE_IMAGE_AUTHENTICATION, if it has one.
        payload: the image after the authentication (starts with the FMP payload
            header when it has one): a read-only view into the capsule walked.
        version, lowest: from the FMP payload header, or None.
    """

    _FIELDS = ("image_type", "hardware_instance", "auth", "payload", "version", "lowest")
    image_type: str
    hardware_instance: int
    auth: ImageAuth | None
    payload: bytes | memoryview
    version: int | None
    lowest: int | None

    def __init__(
        self,
        image_type: str,
        hardware_instance: int,
        auth: ImageAuth | None,
        payload: bytes | memoryview,
        version: int | None,
        lowest: int | None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "image_type", image_type)
        _set(self, "hardware_instance", hardware_instance)
        _set(self, "auth", auth)
        _set(self, "payload", payload)
        _set(self, "version", version)
        _set(self, "lowest", lowest)


class CapsuleInfo(Frozen):
    """What :func:`inspect_capsule` found.

    Attributes:
        header: the EFI_CAPSULE_HEADER, or None for a bare payload (fwupd prepends a
            synthetic header to those).
    """

    _FIELDS = ("header", "fmp", "images")
    header: CapsuleHeader | None
    fmp: bool
    images: tuple[CapsuleImage, ...]

    def __init__(
        self, header: CapsuleHeader | None, fmp: bool, images: tuple[CapsuleImage, ...]
    ) -> None:
        _set = object.__setattr__
        _set(self, "header", header)
        _set(self, "fmp", fmp)
        _set(self, "images", images)


def _image(
    image_type: str, instance: int, auth: ImageAuth | None, payload: bytes | memoryview
) -> CapsuleImage:
    found = FmpPayloadHeader.find(payload)
    return CapsuleImage(
        image_type,
        instance,
        auth,
        payload,
        found.fw_version if found else None,
        found.lowest_supported_version if found else None,
    )


def inspect_capsule(data: bytes | memoryview, fw_classes: tuple[str, ...] = ()) -> CapsuleInfo:
    """Walk a capsule file: its header, FMP items, authentication and payload header.

    A file whose first 16 bytes are neither the FMP capsule GUID nor one of
    ``fw_classes`` is a bare payload (fwupd's rule in fu-uefi-capsule-device.c: it
    then prepends a synthetic EFI_CAPSULE_HEADER).

    Nothing is copied: each image's ``payload`` is a read-only view into ``data``
    (a 64 MiB capsule was copied twice per walk, and walked after every staging
    to read its version back: bench/NOTES.md, staging).

    Raises:
        CapsuleError: a length or offset that does not fit the file.
    """
    view = memoryview(data).toreadonly()
    first = guid_from_efi(view[:16]) if len(view) >= 16 else ""
    if first != FMP_CAPSULE_GUID and first not in fw_classes:
        return CapsuleInfo(None, False, (_image("", 0, None, view),))
    header = parse_capsule_header(view)
    body = view[: header.image_size]
    if header.guid != FMP_CAPSULE_GUID:
        return CapsuleInfo(
            header, False, (_image(header.guid, 0, None, body[header.header_size :]),)
        )
    fmp = parse_fmp_capsule_header(body, header.header_size)
    if fmp.payloads == 0:
        raise CapsuleError("the FMP capsule carries no payload")
    images = []
    for relative in fmp.offsets[fmp.embedded_drivers :]:
        start = header.header_size + relative
        image = parse_fmp_image_header(body, start)
        data_at = start + image.size
        if data_at + image.image_size > len(body):
            raise CapsuleError(
                f"FMP image {image.image_index} needs {image.image_size} bytes at {data_at} "
                f"but the capsule has {len(body)}: truncated or corrupt"
            )
        blob = body[data_at : data_at + image.image_size]
        auth = None
        if image.version < 3 or image.capsule_support & CAPSULE_SUPPORT_AUTHENTICATION:
            auth = parse_image_auth(blob, 0)
            blob = blob[auth.size :]
        images.append(_image(image.image_type, image.hardware_instance, auth, blob))
    return CapsuleInfo(header, True, tuple(images))
