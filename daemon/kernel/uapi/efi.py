"""UEFI ESRT, efivarfs, boot variables and fwupd's UPDATE_INFO.

Sources: ``drivers/firmware/efi/esrt.c`` and
``Documentation/ABI/testing/sysfs-firmware-efi-esrt`` (ESRT files); ``fs/efivarfs/``
(``file.c`` ``efivarfs_file_write()``: one write is one SetVariable; ``inode.c``
``efivarfs_create()``/``efivarfs_unlink()``; ``vars.c`` ``efivar_validate()`` and
``efivar_variable_is_removable()``: load-option validation and which files are
mutable; in ``drivers/firmware/efi/vars.c`` before the move to efivarfs); ``include/linux/efi.h``
(attributes, GUIDs); UEFI 2.10 §3.1.3 "Load Options" (EFI_LOAD_OPTION), §10.3 "Device
Path Nodes", §8.5.4 "Exchanging information between the OS and Firmware"
(OsIndications), §8.5.6 (capsule result variables); fwupd-efi ``efi/fwup-efi.h``
(UPDATE_INFO). docs/kernel.md, section "UEFI: ESRT, efivarfs, boot variables", lists
each kernel behaviour with its source. GUIDs are in EFI byte order on the wire (the
first three fields little-endian: the kernel's ``efi_guid_t``, include/linux/efi.h).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from livefw.kernel.uapi.capsule import (
    FMP_CAPSULE_GUID,
    CapsuleError,
    CapsuleHeader,
    ImageAuth,
    guid_from_efi,
    guid_to_efi,
    parse_capsule_header,
    parse_fmp_capsule_header,
    parse_fmp_image_header,
    parse_image_auth,
)

# ------------------------------------------------------------------------ paths

EFI_DIR = "sys/firmware/efi"
#: drivers/firmware/efi/esrt.c: the ESRT kobject below the EFI kobject.
ESRT_DIR = "sys/firmware/efi/esrt"
ESRT_ENTRIES = "sys/firmware/efi/esrt/entries"
ESRT_RESOURCE_COUNT = "fw_resource_count"
ESRT_RESOURCE_COUNT_MAX = "fw_resource_count_max"
ESRT_RESOURCE_VERSION = "fw_resource_version"
#: the kernel refuses ESRTs with more entries (esrt.c).
ESRT_MAX_ENTRIES = 128
#: the only ESRT version the kernel exposes (esrt.c ESRT_FIRMWARE_RESOURCE_VERSION).
ESRT_VERSION = 1
#: files of each ``entries/entry<N>`` directory, all mode 0400 (esrt.c).
ESRT_ENTRY_FILES = (
    "fw_class",
    "fw_type",
    "fw_version",
    "lowest_supported_fw_version",
    "capsule_flags",
    "last_attempt_version",
    "last_attempt_status",
)
#: efivarfs mount point (fs/efivarfs/super.c, mounted by systemd).
EFIVARS_DIR = "sys/firmware/efi/efivars"
#: "64" or "32": the firmware's word size (drivers/firmware/efi/efi.c).
FW_PLATFORM_SIZE = "sys/firmware/efi/fw_platform_size"
#: Xen: drivers/xen/sys-hypervisor.c ("xen") and xenfs capabilities ("control_d").
HYPERVISOR_TYPE = "sys/hypervisor/type"
#: the running kernel's release (kernel/sysctl.c -> proc/sys/kernel/osrelease).
OSRELEASE = "proc/sys/kernel/osrelease"
XEN_CAPABILITIES = "proc/xen/capabilities"
#: where Debian's fwupd-efi / fwupd-unsigned packages install the loaders.
FWUPD_EFI_DIRS = ("usr/libexec/fwupd/efi", "usr/lib/fwupd/efi")
#: block device sysfs (Documentation/ABI/stable/sysfs-block): start/size in 512-byte sectors.
SYS_DEV_BLOCK = "sys/dev/block"
#: sysfs ``start`` and ``size`` of a block device are always in 512-byte sectors,
#: whatever the disk's sector size (block/partitions/core.c ``part_start_show``,
#: block/genhd.c ``part_size_show``: ``bdev_nr_sectors``, SECTOR_SHIFT = 9).
SECTOR_SIZE = 512
#: the disk's logical block size, relative to ``sys/dev/block/MAJ:MIN`` of the whole
#: disk (block/blk-sysfs.c ``queue_logical_block_size_show``): the unit UEFI's HD()
#: device-path node uses for PartitionStart/PartitionSize (UEFI 2.10 §10.3.5.1).
QUEUE_LOGICAL_BLOCK_SIZE = "queue/logical_block_size"
#: where the shipped unit's ExecStartPre=+ copies the ESRT at each daemon start, for
#: kernels before 6.5 whose ``esre_attr_show()`` wants CAP_SYS_ADMIN (livefwd.service).
ESRT_SNAPSHOT_DIR = "run/livefw/esrt"
#: the first kernel release whose ESRT entries are readable without CAP_SYS_ADMIN
#: (commit d0a1865cf7e2 "efi/esrt: Allow ESRT access without CAP_SYS_ADMIN").
ESRT_WITHOUT_SYS_ADMIN_SINCE = "6.5"
#: the first kernel release that exposes the ESRT in a Xen dom0 (commit 01de145dc7fb
#: "efi: Actually enable the ESRT under Xen": esrt.c accepts EFI_PARAVIRT).
ESRT_ON_XEN_SINCE = "6.3"

# ------------------------------------------------------------------------- ESRT

#: ESRT fw_type (UEFI 2.10 §23.4 "EFI System Resource Table"; esrt.c shows it as a number).
FW_TYPE_UNKNOWN = 0
FW_TYPE_SYSTEM = 1
FW_TYPE_DEVICE = 2
FW_TYPE_UEFI_DRIVER = 3

#: ESRT last_attempt_status (UEFI 2.10 §23.4; the kernel ABI doc's list is off by one).
LAST_ATTEMPT_SUCCESS = 0
LAST_ATTEMPT_UNSUCCESSFUL = 1
LAST_ATTEMPT_INSUFFICIENT_RESOURCES = 2
LAST_ATTEMPT_INCORRECT_VERSION = 3
LAST_ATTEMPT_INVALID_FORMAT = 4
LAST_ATTEMPT_AUTH_ERROR = 5
LAST_ATTEMPT_PWR_EVT_AC = 6
LAST_ATTEMPT_PWR_EVT_BATT = 7
LAST_ATTEMPT_UNSATISFIED_DEPENDENCIES = 8
LAST_ATTEMPT_VENDOR_MIN = 0x1000
LAST_ATTEMPT_VENDOR_MAX = 0x4000

LAST_ATTEMPT_STATUS: dict[int, str] = {
    0: "success",
    1: "unsuccessful",
    2: "insufficient resources",
    3: "incorrect version",
    4: "invalid format",
    5: "authentication error",
    6: "AC power event (the machine was not on AC power)",
    7: "battery power event (the battery was too low)",
    8: "unsatisfied dependencies",
}


def describe_last_attempt_status(status: int) -> str:
    """A person's reading of an ESRT ``last_attempt_status``."""
    if status in LAST_ATTEMPT_STATUS:
        return LAST_ATTEMPT_STATUS[status]
    if LAST_ATTEMPT_VENDOR_MIN <= status <= LAST_ATTEMPT_VENDOR_MAX:
        return f"vendor-specific failure 0x{status:x}"
    return f"unknown status {status}"


