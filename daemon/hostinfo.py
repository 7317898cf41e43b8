"""Facts about the host for fwupd's API: hardware IDs, machine id, report metadata, HSI.

Everything is read through the :class:`~livefw.kernel.provider.KernelProvider`, so the
simulated machine answers in tests and the real ``/sys`` on a machine:

* **Hardware IDs** are fwupd's CHIDs (fwupd ``libfwupdplugin/fu-context-hwid.c``
  ``fu_context_get_hwid_replace_keys()``): the SMBIOS values the kernel publishes in
  ``/sys/class/dmi/id`` (drivers/firmware/dmi-id.c ``dmi_id_init()``; fwupd
  ``fu-context-hwid-dmi.c`` reads the same files) joined with ``&`` in the fifteen
  Microsoft combinations, hashed as a version-5 UUID in Microsoft's namespace over the
  UTF-16LE text.
* **HostMachineId** is fwupd's ``fwupd_build_machine_id("fwupd")``: SHA-256 of the salt
  followed by the bytes of ``/etc/machine-id``.
* **Host security attributes** (HSI) are only those livefw can establish itself:
  Secure Boot (efivarfs ``SecureBoot``/``SetupMode``), UEFI capsule updates (the ESRT),
  kernel lockdown (``/sys/kernel/security/lockdown``, security/lockdown/lockdown.c
  ``lockdown_read()``), kernel taint (``/proc/sys/kernel/tainted``, kernel/panic.c;
  bit 19 TAINT_FWCTL is set by fwctl debug-write RPCs, drivers/fwctl/main.c
  ``fwctl_cmd_rpc()``), PFRU anti-rollback, and firmware waiting for runtime
  activation. fwupd's chipset checks (SPI, Boot Guard, IOMMU, TPM...) are absent.
"""

from __future__ import annotations

import hashlib
import platform
import time
import uuid
from typing import Any

from livefw.errors import LivefwError
from livefw.kernel.provider import KernelProvider
from livefw.kernel.uapi import efi
from livefw.record import FACTORY, Frozen, Record

#: where the kernel publishes the SMBIOS strings it parsed (drivers/firmware/dmi-id.c).
DMI_DIR = "sys/class/dmi/id"
#: fwupd's HWID keys and the dmi-id attribute each comes from (fu-context-hwid-dmi.c).
DMI_KEYS = {
    "BiosVendor": "bios_vendor",
    "BiosVersion": "bios_version",
    "Manufacturer": "sys_vendor",
    "Family": "product_family",
    "ProductName": "product_name",
    "ProductSku": "product_sku",
    "EnclosureKind": "chassis_type",
    "BaseboardManufacturer": "board_vendor",
    "BaseboardProduct": "board_name",
}
#: the attribute values are short strings; anything longer is not SMBIOS.
DMI_VALUE_MAX = 256
#: Microsoft's CHID combinations, as fwupd ``fu_context_get_hwid_replace_keys()`` lists them.
HWID_KEYS = (
    "Manufacturer&Family&ProductName&ProductSku&BiosVendor&BiosVersion&BiosMajorRelease"
    "&BiosMinorRelease",
    "Manufacturer&Family&ProductName&BiosVendor&BiosVersion&BiosMajorRelease&BiosMinorRelease",
    "Manufacturer&ProductName&BiosVendor&BiosVersion&BiosMajorRelease&BiosMinorRelease",
    "Manufacturer&Family&ProductName&ProductSku&BaseboardManufacturer&BaseboardProduct",
    "Manufacturer&Family&ProductName&ProductSku",
    "Manufacturer&Family&ProductName",
    "Manufacturer&ProductSku&BaseboardManufacturer&BaseboardProduct",
    "Manufacturer&ProductSku",
    "Manufacturer&ProductName&BaseboardManufacturer&BaseboardProduct",
    "Manufacturer&ProductName",
    "Manufacturer&Family&BaseboardManufacturer&BaseboardProduct",
    "Manufacturer&Family",
    "Manufacturer&EnclosureKind",
    "Manufacturer&BaseboardManufacturer&BaseboardProduct",
    "Manufacturer",
)
#: fwupd's namespace for HWIDs (``FWUPD_GUID_FLAG_NAMESPACE_MICROSOFT``).
MICROSOFT_NAMESPACE = uuid.UUID("70ffd812-4c7f-4c7d-0000-000000000000")

