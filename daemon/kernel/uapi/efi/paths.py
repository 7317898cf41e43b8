"""Files of an EFI machine livefw reads besides the ESRT and efivarfs.

The EFI kobject (drivers/firmware/efi/efi.c), the firmware's word size, Xen's
markers, the running kernel's release, where fwupd-efi's loaders are installed, and
the block-device attributes that give the ESP partition's geometry for its device
path (Documentation/ABI/stable/sysfs-block). Paths are relative to the provider's root.
"""

from __future__ import annotations

__all__ = [
    "EFI_DIR",
    "FWUPD_EFI_DIRS",
    "FW_PLATFORM_SIZE",
    "HYPERVISOR_TYPE",
    "OSRELEASE",
    "QUEUE_LOGICAL_BLOCK_SIZE",
    "SECTOR_SIZE",
    "SYS_DEV_BLOCK",
    "XEN_CAPABILITIES",
]

#: the EFI kobject: there when the machine booted through UEFI (drivers/firmware/efi/efi.c
#: ``efisubsys_init()``).
EFI_DIR = "sys/firmware/efi"

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