def last_attempt_transient(status: int) -> bool:
    """Power events are worth retrying as they are (fwupd: transient failure)."""
    return status in (LAST_ATTEMPT_PWR_EVT_AC, LAST_ATTEMPT_PWR_EVT_BATT)


@dataclass(frozen=True)
class EsrtEntry:
    """One ``entries/entry<N>`` directory."""

    fw_class: str
    fw_type: int
    fw_version: int
    lowest_supported_fw_version: int
    capsule_flags: int
    last_attempt_version: int
    last_attempt_status: int

    def render(self) -> dict[str, str]:
        """File name -> content, exactly as esrt.c prints them."""
        return {
            "fw_class": f"{self.fw_class.lower()}\n",
            "fw_type": f"{self.fw_type}\n",
            "fw_version": f"{self.fw_version}\n",
            "lowest_supported_fw_version": f"{self.lowest_supported_fw_version}\n",
            "capsule_flags": f"0x{self.capsule_flags:x}\n",
            "last_attempt_version": f"{self.last_attempt_version}\n",
            "last_attempt_status": f"{self.last_attempt_status}\n",
        }

    @classmethod
    def parse(cls, files: dict[str, str]) -> EsrtEntry:
        """Inverse of :meth:`render`; raises ValueError on a malformed value."""
        try:
            return cls(
                fw_class=guid_from_efi(guid_to_efi(files["fw_class"].strip())),
                fw_type=int(files["fw_type"].strip()),
                fw_version=int(files["fw_version"].strip()),
                lowest_supported_fw_version=int(files["lowest_supported_fw_version"].strip()),
                capsule_flags=int(files["capsule_flags"].strip(), 0),
                last_attempt_version=int(files["last_attempt_version"].strip()),
                last_attempt_status=int(files["last_attempt_status"].strip()),
            )
        except KeyError as error:
            raise ValueError(f"ESRT entry lacks {error.args[0]}") from error


