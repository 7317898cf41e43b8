"""The simulated platform firmware at boot: capsules on disk, BootNext, the fwupd loader.

What runs between a simulated reboot and the kernel: the capsules in
``EFI/UpdateCapsule`` when ``OsIndications`` asks for them (UEFI 2.10 §8.5.5), then
``BootNext`` -> its ``Boot####`` load option (UEFI 2.10 §3.1.2 "Load Option
Processing"; found by partition number and GUID as OVMF does) -> the fwupd-efi 1.4
loader (``efi/fwupdate.c``: every record validated and every capsule loaded by its
full HD() node before any is stamped; a capsule it cannot find or open hangs the
boot, fwupd-efi issue 112) -> UpdateCapsule against the ESRT entries. Replayed on
real OVMF with Debian's fwupdx64.efi (issue 14, "UEFI staging on real firmware").
The state it reads and writes is the component's (livefw.kernel.sim.uefi_model).
"""

from __future__ import annotations

import struct
import uuid
from typing import TYPE_CHECKING

from livefw.kernel.sim.uefi_model import (
    ESP_MBR_PARTUUID,
    ESP_PARTUUID,
    ESP_SECTORS,
    ESP_START,
    LOADER_MARKER,
    MS_SIGNED_MARKER,
    SHIM_MARKER,
    SIGNED_MARKER,
    STATUS_FAULTS,
    EsrtEntryState,
    efi_now,
    sim_signature,
    unb64,
)
from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi

if TYPE_CHECKING:
    from livefw.kernel.sim.uefi_capsule import UefiCapsuleComponent


#: gnu-efi's ``%r`` text of the EFI statuses the simulated UpdateCapsule answers
#: (gnu-efi lib/error.c ``ErrorCodeTable``), as fwupd-efi prints them.
EFI_STATUS_TEXT = {
    efi.EFI_INVALID_PARAMETER: "Invalid Parameter",
    efi.EFI_UNSUPPORTED: "Unsupported",
    efi.EFI_OUT_OF_RESOURCES: "Out of Resources",
    efi.EFI_ABORTED: "Aborted",
    efi.EFI_INCOMPATIBLE_VERSION: "Incompatible Version",
    efi.EFI_SECURITY_VIOLATION: "Security Violation",
}


class LoaderLog:
    """fwupd-efi's debug log: kept in ``FWUPDATE_DEBUG_LOG`` only with FWUPDATE_VERBOSE=1.

    fwupd-efi efi/fwup-debug.c ``fwupd_debug_efivar_append()``: the first message of a
    run deletes the old variable, each message is appended as UCS-2
    ``file:line:function(): text`` plus a newline (checked on OVMF with Debian's
    fwupd-efi 1.4 in the VM lane's capsule scenario).
    """

    def __init__(self, firmware: UefiCapsuleComponent, *, enabled: bool) -> None:
        self.firmware = firmware
        self.enabled = enabled
        self.lines: list[str] = []

    def add(self, function: str, text: str) -> None:
        """One message of ``function`` (fwupdate.c's function names)."""
        if self.enabled:
            self.lines.append(f"../efi/fwupdate.c:0:{function}(): {text}")

    def save(self) -> None:
        """Write the run's log to the variable (only with FWUPDATE_VERBOSE=1)."""
        if not self.enabled:
            return
        data = "".join(line + "\n" for line in self.lines).encode("utf-16-le")
        self.firmware.set_var(efi.FWUPDATE_DEBUG_LOG, efi.FWUPDATE_GUID, data)


