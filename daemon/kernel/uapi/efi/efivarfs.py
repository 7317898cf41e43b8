"""efivarfs: one file per variable, its name, attributes, and what the kernel refuses.

Sources: ``fs/efivarfs/`` (``file.c`` ``efivarfs_file_write()``: one write is one
SetVariable, 4 bytes of attributes then the data; ``inode.c``
``efivarfs_create()``/``efivarfs_unlink()``; ``vars.c`` ``efivar_validate()`` and
``efivar_variable_is_removable()``: load-option validation and which files are
mutable; in ``drivers/firmware/efi/vars.c`` before the move to efivarfs);
``include/linux/efi.h`` (attributes). docs/kernel.md, section "UEFI: ESRT,
efivarfs, boot variables".
"""

from __future__ import annotations

import re
import struct

from livefw.kernel.uapi.efi.load_option import LoadOption, decode_device_path
from livefw.kernel.uapi.efi.names import EFI_GLOBAL_VARIABLE_GUID, LINUX_EFI_CRASH_GUID

__all__ = [
    "EFIVARS_DIR",
    "EFI_VARIABLE_APPEND_WRITE",
    "EFI_VARIABLE_AUTHENTICATED_WRITE_ACCESS",
    "EFI_VARIABLE_BOOTSERVICE_ACCESS",
    "EFI_VARIABLE_DEFAULT",
    "EFI_VARIABLE_HARDWARE_ERROR_RECORD",
    "EFI_VARIABLE_MASK",
    "EFI_VARIABLE_NON_VOLATILE",
    "EFI_VARIABLE_RUNTIME_ACCESS",
    "EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS",
    "decode_var",
    "encode_var",
    "load_option_name",
    "parse_var_filename",
    "validate_global_var",
    "var_filename",
    "var_is_mutable_by_default",
    "var_path",
]

#: efivarfs mount point (fs/efivarfs/super.c, mounted by systemd).
EFIVARS_DIR = "sys/firmware/efi/efivars"

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
