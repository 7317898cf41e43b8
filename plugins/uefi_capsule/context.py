"""What the UEFI capsule devices share: EFI variables, the ESP and what is staged on them.

Every ESRT device stages into the same places: one EFI variable store (efivarfs),
one EFI System Partition, one fwupd loader, one "Linux Firmware Updater" boot entry
and one ``BootNext``. :class:`UefiCapsuleContext` holds that environment and the
reads and clean-ups that concern more than one device (the boot entry the devices
share, another device's record still waiting for the loader), so that a device
never needs its plugin. The plugin creates the one instance and hands it to every
device; reconciliation uses it too, also for an ESRT class whose device is gone.
"""

from __future__ import annotations

import errno
import posixpath
import re
import struct
from typing import Any

from livefw.errors import KernelError, LivefwError, NoSpace, PermissionDenied
from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi
from livefw.plugin import DeviceContext, PluginContext, clean_text
from livefw.plugins.uefi_capsule.efivars import EfiVars
from livefw.plugins.uefi_capsule.environment import Environment, detect

GLOBAL = efi.EFI_GLOBAL_VARIABLE_GUID
FWUPD = efi.FWUPDATE_GUID
_UPDATER = (efi.FWUPD_BOOT_DESCRIPTION, efi.FWUPD_BOOT_DESCRIPTION_ALT)
#: fwupd-efi's debug log is firmware-supplied text: read at most this many bytes of it,
#: keep at most LOADER_LOG_LINES failure lines of at most LOADER_LOG_LINE characters
LOADER_LOG_BYTES = 64 * 1024
LOADER_LOG_LINES = 4
LOADER_LOG_LINE = 160
#: the messages in which fwupd-efi reports a failure (efi/fwupdate.c ``fwup_warning``
#: texts: "Could not apply capsule update: %r", "QueryCapsuleCapabilities failed, ...",
#: "Invalid capsule size %d", "Update '%s' is malformed, ...", ...)
_LOADER_FAILURE = re.compile(r"Could not|[Ff]ailed|Invalid|malformed|too small")


def map_esp_error(error: KernelError, path: str) -> LivefwError:
    """An errno from a write on the ESP as something a person can act on."""
    if error.errno == errno.ENOSPC:
        return NoSpace(
            f"the EFI System Partition is full while writing /{path}: remove old files "
            "from it (e.g. EFI/*/fw/*.cap) and retry"
        )
    if error.errno in (errno.EROFS, errno.EPERM, errno.EACCES):
        return PermissionDenied(f"the ESP refused writing /{path}: is it mounted read-write?")
    return error


def is_updater(option: efi.LoadOption) -> bool:
    """The load option is fwupd's "Linux Firmware Updater" entry (either spelling)."""
    return option.description in _UPDATER


