"""Where and how capsules can be staged on this machine.

Finds the EFI System Partition (configured, else the mounted vfat ESP), the
partition facts the HD device-path node needs (number, start, size from
``/sys/dev/block/MAJ:MIN``, PARTUUID from udev), the fwupd EFI loader (configured,
else the fwupd-efi package paths), Secure Boot, capsule-on-disk support and the
``EFI/<dir>`` fwupd uses; and picks the update method.
"""

from __future__ import annotations

import contextlib
import errno
import json
import posixpath
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

from livefw.errors import KernelError
from livefw.kernel import KernelProvider, MountEntry, normalize
from livefw.kernel.uapi import efi
from livefw.plugins.uefi_capsule.efivars import EfiVars

Method = Literal["nvram", "capsule-on-disk", "none"]

#: the GPT partition type of an EFI System Partition.
ESP_TYPE_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
#: the MBR partition type of an ESP as udev (blkid) reports it in ID_PART_ENTRY_TYPE.
ESP_MBR_TYPES = ("0xef", "ef")
#: loader architectures by firmware word size (fu-uefi-common.c).
_ARCHES = {"64": ("x64", "aa64", "riscv64", "loongarch64"), "32": ("ia32", "arm")}


@dataclass
class Environment:
    """What staging needs to know, with the reason when something is missing.

    Attributes:
        esp: provider path of the ESP's mount point, or ``""``.
        partition: the ESP's HD device-path node, or None when unknown.
        loader_source: provider path of the fwupd loader to copy, or ``""``.
        loader_name: ``fwupd<arch>.efi``.
        efi_dir: ``EFI/<dir>`` on the ESP where fwupd puts its files.
        method: what Install will do.
        reasons: why the NVRAM (or any) method is unavailable, for people.
    """

    esp: str = ""
    esp_device: tuple[int, int] | None = None
    partition: efi.HardDriveNode | None = None
    loader_source: str = ""
    loader_name: str = ""
    efi_dir: str = ""
    secure_boot: bool = False
    #: under Secure Boot: provider path of shim on the ESP, which starts the loader
    shim: str = ""
    capsule_on_disk: bool = False
    efivarfs_writable: bool = True
    method: Method = "none"
    reasons: list[str] = field(default_factory=list)
    logical_block_size: int = 0
    partuuid: str = ""
    esp_candidates: list[EspCandidate] = field(default_factory=list)

    def metadata(self) -> dict[str, str]:
        """Device metadata describing the environment."""
        data = {
            "update-method": self.method,
            "esp": "/" + self.esp if self.esp else "",
            "efi-loader": "/" + self.loader_source if self.loader_source else "",
            "secure-boot": "enabled" if self.secure_boot else "disabled",
            "efi-shim": "/" + self.shim if self.shim else "",
            "capsule-on-disk": "supported" if self.capsule_on_disk else "unsupported",
        }
        if self.partition is not None:
            data["esp-partuuid"] = self.partuuid
            data["esp-logical-block-size"] = str(self.logical_block_size)
        if self.esp_candidates:
            data["esp-candidates"] = json.dumps(
                [
                    {
                        "mount": c.mount.mount_point,
                        "source": c.mount.source,
                        "verdict": c.verdict(),
                    }
                    for c in self.esp_candidates
                ]
            )
        if self.reasons:
            data["update-method-reason"] = "; ".join(self.reasons)
        return data


def _rel(path: str) -> str:
    return normalize(path.lstrip("/")) if path.strip("/") else ""


async def _read(provider: KernelProvider, path: str) -> str | None:
    try:
        return (await provider.read_attr(path)).strip()
    except KernelError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV):
            return None
        raise


def _mount_for(mounts: list[MountEntry], path: str) -> MountEntry | None:
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
        removable = await _read(provider, f"{efi.SYS_DEV_BLOCK}/{disk}/removable") if disk else None
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
    if await provider.is_dir(_rel(point) + "/EFI"):
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
        if _mount_for(mounts, _rel(point)) is not entry:
            continue  # something is already mounted on top of it
        # read_file runs in a worker thread on the real machine: the path walk (and
        # the wait for systemd, which may fsck the ESP first) stays off the event loop;
        # the read itself fails (a directory, or no EFI/ yet) and does not matter
        with contextlib.suppress(KernelError):
            await provider.read_file(_rel(point) + "/EFI")
        triggered = True
    return triggered


