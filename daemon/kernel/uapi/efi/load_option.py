"""Boot manager variables: ``Boot####``, ``BootNext``, ``BootOrder`` and device paths.

EFI_LOAD_OPTION (UEFI 2.10 §3.1.3 "Load Options") and the device path nodes livefw
writes and reads (§10.3 "Device Path Nodes": Hard Drive, File Path, End), decoded as
the kernel validates them (fs/efivarfs/vars.c ``validate_load_option()``,
``validate_device_path()``); the description fwupd gives its boot entry; ESP paths
in their backslash EFI form.
"""

from __future__ import annotations

import re
import struct

from livefw.kernel.uapi.capsule import guid_from_efi, guid_to_efi
from livefw.record import FACTORY, Frozen

__all__ = [
    "BOOT_NEXT",
    "BOOT_ORDER",
    "DP_END",
    "DP_HARD_DRIVE",
    "DP_NODE_HEADER",
    "DP_SUBTYPE_END_ENTIRE",
    "DP_SUBTYPE_END_INSTANCE",
    "DP_SUBTYPE_FILE_PATH",
    "DP_SUBTYPE_HARD_DRIVE",
    "DP_TYPE_END",
    "DP_TYPE_MEDIA",
    "FWUPD_BOOT_DESCRIPTION",
    "FWUPD_BOOT_DESCRIPTION_ALT",
    "LOAD_OPTION_ACTIVE",
    "LOAD_OPTION_CATEGORY_APP",
    "LOAD_OPTION_CATEGORY_MASK",
    "LOAD_OPTION_FORCE_RECONNECT",
    "LOAD_OPTION_HEADER",
    "LOAD_OPTION_HIDDEN",
    "PART_FORMAT_GPT",
    "PART_FORMAT_MBR",
    "SIGNATURE_GUID",
    "SIGNATURE_MBR",
    "SIGNATURE_NONE",
    "DevicePathNode",
    "FilePathNode",
    "HardDriveNode",
    "LoadOption",
    "RawNode",
    "boot_var_name",
    "decode_device_path",
    "efi_path_to_esp",
    "encode_device_path",
    "esp_path_to_efi",
    "parse_boot_var_name",
]

BOOT_NEXT = "BootNext"
BOOT_ORDER = "BootOrder"

_BOOT_RE = re.compile(r"^Boot([0-9A-F]{4})$")


def boot_var_name(number: int) -> str:
    """``Boot####`` with four uppercase hex digits."""
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"boot option number out of range: {number}")
    return f"Boot{number:04X}"


def parse_boot_var_name(name: str) -> int | None:
    """The number of a ``Boot####`` name, or None for anything else (BootNext...)."""
    match = _BOOT_RE.fullmatch(name)
    return int(match.group(1), 16) if match else None


#: EFI_LOAD_OPTION attributes (UEFI 2.10 §3.1.3 "Load Options").
LOAD_OPTION_ACTIVE = 0x1
LOAD_OPTION_FORCE_RECONNECT = 0x2
LOAD_OPTION_HIDDEN = 0x8
LOAD_OPTION_CATEGORY_MASK = 0x1F00
LOAD_OPTION_CATEGORY_APP = 0x100

#: device path node types/subtypes (UEFI 2.10 §10.3 "Device Path Nodes").
DP_TYPE_MEDIA = 0x04
DP_SUBTYPE_HARD_DRIVE = 0x01
DP_SUBTYPE_FILE_PATH = 0x04
DP_TYPE_END = 0x7F
DP_SUBTYPE_END_ENTIRE = 0xFF
DP_SUBTYPE_END_INSTANCE = 0x01
DP_NODE_HEADER = struct.Struct("<BBH")
#: HARDDRIVE_DEVICE_PATH (42 bytes).
DP_HARD_DRIVE = struct.Struct("<BBHIQQ16sBB")
DP_END = b"\x7f\xff\x04\x00"
#: HD node partition format / signature type.
PART_FORMAT_MBR = 0x01
PART_FORMAT_GPT = 0x02
SIGNATURE_NONE = 0x00
SIGNATURE_MBR = 0x01
SIGNATURE_GUID = 0x02


