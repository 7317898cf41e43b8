"""What the kernel's errnos from ``/dev/liveupdate``, a session fd and a kexec mean.

Each mapping turns a bare errno into a livefw error whose message says what to do;
the errnos and where the kernel answers them are in docs/kernel.md ("reboot(2) and
kexec", "Live Update Orchestrator").
"""

from __future__ import annotations

import errno

from livefw.errors import (
    Busy,
    Internal,
    InvalidArgument,
    InvalidFile,
    KernelError,
    LivefwError,
    NoSpace,
    NotSupported,
    PermissionDenied,
)
from livefw.kernel.uapi import liveupdate as uapi

__all__ = ["fd_of", "map_error", "map_kexec_error", "map_preserve_error"]


def fd_of(arg: bytearray) -> int:
    """The fd the kernel wrote into the second field of a LUO struct.

    Raises:
        Internal: the field holds no descriptor.
    """
    fd = int.from_bytes(arg[4:8], "little", signed=True)
    if fd < 0:
        raise Internal("the kernel returned no file descriptor")
    return fd


def map_error(error: KernelError, what: str) -> LivefwError:
    """The generic meaning of a LUO errno while doing ``what``."""
    if error.errno in (errno.ENOSPC, errno.ENOMEM):
        return NoSpace(
            f"{what}: the kernel has no room for more live-update state "
            f"({errno.errorcode[error.errno]}): too many sessions or files (up to 7.1 the "
            "kernel holds 744 sessions and 128 files in one; from 7.2 only memory limits)"
        )
    if error.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"{what}: the kernel refused (permission)")
    if error.errno == errno.EBUSY:
        return Busy(f"{what}: busy; try again")
    if error.errno in (errno.EINVAL, errno.E2BIG):
        return InvalidArgument(f"{what}: the kernel rejected the request ({error.message})")
    return error


def map_kexec_error(error: KernelError, vfio: list[str]) -> LivefwError:
    """The errnos of reboot(LINUX_REBOOT_CMD_KEXEC) once kexec_loaded said 1.

    kernel/kexec_core.c ``kernel_kexec``: EBUSY for the kexec lock; then
    kernel/liveupdate/luo_core.c ``liveupdate_reboot``: a handler's freeze errno
    (luo_file.c ``luo_file_freeze``), or on 6.19 and 7.0 EAGAIN when KHO finalisation
    fails (``kho_finalize()`` is gone from 7.1: "kho: remove finalize state and
    clients", 6b0dd42d7681), so from 7.1 an EAGAIN can only be a handler's.
    """
    unchanged = "the kexec did not happen and every session is as it was"
    if error.errno == errno.EPERM:
        # kernel/reboot.c answers EPERM without CAP_SYS_BOOT; a seccomp filter without
        # reboot(2) answers the same before the kernel sees the call (livefwd.service's
        # SystemCallErrorNumber=EPERM; the VM lane's sandbox-kexec shows both)
        return NotSupported(
            "livefwd may not kexec (EPERM: reboot(2) needs CAP_SYS_BOOT and a system-call "
            "filter that allows it: livefwd.service's CapabilityBoundingSet= and "
            f"SystemCallFilter=reboot, or a drop-in that removed either); {unchanged}"
        )
    if error.errno == errno.EBUSY:
        return Busy(f"another kexec is in progress (the kernel's kexec lock is taken); {unchanged}")
    if error.errno == errno.EAGAIN:
        return Busy(
            "the kernel answered EAGAIN: on 6.19 and 7.0 its Kexec HandOver finalisation "
            "failed (usually short of memory); from 7.1 a preserved file's freeze refused "
            f"for now (see the kernel log); {unchanged}; retry"
        )
    if error.errno == errno.EINVAL:
        hint = (
            f"VFIO devices ({', '.join(vfio)}) must have every interrupt disabled "
            "(VFIO_DEVICE_SET_IRQS with DATA_NONE | ACTION_TRIGGER, count 0) before the kexec"
            if vfio
            else "see the kernel log (`Freeze failed for token ...`)"
        )
        return InvalidArgument(f"a preserved file refused to freeze (EINVAL): {hint}; {unchanged}")
    return map_error(error, "kexec")


def map_preserve_error(error: KernelError, token: int, link: str = "") -> LivefwError:
    """LIVEUPDATE_SESSION_PRESERVE_FD's errnos (luo_file.c ``luo_preserve_file``)."""
    if error.errno == errno.ENOENT:
        if uapi.VFIO_DEVICE_RE.search(link):
            return NotSupported(
                f"{link}: this kernel has no Live Update handler for VFIO devices (the "
                "vfio/pci Live Update series is not in mainline Linux)"
            )
        return InvalidFile(
            "only memfds (memfd_create(2) without MFD_HUGETLB) and, with the VFIO "
            "handler, VFIO device cdevs can be preserved; sockets, pipes, regular "
            "files and devices such as /dev/null cannot"
        )
    if error.errno == errno.EBUSY:
        return InvalidFile("this file is already preserved (in this or another session)")
    if error.errno == errno.EEXIST:
        return InvalidArgument(f"token {token} is already used in this session")
    if error.errno == errno.EBADF:
        return InvalidArgument("the file descriptor passed is not open")
    if error.errno == errno.EOPNOTSUPP:
        return NotSupported("the memfd carries seals this kernel cannot preserve")
    return map_error(error, f"preserving token {token}")