async def _find_esp(
    provider: KernelProvider, config: dict[str, Any], mounts: list[MountEntry], env: Environment
) -> MountEntry | None:
    configured = str(config.get("esp_path", "") or "")
    if configured:
        env.esp = _rel(configured)
        if not await provider.is_dir(env.esp):
            env.reasons.append(f"the configured esp_path {configured} is not a directory")
            env.esp = ""
            return None
        return _mount_for(mounts, env.esp)
    if await _trigger_automounts(provider, mounts):
        mounts[:] = await provider.mounts()
    homes = await _user_homes(provider)
    candidates = []
    for mount in mounts:
        if mount.fs_type != "vfat" or _mount_for(mounts, _rel(mount.mount_point)) is not mount:
            continue  # not vfat, or covered by a later mount on the same point
        candidate = EspCandidate(mount)
        await _judge(provider, candidate, homes)
        candidates.append(candidate)
    env.esp_candidates = candidates
    usable = sorted((c for c in candidates if not c.rejected), key=lambda c: -c.score)
    if not usable:
        why = "; ".join(f"{c.mount.mount_point}: {c.rejected}" for c in candidates)
        env.reasons.append(
            "no EFI System Partition is mounted"
            + (f" (vfat mounts rejected: {why})" if why else " (no vfat mount found)")
            + "; mount it at /boot/efi or /efi, or set esp_path in [plugins.uefi_capsule]"
        )
        return None
    usable[0].chosen = True
    env.esp = _rel(usable[0].mount.mount_point)
    return usable[0].mount


async def esp_mount_of(provider: KernelProvider, esp: str) -> MountEntry | None:
    """The mount holding the ESP directory now (re-read from the kernel)."""
    return _mount_for(await provider.mounts(), esp)


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
    values = {key: await _read(provider, f"{base}/{key}") for key in ("partition", "start", "size")}
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
        await _read(provider, f"{efi.SYS_DEV_BLOCK}/{disk}/{efi.QUEUE_LOGICAL_BLOCK_SIZE}")
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


async def _partition(provider: KernelProvider, mount: MountEntry | None, env: Environment) -> None:
    if mount is None or mount.major == 0:
        env.reasons.append("the ESP's block device is unknown, so no boot entry can point at it")
        return
    node, block, why = await esp_partition(provider, mount.major, mount.minor)
    if node is None:
        env.reasons.append(why)
        return
    env.esp_device = (mount.major, mount.minor)
    env.partition = node
    try:
        props = await provider.udev_properties("block", mount.major, mount.minor)
    except KernelError:
        props = {}
    env.partuuid = props.get("ID_PART_ENTRY_UUID", "").lower() or node.partition_signature
    env.logical_block_size = block


async def _shim(provider: KernelProvider, env: Environment) -> bool:
    """Under Secure Boot the loader is started through shim on the ESP (as fwupd does).

    The firmware's db trusts Microsoft's UEFI CA, which signs shim; the distribution's
    fwupd loader (Debian's ``fwupdx64.efi.signed``: "Debian Secure Boot Signer 2022 -
    fwupd") is trusted only by shim's vendor certificate. Started directly, the
    firmware refuses it and the update silently never runs (VM lane, capsule-sb).
    fwupd's fu-uefi-bootmgr.c refuses "Secure boot is enabled, but shim isn't
    installed to ..."; so does this. False when Secure Boot needs a shim that is missing.
    """
    if not env.secure_boot or not env.esp or not env.loader_name:
        return True
    shim = f"{env.esp}/{env.efi_dir}/{env.loader_name.replace('fwupd', 'shim', 1)}"
    if await provider.exists(shim):
        env.shim = shim
        return True
    env.reasons.append(
        f"Secure Boot is enabled, but shim is not installed to /{shim}: the firmware "
        "starts the fwupd loader (signed with the distribution's key) only through shim, "
        "so the update would never run; install shim-signed on the ESP"
    )
    return False


