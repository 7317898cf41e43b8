"""Live Update Orchestrator uAPI (``include/uapi/linux/liveupdate.h``, merged in 6.19).

Only the merged API: create/retrieve session on ``/dev/liveupdate``; preserve fd,
retrieve fd, finish and get-name on a session fd. There is no unpreserve ioctl and no
global state machine (those were RFC shapes, never released). Every ioctl is
``_IO(0xBA, nr)``: the argument size travels in the struct's first u32, not in the
request number (luo_core.c ``luo_ioctl``, luo_session.c ``luo_session_ioctl``). What
the kernel does with each, per release: docs/kernel.md, "Live Update Orchestrator".
"""

from __future__ import annotations

import os
import re
import struct

from livefw.kernel.uapi.ioc import io

#: the misc device (mode 0600, exclusive open): kernel/liveupdate/luo_core.c
#: ``luo_dev`` (misc device "liveupdate"), ``luo_open``.
LIVEUPDATE_DEV = "dev/liveupdate"

#: ioctl type (include/uapi/linux/liveupdate.h: LIVEUPDATE_IOCTL_TYPE).
LIVEUPDATE_IOCTL_TYPE = 0xBA

#: command numbers on /dev/liveupdate (LIVEUPDATE_CMD_*).
LIVEUPDATE_CMD_CREATE_SESSION = 0x00
LIVEUPDATE_CMD_RETRIEVE_SESSION = 0x01
#: command numbers on a session fd (LIVEUPDATE_CMD_SESSION_*, base 0x40).
LIVEUPDATE_CMD_SESSION_PRESERVE_FD = 0x40
LIVEUPDATE_CMD_SESSION_RETRIEVE_FD = 0x41
LIVEUPDATE_CMD_SESSION_FINISH = 0x42
#: "liveupdate: add LIVEUPDATE_SESSION_GET_NAME ioctl" (4c08a9f38c50), mainline with
#: tag liveupdate-v7.2-rc1, so first released in 7.2 (docs/kernel.md). Older kernels
#: answer EINVAL (the nr is outside luo_session.c's table).
LIVEUPDATE_CMD_SESSION_GET_NAME = 0x43

LIVEUPDATE_IOCTL_CREATE_SESSION = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_CREATE_SESSION)
LIVEUPDATE_IOCTL_RETRIEVE_SESSION = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_RETRIEVE_SESSION)
LIVEUPDATE_SESSION_PRESERVE_FD = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_PRESERVE_FD)
LIVEUPDATE_SESSION_RETRIEVE_FD = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_RETRIEVE_FD)
LIVEUPDATE_SESSION_FINISH = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_FINISH)
LIVEUPDATE_SESSION_GET_NAME = io(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_SESSION_GET_NAME)

#: LIVEUPDATE_SESSION_NAME_LENGTH: name buffer incl. the terminating NUL.
LIVEUPDATE_SESSION_NAME_LENGTH = 64
#: longest session name (the kernel needs a NUL within the 64 bytes).
SESSION_NAME_MAX = LIVEUPDATE_SESSION_NAME_LENGTH - 1

#: struct liveupdate_ioctl_create_session { u32 size; s32 fd; u8 name[64]; } (72 bytes)
CREATE_SESSION = struct.Struct("<Ii64s")
#: struct liveupdate_ioctl_retrieve_session { u32 size; s32 fd; u8 name[64]; } (72 bytes)
RETRIEVE_SESSION = struct.Struct("<Ii64s")
#: struct liveupdate_session_preserve_fd { u32 size; s32 fd; u64 token; } (16 bytes)
PRESERVE_FD = struct.Struct("<IiQ")
#: struct liveupdate_session_retrieve_fd { u32 size; s32 fd; u64 token; } (16 bytes)
RETRIEVE_FD = struct.Struct("<IiQ")
#: struct liveupdate_session_finish { u32 size; u32 reserved; } (8 bytes)
FINISH = struct.Struct("<II")
#: struct liveupdate_session_get_name { u32 size; u32 reserved; u8 name[64]; } (72 bytes)
GET_NAME = struct.Struct("<II64s")

