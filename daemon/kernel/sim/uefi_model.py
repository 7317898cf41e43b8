"""The simulated UEFI platform's state and constants.

Persisted by the machine (livefw.model records); shared by the kernel side
(livefw.kernel.sim.uefi_capsule: ESRT, efivarfs, the ESP) and the boot firmware
(livefw.kernel.sim.uefi_firmware: BootNext, the fwupd loader, UpdateCapsule).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import Literal

from livefw.kernel.sim.machine import STATE_FILE
from livefw.kernel.uapi import efi
from livefw.model import Field, Model

#: the component's name (its section in machine.json, its device keys' prefix).
COMPONENT_NAME = "uefi_capsule"

#: what the simulated "PKCS7" signature of an FMP image is: this prefix + sha256.
SIM_CERT_PREFIX = b"LIVEFW-SIM-PKCS7\x00"
#: content markers of the simulated fwupd EFI loader binaries.
LOADER_MARKER = b"MZ LIVEFW-SIM fwupd-efi loader\x00"
#: Debian's fwupdx64.efi.signed is signed by "Debian Secure Boot Signer 2022 - fwupd"
#: (Debian Secure Boot CA), which only shim's vendor certificate trusts; shim itself is
#: signed by Microsoft's UEFI CA, which the firmware's db trusts (checked on the
#: packages fwupd-amd64-signed 1:1.4+1 and shim-signed 1.51~1+deb12u1)
SIGNED_MARKER = b"signed-by: simulated Debian Secure Boot CA\x00"
MS_SIGNED_MARKER = b"signed-by: simulated Microsoft UEFI CA\x00"
SHIM_MARKER = b"MZ LIVEFW-SIM shim\x00"

ESP_MOUNT = "boot/efi"
#: where the ESP is when ``esp_automount`` is set: systemd's autofs at /efi.
ESP_AUTOMOUNT = "efi"
AUTOFS_MINOR = 41
ESP_MAJOR, ESP_MINOR = 259, 1
#: the whole disk (nvme0n1) holding the ESP and the root partition.
DISK_MAJOR, DISK_MINOR = 259, 0
ESP_MBR_PARTUUID = "8c2f41d7-01"
ESP_PARTUUID = "5f2d2c4a-9e2b-4c1f-a0b2-6a3f0e7d1c11"
ESP_START = 2048
ESP_SECTORS = 1048576  # 512 MiB
EFIVARS_MINOR = 30

#: fw_class of the default machine's system firmware (an arbitrary, fixed GUID).
SYSTEM_FW_CLASS = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"
DEVICE_FW_CLASS = "6a4e1a2f-3c55-4b3e-9d0e-7f1b2c3d4e5f"

#: fault -> ESRT last_attempt_status it forces on the targeted device's capsule.
STATUS_FAULTS: dict[str, int] = {
    "unsuccessful": 1,
    "insufficient-resources": 2,
    "incorrect-version": 3,
    "invalid-format": 4,
    "auth-error": 5,
    "ac-power": 6,
    "battery-low": 7,
    "unsatisfied-dependencies": 8,
}


class EsrtEntryState(Model, extra="forbid"):
    """One ESRT entry and the firmware behind it."""

    fw_class: str
    name: str
    fw_type: int = efi.FW_TYPE_SYSTEM
    fw_version: int = 1
    lowest_supported_fw_version: int = 1
    capsule_flags: int = 0
    last_attempt_version: int = 0
    last_attempt_status: int = 0

    def entry(self) -> efi.EsrtEntry:
        """As the kernel renders it."""
        return efi.EsrtEntry(
            self.fw_class,
            self.fw_type,
            self.fw_version,
            self.lowest_supported_fw_version,
            self.capsule_flags,
            self.last_attempt_version,
            self.last_attempt_status,
        )


class VarState(Model, extra="forbid"):
    """A committed EFI variable: the efivarfs file content and its inode flag."""

    content: str  # base64 of attributes + data
    immutable: bool = False


class UefiState(Model, extra="forbid"):
    """The simulated platform.

    Attributes:
        boot: ``uefi``; ``legacy`` (no /sys/firmware/efi); ``xen-dom0`` (EFI runtime
            but no ESRT passed through, /sys/hypervisor/type = xen).
        esrt_present: the firmware publishes an ESRT.
        esp_size: capacity of the ESP in bytes (free space = size - files).
        var_store_size: NVRAM bytes for variables (name + data).
        efivarfs_readonly: efivarfs is mounted read-only (writes fail with EROFS).
        secure_boot: the firmware only starts signed binaries.
        loader_installed / signed_loader_installed: the fwupd-efi package files in
            /usr/libexec/fwupd/efi.
        capsule_on_disk: OsIndicationsSupported has FILE_CAPSULE_DELIVERY_SUPPORTED.
        default_status: the ESRT status every applied capsule gets when no fault
            says otherwise (0 = success).
        os_id: ``ID`` in /etc/os-release.
        logical_block_size: the ESP disk's logical block size (512, or 4096 for a 4Kn
            disk): ``queue/logical_block_size``; sysfs start/size stay in 512-byte units.
        cap_sys_admin: livefwd holds CAP_SYS_ADMIN (the shipped unit drops it), which
            kernels before 6.5 want for reading ESRT entries.
        esrt_snapshot: the unit's ExecStartPre=+ copied the ESRT to /run/livefw/esrt.
        xen_esrt: the Xen hypervisor preserves the ESRT for dom0 (the kernel shows it
            from 6.3 on).
        esp_automount: the ESP is behind systemd's autofs at /efi, not yet triggered.
        esp_mbr: the ESP is on an MBR disk (partition type 0xef).
        hostile_mounts: comma-separated vfat mounts that must never be taken for the
            ESP: ``udisks-usb`` (a USB stick with the ESP type, udisks-mounted below
            /media with uid=/gid=), ``loop-esp`` (a loop image with the ESP type),
            ``home`` (a vfat mounted in a home directory).
        last_boot_hang: why the last boot hung in the loader (``""`` if it did not).
    """

    boot: Literal["uefi", "legacy", "xen-dom0"] = "uefi"
    esrt_present: bool = True
    esp_size: int = 64 * 1024 * 1024
    var_store_size: int = 64 * 1024
    efivarfs_readonly: bool = False
    secure_boot: bool = False
    loader_installed: bool = True
    signed_loader_installed: bool = True
    capsule_on_disk: bool = True
    default_status: int = 0
    os_id: str = "debian"
    logical_block_size: int = 512
    cap_sys_admin: bool = False
    esrt_snapshot: bool = True
    xen_esrt: bool = True
    esp_automount: bool = False
    esp_automounted: bool = False
    esp_mbr: bool = False
    hostile_mounts: str = ""
    last_boot_hang: str = ""
    entries: list[EsrtEntryState] = Field(default_factory=list)
    variables: dict[str, VarState] = Field(default_factory=dict)
    esp_files: dict[str, str] = Field(default_factory=dict)
    esp_dirs: list[str] = Field(default_factory=list)
    #: what the firmware did at the last boots (for `livefw sim devices` and tests).
    boot_log: list[str] = Field(default_factory=list)


def hang_report(hang: str) -> str:
    """A boot that hung in the loader (``last_boot_hang``), said plainly for people.

    A person at a real machine sees a screen that never changes, so `livefw sim
    reboot` says what hung, why, and what to do next; ``""`` when nothing hung.
    """
    if not hang:
        return ""
    return (
        f"THE BOOT HUNG in the fwupd EFI loader, which BootNext started: {hang}. "
        "fwupd-efi 1.4 faults when it cannot find or open a capsule (fwupd-efi issue "
        "112); a real machine stays stuck at that screen until someone power-cycles it. "
        "The simulated machine was power-cycled and booted normally (BootNext is "
        "consumed); no capsule was applied. Next: start livefwd (its history marks the "
        "install failed and it removes what was staged), check the ESP with `livefw esp` "
        "(partition, start, size, logical block size) and install again."
    )


def saved_boot_report(directory: str) -> str:
    """:func:`hang_report` of the machine saved in ``directory`` (after a reboot).

    Reads the one field from machine.json instead of loading the machine: the CLI
    asks right after `sim reboot`, while the daemon that ran it may still be ending
    (machine.json is replaced atomically, so the read sees the state after the boot).
    """
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError):
        return ""
    state = raw.get("components", {}).get(COMPONENT_NAME) if isinstance(raw, dict) else None
    hang = state.get("last_boot_hang", "") if isinstance(state, dict) else ""
    return hang_report(hang if isinstance(hang, str) else "")


def b64(data: bytes) -> str:
    """Bytes as the base64 text the state stores."""
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    """The bytes behind :func:`b64` text."""
    return base64.b64decode(text.encode())


def efi_now() -> efi.EfiTime:
    """The time as the firmware stamps it (EFI_TIME, UTC, no time zone)."""
    stamp = time.gmtime()
    return efi.EfiTime(
        stamp.tm_year,
        stamp.tm_mon,
        stamp.tm_mday,
        stamp.tm_hour,
        stamp.tm_min,
        stamp.tm_sec,
        timezone=efi.EFI_UNSPECIFIED_TIMEZONE,
    )


def sim_signature(payload: bytes | memoryview) -> bytes:
    """The simulated PKCS7 blob over an FMP image payload."""
    return SIM_CERT_PREFIX + hashlib.sha256(payload).digest()
