"""UEFI ESRT devices, updated by capsules the firmware applies at the next boot.

One device per ESRT entry. Install stages a capsule the way fwupd's uefi-capsule
plugin does (spec §5.6), so Debian's Secure-Boot-signed fwupd EFI loader applies it:
the capsule on the ESP, the ``fwupd-<guid>-0`` UPDATE_INFO variable, a "Linux
Firmware Updater" ``Boot####`` entry and, last, ``BootNext``. Without a loader the
UEFI capsule-on-disk method is used (``EFI/UpdateCapsule`` plus the OsIndications
bit, §5.7). After the reboot the ESRT says how it went; reconciliation reads it and
removes what was staged.
"""

from __future__ import annotations

import errno
import posixpath
import re
import struct
from typing import Any

from livefw.errors import (
    Busy,
    InvalidFile,
    KernelError,
    LivefwError,
    NoSpace,
    NotFound,
    NothingToDo,
    NotSupported,
    PermissionDenied,
    VersionNewer,
    VersionSame,
)
from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi
from livefw.plugin import (
    Device,
    HistoryEntry,
    InstallOptions,
    InstallResult,
    Operation,
    Payload,
    Plugin,
    PluginContext,
    Probe,
    Reconciliation,
    Status,
    UpdateState,
)
from livefw.plugins.uefi_capsule.efivars import EfiVars
from livefw.plugins.uefi_capsule.environment import (
    Environment,
    detect,
    esp_mount_of,
    esp_partition,
)

PROTOCOL = "org.uefi.capsule"
#: fwupd's synthetic EFI_CAPSULE_HEADER size: the page size (fu-uefi-capsule-device.c).
SYNTHETIC_HEADER_SIZE = 4096
#: fwupd's ESP space check: twice the capsule plus 1 MiB (spec §5.6 step 2).
ESP_SLACK = 1024 * 1024
GLOBAL = efi.EFI_GLOBAL_VARIABLE_GUID
FWUPD = efi.FWUPDATE_GUID

_TYPE_NAMES = {
    efi.FW_TYPE_SYSTEM: "System Firmware",
    efi.FW_TYPE_DEVICE: "UEFI Device Firmware",
    efi.FW_TYPE_UEFI_DRIVER: "UEFI Driver",
}


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