async def _loader(provider: KernelProvider, config: dict[str, Any], env: Environment) -> None:
    configured = str(config.get("efi_loader_path", "") or "")
    if configured:
        path = _rel(configured)
        if await provider.exists(path):
            env.loader_source = path
            name = posixpath.basename(path).removesuffix(".signed")
            env.loader_name = name
        else:
            env.reasons.append(f"the configured efi_loader_path {configured} does not exist")
        return
    size = await _read(provider, efi.FW_PLATFORM_SIZE) or "64"
    for arch in _ARCHES.get(size, _ARCHES["64"]):
        name = f"fwupd{arch}.efi"
        for directory in efi.FWUPD_EFI_DIRS:
            unsigned, signed = f"{directory}/{name}", f"{directory}/{name}.signed"
            has_unsigned = await provider.exists(unsigned)
            has_signed = await provider.exists(signed)
            if env.secure_boot and has_signed:
                env.loader_source, env.loader_name = signed, name
                return
            if not env.secure_boot and (has_unsigned or has_signed):
                env.loader_source = unsigned if has_unsigned else signed
                env.loader_name = name
                return
            if env.secure_boot and has_unsigned:
                env.reasons.append(
                    f"Secure Boot is enabled but only the unsigned /{unsigned} is installed; "
                    "install the signed fwupd-efi package"
                )
                return
    env.reasons.append(
        "no fwupd EFI loader is installed (install fwupd-efi, or set efi_loader_path "
        "in [plugins.uefi_capsule])"
    )


async def _efi_dir(provider: KernelProvider, esp: str) -> str:
    """``EFI/systemd`` if present, else the os-release ID (or ID_LIKE) dir, else EFI/<ID>."""
    if await provider.is_dir(f"{esp}/EFI/systemd"):
        return "EFI/systemd"
    release: dict[str, str] = {}
    for path in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (await provider.read_file(path)).decode("utf-8", "replace")
        except KernelError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                release[key.strip()] = value.strip().strip("\"'")
        break
    os_id = release.get("ID", "")
    for candidate in [os_id, *release.get("ID_LIKE", "").split()]:
        if candidate and await provider.is_dir(f"{esp}/EFI/{candidate}"):
            return f"EFI/{candidate}"
    return f"EFI/{os_id or 'fwupd'}"


async def detect(provider: KernelProvider, config: dict[str, Any]) -> Environment:
    """Look at the machine now (the ESP may be mounted after the daemon started).

    Never raises for a kernel error: the environment then offers no method and the
    reason names the failing access.
    """
    try:
        return await _detect(provider, config)
    except KernelError as error:
        return Environment(reasons=[f"the machine could not be inspected: {error.message}"])


async def _detect(provider: KernelProvider, config: dict[str, Any]) -> Environment:
    env = Environment()
    variables = EfiVars(provider)
    mounts = await provider.mounts()
    efivarfs = _mount_for(mounts, efi.EFIVARS_DIR)
    if efivarfs is None or efivarfs.fs_type != "efivarfs":
        env.efivarfs_writable = False
        env.reasons.append("efivarfs is not mounted at /sys/firmware/efi/efivars")
    elif "ro" in efivarfs.options:
        env.efivarfs_writable = False
        env.reasons.append("efivarfs is mounted read-only; remount it read-write")
    secure = await variables.get_data(efi.SECURE_BOOT, efi.EFI_GLOBAL_VARIABLE_GUID)
    env.secure_boot = bool(secure and secure[0] == 1)
    supported = await variables.get_data(efi.OS_INDICATIONS_SUPPORTED, efi.EFI_GLOBAL_VARIABLE_GUID)
    if supported and len(supported) >= 8:
        (bits,) = struct.unpack_from("<Q", supported)
        env.capsule_on_disk = bool(bits & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
    mount = await _find_esp(provider, config, mounts, env)
    if env.esp:
        await _partition(provider, mount, env)
        env.efi_dir = await _efi_dir(provider, env.esp)
    await _loader(provider, config, env)
    shim_ok = await _shim(provider, env)
    wanted = str(config.get("update_method", "auto") or "auto")
    nvram_ok = bool(
        env.esp and env.partition and env.loader_source and env.efivarfs_writable and shim_ok
    )
    disk_ok = bool(env.esp and env.capsule_on_disk and env.efivarfs_writable)
    if not env.capsule_on_disk:
        env.reasons.append("the firmware does not support capsule on disk (OsIndicationsSupported)")
    if wanted == "nvram":
        env.method = "nvram" if nvram_ok else "none"
    elif wanted == "capsule-on-disk":
        env.method = "capsule-on-disk" if disk_ok else "none"
    else:
        env.method = "nvram" if nvram_ok else "capsule-on-disk" if disk_ok else "none"
    if env.method == "nvram":
        env.reasons = []
    return env