class UefiCapsuleContext(DeviceContext):
    """The capsule environment, the EFI variables and the staged state of every device.

    Attributes:
        vars: the EFI variables (efivarfs, fs/efivarfs/).
        env: the last detected staging environment (ESP, loader, method), or None
            before the first probe.
        esrt_entries: where ESRT entries are read: sysfs, or the copy the unit makes
            in /run/livefw/esrt when the kernel wants CAP_SYS_ADMIN (before 6.5,
            drivers/firmware/efi/esrt.c ``esre_attr_show()``).
    """

    def __init__(self, plugin: PluginContext) -> None:
        super().__init__(plugin)
        self.vars = EfiVars(plugin.provider)
        self.env: Environment | None = None
        self.esrt_entries = efi.ESRT_ENTRIES

    async def detect(self) -> Environment:
        """Look at the machine again (the ESP may be mounted after the daemon started)."""
        self.env = await detect(self.provider, self.config)
        return self.env

    @property
    def esrt_from_sysfs(self) -> bool:
        """The ESRT is read from sysfs, not from the unit's copy."""
        return self.esrt_entries == efi.ESRT_ENTRIES

    # ------------------------------------------------------------ variables

    async def update_info(self, fw_class: str) -> efi.UpdateInfo | None:
        """The ``fwupd-<fw_class>-0`` record, or None when absent or malformed."""
        data = await self.vars.get_data(efi.update_info_name(fw_class), FWUPD)
        if data is None:
            return None
        try:
            return efi.UpdateInfo.unpack(data)
        except ValueError:
            return None

    @property
    def efi_debugging(self) -> bool:
        """``[plugins.uefi_capsule] efi_debugging``: fwupd-efi keeps its log (fwupd's option)."""
        return self.config.get("efi_debugging") is True

    async def loader_failures(self) -> str:
        """What fwupd-efi logged as failing in its last run, or ``""``.

        fwupd-efi keeps its log in ``FWUPDATE_DEBUG_LOG`` (UCS-2, one
        ``file:line:function(): text`` per line) when ``FWUPDATE_VERBOSE`` is 1
        (efi/fwupdate.c ``fwup_debug_hook()``, efi/fwup-debug.c
        ``fwupd_debug_efivar_append()``), and its warnings carry the firmware's answers,
        e.g. UpdateCapsule's EFI status: "Could not apply capsule update: Unsupported"
        (OVMF, VM lane). The text comes from firmware: bounded and escaped.
        """
        data = await self.vars.get_data(efi.FWUPDATE_DEBUG_LOG, FWUPD)
        if not data:
            return ""
        text = data[:LOADER_LOG_BYTES].decode("utf-16-le", errors="replace")
        found: dict[str, None] = {}
        for line in text.splitlines():
            message = line.rpartition("(): ")[2].strip()
            if efi.FWUPDATE_DEBUG_LOG in message:
                continue  # its own housekeeping of the log variable, not the update
            if message and _LOADER_FAILURE.search(message):
                found[clean_text(message, LOADER_LOG_LINE)] = None
                if len(found) == LOADER_LOG_LINES:
                    break
        return "; ".join(found)

    async def boot_options(self) -> list[tuple[int, bytes | None, efi.LoadOption | None]]:
        """Every ``Boot####`` variable: ``(number, raw data, decoded option or None)``."""
        found = []
        for name in await self.vars.names(GLOBAL):
            number = efi.parse_boot_var_name(name)
            if number is None:
                continue
            data = await self.vars.get_data(name, GLOBAL)
            try:
                option: efi.LoadOption | None = efi.LoadOption.unpack(data or b"")
            except ValueError:
                option = None
            found.append((number, data, option))
        return found

    async def updater_entries(self) -> list[int]:
        """Numbers of the "Linux Firmware Updater" boot entries."""
        return [n for n, _, option in await self.boot_options() if option and is_updater(option)]

    async def boot_entry_number(self) -> tuple[int, bytes | None]:
        """Reuse the updater entry (with its data), else the lowest free number (as fwupd)."""
        options = await self.boot_options()
        for number, data, option in options:
            if option is not None and is_updater(option):
                return number, data
        used = {number for number, _, _ in options}
        return next(n for n in range(0x10000) if n not in used), None

    async def other_pending(self, fw_class: str) -> bool:
        """Another device's UPDATE_INFO still waits for the loader (status 1)."""
        for name in await self.vars.names(FWUPD):
            if not name.startswith("fwupd-") or name == efi.update_info_name(fw_class):
                continue
            data = await self.vars.get_data(name, FWUPD)
            try:
                info = efi.UpdateInfo.unpack(data or b"")
            except ValueError:
                continue
            if info.status & efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE:
                return True
        return False

    async def os_indications(self) -> int:
        """The ``OsIndications`` bits (0 when the variable is absent)."""
        current = await self.vars.get_data(efi.OS_INDICATIONS, GLOBAL)
        return int(struct.unpack_from("<Q", current.ljust(8, b"\0"))[0]) if current else 0

    async def set_os_indications(self, value: int) -> None:
        """Write ``OsIndications`` (a UINT64)."""
        await self.vars.set(efi.OS_INDICATIONS, GLOBAL, struct.pack("<Q", value))

    # ------------------------------------------------------------ ESP files

    async def write_atomic(self, path: str, tmp: str, data: bytes | memoryview) -> None:
        """Temp file, fsync, rename: a reader sees the old file or the whole new one."""
        try:
            await self.provider.makedirs(posixpath.dirname(path))
            await self.provider.write_file(tmp, data, durable=True)
            await self.provider.rename(tmp, path)
        except KernelError as error:
            raise map_esp_error(error, path) from error

    async def unlink(self, path: str) -> None:
        """Remove a file on the ESP; a missing one is fine."""
        try:
            await self.provider.unlink(path)
        except KernelError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise map_esp_error(error, path) from error

    # ------------------------------------------------------------ staged state

    async def staged_version(self, fw_class: str) -> str | None:
        """The version staged for ``fw_class`` (``""`` if unknown), or None."""
        env = self.env
        info = await self.update_info(fw_class)
        if env is None:
            return None
        if info is not None and info.status & efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE:
            if not env.esp:
                return ""  # staged, but where cannot be told
            path = f"{env.esp}/{efi.efi_path_to_esp(info.file_path())}"
        elif env.esp:
            path = f"{env.esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{fw_class}.cap"
            if not await self.provider.exists(path):
                return None
        else:
            return None
        try:
            found = efi.inspect_capsule(await self.provider.read_file(path), (fw_class,))
        except (KernelError, cap.CapsuleError):
            return ""
        versions = [i.version for i in found.images if i.image_type == fw_class]
        return efi.format_version(versions[0]) if versions and versions[0] is not None else ""

    async def staging_complete(self, record: dict[str, Any]) -> bool:
        """Every artefact of a staging is in place (a daemon died after the last step)."""
        if not await self.provider.exists(str(record.get("capsule", ""))):
            return False
        if record.get("method") == "capsule-on-disk":
            return bool(
                await self.os_indications() & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            )
        info = await self.update_info(str(record.get("fw_class", "")))
        boot_next = await self.vars.get_data(efi.BOOT_NEXT, GLOBAL)
        number = record.get("boot_entry")
        return (
            info is not None
            and info.status == efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE
            and isinstance(number, int)
            and boot_next == struct.pack("<H", number)
        )

    async def unstage(
        self, fw_class: str, record: dict[str, Any], *, rollback: bool = False
    ) -> None:
        """Remove what was staged for ``fw_class``: BootNext first, then the rest.

        Works from the kernel state plus whatever ``record`` (the history row's data)
        names, so a staging interrupted at any step is cleaned up. Missing pieces
        are fine. The boot entry and BootNext stay while another device's record
        still waits for the loader.
        """
        env = self.env or await detect(self.provider, self.config)
        esp = str(record.get("esp") or env.esp)
        paths = [
            str(record[key]) for key in ("capsule", "capsule_tmp", "loader_tmp") if key in record
        ]
        info = await self.update_info(fw_class)
        if info is not None and esp:
            staged = f"{esp}/{efi.efi_path_to_esp(info.file_path())}"
            paths += [staged, staged + ".new"]
        if esp:
            on_disk = f"{esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{fw_class}.cap"
            paths += [on_disk, on_disk + ".new"]
        nvram = record.get("method", "nvram") == "nvram" or info is not None
        if nvram and not await self.other_pending(fw_class):
            await self._remove_updater_entries(record)
        await self.vars.delete(efi.update_info_name(fw_class), FWUPD)
        for path in dict.fromkeys(paths):
            await self.unlink(path)
        if rollback and record.get("loader_installed") and "loader" in record:
            # a failed staging takes back the loader it copied; after an update or a
            # cancel the loader stays on the ESP, as with fwupd (it is reinstalled anyway)
            await self.unlink(str(record["loader"]))
        if esp:
            await self._clear_on_disk_bit(esp)
        self.log.info("capsule_unstaged", fw_class=fw_class)

    async def _remove_updater_entries(self, record: dict[str, Any]) -> None:
        """BootNext (when it points at an updater entry), then the updater entries."""
        options = {number: option for number, _, option in await self.boot_options()}
        numbers = {n for n, option in options.items() if option and is_updater(option)}
        if isinstance(record.get("boot_entry"), int):
            numbers.add(int(record["boot_entry"]))
        boot_next = await self.vars.get_data(efi.BOOT_NEXT, GLOBAL)
        if boot_next is not None and len(boot_next) == 2:
            (target,) = struct.unpack("<H", boot_next)
            if target in numbers:
                await self.vars.delete(efi.BOOT_NEXT, GLOBAL)
        for number in sorted(numbers):
            option = options.get(number)
            if option is not None and is_updater(option):
                await self.vars.delete(efi.boot_var_name(number), GLOBAL)

    async def _clear_on_disk_bit(self, esp: str) -> None:
        """Clear OsIndications bit 2 when no capsule waits in EFI/UpdateCapsule."""
        try:
            left = await self.provider.listdir(f"{esp}/{efi.CAPSULE_ON_DISK_DIR}")
        except KernelError:
            left = []
        current = None if left else await self.vars.get_data(efi.OS_INDICATIONS, GLOBAL)
        if not current:
            return
        value = int(struct.unpack_from("<Q", current.ljust(8, b"\0"))[0])
        if value & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED:
            await self.set_os_indications(
                value & ~efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            )