class HardDriveNode(Frozen):
    """Media / Hard Drive device path node (GPT partition of the ESP)."""

    _FIELDS = (
        "partition_number",
        "partition_start",
        "partition_size",
        "partition_signature",
        "partition_format",
        "signature_type",
    )
    partition_number: int
    partition_start: int
    partition_size: int
    partition_signature: str
    partition_format: int = PART_FORMAT_GPT
    signature_type: int = SIGNATURE_GUID

    def __init__(
        self,
        partition_number: int,
        partition_start: int,
        partition_size: int,
        partition_signature: str,
        partition_format: int = PART_FORMAT_GPT,
        signature_type: int = SIGNATURE_GUID,
    ) -> None:
        _set = object.__setattr__
        _set(self, "partition_number", partition_number)
        _set(self, "partition_start", partition_start)
        _set(self, "partition_size", partition_size)
        _set(self, "partition_signature", partition_signature)
        _set(self, "partition_format", partition_format)
        _set(self, "signature_type", signature_type)

    def pack(self) -> bytes:
        """42 bytes."""
        return DP_HARD_DRIVE.pack(
            DP_TYPE_MEDIA,
            DP_SUBTYPE_HARD_DRIVE,
            DP_HARD_DRIVE.size,
            self.partition_number,
            self.partition_start,
            self.partition_size,
            guid_to_efi(self.partition_signature),
            self.partition_format,
            self.signature_type,
        )


class FilePathNode(Frozen):
    """Media / File Path node: a backslash path relative to the volume root."""

    _FIELDS = ("path",)
    path: str

    def __init__(self, path: str) -> None:
        _set = object.__setattr__
        _set(self, "path", path)

    def pack(self) -> bytes:
        """Header plus UTF-16LE path and a NUL character."""
        text = self.path.encode("utf-16-le") + b"\x00\x00"
        return DP_NODE_HEADER.pack(DP_TYPE_MEDIA, DP_SUBTYPE_FILE_PATH, 4 + len(text)) + text


class RawNode(Frozen):
    """Any other device path node, kept as its bytes after the header."""

    _FIELDS = ("type", "subtype", "data")
    type: int
    subtype: int
    data: bytes = b""

    def __init__(self, type: int, subtype: int, data: bytes = b"") -> None:
        _set = object.__setattr__
        _set(self, "type", type)
        _set(self, "subtype", subtype)
        _set(self, "data", data)

    def pack(self) -> bytes:
        """Header plus data."""
        return DP_NODE_HEADER.pack(self.type, self.subtype, 4 + len(self.data)) + self.data


DevicePathNode = HardDriveNode | FilePathNode | RawNode


def encode_device_path(nodes: list[DevicePathNode]) -> bytes:
    """A device path: the nodes followed by the End-of-entire-path node."""
    return b"".join(node.pack() for node in nodes) + DP_END


def decode_device_path(data: bytes) -> list[DevicePathNode]:
    """Decode a device path that must end exactly with an End-of-entire-path node.

    Raises:
        ValueError: a node shorter than its header, running past the data, a
            malformed known node, or no End node at the very end.
    """
    nodes: list[DevicePathNode] = []
    offset = 0
    while True:
        if offset + 4 > len(data):
            raise ValueError("device path ends without an End node")
        node_type, subtype, length = DP_NODE_HEADER.unpack_from(data, offset)
        if length < 4 or offset + length > len(data):
            raise ValueError(f"device path node at {offset} has a bad length {length}")
        body = bytes(data[offset + 4 : offset + length])
        if node_type == DP_TYPE_END and subtype == DP_SUBTYPE_END_ENTIRE:
            if length != 4 or offset + length != len(data):
                raise ValueError("device path has data after its End node")
            return nodes
        if node_type == DP_TYPE_MEDIA and subtype == DP_SUBTYPE_HARD_DRIVE:
            if length != DP_HARD_DRIVE.size:
                raise ValueError(f"hard drive node must be 42 bytes, not {length}")
            _, _, _, number, start, size, sig, fmt, sig_type = DP_HARD_DRIVE.unpack_from(
                data, offset
            )
            nodes.append(HardDriveNode(number, start, size, guid_from_efi(sig), fmt, sig_type))
        elif node_type == DP_TYPE_MEDIA and subtype == DP_SUBTYPE_FILE_PATH:
            if len(body) < 2 or len(body) % 2 or body[-2:] != b"\x00\x00":
                raise ValueError("file path node is not a NUL-terminated UTF-16 string")
            nodes.append(FilePathNode(body[:-2].decode("utf-16-le")))
        else:
            nodes.append(RawNode(node_type, subtype, body))
        offset += length