def format_version(value: int) -> str:
    """ESRT versions are plain u32 numbers; fwupd's ``number`` format prints them so."""
    return str(value)


# --------------------------------------------------------------------- efivarfs

#: include/linux/efi.h: vendor GUIDs (text, lowercase).
EFI_GLOBAL_VARIABLE_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
#: fwupd/fwupdate: UPDATE_INFO, FWUPDATE_VERBOSE, FWUPDATE_DEBUG_LOG (fwup-efi.h).
FWUPDATE_GUID = "0abba7dc-e516-4167-bbf5-4d9d1c739416"
#: EFI_CAPSULE_REPORT_GUID: Capsule####, CapsuleMax, CapsuleLast (UEFI 2.10 §8.5.6).
EFI_CAPSULE_REPORT_GUID = "39b68c46-f7fb-441b-b6ec-16b0f69821f3"
UX_CAPSULE_GUID = "3b8c8162-188c-46a4-aec9-be43f1d65697"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
#: LINUX_EFI_CRASH_GUID: whitelisted for mutable files (efivarfs inode.c).
LINUX_EFI_CRASH_GUID = "cfc8fc79-be2e-4ddc-97f0-9f98bfe298a0"
#: LINUX_EFI_RANDOM_SEED_TABLE_GUID: efivarfs refuses to create it (EPERM).
LINUX_EFI_RANDOM_SEED_TABLE_GUID = "1ce1e5bc-7ceb-42f2-81e5-8aadf180f57b"

#: EFI variable attributes (include/linux/efi.h EFI_VARIABLE_*).
EFI_VARIABLE_NON_VOLATILE = 0x1
EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x2
EFI_VARIABLE_RUNTIME_ACCESS = 0x4
EFI_VARIABLE_HARDWARE_ERROR_RECORD = 0x8
EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS = 0x10
EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
EFI_VARIABLE_APPEND_WRITE = 0x40
#: EFI_VARIABLE_MASK: any other bit makes efivarfs_file_write return EINVAL.
EFI_VARIABLE_MASK = 0x7F
#: NV|BS|RT: what livefw (and fwupd) write.
EFI_VARIABLE_DEFAULT = 0x7

