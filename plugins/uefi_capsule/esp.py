"""Which vfat mount is the EFI System Partition, and its HD() node as the firmware sees it.

The ESP is the configured ``esp_path``, else the best vfat mount: the GPT (or MBR
0xef) ESP partition type and the usual mount points count for it; mounts below
users' media roots or homes, user-owned mounts (``uid=``/``gid=``), loop devices and
removable disks are never chosen (``livefw esp`` lists every candidate and why).
systemd's ESP automounts are triggered first (fs/autofs/root.c
``autofs_d_automount()``). :func:`esp_partition` turns sysfs ``partition``/``start``/
``size`` (512-byte sectors: block/partitions/core.c ``part_start_show()``,
block/genhd.c ``part_size_show()``) into the HD() node in the disk's logical blocks
(block/blk-sysfs.c ``queue_logical_block_size_show()``); docs/kernel.md has each row.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field
from typing import Any

from livefw.errors import KernelError
from livefw.kernel import KernelProvider, MountEntry, normalize
from livefw.kernel.uapi import efi

#: the GPT partition type of an EFI System Partition.
ESP_TYPE_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
#: the MBR partition type of an ESP as udev (blkid) reports it in ID_PART_ENTRY_TYPE.
ESP_MBR_TYPES = ("0xef", "ef")


def rel_path(path: str) -> str:
    """A configured absolute path as a provider path (``""`` for ``/``)."""
    return normalize(path.lstrip("/")) if path.strip("/") else ""


async def read_text(provider: KernelProvider, path: str) -> str | None:
    """A sysfs attribute, stripped; None when it does not exist."""
    try:
        return (await provider.read_attr(path)).strip()
    except KernelError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
            return None
        raise


def mount_for(mounts: list[MountEntry], path: str) -> MountEntry | None:
    """The mount holding provider path ``path``: longest mount point, topmost (last) one."""
    best: MountEntry | None = None
    target = "/" + path
    for entry in mounts:
        point = entry.mount_point.rstrip("/") or "/"
        if (target == point or target.startswith(point + "/") or point == "/") and (
            best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")
        ):
            best = entry
    return best


#: where systemd (systemd-gpt-auto-generator, fstab x-systemd.automount) and installers
#: mount the ESP; an ``autofs`` mount there is triggered to find the real one.
ESP_MOUNT_POINTS = ("/efi", "/boot/efi", "/boot")
#: user-facing mount roots: udisks2 mounts removable media below /media/<user> or
#: /run/media/<user>; a mount a user can write is never the ESP livefw stages to.
_USER_MOUNT_ROOTS = ("/media", "/run/media", "/home", "/var/home", "/root")
#: the loop block driver's major (include/uapi/linux/major.h LOOP_MAJOR).
LOOP_MAJOR = 7


@dataclass
class EspCandidate:
    """A vfat mount considered as the ESP, with the verdict ``livefw esp`` shows."""

    mount: MountEntry
    score: int = 0
    rejected: str = ""
    chosen: bool = False

    def verdict(self) -> str:
        """``chosen``, ``rejected: why`` or ``not chosen``."""
        if self.chosen:
            return "chosen"
        return f"rejected: {self.rejected}" if self.rejected else "not chosen (a better one exists)"


async def _user_homes(provider: KernelProvider) -> list[str]:
    """Home directories of regular users (uid >= 1000) from /etc/passwd."""
    try:
        text = (await provider.read_file("etc/passwd")).decode("utf-8", "replace")
    except KernelError:
        return []
    homes = []
    for line in text.splitlines()[:10000]:
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        uid, home = int(fields[2]), fields[5].rstrip("/")
        if 1000 <= uid < 65534 and home.startswith("/") and home.count("/") >= 2:
            homes.append(home)
    return homes


def _below(point: str, roots: list[str] | tuple[str, ...]) -> str:
    for root in roots:
        if point == root or point.startswith(root.rstrip("/") + "/"):
            return root
    return ""


def _user_owned(options: tuple[str, ...]) -> str:
    """The mount option that gives a user the file system, or ``""``."""
    for option in options:
        key, _, value = option.partition("=")
        if key in ("uid", "gid") and value and value != "0":
            return option
        if option in ("user", "users", "owner", "group"):
            return option
    return ""


async def _whole_disk(provider: KernelProvider, props: dict[str, str], mount: MountEntry) -> str:
    """``MAJ:MIN`` of the disk holding the partition (udev ID_PART_ENTRY_DISK)."""
    disk = props.get("ID_PART_ENTRY_DISK", "")
    if disk and all(part.isdigit() for part in disk.split(":")) and disk.count(":") == 1:
        return disk
    if await provider.exists(f"{efi.SYS_DEV_BLOCK}/{mount.major}:{mount.minor}/queue"):
        return f"{mount.major}:{mount.minor}"  # a whole disk (superfloppy)
    return ""


async def _judge(provider: KernelProvider, candidate: EspCandidate, homes: list[str]) -> None:
    """Score a vfat mount; set ``rejected`` when it must never be the ESP."""
    mount = candidate.mount
    point = mount.mount_point.rstrip("/") or "/"
    try:
        props = await provider.udev_properties("block", mount.major, mount.minor)
    except KernelError:
        props = {}
    part_type = props.get("ID_PART_ENTRY_TYPE", "").lower()
    esp_type = part_type == ESP_TYPE_GUID or part_type in ESP_MBR_TYPES
    root = _below(point, _USER_MOUNT_ROOTS) or _below(point, homes)
    owned = _user_owned(mount.options)
    why = []
    if root:
        why.append(f"mounted below {root}, where users' media and files live")
    if owned:
        why.append(f"user-owned mount ({owned}): a user could replace what is staged")
    if mount.major == LOOP_MAJOR or props.get("DEVNAME", "").startswith("/dev/loop"):
        why.append("a loop device (an image file), which the firmware cannot boot from")
    elif mount.major == 0:
        why.append("no block device behind it")
    else:
        disk = await _whole_disk(provider, props, mount)
        removable = (
            await read_text(provider, f"{efi.SYS_DEV_BLOCK}/{disk}/removable") if disk else None
        )
        if removable == "1":
            why.append("on a removable disk")
    if not why and not esp_type and point not in ESP_MOUNT_POINTS:
        why.append(
            "neither an ESP partition type (GPT c12a7328-..., MBR 0xef) nor mounted at "
            + ", ".join(ESP_MOUNT_POINTS)
        )
    candidate.rejected = "; ".join(why)
    if esp_type:
        candidate.score += 4
    if point in ESP_MOUNT_POINTS:
        candidate.score += 2
    if await provider.is_dir(rel_path(point) + "/EFI"):
        candidate.score += 1


async def _trigger_automounts(provider: KernelProvider, mounts: list[MountEntry]) -> bool:
    """Trigger systemd's ESP automounts (autofs at /efi, /boot/efi, /boot) not yet mounted.

    A path lookup through an autofs mount point makes the kernel ask the automount
    daemon (systemd) to mount the real file system and waits for it
    (fs/autofs/root.c ``autofs_d_automount``); looking up a path inside is enough.
    Returns whether one was triggered (the mount table must then be read again).
    """
    triggered = False
    for entry in mounts:
        point = entry.mount_point.rstrip("/") or "/"
        if entry.fs_type != "autofs" or point not in ESP_MOUNT_POINTS:
            continue
        if mount_for(mounts, rel_path(point)) is not entry:
            continue  # something is already mounted on top of it
        # read_file runs in a worker thread on the real machine: the path walk (and
        # the wait for systemd, which may fsck the ESP first) stays off the event loop;
        # the read itself fails (a directory, or no EFI/ yet) and does not matter
        with contextlib.suppress(KernelError):
            await provider.read_file(rel_path(point) + "/EFI")
        triggered = True
    return triggered


@dataclass
class EspChoice:
    """What :func:`find_esp` found.

    Attributes:
        esp: provider path of the ESP's mount point, or ``""``.
        mount: the mount holding it, when known.
        candidates: every vfat mount considered, with its verdict (not for esp_path).
        reason: why there is no ESP, for people (``""`` when there is one).
    """

    esp: str = ""
    mount: MountEntry | None = None
    candidates: list[EspCandidate] = field(default_factory=list)
    reason: str = ""


async def find_esp(
    provider: KernelProvider, config: dict[str, Any], mounts: list[MountEntry]
) -> EspChoice:
    """The configured ``esp_path``, else the best vfat mount that may be the ESP."""
    configured = str(config.get("esp_path", "") or "")
    if configured:
        esp = rel_path(configured)
        if not await provider.is_dir(esp):
            return EspChoice(reason=f"the configured esp_path {configured} is not a directory")
        return EspChoice(esp, mount_for(mounts, esp))
    if await _trigger_automounts(provider, mounts):
        mounts[:] = await provider.mounts()
    homes = await _user_homes(provider)
    candidates = []
    for mount in mounts:
        if mount.fs_type != "vfat" or mount_for(mounts, rel_path(mount.mount_point)) is not mount:
            continue  # not vfat, or covered by a later mount on the same point
        candidate = EspCandidate(mount)
        await _judge(provider, candidate, homes)
        candidates.append(candidate)
    usable = sorted((c for c in candidates if not c.rejected), key=lambda c: -c.score)
    if not usable:
        why = "; ".join(f"{c.mount.mount_point}: {c.rejected}" for c in candidates)
        return EspChoice(
            candidates=candidates,
            reason=(
                "no EFI System Partition is mounted"
                + (f" (vfat mounts rejected: {why})" if why else " (no vfat mount found)")
                + "; mount it at /boot/efi or /efi, or set esp_path in [plugins.uefi_capsule]"
            ),
        )
    usable[0].chosen = True
    return EspChoice(rel_path(usable[0].mount.mount_point), usable[0].mount, candidates)


async def esp_mount_of(provider: KernelProvider, esp: str) -> MountEntry | None:
    """The mount holding the ESP directory now (re-read from the kernel)."""
    return mount_for(await provider.mounts(), esp)


async def esp_partition(
    provider: KernelProvider, major: int, minor: int
) -> tuple[efi.HardDriveNode | None, int, str]:
    """The ESP's HD() node as the firmware will see it: ``(node, block size, why not)``.

    sysfs ``partition``/``start``/``size`` (start and size in 512-byte sectors) are
    converted to the disk's logical blocks (``queue/logical_block_size`` of the whole
    disk), the unit UEFI and fwupd-efi use (fwupd issue 6023: on a 4Kn disk a node in
    512-byte units makes fwupd-efi miss the capsule). The udev (blkid) view of the
    partition table must agree with sysfs.
    """
    base = f"{efi.SYS_DEV_BLOCK}/{major}:{minor}"
    values = {
        key: await read_text(provider, f"{base}/{key}") for key in ("partition", "start", "size")
    }
    try:
        props = await provider.udev_properties("block", major, minor)
    except KernelError:
        props = {}
    partuuid = props.get("ID_PART_ENTRY_UUID", "").lower()
    scheme = props.get("ID_PART_ENTRY_SCHEME", "gpt")
    if any(v is None or not v.isdigit() for v in values.values()) or not partuuid:
        return (
            None,
            0,
            (
                "the ESP is not a partition with a known PARTUUID "
                "(sysfs partition/start/size or udev ID_PART_ENTRY_UUID missing)"
            ),
        )
    signature, part_format, sig_type = partuuid, efi.PART_FORMAT_GPT, efi.SIGNATURE_GUID
    if scheme == "dos":
        # blkid's PARTUUID of an MBR partition is "<32-bit disk signature>-<number>"; the
        # HD() node carries the disk signature as a little-endian UINT32 in the first
        # four bytes of the 16-byte field (UEFI 2.10 §10.3.5.1), which is what packing
        # "<sig>-0000-0000-0000-000000000000" in EFI GUID byte order produces
        disk_id = partuuid.partition("-")[0]
        if len(disk_id) != 8 or not set(disk_id) <= set("0123456789abcdef"):
            return None, 0, f"the ESP's MBR disk signature is unknown (PARTUUID {partuuid!r})"
        signature = f"{disk_id}-0000-0000-0000-000000000000"
        part_format, sig_type = efi.PART_FORMAT_MBR, efi.SIGNATURE_MBR
    elif scheme != "gpt":
        return None, 0, f"the ESP is on a {scheme} partition table; livefw knows GPT and MBR"
    number, start, size = (int(values[k] or 0) for k in ("partition", "start", "size"))
    for key, value in (
        ("ID_PART_ENTRY_NUMBER", number),
        ("ID_PART_ENTRY_OFFSET", start),
        ("ID_PART_ENTRY_SIZE", size),
    ):
        seen = props.get(key, "")
        if seen.isdigit() and int(seen) != value:
            return (
                None,
                0,
                (
                    f"sysfs and the partition table disagree about the ESP ({key}={seen}, sysfs "
                    f"{value}); run partprobe or reboot before updating"
                ),
            )
    disk = props.get("ID_PART_ENTRY_DISK", "")
    text = (
        await read_text(provider, f"{efi.SYS_DEV_BLOCK}/{disk}/{efi.QUEUE_LOGICAL_BLOCK_SIZE}")
        if disk and "/" not in disk and ".." not in disk
        else None
    )
    if text is None or not text.isdigit() or int(text) < efi.SECTOR_SIZE:
        return (
            None,
            0,
            (
                "the logical block size of the ESP's disk is unknown (udev ID_PART_ENTRY_DISK or "
                "sysfs queue/logical_block_size missing), so no boot entry can point at it"
            ),
        )
    block = int(text)
    if (start * efi.SECTOR_SIZE) % block or (size * efi.SECTOR_SIZE) % block:
        return None, 0, f"the ESP is not aligned to the disk's {block}-byte logical blocks"
    node = efi.HardDriveNode(
        number,
        start * efi.SECTOR_SIZE // block,
        size * efi.SECTOR_SIZE // block,
        signature,
        part_format,
        sig_type,
    )
    return node, block, ""