MACHINE_ID = "etc/machine-id"
LOCKDOWN = "sys/kernel/security/lockdown"
TAINTED = "proc/sys/kernel/tainted"
#: include/linux/panic.h TAINT_FWCTL (Linux 6.15).
TAINT_FWCTL = 1 << 19
SETUP_MODE = "SetupMode"

#: FwupdSecurityAttrFlags / Level / Result (libfwupd fwupd-security-attr.h).
ATTR_SUCCESS, ATTR_RUNTIME_ISSUE, ATTR_ACTION_CONFIG_FW, ATTR_ACTION_CONFIG_OS = 1, 1024, 4096, 8192
RESULT = {
    "enabled": 1,
    "not-enabled": 2,
    "valid": 3,
    "not-valid": 4,
    "tainted": 9,
    "not-tainted": 10,
    "found": 11,
    "not-found": 12,
}


class SecurityAttr(Frozen):
    """One HSI attribute, as fwupd's ``GetHostSecurityAttrs`` dictionary carries it."""

    _FIELDS = (
        "appstream_id",
        "name",
        "level",
        "result",
        "success",
        "summary",
        "runtime_issue",
        "action",
        "success_result",
        "plugin",
    )
    appstream_id: str
    name: str
    level: int
    result: str
    success: bool
    summary: str
    runtime_issue: bool = False
    action: int = 0
    success_result: str = "enabled"
    plugin: str = "livefw"

    def __init__(
        self,
        appstream_id: str,
        name: str,
        level: int,
        result: str,
        success: bool,
        summary: str,
        runtime_issue: bool = False,
        action: int = 0,
        success_result: str = "enabled",
        plugin: str = "livefw",
    ) -> None:
        _set = object.__setattr__
        _set(self, "appstream_id", appstream_id)
        _set(self, "name", name)
        _set(self, "level", level)
        _set(self, "result", result)
        _set(self, "success", success)
        _set(self, "summary", summary)
        _set(self, "runtime_issue", runtime_issue)
        _set(self, "action", action)
        _set(self, "success_result", success_result)
        _set(self, "plugin", plugin)

    def flags(self) -> int:
        """FwupdSecurityAttrFlags."""
        value = ATTR_SUCCESS if self.success else self.action
        if self.runtime_issue and not self.success:
            value |= ATTR_RUNTIME_ISSUE
        return value


class HostInfo(Record):
    """What ``org.freedesktop.fwupd``'s Host* properties and Hwids publish."""

    _FIELDS = ("dmi", "dmi_reason", "machine_id", "machine_id_reason")
    dmi: dict[str, str]
    dmi_reason: str = ""
    machine_id: str = ""
    machine_id_reason: str = ""

    def __init__(
        self,
        dmi: dict[str, str] = FACTORY,
        dmi_reason: str = "",
        machine_id: str = "",
        machine_id_reason: str = "",
    ) -> None:
        self.dmi = dict() if dmi is FACTORY else dmi
        self.dmi_reason = dmi_reason
        self.machine_id = machine_id
        self.machine_id_reason = machine_id_reason

    @property
    def vendor(self) -> str:
        """HostVendor: the DMI system vendor, or its placeholder."""
        return self.dmi.get("Manufacturer") or "Unknown Vendor"

    @property
    def product(self) -> str:
        """HostProduct: the DMI product name, or its placeholder."""
        return self.dmi.get("ProductName") or "Unknown Product"

    def hwids(self) -> list[tuple[str, str]]:
        """The ``Hwids`` property: the values, then (combination, CHID) per combination.

        Without DMI data: one ``("Error", reason)`` pair, so a person running
        ``fwupdmgr hwids`` reads why the list is empty of IDs.
        """
        if not self.dmi:
            return [("Error", self.dmi_reason or "no SMBIOS data")]
        result = list(self.dmi.items())
        for keys in HWID_KEYS:
            values = [self.dmi.get(key) for key in keys.split("&")]
            if all(values):
                result.append((keys, chid("&".join(v for v in values if v))))
        return result


