"""Write the capsule and the ESRT entry of the VM lane's capsule scenario (issue 16).

Usage: .venv/bin/python vm/make-capsule.py OUT_DIR FW_CLASS VERSION LOWEST

Writes ``OUT_DIR/esrt.bin`` (one 40-byte EFI_SYSTEM_RESOURCE_ENTRY: FW_CLASS, device
firmware, version VERSION, lowest LOWEST, no flags, no last attempt), which
vm/efi/livefw-boot.c installs as the ESRT, and ``OUT_DIR/capsule.cap``: an FMP capsule
(EFI_FMP_CAPSULE_GUID, PERSIST_ACROSS_RESET | INITIATE_RESET, one v3 image for
FW_CLASS with an authentication header and EDK2's FMP payload header carrying
VERSION + 1) built with livefw's own packers. The certificate is not a real PKCS7
signature: whether the firmware checks it is the firmware's business.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi

ESRT_ENTRY = struct.Struct("<16sIIIIII")  # EFI_SYSTEM_RESOURCE_ENTRY, 40 bytes
FW_TYPE_DEVICE = 2


def main() -> int:
    out, fw_class, version, lowest = (
        Path(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    (out / "esrt.bin").write_bytes(
        ESRT_ENTRY.pack(cap.guid_to_efi(fw_class), FW_TYPE_DEVICE, version, lowest, 0, 0, 0)
    )
    new = version + 1
    firmware = hashlib.sha256(f"{fw_class}:{new}".encode()).digest() * 64
    payload = efi.FmpPayloadHeader(new, lowest).pack() + firmware
    image = cap.pack_image_auth(1, b"livefw-vm-lane-unsigned" + bytes(9)) + payload
    image_header = cap.pack_fmp_image_header(
        3, fw_class, len(image), capsule_support=efi.CAPSULE_SUPPORT_AUTHENTICATION
    )
    body = cap.pack_fmp_capsule_header([cap.FMP_CAPSULE_HEADER.size + 8]) + image_header + image
    flags = cap.CAPSULE_FLAG_PERSIST_ACROSS_RESET | cap.CAPSULE_FLAG_INITIATE_RESET
    head = cap.CAPSULE_HEADER.pack(cap.guid_to_efi(cap.FMP_CAPSULE_GUID), 32, flags, 32 + len(body))
    (out / "capsule.cap").write_bytes(head + bytes(32 - len(head)) + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