class UefiCapsuleDevice(Device):
    """One ESRT entry (``/sys/firmware/efi/esrt/entries/entry<N>``)."""

    def __init__(self, plugin: UefiCapsulePlugin, entry_dir: str, entry: efi.EsrtEntry) -> None:
        #: (payload bytes, capsule flags, version, capsule to stage) of the last check
        self._inspected: tuple[bytes, int, int | None, bytes] | None = None
        name = _TYPE_NAMES.get(entry.fw_type, "UEFI Firmware")
        if entry.fw_type != efi.FW_TYPE_SYSTEM:
            name = f"{name} {entry.fw_class[:8]}"
        super().__init__(
            UefiCapsulePlugin.name,
            entry.fw_class,
            name=name,
            summary="Firmware updated by a UEFI capsule at the next boot",
            protocol=PROTOCOL,
            guids=(entry.fw_class,),
            version=efi.format_version(entry.fw_version),
            version_lowest=efi.format_version(entry.lowest_supported_fw_version),
        )
        self._plugin = plugin
        self.fw_class = entry.fw_class
        self.entry_dir = entry_dir
        self.entry = entry

    # ------------------------------------------------------------- state

    async def refresh(self) -> None:
        """Re-read the ESRT entry and what is staged for it."""
        provider = self._plugin.ctx.provider
        files = {}
        for key in efi.ESRT_ENTRY_FILES:
            files[key] = await provider.read_attr(f"{self.entry_dir}/{key}")
        self.entry = efi.EsrtEntry.parse(files)
        await self._plugin.update_device(self)

    def _version_of(self, payload: Payload) -> tuple[int | None, bytes]:
        """Validate the capsule for this device: ``(version, capsule bytes to stage)``.

        The engine checks a payload twice (before and under its lock) and the install
        uses it a third time: the answer for the last payload is kept (keyed by the
        payload's bytes object and the entry's flags, which the synthetic header
        uses) so a 64 MiB capsule is inspected and copied once, not three times.
        """
        data = payload.data
        cached = self._inspected
        if cached is not None and cached[0] is data and cached[1] == self.entry.capsule_flags:
            return cached[2], cached[3]
        found = self._inspect(data)
        self._inspected = (data, self.entry.capsule_flags, *found)
        return found

    def _inspect(self, data: bytes) -> tuple[int | None, bytes]:
        try:
            info = efi.inspect_capsule(data, (self.fw_class,))
        except cap.CapsuleError as error:
            raise InvalidFile(f"not a valid UEFI capsule: {error}") from error
        images = [image for image in info.images if image.image_type in ("", self.fw_class)]
        if not images:
            targets = ", ".join(sorted({image.image_type for image in info.images}))
            raise InvalidFile(f"the capsule is for {targets}, not {self.name} ({self.fw_class})")
        if info.header is None:
            # fwupd's fix-up: a bare payload gets a synthetic header (spec §5.6 step 1)
            header = cap.pack_capsule_header(
                self.fw_class,
                SYNTHETIC_HEADER_SIZE,
                self.entry.capsule_flags,
                SYNTHETIC_HEADER_SIZE + len(data),
            )
            data = header + data
        return images[0].version, data

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        """Validate the capsule and its version against the ESRT, without side effects."""
        try:
            return self._check_install(payload, options)
        except BaseException:
            self._inspected = None  # a refused payload is not kept
            raise

    def _check_install(self, payload: Payload, options: InstallOptions) -> str:
        env = self._plugin.env
        if env is None or env.method == "none":
            reason = "; ".join(env.reasons) if env else "the environment was not detected"
            raise NotSupported(f"{self.name} cannot be updated on this machine: {reason}")
        version, _ = self._version_of(payload)
        if "needs-reboot" in self.flags:
            # one capsule per device and boot: a second would leave two history rows
            # racing for one ESRT result
            staged = self.version_pending or "a capsule"
            raise Busy(
                f"{self.name} already has {staged} staged for the next boot; reboot to apply "
                "it or cancel it first (livefw cancel)"
            )
        if version is None:
            # vendor capsules often carry no FMP payload header: the version then comes
            # from the cabinet's metainfo (the caller checks it) and the firmware decides
            return ""
        current, lowest = self.entry.fw_version, self.entry.lowest_supported_fw_version
        if version < lowest and not options.force:
            raise InvalidFile(
                f"version {version} is below the lowest version {self.name} accepts ({lowest}); "
                "the firmware would refuse it"
            )
        if version < current and not options.allow_older:
            raise VersionNewer(
                f"{self.name} runs {current}, newer than {version}; pass allow-older to downgrade"
            )
        if version == current and not options.allow_reinstall:
            raise VersionSame(
                f"{self.name} already runs {current}; pass allow-reinstall to flash it again"
            )
        return efi.format_version(version)

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        """Stage the capsule for the next boot (NVRAM method or capsule on disk)."""
        version, data = self._version_of(payload)
        self._inspected = None  # the staged bytes are not kept past the install
        await self._plugin.stage(self, data, op)
        staged = efi.format_version(version) if version is not None else ""
        self.update(version_pending=staged)
        return InstallResult(UpdateState.NEEDS_REBOOT, staged)

    def check_cancel(self) -> None:
        """Only a staged capsule can be cancelled."""
        if "needs-reboot" not in self.flags:
            raise NothingToDo(f"{self.name} has no capsule staged for the next boot")

    async def cancel(self) -> None:
        """Remove what was staged (BootNext first)."""
        await self._plugin.unstage(self.fw_class, {})
        await self.refresh()


