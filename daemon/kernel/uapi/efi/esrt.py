"""The EFI System Resource Table as the kernel exposes it below /sys/firmware/efi/esrt.

Sources: drivers/firmware/efi/esrt.c (``esre_attr_show()``, the entry files and their
format, the limits) and Documentation/ABI/testing/sysfs-firmware-efi-esrt; the
fw_type and last_attempt_status values are UEFI 2.10 §23.4 "EFI System Resource
Table". docs/kernel.md, section "UEFI: ESRT, efivarfs, boot variables", lists each
kernel behaviour with its source.
"""

from __future__ import annotations

from livefw.kernel.uapi.capsule import guid_from_efi, guid_to_efi
from livefw.record import Frozen

__all__ = [
    "ESRT_DIR",
    "ESRT_ENTRIES",
    "ESRT_ENTRY_FILES",
    "ESRT_MAX_ENTRIES",
    "ESRT_ON_XEN_SINCE",
    "ESRT_RESOURCE_COUNT",
    "ESRT_RESOURCE_COUNT_MAX",
    "ESRT_RESOURCE_VERSION",
    "ESRT_SNAPSHOT_DIR",
    "ESRT_VERSION",
    "ESRT_WITHOUT_SYS_ADMIN_SINCE",
    "FW_TYPE_DEVICE",
    "FW_TYPE_SYSTEM",
    "FW_TYPE_UEFI_DRIVER",
    "FW_TYPE_UNKNOWN",
    "LAST_ATTEMPT_AUTH_ERROR",
    "LAST_ATTEMPT_INCORRECT_VERSION",
    "LAST_ATTEMPT_INSUFFICIENT_RESOURCES",
    "LAST_ATTEMPT_INVALID_FORMAT",
    "LAST_ATTEMPT_PWR_EVT_AC",
    "LAST_ATTEMPT_PWR_EVT_BATT",
    "LAST_ATTEMPT_STATUS",
    "LAST_ATTEMPT_SUCCESS",
    "LAST_ATTEMPT_UNSATISFIED_DEPENDENCIES",
    "LAST_ATTEMPT_UNSUCCESSFUL",
    "LAST_ATTEMPT_VENDOR_MAX",
    "LAST_ATTEMPT_VENDOR_MIN",
    "EsrtEntry",
    "describe_last_attempt_status",
    "format_version",
    "last_attempt_transient",
]

#: drivers/firmware/efi/esrt.c: the ESRT kobject below the EFI kobject.
ESRT_DIR = "sys/firmware/efi/esrt"
ESRT_ENTRIES = "sys/firmware/efi/esrt/entries"
ESRT_RESOURCE_COUNT = "fw_resource_count"
ESRT_RESOURCE_COUNT_MAX = "fw_resource_count_max"
ESRT_RESOURCE_VERSION = "fw_resource_version"
#: the kernel refuses ESRTs with more entries (esrt.c).
ESRT_MAX_ENTRIES = 128
#: the only ESRT version the kernel exposes (esrt.c ESRT_FIRMWARE_RESOURCE_VERSION).
ESRT_VERSION = 1
#: files of each ``entries/entry<N>`` directory, all mode 0400 (esrt.c).
ESRT_ENTRY_FILES = (
    "fw_class",
    "fw_type",
    "fw_version",
    "lowest_supported_fw_version",
    "capsule_flags",
    "last_attempt_version",
    "last_attempt_status",
)

#: where the shipped unit's ExecStartPre=+ copies the ESRT at each daemon start, for
#: kernels before 6.5 whose ``esre_attr_show()`` wants CAP_SYS_ADMIN (livefwd.service).
ESRT_SNAPSHOT_DIR = "run/livefw/esrt"
#: the first kernel release whose ESRT entries are readable without CAP_SYS_ADMIN
#: (commit d0a1865cf7e2 "efi/esrt: Allow ESRT access without CAP_SYS_ADMIN").
ESRT_WITHOUT_SYS_ADMIN_SINCE = "6.5"
#: the first kernel release that exposes the ESRT in a Xen dom0 (commit 01de145dc7fb
#: "efi: Actually enable the ESRT under Xen": esrt.c accepts EFI_PARAVIRT).
ESRT_ON_XEN_SINCE = "6.3"

#: ESRT fw_type (UEFI 2.10 §23.4 "EFI System Resource Table"; esrt.c shows it as a number).
FW_TYPE_UNKNOWN = 0
FW_TYPE_SYSTEM = 1
FW_TYPE_DEVICE = 2
FW_TYPE_UEFI_DRIVER = 3