def _utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def _read_utf16z(data: bytes, offset: int) -> tuple[str, int]:
    """A NUL-terminated UTF-16LE string at ``offset``; returns it and the end offset."""
    index = offset
    while index + 1 < len(data):
        if data[index] == 0 and data[index + 1] == 0:
            return data[offset:index].decode("utf-16-le", "replace"), index + 2
        index += 2
    raise ValueError("description is not NUL-terminated")


#: EFI_LOAD_OPTION fixed part: Attributes, FilePathListLength.
LOAD_OPTION_HEADER = struct.Struct("<IH")


class LoadOption(Frozen):
    """EFI_LOAD_OPTION (``Boot####``)."""

    _FIELDS = ("attributes", "description", "file_path", "optional_data")
    attributes: int
    description: str
    file_path: list[DevicePathNode]
    optional_data: bytes = b""

    def __init__(
        self,
        attributes: int,
        description: str,
        file_path: list[DevicePathNode] = FACTORY,
        optional_data: bytes = b"",
    ) -> None:
        _set = object.__setattr__
        _set(self, "attributes", attributes)
        _set(self, "description", description)
        _set(self, "file_path", list() if file_path is FACTORY else file_path)
        _set(self, "optional_data", optional_data)

    def pack(self) -> bytes:
        """Header, UTF-16LE description + NUL, device path list, optional data."""
        path = encode_device_path(self.file_path)
        return (
            LOAD_OPTION_HEADER.pack(self.attributes, len(path))
            + _utf16z(self.description)
            + path
            + self.optional_data
        )

    @classmethod
    def unpack(cls, data: bytes) -> LoadOption:
        """Decode as the kernel validates it; raises ValueError when malformed."""
        if len(data) < 8:
            raise ValueError("load option shorter than 8 bytes")
        attributes, path_length = LOAD_OPTION_HEADER.unpack_from(data)
        description, offset = _read_utf16z(data, LOAD_OPTION_HEADER.size)
        if offset + path_length > len(data):
            raise ValueError("load option file path list runs past the variable")
        nodes = decode_device_path(bytes(data[offset : offset + path_length]))
        return cls(attributes, description, nodes, bytes(data[offset + path_length :]))

    def file_path_text(self) -> str:
        """The File Path node's path, or ``""``."""
        return next((n.path for n in self.file_path if isinstance(n, FilePathNode)), "")


#: the description fwupd gives its boot entry (fu-uefi-bootmgr.c).
FWUPD_BOOT_DESCRIPTION = "Linux Firmware Updater"
#: the Lenovo quirk's spelling.
FWUPD_BOOT_DESCRIPTION_ALT = "Linux-Firmware-Updater"


def esp_path_to_efi(path: str) -> str:
    """Turn an ESP-relative path (``EFI/debian/fw/x.cap``) into a backslash EFI path."""
    return "\\" + path.strip("/").replace("/", "\\")


def efi_path_to_esp(path: str) -> str:
    """Inverse of :func:`esp_path_to_efi` (relative to the ESP root)."""
    return path.replace("\\", "/").strip("/")