class UefiCapsulePlugin(Plugin):
    """Devices from the ESRT; capsules staged for the firmware."""

    name = "uefi_capsule"
    requires = (efi.ESRT_DIR, efi.EFIVARS_DIR)

    def __init__(self, ctx: PluginContext) -> None:
        super().__init__(ctx)
        self.vars = EfiVars(ctx.provider)
        self.env: Environment | None = None
        self._devices: dict[str, UefiCapsuleDevice] = {}
        #: where the ESRT entries are read: sysfs, or the unit's snapshot (kernel < 6.5)
        self.esrt_entries = efi.ESRT_ENTRIES

    async def _kernel_release(self) -> tuple[str, tuple[int, int] | None]:
        """The running kernel's release (``/proc/sys/kernel/osrelease``) and MAJOR.MINOR."""
        try:
            text = (await self.ctx.provider.read_attr(efi.OSRELEASE)).strip()[:64]
        except KernelError:
            return "unknown", None
        match = re.match(r"(\d+)\.(\d+)", text)
        return text, ((int(match.group(1)), int(match.group(2))) if match else None)

    @staticmethod
    def _at_least(version: tuple[int, int] | None, release: str) -> bool | None:
        if version is None:
            return None
        major, minor = (int(part) for part in release.split("."))
        return version >= (major, minor)

    # ------------------------------------------------------------ probing

    async def _xen_dom0(self) -> bool:
        provider = self.ctx.provider
        try:
            kind = (await provider.read_attr(efi.HYPERVISOR_TYPE)).strip()
            caps = await provider.read_attr(efi.XEN_CAPABILITIES)
        except KernelError:
            return False
        return kind == "xen" and "control_d" in caps

    async def probe(self) -> Probe:
        """Needs the ESRT; says which case it is when absent (legacy boot, Xen dom0)."""
        provider = self.ctx.provider
        xen = await self._xen_dom0()
        if not await provider.exists(efi.EFI_DIR):
            if xen:
                return Probe.unsupported(
                    "Xen PV dom0: the hypervisor does not expose EFI (no /sys/firmware/efi), "
                    "so no ESRT; update the firmware from outside Xen"
                )
            return Probe.unsupported(
                "legacy BIOS boot: no /sys/firmware/efi, so the firmware offers no ESRT or "
                "capsule updates; boot in UEFI mode to use them"
            )
        if not await provider.exists(efi.ESRT_DIR):
            if xen:
                return Probe.unsupported(await self._xen_reason())
            return Probe.unsupported(
                "no /sys/firmware/efi/esrt: the firmware publishes no ESRT or the kernel lacks "
                "CONFIG_EFI_ESRT"
            )
        denied = await self._esrt_source()
        if denied:
            return Probe.unsupported(denied)
        self.env = await detect(self.ctx.provider, self.ctx.config)
        if self.env.method == "none":
            return Probe.ok("ESRT devices listed but not updatable: " + "; ".join(self.env.reasons))
        if self.env.method == "capsule-on-disk":
            return Probe.ok("capsule-on-disk mode only: " + "; ".join(self.env.reasons))
        return Probe.ok()

    async def _xen_reason(self) -> str:
        """Why a Xen dom0 has no ESRT, for the kernel that runs.

        drivers/firmware/efi/esrt.c ``efi_esrt_init()`` needs the EFI memory map, which
        a Xen dom0 does not have (EFI_PARAVIRT); from 6.3 (commit 01de145dc7fb "efi:
        Actually enable the ESRT under Xen") it looks the table up through the
        hypervisor, which must have preserved it for dom0.
        """
        release, version = await self._kernel_release()
        newer = self._at_least(version, efi.ESRT_ON_XEN_SINCE)
        if newer is False:
            return (
                f"Xen PV dom0 on Linux {release}: kernels before {efi.ESRT_ON_XEN_SINCE} never "
                "expose the ESRT under Xen (/sys/firmware/efi/esrt is missing); boot Linux "
                f"{efi.ESRT_ON_XEN_SINCE} or newer on a Xen that preserves the ESRT for dom0, or "
                "update the firmware from outside Xen"
            )
        if newer:
            return (
                f"Xen PV dom0 on Linux {release}: this kernel can expose the ESRT under Xen, "
                "but /sys/firmware/efi/esrt is missing, so the hypervisor did not preserve "
                "it for dom0 (a Xen release before 4.17, or the firmware put it in memory Xen "
                "does not keep); update Xen or update the firmware from outside Xen"
            )
        return (
            "Xen PV dom0: /sys/firmware/efi/esrt is missing; kernels before "
            f"{efi.ESRT_ON_XEN_SINCE} never expose it under Xen, newer ones only when the "
            "hypervisor preserves it for dom0"
        )

    async def _esrt_source(self) -> str:
        """Choose where ESRT entries are read; ``""`` or why they cannot be read.

        Before Linux 6.5, drivers/firmware/efi/esrt.c ``esre_attr_show()`` answers
        EACCES unless the reader has CAP_SYS_ADMIN, which livefwd.service does not
        grant (it would undo the unit's mount sandboxing). The unit's ExecStartPre=+
        copies the ESRT to /run/livefw/esrt as full root at each start instead: the
        table cannot change before the next boot, and /run starts empty at each boot.
        """
        provider = self.ctx.provider
        self.esrt_entries = efi.ESRT_ENTRIES
        try:
            names = await provider.listdir(efi.ESRT_ENTRIES)
        except KernelError:
            return ""
        if not names:
            return ""
        try:
            await provider.read_attr(f"{efi.ESRT_ENTRIES}/{sorted(names)[0]}/fw_class")
            return ""
        except KernelError as error:
            if error.errno not in (errno.EACCES, errno.EPERM):
                return ""
        snapshot = f"{efi.ESRT_SNAPSHOT_DIR}/entries"
        if await provider.is_dir(snapshot):
            self.esrt_entries = snapshot
            self.ctx.log.info("esrt_from_snapshot", path="/" + snapshot)
            return ""
        release, _ = await self._kernel_release()
        return (
            f"the ESRT entries cannot be read: Linux {release} lets only CAP_SYS_ADMIN read "
            "them (drivers/firmware/efi/esrt.c esre_attr_show, until Linux "
            f"{efi.ESRT_WITHOUT_SYS_ADMIN_SINCE}) and livefwd runs without CAP_SYS_ADMIN; the "
            "shipped livefwd.service copies the ESRT to /run/livefw/esrt (ExecStartPre=+): "
            "restore that line if a drop-in removed it, or boot Linux "
            f"{efi.ESRT_WITHOUT_SYS_ADMIN_SINCE} or newer"
        )

    # ------------------------------------------------------------ devices

    async def _entries(self) -> list[tuple[str, efi.EsrtEntry]]:
        provider = self.ctx.provider
        if not await provider.exists(self.esrt_entries):
            return []
        found = []
        names = await provider.listdir(self.esrt_entries)
        for name in sorted(names, key=lambda n: int(n[5:]) if n[5:].isdigit() else 1 << 30):
            directory = f"{self.esrt_entries}/{name}"
            try:
                files = {
                    key: await provider.read_attr(f"{directory}/{key}")
                    for key in efi.ESRT_ENTRY_FILES
                }
                found.append((directory, efi.EsrtEntry.parse(files)))
            except (KernelError, ValueError) as error:
                self.ctx.log.warning("esrt_entry_unreadable", entry=name, error=str(error))
        return found

    async def coldplug(self) -> None:
        """One device per ESRT entry."""
        for directory, entry in await self._entries():
            if entry.fw_class in self._devices:
                self.ctx.log.warning("esrt_duplicate_class", fw_class=entry.fw_class)
                continue
            device = UefiCapsuleDevice(self, directory, entry)
            await self.update_device(device)
            self._devices[entry.fw_class] = device
            self.ctx.add_device(device)
            self.ctx.log.info(
                "esrt_device_added", fw_class=entry.fw_class, version=entry.fw_version
            )

    async def refresh(self) -> None:
        """Re-detect the ESP and loader, then re-read every entry."""
        self.env = await detect(self.ctx.provider, self.ctx.config)
        for device in list(self._devices.values()):
            await device.refresh()

    async def update_device(self, device: UefiCapsuleDevice) -> None:
        """Set version, flags and metadata from the ESRT entry and the staged state."""
        entry = device.entry
        env = self.env or Environment()
        staged = await self._staged_version(device.fw_class)
        flags = set()
        if entry.fw_type == efi.FW_TYPE_SYSTEM:
            flags.add("internal")
        if env.method != "none":
            flags.add("updatable")
        if staged is not None:
            flags |= {"needs-reboot", "can-cancel"}
        metadata = {
            "esrt-entry": "/" + device.entry_dir,
            "esrt-source": (
                "sysfs"
                if self.esrt_entries == efi.ESRT_ENTRIES
                else "/run/livefw/esrt (copied at daemon start: the kernel wants "
                "CAP_SYS_ADMIN to read the ESRT before Linux 6.5)"
            ),
            "fw-type": str(entry.fw_type),
            "capsule-flags": f"0x{entry.capsule_flags:x}",
            "last-attempt-version": str(entry.last_attempt_version),
            "last-attempt-status": (
                f"{entry.last_attempt_status} "
                f"({efi.describe_last_attempt_status(entry.last_attempt_status)})"
            ),
            **env.metadata(),
        }
        device.update(
            version=efi.format_version(entry.fw_version),
            version_lowest=efi.format_version(entry.lowest_supported_fw_version),
            version_pending=staged or "",
            flags=flags,
            metadata=metadata,
        )

    async def _staged_version(self, fw_class: str) -> str | None:
        """The version staged for ``fw_class`` (``""`` if unknown), or None."""
        provider = self.ctx.provider
        env = self.env
        path = ""
        info = await self._update_info(fw_class)
        if info is not None and info.status & efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE and env:
            path = f"{env.esp}/{efi.efi_path_to_esp(info.file_path())}" if env.esp else ""
        elif env is not None and env.esp:
            on_disk = f"{env.esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{fw_class}.cap"
            if await provider.exists(on_disk):
                path = on_disk
            else:
                return None
        else:
            return None
        try:
            data = await provider.read_file(path) if path else b""
            found = efi.inspect_capsule(data, (fw_class,))
            versions = [i.version for i in found.images if i.image_type == fw_class]
            version = versions[0] if versions else None
            return efi.format_version(version) if version is not None else ""
        except (KernelError, cap.CapsuleError):
            return ""

    async def _update_info(self, fw_class: str) -> efi.UpdateInfo | None:
        data = await self.vars.get_data(efi.update_info_name(fw_class), FWUPD)
        if data is None:
            return None
        try:
            return efi.UpdateInfo.unpack(data)
        except ValueError:
            return None

    # ------------------------------------------------------------ staging

    async def stage(self, device: UefiCapsuleDevice, data: bytes, op: Operation) -> None:
        """Stage ``data`` for ``device``; on any failure undo every step, then raise."""
        env = await detect(self.ctx.provider, self.ctx.config)
        self.env = env
        if env.method == "none":
            raise NotSupported(f"{device.name} cannot be updated: " + "; ".join(env.reasons))
        need = 2 * len(data) + ESP_SLACK
        free = await self.ctx.provider.free_space(env.esp)
        if free < need:
            raise NoSpace(
                f"the EFI System Partition has {free} bytes free but staging needs {need} "
                f"(twice the {len(data)}-byte capsule plus 1 MiB); remove old files from it"
            )
        if env.method == "nvram":
            record = self._plan_nvram(device, env)
        else:
            record = self._plan_on_disk(device, env)
        # everything that may be created is recorded before the first write
        op.record(uefi=record)
        op.progress(Status.DEVICE_WRITE, 10)
        try:
            if env.method == "nvram":
                await self._stage_nvram(device, data, env, record, op)
            else:
                await self._stage_on_disk(device, data, env, record, op)
        except Exception as error:
            self.ctx.log.warning(
                "staging_failed_rolling_back", fw_class=device.fw_class, error=str(error)
            )
            try:
                await self.unstage(device.fw_class, record, rollback=True)
            except Exception:
                self.ctx.log.exception("rollback_failed", fw_class=device.fw_class)
            raise
        op.progress(Status.SCHEDULING, 100)
        await self.update_device(device)
        self.ctx.log.info(
            "capsule_staged", fw_class=device.fw_class, method=env.method, path=record["capsule"]
        )

    def _plan_nvram(self, device: UefiCapsuleDevice, env: Environment) -> dict[str, Any]:
        capsule = f"{env.esp}/{env.efi_dir}/fw/fwupd-{device.fw_class}.cap"
        return {
            "method": "nvram",
            "fw_class": device.fw_class,
            "esp": env.esp,
            "capsule": capsule,
            "capsule_tmp": capsule + ".new",
            "update_info": efi.update_info_name(device.fw_class),
            "loader": f"{env.esp}/{env.efi_dir}/{env.loader_name}",
            "loader_tmp": f"{env.esp}/{env.efi_dir}/{env.loader_name}.new",
            "esrt_before": [
                device.entry.fw_version,
                device.entry.last_attempt_version,
                device.entry.last_attempt_status,
            ],
        }

    def _plan_on_disk(self, device: UefiCapsuleDevice, env: Environment) -> dict[str, Any]:
        capsule = f"{env.esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{device.fw_class}.cap"
        return {
            "method": "capsule-on-disk",
            "fw_class": device.fw_class,
            "esp": env.esp,
            "capsule": capsule,
            "capsule_tmp": capsule + ".new",
            "esrt_before": [
                device.entry.fw_version,
                device.entry.last_attempt_version,
                device.entry.last_attempt_status,
            ],
        }

    async def _write_atomic(self, path: str, tmp: str, data: bytes) -> None:
        """Temp file, fsync, rename: a reader sees the old file or the whole new one."""
        provider = self.ctx.provider
        try:
            await provider.makedirs(posixpath.dirname(path))
            await provider.write_file(tmp, data, durable=True)
            await provider.rename(tmp, path)
        except KernelError as error:
            raise map_esp_error(error, path) from error

    async def _stage_nvram(
        self,
        device: UefiCapsuleDevice,
        data: bytes,
        env: Environment,
        record: dict[str, Any],
        op: Operation,
    ) -> None:
        provider = self.ctx.provider
        assert env.partition is not None  # method "nvram" implies it
        await self._write_atomic(record["capsule"], record["capsule_tmp"], data)
        op.progress(Status.DEVICE_WRITE, 40)
        loader = await provider.read_file(env.loader_source)
        try:
            current = await provider.read_file(record["loader"])
        except KernelError:
            current = b""
        if current != loader:
            op.record(uefi={**record, "loader_installed": True})
            record["loader_installed"] = True
            await self._write_atomic(record["loader"], record["loader_tmp"], loader)
        op.progress(Status.DEVICE_WRITE, 60)
        await self.vars.delete(efi.FWUPDATE_DEBUG_LOG, FWUPD)
        relative = record["capsule"][len(env.esp) + 1 :]
        info = efi.UpdateInfo(
            guid=device.fw_class,
            capsule_flags=device.entry.capsule_flags,
            device_path=[env.partition, efi.FilePathNode(efi.esp_path_to_efi(relative))],
        )
        await self.vars.set(record["update_info"], FWUPD, info.pack())
        op.progress(Status.DEVICE_WRITE, 75)
        number, previous = await self._boot_entry_number()
        loader_relative = record["loader"][len(env.esp) + 1 :]
        option = efi.LoadOption(
            efi.LOAD_OPTION_ACTIVE,
            efi.FWUPD_BOOT_DESCRIPTION,
            [env.partition, efi.FilePathNode(efi.esp_path_to_efi(loader_relative))],
        )
        record.update(boot_entry=number, boot_entry_reused=previous is not None)
        op.record(uefi=record)
        if previous != option.pack():
            await self.vars.set(efi.boot_var_name(number), GLOBAL, option.pack())
        op.progress(Status.DEVICE_WRITE, 90)
        await self._check_before_boot_next(device, env, record, data, loader, number)
        # BootNext last: it never points at an entry whose loader or capsule is missing
        await self.vars.set(efi.BOOT_NEXT, GLOBAL, struct.pack("<H", number))

    async def _check_before_boot_next(
        self,
        device: UefiCapsuleDevice,
        env: Environment,
        record: dict[str, Any],
        data: bytes,
        loader: bytes,
        number: int,
    ) -> None:
        """Re-read everything the loader will need; raise (and so roll back) if any differs.

        fwupd-efi 1.4 hangs the machine at boot when it cannot find or open the
        capsule (fwupd-efi issue 112), so a wrong HD() node or a lost file is not a
        failed update but a machine stuck at boot. Checked, from the kernel again:
        the capsule and the loader on the ESP (size and SHA-256), the ESP's
        partition as the firmware will see it (number, GUID, start and size in
        logical blocks, sysfs and blkid agreeing) and the variables as written
        (UPDATE_INFO and Boot#### decoded, their HD() node and file paths).
        """
        provider = self.ctx.provider
        problems: list[str] = []

        async def same_file(path: str, expected: bytes, what: str) -> None:
            try:
                found = await provider.read_file(path)
            except KernelError as error:
                problems.append(f"{what} /{path} cannot be read back ({error.message})")
                return
            # a byte comparison (memcmp) costs a fraction of hashing both copies
            if found != expected:
                problems.append(
                    f"{what} /{path} reads back as {len(found)} bytes that differ from "
                    f"the {len(expected)} bytes written"
                )

        await same_file(record["capsule"], data, "the capsule")
        await same_file(record["loader"], loader, "the loader")
        mount = await esp_mount_of(provider, env.esp)
        node: efi.HardDriveNode | None = None
        if mount is None or (mount.major, mount.minor) != env.esp_device:
            problems.append(f"/{env.esp} is no longer the partition detected as the ESP")
        else:
            node, _, why = await esp_partition(provider, mount.major, mount.minor)
            if node is None:
                problems.append(why)
            elif node != env.partition:
                problems.append(
                    f"the ESP's partition changed while staging (now {node}, staged for "
                    f"{env.partition})"
                )
        expected = {
            "UPDATE_INFO": efi.esp_path_to_efi(record["capsule"][len(env.esp) + 1 :]),
            efi.boot_var_name(number): efi.esp_path_to_efi(record["loader"][len(env.esp) + 1 :]),
        }
        paths: dict[str, list[efi.DevicePathNode]] = {}
        info = await self._update_info(device.fw_class)
        if info is not None:
            paths["UPDATE_INFO"] = info.device_path
        try:
            option = efi.LoadOption.unpack(
                await self.vars.get_data(efi.boot_var_name(number), GLOBAL) or b""
            )
            paths[efi.boot_var_name(number)] = option.file_path
        except ValueError:
            pass
        for name, path in expected.items():
            nodes = paths.get(name)
            if nodes is None:
                problems.append(f"{name} is missing or unreadable after writing it")
                continue
            hard = [n for n in nodes if isinstance(n, efi.HardDriveNode)]
            files = [n.path for n in nodes if isinstance(n, efi.FilePathNode)]
            if node is not None and hard != [node]:
                problems.append(f"{name} points at {hard} instead of the ESP {node}")
            if [f.lower() for f in files] != [path.lower()]:
                problems.append(f"{name} names {files} instead of {path}")
        if problems:
            raise NotSupported(
                f"refusing to schedule the update of {device.name}: "
                + "; ".join(problems)
                + ". fwupd-efi hangs the machine at boot when it cannot find or open the "
                "capsule, so everything staged was removed; check the ESP (fsck.vfat) and "
                "retry"
            )

    async def _boot_entry_number(self) -> tuple[int, bytes | None]:
        """Reuse the "Linux Firmware Updater" entry, else take the lowest free number (fwupd)."""
        used = set()
        for name in await self.vars.names(GLOBAL):
            number = efi.parse_boot_var_name(name)
            if number is None:
                continue
            used.add(number)
            data = await self.vars.get_data(name, GLOBAL)
            try:
                option = efi.LoadOption.unpack(data or b"")
            except ValueError:
                continue
            if option.description in (efi.FWUPD_BOOT_DESCRIPTION, efi.FWUPD_BOOT_DESCRIPTION_ALT):
                return number, data
        number = next(n for n in range(0x10000) if n not in used)
        return number, None

    async def _stage_on_disk(
        self,
        device: UefiCapsuleDevice,
        data: bytes,
        env: Environment,
        record: dict[str, Any],
        op: Operation,
    ) -> None:
        await self._write_atomic(record["capsule"], record["capsule_tmp"], data)
        op.progress(Status.DEVICE_WRITE, 70)
        current = await self.vars.get_data(efi.OS_INDICATIONS, GLOBAL)
        value = struct.unpack_from("<Q", current.ljust(8, b"\0"))[0] if current else 0
        value |= efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
        await self.vars.set(efi.OS_INDICATIONS, GLOBAL, struct.pack("<Q", value))

    # ---------------------------------------------------------- unstaging

    async def _updater_entries(self) -> list[int]:
        numbers = []
        for name in await self.vars.names(GLOBAL):
            number = efi.parse_boot_var_name(name)
            if number is None:
                continue
            try:
                option = efi.LoadOption.unpack(await self.vars.get_data(name, GLOBAL) or b"")
            except ValueError:
                continue
            if option.description in (efi.FWUPD_BOOT_DESCRIPTION, efi.FWUPD_BOOT_DESCRIPTION_ALT):
                numbers.append(number)
        return numbers

    async def _other_pending(self, fw_class: str) -> bool:
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

    async def _unlink(self, path: str) -> None:
        try:
            await self.ctx.provider.unlink(path)
        except KernelError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise map_esp_error(error, path) from error

    async def unstage(
        self, fw_class: str, record: dict[str, Any], *, rollback: bool = False
    ) -> None:
        """Remove what was staged for ``fw_class``: BootNext first, then the rest.

        Works from the kernel state plus whatever ``record`` (the history row's data)
        names, so a staging interrupted at any step is cleaned up. Missing pieces
        are fine. The boot entry and BootNext stay while another device's record
        still waits for the loader.
        """
        env = self.env or await detect(self.ctx.provider, self.ctx.config)
        esp = str(record.get("esp") or env.esp)
        paths = [
            str(record[key]) for key in ("capsule", "capsule_tmp", "loader_tmp") if key in record
        ]
        info = await self._update_info(fw_class)
        if info is not None and esp:
            staged = f"{esp}/{efi.efi_path_to_esp(info.file_path())}"
            paths += [staged, staged + ".new"]
        if esp:
            on_disk = f"{esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{fw_class}.cap"
            paths += [on_disk, on_disk + ".new"]
        nvram = record.get("method", "nvram") == "nvram" or info is not None
        if nvram and not await self._other_pending(fw_class):
            numbers = set(await self._updater_entries())
            if isinstance(record.get("boot_entry"), int):
                numbers.add(int(record["boot_entry"]))
            boot_next = await self.vars.get_data(efi.BOOT_NEXT, GLOBAL)
            if boot_next is not None and len(boot_next) == 2:
                (target,) = struct.unpack("<H", boot_next)
                if target in numbers:
                    await self.vars.delete(efi.BOOT_NEXT, GLOBAL)
            for number in sorted(numbers):
                name = efi.boot_var_name(number)
                data = await self.vars.get_data(name, GLOBAL)
                try:
                    option = efi.LoadOption.unpack(data or b"")
                except ValueError:
                    continue
                if option.description in (
                    efi.FWUPD_BOOT_DESCRIPTION,
                    efi.FWUPD_BOOT_DESCRIPTION_ALT,
                ):
                    await self.vars.delete(name, GLOBAL)
        await self.vars.delete(efi.update_info_name(fw_class), FWUPD)
        for path in dict.fromkeys(paths):
            await self._unlink(path)
        if rollback and record.get("loader_installed") and "loader" in record:
            # a failed staging takes back the loader it copied; after an update or a
            # cancel the loader stays on the ESP, as with fwupd (it is reinstalled anyway)
            await self._unlink(str(record["loader"]))
        if esp:
            await self._clear_on_disk_bit(esp)
        self.ctx.log.info("capsule_unstaged", fw_class=fw_class)

    async def _clear_on_disk_bit(self, esp: str) -> None:
        """Clear OsIndications bit 2 when no capsule waits in EFI/UpdateCapsule."""
        directory = f"{esp}/{efi.CAPSULE_ON_DISK_DIR}"
        try:
            left = await self.ctx.provider.listdir(directory)
        except KernelError:
            left = []
        if left:
            return
        current = await self.vars.get_data(efi.OS_INDICATIONS, GLOBAL)
        if not current:
            return
        value = struct.unpack_from("<Q", current.ljust(8, b"\0"))[0]
        if value & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED:
            value &= ~efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            await self.vars.set(efi.OS_INDICATIONS, GLOBAL, struct.pack("<Q", value))

    async def _complete(self, record: dict[str, Any]) -> bool:
        """Every artefact of a staging is in place (a daemon died after the last step)."""
        fw_class = str(record.get("fw_class", ""))
        provider = self.ctx.provider
        if not await provider.exists(str(record.get("capsule", ""))):
            return False
        if record.get("method") == "capsule-on-disk":
            current = await self.vars.get_data(efi.OS_INDICATIONS, GLOBAL)
            value = struct.unpack_from("<Q", current.ljust(8, b"\0"))[0] if current else 0
            return bool(value & efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
        info = await self._update_info(fw_class)
        boot_next = await self.vars.get_data(efi.BOOT_NEXT, GLOBAL)
        number = record.get("boot_entry")
        return (
            info is not None
            and info.status == efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE
            and isinstance(number, int)
            and boot_next == struct.pack("<H", number)
        )

    # ------------------------------------------------------- reconciliation

    async def reconcile(self, entry: HistoryEntry, boot_changed: bool) -> Reconciliation | None:
        """Resolve staged rows after a reboot from the ESRT; repair interrupted stagings."""
        if entry.kind != "install":
            raise NotSupported(f"uefi_capsule does not know history rows of kind {entry.kind}")
        record = entry.data.get("uefi")
        fw_class = entry.physical_id
        if not isinstance(record, dict):
            # killed before anything was recorded: nothing was written
            return Reconciliation(
                UpdateState.FAILED, "interrupted before the capsule was staged; nothing changed"
            )
        if not boot_changed:
            if entry.state == "staged":
                return None
            if await self._complete(record):
                return None  # every step was done; the reboot decides
            await self.unstage(fw_class, record, rollback=True)
            await self._refresh_one(fw_class)
            return Reconciliation(
                UpdateState.FAILED,
                "interrupted while staging the capsule; the partial staging was removed",
            )
        try:
            return await self._outcome(entry, record)
        finally:
            # read the verdict first, then clean up, whatever the verdict; a staging the
            # daemon never finished is taken back entirely
            await self.unstage(fw_class, record, rollback=entry.state == "pending")
            await self._refresh_one(fw_class)

    async def _refresh_one(self, fw_class: str) -> None:
        device = self._devices.get(fw_class)
        if device is not None:
            await device.refresh()

    async def _outcome(self, entry: HistoryEntry, record: dict[str, Any]) -> Reconciliation:
        fw_class = entry.physical_id
        device = self._devices.get(fw_class)
        if device is None:
            raise NotSupported(f"the ESRT no longer lists {fw_class}; the outcome cannot be read")
        await device.refresh()
        esrt = device.entry
        name = device.name
        wanted = int(entry.version_new) if entry.version_new.isdigit() else None
        if wanted is not None and esrt.fw_version == wanted:
            return Reconciliation(
                UpdateState.SUCCESS, f"the firmware applied version {wanted}", str(wanted)
            )
        before = record.get("esrt_before") or [None, None, None]
        attempted = (esrt.last_attempt_version, esrt.last_attempt_status) != (
            before[1],
            before[2],
        ) or (wanted is not None and esrt.last_attempt_version == wanted)
        if record.get("method") == "nvram":
            info = await self._update_info(fw_class)
            if info is not None and info.status == efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE:
                numbers = await self._updater_entries()
                if record.get("boot_entry") not in numbers:
                    return Reconciliation(
                        UpdateState.FAILED,
                        f"the Linux Firmware Updater boot entry is missing, so the capsule for "
                        f"{name} was never applied; the firmware may remove unknown entries "
                        "(check 'Boot Order Lock' in its setup)",
                    )
                return Reconciliation(
                    UpdateState.FAILED,
                    f"the fwupd EFI loader did not apply the capsule for {name} (UPDATE_INFO "
                    "still says 'attempt update' after the reboot). Either it never ran "
                    "(the firmware ignored BootNext, or Secure Boot refused the loader) or "
                    "it ran and crashed before reading the capsule (fwupd-efi 1.4 hangs at "
                    "boot when it cannot find or open the capsule). Check whether the "
                    "machine hung at boot, the Secure Boot state (mokutil --sb-state) and "
                    "that the loader is the signed one, and that `livefw esp` shows the "
                    f"right ESP; {name} still runs {esrt.fw_version}",
                )
        elif await self.ctx.provider.exists(str(record.get("capsule", ""))):
            return Reconciliation(
                UpdateState.FAILED,
                f"the firmware did not process the capsule on disk for {name}; "
                f"{esrt.fw_version} still runs",
            )
        if attempted and esrt.last_attempt_status != efi.LAST_ATTEMPT_SUCCESS:
            status = esrt.last_attempt_status
            reason = (
                f"the firmware failed to update {name} to {esrt.last_attempt_version}: "
                f"status {status} ({efi.describe_last_attempt_status(status)})"
            )
            state = (
                UpdateState.FAILED_TRANSIENT
                if efi.last_attempt_transient(status)
                else UpdateState.FAILED
            )
            if state == UpdateState.FAILED_TRANSIENT:
                reason += "; connect AC power / charge the battery and install again"
            return Reconciliation(state, reason)
        if attempted:
            return Reconciliation(
                UpdateState.SUCCESS,
                f"the firmware reports success for {esrt.last_attempt_version}",
                str(esrt.fw_version),
            )
        return Reconciliation(
            UpdateState.FAILED,
            f"the update loader ran but the firmware recorded no attempt for {name} "
            f"(it may have refused the capsule); {esrt.fw_version} still runs",
        )

    def device(self, fw_class: str) -> UefiCapsuleDevice:
        """The device of an ESRT class (for the CLI and tests)."""
        try:
            return self._devices[fw_class]
        except KeyError:
            raise NotFound(f"no ESRT entry {fw_class}") from None