#: ESRT last_attempt_status (UEFI 2.10 §23.4; the kernel ABI doc's list is off by one).
LAST_ATTEMPT_SUCCESS = 0
LAST_ATTEMPT_UNSUCCESSFUL = 1
LAST_ATTEMPT_INSUFFICIENT_RESOURCES = 2
LAST_ATTEMPT_INCORRECT_VERSION = 3
LAST_ATTEMPT_INVALID_FORMAT = 4
LAST_ATTEMPT_AUTH_ERROR = 5
LAST_ATTEMPT_PWR_EVT_AC = 6
LAST_ATTEMPT_PWR_EVT_BATT = 7
LAST_ATTEMPT_UNSATISFIED_DEPENDENCIES = 8
LAST_ATTEMPT_VENDOR_MIN = 0x1000
LAST_ATTEMPT_VENDOR_MAX = 0x4000

LAST_ATTEMPT_STATUS: dict[int, str] = {
    0: "success",
    1: "unsuccessful",
    2: "insufficient resources",
    3: "incorrect version",
    4: "invalid format",
    5: "authentication error",
    6: "AC power event (the machine was not on AC power)",
    7: "battery power event (the battery was too low)",
    8: "unsatisfied dependencies",
}


def describe_last_attempt_status(status: int) -> str:
    """A person's reading of an ESRT ``last_attempt_status``."""
    if status in LAST_ATTEMPT_STATUS:
        return LAST_ATTEMPT_STATUS[status]
    if LAST_ATTEMPT_VENDOR_MIN <= status <= LAST_ATTEMPT_VENDOR_MAX:
        return f"vendor-specific failure 0x{status:x}"
    return f"unknown status {status}"


def last_attempt_transient(status: int) -> bool:
    """Power events are worth retrying as they are (fwupd: transient failure)."""
    return status in (LAST_ATTEMPT_PWR_EVT_AC, LAST_ATTEMPT_PWR_EVT_BATT)


class EsrtEntry(Frozen):
    """One ``entries/entry<N>`` directory."""

    _FIELDS = ESRT_ENTRY_FILES  # a field per file of the entry directory, in order
    fw_class: str
    fw_type: int
    fw_version: int
    lowest_supported_fw_version: int
    capsule_flags: int
    last_attempt_version: int
    last_attempt_status: int

    def __init__(
        self,
        fw_class: str,
        fw_type: int,
        fw_version: int,
        lowest_supported_fw_version: int,
        capsule_flags: int,
        last_attempt_version: int,
        last_attempt_status: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "fw_class", fw_class)
        _set(self, "fw_type", fw_type)
        _set(self, "fw_version", fw_version)
        _set(self, "lowest_supported_fw_version", lowest_supported_fw_version)
        _set(self, "capsule_flags", capsule_flags)
        _set(self, "last_attempt_version", last_attempt_version)
        _set(self, "last_attempt_status", last_attempt_status)

    def render(self) -> dict[str, str]:
        """File name -> content, exactly as esrt.c prints them."""
        return {
            "fw_class": f"{self.fw_class.lower()}\n",
            "fw_type": f"{self.fw_type}\n",
            "fw_version": f"{self.fw_version}\n",
            "lowest_supported_fw_version": f"{self.lowest_supported_fw_version}\n",
            "capsule_flags": f"0x{self.capsule_flags:x}\n",
            "last_attempt_version": f"{self.last_attempt_version}\n",
            "last_attempt_status": f"{self.last_attempt_status}\n",
        }

    @classmethod
    def parse(cls, files: dict[str, str]) -> EsrtEntry:
        """Inverse of :meth:`render`; raises ValueError on a malformed value."""
        try:
            return cls(
                fw_class=guid_from_efi(guid_to_efi(files["fw_class"].strip())),
                fw_type=int(files["fw_type"].strip()),
                fw_version=int(files["fw_version"].strip()),
                lowest_supported_fw_version=int(files["lowest_supported_fw_version"].strip()),
                capsule_flags=int(files["capsule_flags"].strip(), 0),
                last_attempt_version=int(files["last_attempt_version"].strip()),
                last_attempt_status=int(files["last_attempt_status"].strip()),
            )
        except KeyError as error:
            raise ValueError(f"ESRT entry lacks {error.args[0]}") from error


def format_version(value: int) -> str:
    """ESRT versions are plain u32 numbers; fwupd's ``number`` format prints them so."""
    return str(value)