def chid(text: str) -> str:
    """A CHID (fwupd ``fu_context_hwid_get_guid_for_str()``): UUIDv5 of UTF-16LE text."""
    digest = hashlib.sha1(MICROSOFT_NAMESPACE.bytes + text.encode("utf-16-le")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


async def _read(provider: KernelProvider, path: str, limit: int = DMI_VALUE_MAX) -> str | None:
    try:
        data = await provider.read_file(path)
    except LivefwError:
        return None
    if len(data) > limit:
        return None
    return data.decode("utf-8", "replace").strip()


async def load_host(provider: KernelProvider) -> HostInfo:
    """Read the DMI strings and the machine id (once, at start)."""
    info = HostInfo()
    if not await provider.is_dir(DMI_DIR):
        info.dmi_reason = (
            "no /sys/class/dmi/id: the firmware publishes no SMBIOS tables (or the kernel "
            "was built without CONFIG_DMIID), so there are no hardware IDs"
        )
    else:
        for key, attr in DMI_KEYS.items():
            value = await _read(provider, f"{DMI_DIR}/{attr}")
            if value and key == "EnclosureKind" and value.isdigit():
                # fwupd reads the type 3 byte from the SMBIOS table and prints "%x"
                value = f"{int(value):x}"
            if value:
                info.dmi[key] = value
        release = await _read(provider, f"{DMI_DIR}/bios_release")
        if release and "." in release:
            # SMBIOS 2.4+ type 0 bytes 0x14/0x15 (dmi-id.c: "%u.%u"); fwupd prints "%02x"
            major, _, minor = release.partition(".")
            if major.isdigit() and minor.isdigit():
                info.dmi["BiosMajorRelease"] = f"{int(major):02x}"
                info.dmi["BiosMinorRelease"] = f"{int(minor):02x}"
        if not info.dmi:
            info.dmi_reason = "/sys/class/dmi/id holds no readable SMBIOS strings"
    try:
        raw = await provider.read_file(MACHINE_ID)
    except LivefwError as error:
        info.machine_id_reason = f"/etc/machine-id cannot be read: {error.message}"
    else:
        if raw.strip():
            info.machine_id = hashlib.sha256(b"fwupd" + raw[:4096]).hexdigest()
        else:
            info.machine_id_reason = "The machine-id is present but unset"
    return info


def _os_release() -> dict[str, str]:
    try:
        return dict(platform.freedesktop_os_release())
    except OSError:
        return {}


async def report_metadata(
    provider: KernelProvider, fwupd_version: str, livefw_version: str
) -> dict[str, str]:
    """The facts of fwupd's ``GetReportMetadata`` a report carries (keys as fwupd names them).

    The distribution is the one livefwd runs on (its own /etc/os-release), the kernel
    the one the provider describes (the simulated kernel under ``--simulate``).
    """
    result = {
        "CompileVersion(org.freedesktop.fwupd)": fwupd_version,
        "RuntimeVersion(org.freedesktop.fwupd)": fwupd_version,
        "CompileVersion(org.livefw.daemon)": livefw_version,
        "RuntimeVersion(org.livefw.daemon)": livefw_version,
        "KernelName": "Linux",
        "CpuArchitecture": platform.machine(),
        "FwupdSupported": "True",
    }
    release = await _read(provider, efi.OSRELEASE)
    if release:
        result["KernelVersion"] = release
    boot = await _read(provider, "proc/sys/kernel/random/boot_id")
    if boot:
        result["BootId"] = boot
    result["BootTime"] = str(int(time.time() - time.monotonic()))
    os_release = _os_release()
    names = (("ID", "DistroId"), ("VERSION_ID", "DistroVersion"), ("VARIANT_ID", "DistroVariant"))
    for key, name in names:
        if os_release.get(key):
            result[name] = os_release[key]
    return result


async def _efi_bool(provider: KernelProvider, name: str) -> bool | None:
    """A one-byte UEFI global variable (4 attribute bytes, then the value)."""
    try:
        data = await provider.read_file(efi.var_path(name, efi.EFI_GLOBAL_VARIABLE_GUID))
    except LivefwError:
        return None
    return bool(len(data) >= 5 and data[4] == 1)


async def security_attrs(
    provider: KernelProvider, devices: list[Any], fwctl_rpcs: int = 0
) -> list[SecurityAttr]:
    """The HSI attributes livefw can establish on this machine (see the module doc).

    ``devices`` are the engine's devices (plugin, flags and update state are read);
    ``fwctl_rpcs`` how many debug-write fwctl RPCs livefwd brokered this boot.
    """
    attrs: list[SecurityAttr] = []
    if await provider.is_dir(efi.EFI_DIR):
        secure = await _efi_bool(provider, efi.SECURE_BOOT)
        setup = await _efi_bool(provider, SETUP_MODE)
        if secure is None:
            result, summary = "not-found", "the SecureBoot variable is missing"
        elif setup:
            result, summary = "not-valid", "Secure Boot is supported, but SetupMode is enabled"
        elif secure:
            result, summary = "enabled", "Secure Boot is supported and enabled"
        else:
            result, summary = "not-enabled", "Secure Boot is supported, but turned off"
        attrs.append(
            SecurityAttr(
                "org.fwupd.hsi.Uefi.SecureBoot", "UEFI Secure Boot", 1, result,
                result == "enabled", summary, action=ATTR_ACTION_CONFIG_FW,
            )
        )  # fmt: skip
        esrt = await provider.is_dir(efi.ESRT_DIR)
        attrs.append(
            SecurityAttr(
                "org.fwupd.hsi.Bios.CapsuleUpdates", "BIOS capsule updates", 1,
                "enabled" if esrt else "not-enabled", esrt,
                "the firmware publishes an ESRT: UEFI capsule updates are possible"
                if esrt else "no ESRT: the firmware offers no capsule updates",
                action=ATTR_ACTION_CONFIG_FW,
            )
        )  # fmt: skip
    if any(d.plugin == "pfru" for d in devices):
        attrs.append(
            SecurityAttr(
                "org.fwupd.hsi.Bios.RollbackProtection", "BIOS firmware rollback protection", 2,
                "enabled", True,
                "PFRU firmware refuses capsules below the running version or security "
                "version (SVN); livefw never offers them",
            )
        )  # fmt: skip
    lockdown = await _read(provider, LOCKDOWN)
    if lockdown is not None:
        mode = lockdown[lockdown.find("[") + 1 : lockdown.find("]")] if "[" in lockdown else ""
        enabled = mode in ("integrity", "confidentiality")
        attrs.append(
            SecurityAttr(
                "org.fwupd.hsi.Kernel.Lockdown", "Linux kernel lockdown", 0,
                "enabled" if enabled else ("not-enabled" if mode == "none" else "not-valid"),
                enabled, f"lockdown is {mode or 'unreadable'}", runtime_issue=True,
                action=ATTR_ACTION_CONFIG_OS,
            )
        )  # fmt: skip
    tainted = await _read(provider, TAINTED)
    if tainted is not None:
        try:
            mask = int(tainted or "0")
        except ValueError:
            mask = -1
        if mask < 0:
            result, summary = "not-valid", "the taint mask cannot be read"
        elif mask == 0:
            result, summary = "not-tainted", "the kernel is not tainted"
        elif mask & TAINT_FWCTL:
            summary = "tainted by fwctl debug-write RPCs (TAINT_FWCTL, bit 19)"
            if fwctl_rpcs:
                summary += f"; livefwd brokered {fwctl_rpcs} of them this boot"
            if mask & ~TAINT_FWCTL:
                summary += f"; other taint bits 0x{mask & ~TAINT_FWCTL:x}"
            result = "tainted"
        else:
            result, summary = "tainted", f"the kernel is tainted (mask 0x{mask:x})"
        attrs.append(
            SecurityAttr(
                "org.fwupd.hsi.Kernel.Tainted", "Linux kernel", 0, result,
                result == "not-tainted", summary, runtime_issue=True,
                success_result="not-tainted",
            )
        )  # fmt: skip
    pending = [d.name for d in devices if "needs-activation" in d.flags]
    if any("activation-capable" in d.flags or "needs-activation" in d.flags for d in devices):
        attrs.append(
            SecurityAttr(
                "org.livefw.hsi.RuntimeActivation", "Runtime firmware activation", 0,
                "not-valid" if pending else "valid", not pending,
                "staged firmware waits for activation: " + ", ".join(sorted(pending))
                if pending else "no firmware waits for runtime activation",
                runtime_issue=True, success_result="valid",
            )
        )  # fmt: skip
    return attrs


def host_security_id(attrs: list[SecurityAttr]) -> str:
    """The ``HSI:N`` string (fwupd's format) for what livefw checks.

    livefw checks only a subset of HSI-1 (no SPI, Boot Guard, IOMMU or TPM checks), so
    it never claims a level: ``HSI:0``, with fwupd's ``!`` when a runtime issue
    (taint, lockdown off, activation pending) was found.
    """
    issue = any(a.runtime_issue and not a.success for a in attrs)
    return "HSI:0" + ("!" if issue else "")
