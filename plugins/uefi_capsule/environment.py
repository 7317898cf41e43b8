"""Where and how capsules can be staged on this machine.

Finds the EFI System Partition (configured, else the mounted vfat ESP), the
partition facts the HD device-path node needs (number, start, size from
``/sys/dev/block/MAJ:MIN``, PARTUUID from udev), the fwupd EFI loader (configured,
else the fwupd-efi package paths), Secure Boot, capsule-on-disk support and the
``EFI/<dir>`` fwupd uses; and picks the update method.
"""

from __future__ import annotations

import errno
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
    capsule_on_disk: bool = False
    efivarfs_writable: bool = True
    method: Method = "none"
    reasons: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, str]:
        """Device metadata describing the environment."""
        data = {
            "update-method": self.method,
            "esp": "/" + self.esp if self.esp else "",
            "efi-loader": "/" + self.loader_source if self.loader_source else "",
            "secure-boot": "enabled" if self.secure_boot else "disabled",
            "capsule-on-disk": "supported" if self.capsule_on_disk else "unsupported",
        }
        if self.partition is not None:
            data["esp-partuuid"] = self.partition.partition_signature
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
    """The mount holding provider path ``path`` (longest mount point prefix)."""
    best: MountEntry | None = None
    target = "/" + path
    for entry in mounts:
        point = entry.mount_point.rstrip("/") or "/"
        if (target == point or target.startswith(point + "/") or point == "/") and (
            best is None or len(point) > len(best.mount_point.rstrip("/") or "/")
        ):
            best = entry
    return best


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
    candidates = [m for m in mounts if m.fs_type == "vfat"]
    scored: list[tuple[int, MountEntry]] = []
    for mount in candidates:
        score = 0
        try:
            props = await provider.udev_properties("block", mount.major, mount.minor)
        except KernelError:
            props = {}
        if props.get("ID_PART_ENTRY_TYPE", "").lower() == ESP_TYPE_GUID:
            score += 4
        if mount.mount_point in ("/boot/efi", "/efi", "/boot"):
            score += 2
        if await provider.is_dir(_rel(mount.mount_point) + "/EFI"):
            score += 1
        scored.append((score, mount))
    if not scored:
        env.reasons.append(
            "no EFI System Partition is mounted (no vfat mount found); mount it at /boot/efi "
            "or set esp_path in [plugins.uefi_capsule]"
        )
        return None
    scored.sort(key=lambda item: -item[0])
    mount = scored[0][1]
    env.esp = _rel(mount.mount_point)
    return mount


async def _partition(provider: KernelProvider, mount: MountEntry | None, env: Environment) -> None:
    if mount is None or mount.major == 0:
        env.reasons.append("the ESP's block device is unknown, so no boot entry can point at it")
        return
    base = f"{efi.SYS_DEV_BLOCK}/{mount.major}:{mount.minor}"
    values = {}
    for key in ("partition", "start", "size"):
        values[key] = await _read(provider, f"{base}/{key}")
    try:
        props = await provider.udev_properties("block", mount.major, mount.minor)
    except KernelError:
        props = {}
    partuuid = props.get("ID_PART_ENTRY_UUID", "")
    scheme = props.get("ID_PART_ENTRY_SCHEME", "gpt")
    if None in values.values() or not partuuid:
        env.reasons.append(
            f"the ESP ({mount.source}) is not a partition with a known PARTUUID "
            "(sysfs partition/start/size or udev ID_PART_ENTRY_UUID missing)"
        )
        return
    if scheme != "gpt":
        env.reasons.append(f"the ESP is on a {scheme} partition table; livefw supports GPT only")
        return
    env.esp_device = (mount.major, mount.minor)
    env.partition = efi.HardDriveNode(
        int(values["partition"] or 0),
        int(values["start"] or 0),
        int(values["size"] or 0),
        partuuid.lower(),
    )


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
    wanted = str(config.get("update_method", "auto") or "auto")
    nvram_ok = bool(env.esp and env.partition and env.loader_source and env.efivarfs_writable)
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
