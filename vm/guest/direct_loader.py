"""Secure Boot check of the VM lane (capsule-sb): start fwupd's loader without shim.

Usage: python3 direct_loader.py set PARTUUID | clear
``set`` writes Boot0009 "livefw VM: fwupd loader without shim" (the ESP's HD() node
from sysfs, the file \\EFI\\debian\\fwupdx64.efi: Debian's signed loader) and
BootNext=0009 through efivarfs, i.e. what livefw staged before it went through shim;
``clear`` removes Boot0009 (and BootNext if it still points there). The host then
reads on the serial console whether OVMF's BDS refused to start it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys

from livefw.kernel.uapi import efi

VARS = "/sys/firmware/efi/efivars"
G = efi.EFI_GLOBAL_VARIABLE_GUID
NUMBER = 9


def write(name: str, data: bytes) -> None:
    with open(f"{VARS}/{name}-{G}", "wb") as f:
        f.write(struct.pack("<I", efi.EFI_VARIABLE_DEFAULT) + data)


def remove(name: str) -> None:
    path = f"{VARS}/{name}-{G}"
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:  # efivarfs files not on its whitelist are immutable
        flags = struct.unpack("<l", fcntl.ioctl(f, 0x80086601, b"\0" * 8)[:4])[0]
        fcntl.ioctl(f, 0x40086602, struct.pack("<l", flags & ~0x10) + b"\0" * 4)
    os.unlink(path)


def main() -> int:
    if sys.argv[1] == "clear":
        remove(efi.boot_var_name(NUMBER))
        return 0
    partuuid = sys.argv[2]
    with open("/sys/class/block/vda1/start") as f:
        start = int(f.read())
    with open("/sys/class/block/vda1/size") as f:
        size = int(f.read())
    node = efi.HardDriveNode(1, start, size, partuuid)  # 512-byte disk: sysfs units
    option = efi.LoadOption(
        efi.LOAD_OPTION_ACTIVE,
        "livefw VM: fwupd loader without shim",
        [node, efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")],
    )
    write(efi.boot_var_name(NUMBER), option.pack())
    write(efi.BOOT_NEXT, struct.pack("<H", NUMBER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
