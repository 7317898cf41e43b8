"""Where and how capsules can be staged on this machine.

Puts together the EFI System Partition and its HD() device-path node (esp.py), the
fwupd EFI loader (configured, else the fwupd-efi package paths), Secure Boot,
capsule-on-disk support (``OsIndicationsSupported``), whether efivarfs is
writable and the ``EFI/<dir>`` fwupd uses; and picks the update method.
"""

from __future__ import annotations

import json
import posixpath
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

from livefw.errors import KernelError
from livefw.kernel import KernelProvider, MountEntry
from livefw.kernel.uapi import efi
from livefw.plugins.uefi_capsule.efivars import EfiVars
from livefw.plugins.uefi_capsule.esp import (
    EspCandidate,
    esp_partition,
    find_esp,
    mount_for,
    read_text,
    rel_path,
)

Method = Literal["nvram", "capsule-on-disk", "none"]

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
        path = rel_path(configured)
        if await provider.exists(path):
            env.loader_source = path
            name = posixpath.basename(path).removesuffix(".signed")
            env.loader_name = name
        else:
            env.reasons.append(f"the configured efi_loader_path {configured} does not exist")
        return
    size = await read_text(provider, efi.FW_PLATFORM_SIZE) or "64"
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
    efivarfs = mount_for(mounts, efi.EFIVARS_DIR)
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
    choice = await find_esp(provider, config, mounts)
    env.esp, env.esp_candidates = choice.esp, choice.candidates
    if choice.reason:
        env.reasons.append(choice.reason)
    mount = choice.mount
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