#: the smallest accepted ``size`` of each command: the end of its last field
#: (kernel/liveupdate/luo_core.c and luo_session.c: offsetofend of the last member).
MIN_SIZE = {
    LIVEUPDATE_CMD_CREATE_SESSION: CREATE_SESSION.size,
    LIVEUPDATE_CMD_RETRIEVE_SESSION: RETRIEVE_SESSION.size,
    LIVEUPDATE_CMD_SESSION_PRESERVE_FD: PRESERVE_FD.size,
    LIVEUPDATE_CMD_SESSION_RETRIEVE_FD: RETRIEVE_FD.size,
    LIVEUPDATE_CMD_SESSION_FINISH: FINISH.size,
    LIVEUPDATE_CMD_SESSION_GET_NAME: GET_NAME.size,
}

#: memfd seals the memfd handler carries from 7.1 on (mm/memfd_luo.c
#: MEMFD_LUO_ALL_SEALS; include/uapi/linux/fcntl.h F_SEAL_*):
#: SEAL 0x1, SHRINK 0x2, GROW 0x4, WRITE 0x8, FUTURE_WRITE 0x10, EXEC 0x20.
F_SEAL_SEAL = 0x0001
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
F_SEAL_EXEC = 0x0020
MEMFD_LUO_SEALS = (
    F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC
)


def encode_name(name: str) -> bytes:
    """The 64-byte NUL-padded name field.

    Raises:
        ValueError: empty, longer than 63 bytes, or containing NUL.
    """
    raw = name.encode()
    if not raw or len(raw) > SESSION_NAME_MAX or b"\x00" in raw:
        raise ValueError(f"a session name has 1 to {SESSION_NAME_MAX} bytes and no NUL")
    return raw


def decode_name(field: bytes) -> str:
    """The name in a 64-byte field, up to the first NUL."""
    return field.split(b"\x00", 1)[0].decode(errors="replace")


def pack_create_session(name: str) -> bytearray:
    """An argument for LIVEUPDATE_IOCTL_CREATE_SESSION (fd is filled in by the kernel)."""
    return bytearray(CREATE_SESSION.pack(CREATE_SESSION.size, -1, encode_name(name)))


def pack_retrieve_session(name: str) -> bytearray:
    """An argument for LIVEUPDATE_IOCTL_RETRIEVE_SESSION."""
    return bytearray(RETRIEVE_SESSION.pack(RETRIEVE_SESSION.size, -1, encode_name(name)))


def pack_preserve_fd(fd: int, token: int) -> bytearray:
    """An argument for LIVEUPDATE_SESSION_PRESERVE_FD."""
    return bytearray(PRESERVE_FD.pack(PRESERVE_FD.size, fd, token))


def pack_retrieve_fd(token: int) -> bytearray:
    """An argument for LIVEUPDATE_SESSION_RETRIEVE_FD (fd is filled in by the kernel)."""
    return bytearray(RETRIEVE_FD.pack(RETRIEVE_FD.size, -1, token))


def pack_finish() -> bytearray:
    """An argument for LIVEUPDATE_SESSION_FINISH."""
    return bytearray(FINISH.pack(FINISH.size, 0))


def pack_get_name() -> bytearray:
    """An argument for LIVEUPDATE_SESSION_GET_NAME."""
    return bytearray(GET_NAME.pack(GET_NAME.size, 0, b""))


#: VFIO device cdevs (drivers/vfio/device_cdev.c: ``/dev/vfio/devices/vfioN``) and
#: group files (``/dev/vfio/<group>``, ``/dev/vfio/noiommu-<group>``): only a device
#: cdev can be preserved by the VFIO Live Update handler.
VFIO_DEVICE_RE = re.compile(r"/vfio/devices/[^/]+$")
VFIO_GROUP_RE = re.compile(r"/vfio/(noiommu-)?[0-9]+$")


def fd_path(fd: int) -> str:
    """What an fd of this process names (``/proc/self/fd/N``), or "" if unreadable.

    A client passes the file to preserve as an fd; its path tells a VFIO group file
    from a device cdev before the kernel answers a bare ENOENT for both.
    """
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
