"""Print what the guest's real efivarfs and ESRT hold (VM lane, capsule scenario).

Usage: python3 efifacts.py FW_CLASS
One ``key: value`` line each: BootCurrent, BootNext, BootOrder, every Boot####
(description and device path, decoded with livefw's own codec), the fwupd UPDATE_INFO
record for FW_CLASS (status: 1 attempt update, 2 attempted by fwupd-efi), fwupd-efi's
debug log (FWUPDATE_DEBUG_LOG, UCS-2) and the kernel's ESRT entries.
"""

from __future__ import annotations

import os
import struct
import sys

from livefw.kernel.uapi import efi

VARS = "/sys/firmware/efi/efivars"
ESRT = "/sys/firmware/efi/esrt/entries"


def get(name: str, guid: str) -> bytes | None:
    try:
        with open(f"{VARS}/{name}-{guid}", "rb") as f:
            return f.read()[4:]
    except OSError:
        return None


def main() -> int:
    fw_class = sys.argv[1]
    g = efi.EFI_GLOBAL_VARIABLE_GUID
    for name in ("BootCurrent", "BootNext"):
        data = get(name, g)
        print(f"{name}: " + (f"Boot{struct.unpack('<H', data)[0]:04X}" if data else "absent"))
    order = get("BootOrder", g) or b""
    print("BootOrder: " + ",".join(f"{n:04X}" for (n,) in struct.iter_unpack("<H", order)))
    for entry in sorted(os.listdir(VARS)):
        name = entry[: -len(g) - 1]
        if efi.parse_boot_var_name(name) is None or not entry.endswith(g):
            continue
        try:
            option = efi.LoadOption.unpack(get(name, g) or b"")
            print(f"{name}: {option.description!r} {option.file_path}")
        except ValueError as error:
            print(f"{name}: undecodable ({error})")
    raw = get(efi.update_info_name(fw_class), efi.FWUPDATE_GUID)
    if raw is None:
        print("UPDATE_INFO: absent")
    else:
        info = efi.UpdateInfo.unpack(raw)
        print(
            f"UPDATE_INFO: status {info.status} attempted {info.time_attempted} "
            f"capsule {info.file_path()} {info.device_path[0]}"
        )
    log = get("FWUPDATE_DEBUG_LOG", efi.FWUPDATE_GUID)
    if log is None:
        print("FWUPDATE_DEBUG_LOG: absent")
    else:
        text = log[:65536].decode("utf-16-le", errors="replace").replace("\0", "")
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        print("FWUPDATE_DEBUG_LOG: " + " | ".join(lines))
    for entry in sorted(os.listdir(ESRT)) if os.path.isdir(ESRT) else []:
        fields = {}
        for key in efi.ESRT_ENTRY_FILES:
            with open(f"{ESRT}/{entry}/{key}") as f:
                fields[key] = f.read().strip()
        print(f"ESRT {entry}: " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