#: efivarfs file names: <name>-<guid>; the GUID is 36 characters.
_VAR_NAME_RE = re.compile(
    r"^(?P<name>.+)-(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)


def var_filename(name: str, guid: str) -> str:
    """The efivarfs file name of a variable (lowercase GUID, as the kernel prints it)."""
    return f"{name}-{guid.lower()}"


def var_path(name: str, guid: str) -> str:
    """The provider path of a variable's efivarfs file."""
    return f"{EFIVARS_DIR}/{var_filename(name, guid)}"


def parse_var_filename(filename: str) -> tuple[str, str]:
    """``(name, guid)`` of an efivarfs file name; raises ValueError if malformed."""
    match = _VAR_NAME_RE.fullmatch(filename)
    if match is None or not match.group("name"):
        raise ValueError(f"not an efivarfs variable name: {filename!r}")
    return match.group("name"), match.group("guid").lower()


def encode_var(attributes: int, data: bytes) -> bytes:
    """File content of a variable: 4-byte LE attributes then the data."""
    return struct.pack("<I", attributes) + bytes(data)


def decode_var(raw: bytes) -> tuple[int, bytes]:
    """``(attributes, data)`` of an efivarfs file; raises ValueError if under 4 bytes."""
    if len(raw) < 4:
        raise ValueError(f"efivarfs content needs at least 4 bytes, got {len(raw)}")
    (attributes,) = struct.unpack_from("<I", raw)
    return attributes, bytes(raw[4:])


#: global variables created mutable (efivarfs ``variable_validate`` whitelist,
#: drivers/firmware/efi/vars.c); matching is by prefix for the starred ones.
_MUTABLE_GLOBAL_PREFIXES = ("Boot", "Driver", "ConIn", "ConOut", "ErrOut")
_MUTABLE_GLOBAL_EXACT = ("BootNext", "BootOrder", "DriverOrder", "Lang", "OsIndications")
_MUTABLE_GLOBAL_EXACT2 = ("PlatformLang", "Timeout")


def var_is_mutable_by_default(name: str, guid: str) -> bool:
    """Whether efivarfs creates this variable without ``S_IMMUTABLE``.

    Everything outside the whitelist (``fwupd-*``, ``OsIndicationsSupported``,
    ``SecureBoot``...) is created immutable and must be made mutable (``chattr -i``)
    before it can be rewritten or deleted.
    """
    guid = guid.lower()
    if guid == LINUX_EFI_CRASH_GUID:
        return True
    if guid != EFI_GLOBAL_VARIABLE_GUID:
        return False
    if name in _MUTABLE_GLOBAL_EXACT or name in _MUTABLE_GLOBAL_EXACT2:
        return True
    return any(name.startswith(prefix) for prefix in _MUTABLE_GLOBAL_PREFIXES)


#: the load-option families of efivarfs' ``variable_validate`` table ("Boot*", "Driver*").
_OPTION_PREFIXES = ("Boot", "Driver")
_HEX = frozenset("0123456789abcdefABCDEF")


def load_option_name(name: str) -> bool | None:
    """How the kernel's ``validate_load_option()`` treats the name (fs/efivarfs/vars.c).

    ``Boot``/``Driver`` followed by four hex digits is a load option (True) whose data
    is validated; four hex digits followed by anything more is refused outright (False:
    the write fails with EINVAL, e.g. ``Boot0001X``); anything else under the prefix
    (``BootNext``, ``Boot12``) is not a load option (None) and is not validated as one.
    """
    for prefix in _OPTION_PREFIXES:
        if not name.startswith(prefix):
            continue
        digits = name[len(prefix) : len(prefix) + 4]
        if len(digits) < 4 or not set(digits) <= _HEX:
            return None
        return len(name) == len(prefix) + 4
    return None


def validate_global_var(name: str, data: bytes) -> bool:
    """The kernel's ``variable_validate`` table for the global GUID (fs/efivarfs/vars.c).

    Returns False where SetVariable through efivarfs fails with EINVAL. A zero-length
    write runs this too, which is why ``BootNext`` and ``Boot####`` cannot be deleted
    by writing only the attributes. ``Boot####`` with trailing characters is refused
    whatever the data (``validate_load_option``: "4 digits of hex and then further
    content").
    """
    if name in ("BootNext", "Timeout"):
        return len(data) == 2
    if name in ("BootOrder", "DriverOrder"):
        return len(data) % 2 == 0
    option = load_option_name(name)
    if option is False:
        return False
    if option:
        try:
            LoadOption.unpack(data)
        except ValueError:
            return False
        return True
    if name in ("ConIn", "ConOut", "ErrOut", "ConInDev", "ConOutDev", "ErrOutDev"):
        try:
            decode_device_path(data)
        except ValueError:
            return False
        return True
    if name in ("Lang", "PlatformLang"):
        return all(byte < 0x80 for byte in data)
    return True


# ------------------------------------------------------------------- boot vars

BOOT_NEXT = "BootNext"
BOOT_ORDER = "BootOrder"
OS_INDICATIONS = "OsIndications"
OS_INDICATIONS_SUPPORTED = "OsIndicationsSupported"
SECURE_BOOT = "SecureBoot"

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


@dataclass(frozen=True)
class HardDriveNode:
    """Media / Hard Drive device path node (GPT partition of the ESP)."""

    partition_number: int
    partition_start: int
    partition_size: int
    partition_signature: str
    partition_format: int = PART_FORMAT_GPT
    signature_type: int = SIGNATURE_GUID

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


@dataclass(frozen=True)
class FilePathNode:
    """Media / File Path node: a backslash path relative to the volume root."""

    path: str

    def pack(self) -> bytes:
        """Header plus UTF-16LE path and a NUL character."""
        text = self.path.encode("utf-16-le") + b"\x00\x00"
        return DP_NODE_HEADER.pack(DP_TYPE_MEDIA, DP_SUBTYPE_FILE_PATH, 4 + len(text)) + text


@dataclass(frozen=True)
class RawNode:
    """Any other device path node, kept as its bytes after the header."""

    type: int
    subtype: int
    data: bytes = b""

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


@dataclass(frozen=True)
class LoadOption:
    """EFI_LOAD_OPTION (``Boot####``)."""

    attributes: int
    description: str
    file_path: list[DevicePathNode] = field(default_factory=list)
    optional_data: bytes = b""

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

# -------------------------------------------------------------------- EFI_TIME

EFI_TIME = struct.Struct("<HBBBBBxIhBx")
EFI_UNSPECIFIED_TIMEZONE = 0x07FF


@dataclass(frozen=True)
class EfiTime:
    """EFI_TIME (16 bytes); all zero means "never"."""

    year: int = 0
    month: int = 0
    day: int = 0
    hour: int = 0
    minute: int = 0
    second: int = 0
    nanosecond: int = 0
    timezone: int = 0
    daylight: int = 0

    def pack(self) -> bytes:
        """16 bytes."""
        return EFI_TIME.pack(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanosecond,
            self.timezone,
            self.daylight,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> EfiTime:
        """Decode 16 bytes at ``offset``."""
        return cls(*EFI_TIME.unpack_from(data, offset))

    @property
    def is_zero(self) -> bool:
        """Never stamped."""
        return self == EfiTime()

    def text(self) -> str:
        """ISO-like text (``UTC`` when the time zone is unspecified)."""
        stamp = (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )
        if self.timezone == EFI_UNSPECIFIED_TIMEZONE:
            return stamp + " (local time)"
        return f"{stamp} UTC{-self.timezone:+d}min" if self.timezone else stamp + " UTC"


# ----------------------------------------------------------------- UPDATE_INFO

#: fwupd-efi fwup-efi.h: the record version fwupd writes.
UPDATE_INFO_VERSION = 7
#: header: update_info_version, guid, capsule_flags, hw_inst, time_attempted, status.
UPDATE_INFO_HEADER = struct.Struct("<I16sIQ16sI")
#: fwupd-efi rejects records of this size or less (header plus one 4-byte node;
#: efi/fwupdate.c, the record size check before it trusts the device path).
UPDATE_INFO_MIN_EXCLUSIVE = 60
UPDATE_INFO_STATUS_UNKNOWN = 0
UPDATE_INFO_STATUS_ATTEMPT_UPDATE = 1
UPDATE_INFO_STATUS_ATTEMPTED = 2
#: fwupd-efi reads these under the fwupd GUID and never treats them as records.
FWUPDATE_VERBOSE = "FWUPDATE_VERBOSE"
FWUPDATE_DEBUG_LOG = "FWUPDATE_DEBUG_LOG"
BOOTLOADER_SUPPORTS_FWUPD = "BootloaderSupportsFwupd"
#: fwupd-efi handles at most this many records.
FWUPDATE_MAX_RECORDS = 128


def update_info_name(fw_class: str, hw_instance: int = 0) -> str:
    """``fwupd-<fw_class>-<hw_instance>``: the UPDATE_INFO variable's name."""
    return f"fwupd-{fw_class.lower()}-{hw_instance}"


@dataclass(frozen=True)
class UpdateInfo:
    """fwupd's UPDATE_INFO record (``fwupd-<guid>-0`` under :data:`FWUPDATE_GUID`)."""

    guid: str
    capsule_flags: int
    device_path: list[DevicePathNode]
    hw_inst: int = 0
    time_attempted: EfiTime = EfiTime()
    status: int = UPDATE_INFO_STATUS_ATTEMPT_UPDATE
    version: int = UPDATE_INFO_VERSION

    def pack(self) -> bytes:
        """The 52-byte header followed by the capsule file's device path."""
        return UPDATE_INFO_HEADER.pack(
            self.version,
            guid_to_efi(self.guid),
            self.capsule_flags,
            self.hw_inst,
            self.time_attempted.pack(),
            self.status,
        ) + encode_device_path(self.device_path)

    @classmethod
    def unpack(cls, data: bytes) -> UpdateInfo:
        """Decode and validate as fwupd-efi does; raises ValueError when malformed."""
        if len(data) <= UPDATE_INFO_MIN_EXCLUSIVE:
            raise ValueError(
                f"UPDATE_INFO of {len(data)} bytes is too small (must exceed "
                f"{UPDATE_INFO_MIN_EXCLUSIVE})"
            )
        version, guid, flags, hw_inst, stamp, status = UPDATE_INFO_HEADER.unpack_from(data)
        nodes = decode_device_path(bytes(data[UPDATE_INFO_HEADER.size :]))
        return cls(
            guid=guid_from_efi(guid),
            capsule_flags=flags,
            device_path=nodes,
            hw_inst=hw_inst,
            time_attempted=EfiTime.unpack(stamp),
            status=status,
            version=version,
        )

    def file_path(self) -> str:
        """The capsule's path on the ESP (backslashes), or ``""``."""
        return next((n.path for n in self.device_path if isinstance(n, FilePathNode)), "")


def esp_path_to_efi(path: str) -> str:
    """Turn an ESP-relative path (``EFI/debian/fw/x.cap``) into a backslash EFI path."""
    return "\\" + path.strip("/").replace("/", "\\")


def efi_path_to_esp(path: str) -> str:
    """Inverse of :func:`esp_path_to_efi` (relative to the ESP root)."""
    return path.replace("\\", "/").strip("/")


# ---------------------------------------------------------------- OsIndications

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

# ------------------------------------------------------------- capsule results

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


@dataclass(frozen=True)
class CapsuleResult:
    """EFI_CAPSULE_RESULT_VARIABLE_HEADER (+ the FMP part when present)."""

    capsule_guid: str
    processed: EfiTime
    status: int
    fmp: tuple[int, int, int, str] | None = None

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


# ------------------------------------------------------- FMP payload header

#: EDK2 FmpDevicePkg/Include/Library/FmpPayloadHeaderLib.h: FMP_PAYLOAD_HEADER
#: (Signature "MSS1", HeaderSize, FwVersion, LowestSupportedVersion) at the start of
#: an FMP image (after its authentication); how EDK2 capsules carry their version.
FMP_PAYLOAD_HEADER = struct.Struct("<IIII")
FMP_PAYLOAD_HEADER_SIGNATURE = 0x3153534D  # SIGNATURE_32('M', 'S', 'S', '1')


@dataclass(frozen=True)
class FmpPayloadHeader:
    """FMP_PAYLOAD_HEADER v1."""

    fw_version: int
    lowest_supported_version: int
    header_size: int = FMP_PAYLOAD_HEADER.size

    def pack(self) -> bytes:
        """16 bytes."""
        return FMP_PAYLOAD_HEADER.pack(
            FMP_PAYLOAD_HEADER_SIGNATURE,
            self.header_size,
            self.fw_version,
            self.lowest_supported_version,
        )

    @classmethod
    def find(cls, data: bytes, offset: int = 0) -> FmpPayloadHeader | None:
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


@dataclass(frozen=True)
class CapsuleImage:
    """One firmware image a capsule carries.

    Attributes:
        image_type: the ESRT fw_class it is for (FMP UpdateImageTypeId, or the
            CapsuleGuid of a non-FMP capsule; ``""`` for a payload without header).
        auth: its EFI_FIRMWARE_IMAGE_AUTHENTICATION, if it has one.
        payload: the image after the authentication (starts with the FMP payload
            header when it has one).
        version, lowest: from the FMP payload header, or None.
    """

    image_type: str
    hardware_instance: int
    auth: ImageAuth | None
    payload: bytes
    version: int | None
    lowest: int | None


@dataclass(frozen=True)
class CapsuleInfo:
    """What :func:`inspect_capsule` found.

    Attributes:
        header: the EFI_CAPSULE_HEADER, or None for a bare payload (fwupd prepends a
            synthetic header to those).
    """

    header: CapsuleHeader | None
    fmp: bool
    images: tuple[CapsuleImage, ...]


def _image(image_type: str, instance: int, auth: ImageAuth | None, payload: bytes) -> CapsuleImage:
    found = FmpPayloadHeader.find(payload)
    return CapsuleImage(
        image_type,
        instance,
        auth,
        payload,
        found.fw_version if found else None,
        found.lowest_supported_version if found else None,
    )


def inspect_capsule(data: bytes, fw_classes: tuple[str, ...] = ()) -> CapsuleInfo:
    """Walk a capsule file: its header, FMP items, authentication and payload header.

    A file whose first 16 bytes are neither the FMP capsule GUID nor one of
    ``fw_classes`` is a bare payload (fwupd's rule in fu-uefi-capsule-device.c: it
    then prepends a synthetic EFI_CAPSULE_HEADER).

    Raises:
        CapsuleError: a length or offset that does not fit the file.
    """
    first = guid_from_efi(data[:16]) if len(data) >= 16 else ""
    if first != FMP_CAPSULE_GUID and first not in fw_classes:
        return CapsuleInfo(None, False, (_image("", 0, None, bytes(data)),))
    header = parse_capsule_header(data)
    body = bytes(data[: header.image_size])
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
