"""Inode flags ioctls (include/uapi/linux/fs.h), used for efivarfs' immutable files."""

from livefw.kernel.uapi.ioc import ior, iow

#: FS_IOC_GETFLAGS = _IOR('f', 1, long) (include/uapi/linux/fs.h); 8 bytes on 64-bit: 0x80086601.
FS_IOC_GETFLAGS = ior(ord("f"), 1, 8)
#: FS_IOC_SETFLAGS = _IOW('f', 2, long) (include/uapi/linux/fs.h): 0x40086602.
FS_IOC_SETFLAGS = iow(ord("f"), 2, 8)
#: FS_IMMUTABLE_FL (include/uapi/linux/fs.h).
FS_IMMUTABLE_FL = 0x00000010
#: FS_APPEND_FL (include/uapi/linux/fs.h): fs/open.c ``do_ftruncate`` and
#: ``vfs_fallocate`` refuse truncation and hole punching with EPERM; setting or
#: clearing it needs CAP_LINUX_IMMUTABLE (``fileattr_set_prepare``).
FS_APPEND_FL = 0x00000020
