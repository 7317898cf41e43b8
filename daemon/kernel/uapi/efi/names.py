"""Who owns a variable: the vendor GUIDs (include/linux/efi.h), and SecureBoot.

A variable is a name under a vendor GUID. The names with a codec of their own live
beside it (BootNext in :mod:`.load_option`, OsIndications in
:mod:`.capsule_delivery`, FWUPDATE_* in :mod:`.update_info`); SecureBoot is only read.
"""

from __future__ import annotations

__all__ = [
    "EFI_CAPSULE_REPORT_GUID",
    "EFI_GLOBAL_VARIABLE_GUID",
    "FWUPDATE_GUID",
    "LINUX_EFI_CRASH_GUID",
    "LINUX_EFI_RANDOM_SEED_TABLE_GUID",
    "SECURE_BOOT",
    "SHIM_LOCK_GUID",
    "UX_CAPSULE_GUID",
]

#: include/linux/efi.h: vendor GUIDs (text, lowercase).
EFI_GLOBAL_VARIABLE_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
#: fwupd/fwupdate: UPDATE_INFO, FWUPDATE_VERBOSE, FWUPDATE_DEBUG_LOG (fwup-efi.h).
FWUPDATE_GUID = "0abba7dc-e516-4167-bbf5-4d9d1c739416"
#: EFI_CAPSULE_REPORT_GUID: Capsule####, CapsuleMax, CapsuleLast (UEFI 2.10 §8.5.6).
EFI_CAPSULE_REPORT_GUID = "39b68c46-f7fb-441b-b6ec-16b0f69821f3"
UX_CAPSULE_GUID = "3b8c8162-188c-46a4-aec9-be43f1d65697"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
#: LINUX_EFI_CRASH_GUID: whitelisted for mutable files (efivarfs inode.c).
LINUX_EFI_CRASH_GUID = "cfc8fc79-be2e-4ddc-97f0-9f98bfe298a0"
#: LINUX_EFI_RANDOM_SEED_TABLE_GUID: efivarfs refuses to create it (EPERM).
LINUX_EFI_RANDOM_SEED_TABLE_GUID = "1ce1e5bc-7ceb-42f2-81e5-8aadf180f57b"

SECURE_BOOT = "SecureBoot"