class UefiFirmware:
    """The boot-time firmware of one simulated machine (its component's state)."""

    def __init__(self, component: UefiCapsuleComponent) -> None:
        self.component = component

    def boot_next(self) -> None:
        """BootNext (consumed whatever happens) -> its load option -> the fwupd loader."""
        glob = efi.EFI_GLOBAL_VARIABLE_GUID
        found = self.component.get_var(efi.BOOT_NEXT, glob)
        if found is None:
            return
        self.component.del_var(efi.BOOT_NEXT, glob)  # consumed whatever happens next
        (number,) = struct.unpack("<H", found[1][:2].ljust(2, b"\x00"))
        name = efi.boot_var_name(number)
        if self.component.machine.take_fault(self.component.name, "*", ("bootnext-ignored",)):
            self.component.log_boot(f"BootNext={name} ignored")
            return
        if self.component.machine.take_fault(self.component.name, "*", ("boot-entry-removed",)):
            self.component.del_var(name, glob)
            self.component.log_boot(f"{name} removed by the firmware")
            return
        option_raw = self.component.get_var(name, glob)
        if option_raw is None:
            self.component.log_boot(f"BootNext={name}: no such load option")
            return
        try:
            option = efi.LoadOption.unpack(option_raw[1])
        except ValueError:
            self.component.log_boot(f"{name}: malformed load option")
            return
        # OVMF/EDK2 finds the partition of a boot option by number and signature
        # (a short-form HD() path): a wrong start or size still boots the loader
        binary = self._resolve(option.file_path, strict=False)
        if binary is None:
            self.component.log_boot(f"{name}: Not Found; falling through to the next boot option")
            return
        if self.component.state.secure_boot and MS_SIGNED_MARKER not in binary:
            # the firmware's db (Microsoft's UEFI CA) must trust what it starts itself
            self.component.log_boot(
                f"{name}: Secure Boot violation: the firmware's db does not trust it"
            )
            return
        if binary.startswith(SHIM_MARKER) and option.optional_data:
            second = option.optional_data.decode("utf-16-le", "replace").split("\x00", 1)[0]
            folder = efi.efi_path_to_esp(option.file_path_text()).rsplit("/", 1)[0]
            binary = self.component.esp_read(folder + "/" + efi.efi_path_to_esp(second)) or b""
            # shim trusts its vendor certificate (the distribution's CA) and db
            if self.component.state.secure_boot and not (
                SIGNED_MARKER in binary or MS_SIGNED_MARKER in binary
            ):
                self.component.log_boot(f"{name}: shim refused the second stage: not signed")
                return
        if not binary.startswith(LOADER_MARKER):
            self.component.log_boot(f"{name}: not the fwupd loader; nothing to do")
            return
        self.fwupd_efi()

    def firmware_hd(self) -> efi.HardDriveNode:
        """The ESP's HD() node as the firmware sees it: start and size in logical blocks."""
        block = self.component.state.logical_block_size
        start, size = ESP_START * 512 // block, ESP_SECTORS * 512 // block
        if self.component.state.esp_mbr:
            # an MBR HD() node: the 32-bit disk signature, partition format 1, type 1
            disk_id = ESP_MBR_PARTUUID.partition("-")[0]
            return efi.HardDriveNode(
                1,
                start,
                size,
                f"{disk_id}-0000-0000-0000-000000000000",
                efi.PART_FORMAT_MBR,
                efi.SIGNATURE_MBR,
            )
        return efi.HardDriveNode(1, start, size, ESP_PARTUUID)

    def _resolve(self, nodes: list[efi.DevicePathNode], *, strict: bool = True) -> bytes | None:
        """Follow HD + File path to a file on the ESP (the only disk).

        ``strict``: every field of the HD() node must match the partition in logical
        blocks (how fwupd-efi locates the capsule; fwupd issue 6023); otherwise the
        partition number and signature are enough (how the boot manager starts it).
        """
        hard = next((n for n in nodes if isinstance(n, efi.HardDriveNode)), None)
        path = next((n.path for n in nodes if isinstance(n, efi.FilePathNode)), "")
        want = self.firmware_hd()
        if hard is not None:
            if (
                hard.partition_number,
                hard.partition_signature.lower(),
                hard.signature_type,
            ) != (want.partition_number, want.partition_signature, want.signature_type):
                return None
            if strict and (hard.partition_start, hard.partition_size) != (
                want.partition_start,
                want.partition_size,
            ):
                return None
        if not path:
            return None
        return self.component.esp_read(path)

    def _unresolved(self, nodes: list[efi.DevicePathNode]) -> str:
        """Why :meth:`_resolve` (strict) found nothing: the HD() node or the file."""
        hard = next((n for n in nodes if isinstance(n, efi.HardDriveNode)), None)
        want = self.firmware_hd()
        if hard is not None and (hard.partition_number, hard.partition_signature.lower()) != (
            want.partition_number,
            want.partition_signature,
        ):
            return (
                f"its HD() node names partition {hard.partition_number} "
                f"{hard.partition_signature}, not the ESP (partition "
                f"{want.partition_number} {want.partition_signature})"
            )
        if hard is not None and (hard.partition_start, hard.partition_size) != (
            want.partition_start,
            want.partition_size,
        ):
            return (
                f"its HD() node says start {hard.partition_start}, size "
                f"{hard.partition_size}, but the ESP is at start {want.partition_start}, size "
                f"{want.partition_size} in the disk's "
                f"{self.component.state.logical_block_size}-byte logical blocks"
            )
        return "no such file on the ESP"

    def fwupd_efi(self) -> None:
        """fwupd-efi 1.4's efi/fwupdate.c: validate every record, load, stamp, apply.

        Every capsule is loaded before any record is stamped. When one cannot be
        found or opened (an HD() node that does not match the partition in logical
        blocks, a missing file) fwupd-efi 1.4 faults in its own error path and the
        machine hangs at boot (fwupd-efi issue 112): nothing is stamped or applied,
        UPDATE_INFO keeps status 1, and ``last_boot_hang`` says why.
        """
        guid = efi.FWUPDATE_GUID
        verbose = self.component.get_var(efi.FWUPDATE_VERBOSE, guid)
        log = LoaderLog(self.component, enabled=verbose is not None and verbose[1][:1] == b"\x01")
        try:
            self._fwupd_efi_run(log)
        finally:
            log.save()

    def _fwupd_efi_run(self, log: LoaderLog) -> None:
        guid = efi.FWUPDATE_GUID
        log.add("efi_main", "fwupd-efi version 1.4")
        suffix = "-" + guid
        records: list[tuple[str, efi.UpdateInfo]] = []
        for filename in sorted(self.component.state.variables):
            if not filename.endswith(suffix):
                continue
            name = filename[: -len(suffix)]
            if name in (efi.FWUPDATE_VERBOSE, efi.FWUPDATE_DEBUG_LOG):
                continue
            _, data = efi.decode_var(unb64(self.component.state.variables[filename].content))
            try:
                info = efi.UpdateInfo.unpack(data)
            except ValueError:
                self.component.del_var(name, guid)
                self.component.log_boot(
                    f"fwupd-efi: malformed record {name} deleted; nothing applied"
                )
                log.add("fwup_populate_update_table", f"Could not populate update info '{name}'")
                return
            log.add("fwup_populate_update_table", f"Found update {name}")
            records.append((name, info))
        todo = [(n, i) for n, i in records if i.status & efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE]
        if not todo:
            self.component.log_boot("fwupd-efi: no updates to process")
            log.add("efi_main", "No updates to process, exiting in 10 seconds.")
            return
        loaded: list[tuple[str, efi.UpdateInfo, bytes]] = []
        for name, info in todo:
            capsule_data = self._resolve(info.device_path)
            if capsule_data is None:
                why = (
                    f"fwupd-efi: {name}: could not find or open {info.file_path()} "
                    f"({self._unresolved(info.device_path)}); a CPU exception in the "
                    "loader's error path hung the machine at boot, and it was power-cycled"
                )
                self.component.state.last_boot_hang = why
                self.component.log_boot(why)
                return
            loaded.append((name, info, capsule_data))
        for name, info, capsule_data in loaded:
            stamped = efi.UpdateInfo(
                guid=info.guid,
                capsule_flags=info.capsule_flags,
                device_path=info.device_path,
                hw_inst=info.hw_inst,
                time_attempted=efi_now(),
                status=efi.UPDATE_INFO_STATUS_ATTEMPTED,
                version=info.version,
            )
            self.component.set_var(name, guid, stamped.pack())
            status = self._update_capsule(capsule_data, f"fwupd-efi {name}")
            if status & efi.EFI_ERROR_BIT:
                text = EFI_STATUS_TEXT.get(status & ~efi.EFI_ERROR_BIT, "Unknown Error")
                if status & ~efi.EFI_ERROR_BIT == efi.EFI_UNSUPPORTED:
                    # no FMP for it: QueryCapsuleCapabilities refuses it first (OVMF)
                    log.add(
                        "fwup_apply_capsules",
                        f"QueryCapsuleCapabilities failed, assuming EfiResetWarm: {text}",
                    )
                log.add("fwup_apply_capsules", f"Could not apply capsule update: {text}")
                log.add("efi_main", f"Could not apply capsules: {text}")
        log.add("efi_main", "Reset System")

    def _update_capsule(self, data: bytes, source: str) -> int:
        """UpdateCapsule: apply to the ESRT entry the capsule targets; EFI_STATUS back."""
        classes = tuple(e.fw_class for e in self.component.state.entries)
        try:
            info = efi.inspect_capsule(data, classes)
        except cap.CapsuleError as error:
            self.component.log_boot(f"{source}: invalid capsule: {error}")
            return efi.EFI_INVALID_PARAMETER | efi.EFI_ERROR_BIT
        if info.header is None:
            self.component.log_boot(f"{source}: no capsule header")
            return efi.EFI_UNSUPPORTED | efi.EFI_ERROR_BIT
        result = efi.EFI_SUCCESS
        for image in info.images:
            entry = self.component.entry_of(image.image_type)
            no_fmp = self.component.machine.take_fault(
                self.component.name, f"uefi_capsule/{image.image_type}", ("no-fmp",)
            )
            if entry is None or no_fmp:
                self.component.log_boot(f"{source}: Unsupported capsule {image.image_type}")
                return efi.EFI_UNSUPPORTED | efi.EFI_ERROR_BIT
            status = self._apply(entry, image)
            if status and not result:
                result = {
                    2: efi.EFI_OUT_OF_RESOURCES,
                    3: efi.EFI_INCOMPATIBLE_VERSION,
                    4: efi.EFI_INVALID_PARAMETER,
                    5: efi.EFI_SECURITY_VIOLATION,
                }.get(status, efi.EFI_ABORTED) | efi.EFI_ERROR_BIT
        return result

    def _apply(self, entry: EsrtEntryState, image: efi.CapsuleImage) -> int:
        """The FMP's SetImage; writes the ESRT last-attempt fields. Returns the status."""
        key = f"uefi_capsule/{entry.fw_class}"
        version = image.version if image.version is not None else entry.last_attempt_version
        fault = self.component.machine.take_fault(self.component.name, key, tuple(STATUS_FAULTS))
        if fault is not None:
            status = STATUS_FAULTS[fault]
        elif image.version is None:
            status = efi.LAST_ATTEMPT_INVALID_FORMAT
        elif image.auth is not None and image.auth.cert_data != sim_signature(image.payload):
            status = efi.LAST_ATTEMPT_AUTH_ERROR
        elif image.version < entry.lowest_supported_fw_version:
            status = efi.LAST_ATTEMPT_INCORRECT_VERSION
        else:
            status = self.component.state.default_status
        entry.last_attempt_version = version
        entry.last_attempt_status = status
        if status == efi.LAST_ATTEMPT_SUCCESS and image.version is not None:
            entry.fw_version = image.version
            if image.lowest is not None:
                entry.lowest_supported_fw_version = max(
                    entry.lowest_supported_fw_version, image.lowest
                )
        self.component.log_boot(f"{entry.name}: version {version} status {status}")
        return status

    def capsules_on_disk(self) -> None:
        """Capsules in EFI/UpdateCapsule, processed when OsIndications has bit 2.

        UEFI 2.10 §8.5.5 "Delivery of Capsules via file on Mass Storage Device"; the
        result variables as §8.5.6 describes them.
        """
        glob = efi.EFI_GLOBAL_VARIABLE_GUID
        indications = self.component.get_var(efi.OS_INDICATIONS, glob)
        value = struct.unpack("<Q", indications[1][:8].ljust(8, b"\0"))[0] if indications else 0
        prefix = efi.CAPSULE_ON_DISK_DIR + "/"
        files = sorted(p for p in self.component.state.esp_files if p.startswith(prefix))
        if not (value & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED) or not files:
            return
        if not self.component.state.capsule_on_disk:
            return
        report = efi.EFI_CAPSULE_REPORT_GUID
        last = self.component.get_var(efi.CAPSULE_LAST, report)
        number = -1
        if last is not None:
            text = last[1].decode("utf-16-le", "replace").rstrip("\x00")
            try:
                number = int(text.removeprefix("Capsule"), 16)
            except ValueError:
                number = -1
        for path in files:
            data = self.component.machine.blobs.unpack(self.component.state.esp_files.pop(path))
            status = self._update_capsule(data, path)
            number = (number + 1) % 0x10000
            try:
                header = cap.parse_capsule_header(data)
                capsule_guid = header.guid
            except cap.CapsuleError:
                capsule_guid = str(uuid.UUID(int=0))
            result = efi.CapsuleResult(capsule_guid, efi_now(), status)
            try:
                info = efi.inspect_capsule(
                    data, tuple(e.fw_class for e in self.component.state.entries)
                )
                if info.fmp:
                    result = efi.CapsuleResult(
                        capsule_guid, efi_now(), status, (1, 0, 1, info.images[0].image_type)
                    )
            except cap.CapsuleError:
                pass
            self.component.set_var(
                efi.capsule_result_name(number), report, result.pack(), immutable=True
            )
            self.component.set_var(
                efi.CAPSULE_LAST,
                report,
                efi.capsule_result_name(number).encode("utf-16-le"),
                immutable=True,
            )
        self.component.set_var(
            efi.CAPSULE_MAX, report, efi.capsule_result_name(0xFFFF).encode("utf-16-le"), True
        )
        self.component.set_var(
            efi.OS_INDICATIONS,
            glob,
            struct.pack("<Q", value & ~efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED),
        )
