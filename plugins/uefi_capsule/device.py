"""One ESRT entry as a device, and its operations.

Install stages a capsule the way fwupd's uefi-capsule plugin does
(fu-uefi-capsule-device.c, fu-uefi-nvram-device.c), so the Secure-Boot-signed
fwupd EFI loader that distributions ship (fwupd-efi, efi/fwupdate.c) applies it:
the capsule on the ESP, the ``fwupd-<guid>-0`` UPDATE_INFO variable, a "Linux
Firmware Updater" ``Boot####`` entry and, last, ``BootNext``. Without a loader the
UEFI capsule-on-disk method is used (``EFI/UpdateCapsule`` plus the
``EFI_OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED`` bit; UEFI 2.10 §8.5.5
"Delivery of Capsules via file on Mass Storage Device"). After the reboot the ESRT
(drivers/firmware/efi/esrt.c) says how it went: :meth:`UefiCapsuleDevice.outcome`
reads it back. What the devices share (variables, the ESP, the boot entry) is in
:class:`~livefw.plugins.uefi_capsule.context.UefiCapsuleContext`.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from livefw.errors import (
    Busy,
    InvalidFile,
    KernelError,
    NoSpace,
    NothingToDo,
    NotSupported,
    PayloadMismatch,
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
    Reconciliation,
    Status,
    UpdateState,
)
from livefw.plugins.uefi_capsule.context import FWUPD, GLOBAL, UefiCapsuleContext
from livefw.plugins.uefi_capsule.environment import Environment
from livefw.plugins.uefi_capsule.esp import esp_mount_of, esp_partition

PROTOCOL = "org.uefi.capsule"
#: fwupd's synthetic EFI_CAPSULE_HEADER size: the page size (fu-uefi-capsule-device.c).
SYNTHETIC_HEADER_SIZE = 4096
#: fwupd's ESP space check (fu-uefi-capsule-device.c): twice the capsule plus 1 MiB.
ESP_SLACK = 1024 * 1024


def shim_optional_data(loader_name: str) -> bytes:
    r"""The Boot#### optional data telling shim which loader to start: ``\fwupdx64.efi``.

    UTF-16LE with a leading backslash and a NUL, as fwupd writes it
    (fu-efi-load-option.c ``fu_efi_load_option_set_optional_path``).
    """
    return ("\\" + loader_name + "\0").encode("utf-16-le")


_TYPE_NAMES = {
    efi.FW_TYPE_SYSTEM: "System Firmware",
    efi.FW_TYPE_DEVICE: "UEFI Device Firmware",
    efi.FW_TYPE_UEFI_DRIVER: "UEFI Driver",
}


class UefiCapsuleDevice(Device):
    """One ESRT entry (``/sys/firmware/efi/esrt/entries/entry<N>``)."""

    def __init__(self, ctx: UefiCapsuleContext, entry_dir: str, entry: efi.EsrtEntry) -> None:
        #: (payload bytes, its version, whether it has its own capsule header) of the
        #: last check
        self._inspected: tuple[bytes | memoryview, int | None, bool] | None = None
        name = _TYPE_NAMES.get(entry.fw_type, "UEFI Firmware")
        if entry.fw_type != efi.FW_TYPE_SYSTEM:
            name = f"{name} {entry.fw_class[:8]}"
        super().__init__(
            ctx.plugin.name,
            entry.fw_class,
            name=name,
            summary="Firmware updated by a UEFI capsule at the next boot",
            protocol=PROTOCOL,
            guids=(entry.fw_class,),
            version=efi.format_version(entry.fw_version),
            version_lowest=efi.format_version(entry.lowest_supported_fw_version),
        )
        self.ctx = ctx
        self.fw_class = entry.fw_class
        self.entry_dir = entry_dir
        self.entry = entry

    # ------------------------------------------------------------- state

    async def refresh(self) -> None:
        """Re-read the ESRT entry and what is staged for it."""
        files = {}
        for key in efi.ESRT_ENTRY_FILES:
            files[key] = await self.ctx.provider.read_attr(f"{self.entry_dir}/{key}")
        self.entry = efi.EsrtEntry.parse(files)
        await self.update_properties()

    async def update_properties(self) -> None:
        """Set version, flags and metadata from the ESRT entry and the staged state."""
        entry = self.entry
        env = self.ctx.env or Environment()
        staged = await self.ctx.staged_version(self.fw_class)
        flags = set()
        if entry.fw_type == efi.FW_TYPE_SYSTEM:
            flags.add("internal")
        if env.method != "none":
            flags.add("updatable")
        if staged is not None:
            flags |= {"needs-reboot", "can-cancel"}
        metadata = {
            "esrt-entry": "/" + self.entry_dir,
            "esrt-source": (
                "sysfs"
                if self.ctx.esrt_from_sysfs
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
        self.update(
            version=efi.format_version(entry.fw_version),
            version_lowest=efi.format_version(entry.lowest_supported_fw_version),
            version_pending=staged or "",
            flags=flags,
            metadata=metadata,
        )

    # ------------------------------------------------------------- checks

    def _version_of(self, payload: Payload) -> tuple[int | None, bool]:
        """Validate the capsule for this device: ``(version, has its own header)``.

        The engine checks a payload twice (before and under its lock) and the install
        uses it a third time: the answer for the last payload is kept (keyed by the
        payload's bytes object) so that a 64 MiB capsule is walked once. Checking
        copies nothing: a bare payload gets its synthetic header only when it is
        installed (:meth:`_staged_bytes`).
        """
        data = payload.data
        cached = self._inspected
        if cached is not None and cached[0] is data:
            return cached[1], cached[2]
        found = self._inspect(data)
        self._inspected = (data, *found)
        return found

    def _staged_bytes(self, data: bytes | memoryview) -> bytes:
        """The capsule to stage: ``data``, or a bare payload behind fwupd's header.

        fwupd's fix-up (fu-uefi-capsule-device.c): a bare payload gets a synthetic
        EFI_CAPSULE_HEADER naming the ESRT class, with the entry's capsule flags. The
        join copies the payload (13-45 ms for 64 MiB: bench/NOTES.md, staging), so
        :meth:`install` makes it in a thread, off the event loop.
        """
        header = cap.pack_capsule_header(
            self.fw_class,
            SYNTHETIC_HEADER_SIZE,
            self.entry.capsule_flags,
            SYNTHETIC_HEADER_SIZE + len(data),
        )
        return header + data

    def _inspect(self, data: bytes | memoryview) -> tuple[int | None, bool]:
        try:
            info = efi.inspect_capsule(data, (self.fw_class,))
        except cap.CapsuleError as error:
            raise InvalidFile(f"not a valid UEFI capsule: {error}") from error
        images = [image for image in info.images if image.image_type in ("", self.fw_class)]
        if not images:
            targets = ", ".join(sorted({image.image_type for image in info.images}))
            raise PayloadMismatch(
                f"the capsule is for {targets}, not {self.name} ({self.fw_class})"
            )
        return images[0].version, info.header is not None

    def check_install(self, payload: Payload, options: InstallOptions) -> str:
        """Validate the capsule for this ESRT entry; return the version it carries.

        Only what is this device's: the environment can stage, the capsule is a
        valid one for this ``fw_class``, nothing is staged yet. The version rules
        (same, older, below ``lowest_supported_fw_version``) are the engine's
        (livefw.versions), applied to the version returned here; ``""`` when the
        capsule carries none (no FMP payload header: the firmware decides).
        """
        try:
            return self._check_install(payload)
        except BaseException:
            self._inspected = None  # a refused payload is not kept
            raise

    def _check_install(self, payload: Payload) -> str:
        env = self.ctx.env
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
        # vendor capsules often carry no FMP payload header: the version then comes
        # from the cabinet's metainfo and the firmware decides
        return efi.format_version(version) if version is not None else ""

    # ------------------------------------------------------------ operations

    async def install(
        self, payload: Payload, options: InstallOptions, op: Operation
    ) -> InstallResult:
        """Stage the capsule for the next boot (NVRAM method or capsule on disk)."""
        version, has_header = self._version_of(payload)
        self._inspected = None  # the payload is not kept past the install
        data: bytes | memoryview = payload.data
        if not has_header:
            data = await asyncio.to_thread(self._staged_bytes, data)
        await self._stage(data, op)
        staged = efi.format_version(version) if version is not None else ""
        self.update(version_pending=staged)
        return InstallResult(UpdateState.NEEDS_REBOOT, staged)

    def check_cancel(self) -> None:
        """Only a staged capsule can be cancelled."""
        if "needs-reboot" not in self.flags:
            raise NothingToDo(f"{self.name} has no capsule staged for the next boot")

    async def cancel(self) -> None:
        """Remove what was staged (BootNext first)."""
        await self.ctx.unstage(self.fw_class, {})
        await self.refresh()

    async def _stage(self, data: bytes | memoryview, op: Operation) -> None:
        """Stage ``data``; on any failure undo every step, then raise."""
        env = await self.ctx.detect()
        if env.method == "none":
            raise NotSupported(f"{self.name} cannot be updated: " + "; ".join(env.reasons))
        need = 2 * len(data) + ESP_SLACK
        free = await self.ctx.provider.free_space(env.esp)
        if free < need:
            raise NoSpace(
                f"the EFI System Partition has {free} bytes free but staging needs {need} "
                f"(twice the {len(data)}-byte capsule plus 1 MiB); remove old files from it"
            )
        record = self._plan(env)
        # everything that may be created is recorded before the first write
        op.record(uefi=record)
        op.progress(Status.DEVICE_WRITE, 10)
        try:
            if env.method == "nvram":
                await self._stage_nvram(data, env, record, op)
            else:
                await self._stage_on_disk(data, record, op)
        except Exception as error:
            self.ctx.log.warning(
                "staging_failed_rolling_back", fw_class=self.fw_class, error=str(error)
            )
            try:
                await self.ctx.unstage(self.fw_class, record, rollback=True)
            except Exception:
                self.ctx.log.exception("rollback_failed", fw_class=self.fw_class)
            raise
        op.progress(Status.SCHEDULING, 100)
        await self.update_properties()
        self.ctx.log.info(
            "capsule_staged", fw_class=self.fw_class, method=env.method, path=record["capsule"]
        )

    def _plan(self, env: Environment) -> dict[str, Any]:
        """What the staging will create, recorded in the history row before any write."""
        if env.method == "nvram":
            capsule = f"{env.esp}/{env.efi_dir}/fw/fwupd-{self.fw_class}.cap"
        else:
            capsule = f"{env.esp}/{efi.CAPSULE_ON_DISK_DIR}/fwupd-{self.fw_class}.cap"
        record: dict[str, Any] = {
            "method": env.method,
            "fw_class": self.fw_class,
            "esp": env.esp,
            "capsule": capsule,
            "capsule_tmp": capsule + ".new",
        }
        if env.method == "nvram":
            record.update(
                update_info=efi.update_info_name(self.fw_class),
                loader=f"{env.esp}/{env.efi_dir}/{env.loader_name}",
                loader_tmp=f"{env.esp}/{env.efi_dir}/{env.loader_name}.new",
            )
        record["esrt_before"] = [
            self.entry.fw_version,
            self.entry.last_attempt_version,
            self.entry.last_attempt_status,
        ]
        return record

    async def _stage_nvram(
        self, data: bytes | memoryview, env: Environment, record: dict[str, Any], op: Operation
    ) -> None:
        provider = self.ctx.provider
        assert env.partition is not None  # method "nvram" implies it
        await self.ctx.write_atomic(record["capsule"], record["capsule_tmp"], data)
        op.progress(Status.DEVICE_WRITE, 40)
        loader = await provider.read_file(env.loader_source)
        try:
            current = await provider.read_file(record["loader"])
        except KernelError:
            current = b""
        if current != loader:
            op.record(uefi={**record, "loader_installed": True})
            record["loader_installed"] = True
            await self.ctx.write_atomic(record["loader"], record["loader_tmp"], loader)
        op.progress(Status.DEVICE_WRITE, 60)
        await self.ctx.vars.delete(efi.FWUPDATE_DEBUG_LOG, FWUPD)
        if self.ctx.efi_debugging:
            # fwupd's EnableEfiDebugging: fwupd-efi keeps its log, which the outcome quotes
            await self.ctx.vars.set(efi.FWUPDATE_VERBOSE, FWUPD, b"\x01")
        relative = record["capsule"][len(env.esp) + 1 :]
        info = efi.UpdateInfo(
            guid=self.fw_class,
            capsule_flags=self.entry.capsule_flags,
            device_path=[env.partition, efi.FilePathNode(efi.esp_path_to_efi(relative))],
        )
        await self.ctx.vars.set(record["update_info"], FWUPD, info.pack())
        op.progress(Status.DEVICE_WRITE, 75)
        number, previous = await self.ctx.boot_entry_number()
        loader_relative = record["loader"][len(env.esp) + 1 :]
        option = efi.LoadOption(
            efi.LOAD_OPTION_ACTIVE,
            efi.FWUPD_BOOT_DESCRIPTION,
            [env.partition, efi.FilePathNode(efi.esp_path_to_efi(loader_relative))],
        )
        if env.shim:
            # Secure Boot: shim starts the loader named in the optional data, relative to
            # shim's own directory (fwupd: fu_efi_load_option_set_optional_path)
            option = efi.LoadOption(
                efi.LOAD_OPTION_ACTIVE,
                efi.FWUPD_BOOT_DESCRIPTION,
                [
                    env.partition,
                    efi.FilePathNode(efi.esp_path_to_efi(env.shim[len(env.esp) + 1 :])),
                ],
                shim_optional_data(env.loader_name),
            )
        record.update(boot_entry=number, boot_entry_reused=previous is not None)
        op.record(uefi=record)
        if previous != option.pack():
            await self.ctx.vars.set(efi.boot_var_name(number), GLOBAL, option.pack())
        op.progress(Status.DEVICE_WRITE, 90)
        await self._check_before_boot_next(env, record, data, loader, number)
        # BootNext last: it never points at an entry whose loader or capsule is missing
        await self.ctx.vars.set(efi.BOOT_NEXT, GLOBAL, struct.pack("<H", number))

    async def _check_before_boot_next(
        self,
        env: Environment,
        record: dict[str, Any],
        data: bytes | memoryview,
        loader: bytes,
        number: int,
    ) -> None:
        """Re-read everything the loader will need; raise (and so roll back) if any differs.

        fwupd-efi 1.4 hangs the machine at boot when it cannot find or open the
        capsule (fwupd-efi issue 112), so a wrong HD() node or a lost file is not a
        failed update but a machine stuck at boot. Checked, from the kernel again:
        the capsule and the loader on the ESP (size and contents), the ESP's
        partition as the firmware will see it (number, GUID, start and size in
        logical blocks, sysfs and blkid agreeing) and the variables as written
        (UPDATE_INFO and Boot#### decoded, their HD() node and file paths).
        """
        problems = await self._files_differ(record, data, loader)
        node = await self._esp_node_now(env, problems)
        started = env.shim or record["loader"]
        expected = {
            "UPDATE_INFO": efi.esp_path_to_efi(record["capsule"][len(env.esp) + 1 :]),
            efi.boot_var_name(number): efi.esp_path_to_efi(started[len(env.esp) + 1 :]),
        }
        paths: dict[str, list[efi.DevicePathNode]] = {}
        info = await self.ctx.update_info(self.fw_class)
        if info is not None:
            paths["UPDATE_INFO"] = info.device_path
        try:
            option = efi.LoadOption.unpack(
                await self.ctx.vars.get_data(efi.boot_var_name(number), GLOBAL) or b""
            )
            paths[efi.boot_var_name(number)] = option.file_path
            if env.shim and option.optional_data != shim_optional_data(env.loader_name):
                problems.append(
                    f"{efi.boot_var_name(number)} does not pass \\{env.loader_name} to shim"
                )
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
                f"refusing to schedule the update of {self.name}: "
                + "; ".join(problems)
                + ". fwupd-efi hangs the machine at boot when it cannot find or open the "
                "capsule, so everything staged was removed; check the ESP (fsck.vfat) and "
                "retry"
            )

    async def _files_differ(
        self, record: dict[str, Any], data: bytes | memoryview, loader: bytes
    ) -> list[str]:
        """The capsule and the loader as read back from the ESP, where they differ."""
        problems = []
        for path, expected, what in (
            (record["capsule"], data, "the capsule"),
            (record["loader"], loader, "the loader"),
        ):
            try:
                found = await self.ctx.provider.read_file(path)
            except KernelError as error:
                problems.append(f"{what} /{path} cannot be read back ({error.message})")
                continue
            # a byte comparison (memcmp) costs a fraction of hashing both copies
            if found != expected:
                problems.append(
                    f"{what} /{path} reads back as {len(found)} bytes that differ from "
                    f"the {len(expected)} bytes written"
                )
        return problems

    async def _esp_node_now(
        self, env: Environment, problems: list[str]
    ) -> efi.HardDriveNode | None:
        """The ESP's HD() node read again from the kernel; a change is a problem."""
        mount = await esp_mount_of(self.ctx.provider, env.esp)
        if mount is None or (mount.major, mount.minor) != env.esp_device:
            problems.append(f"/{env.esp} is no longer the partition detected as the ESP")
            return None
        node, _, why = await esp_partition(self.ctx.provider, mount.major, mount.minor)
        if node is None:
            problems.append(why)
        elif node != env.partition:
            problems.append(
                f"the ESP's partition changed while staging (now {node}, staged for "
                f"{env.partition})"
            )
        return node

    async def _stage_on_disk(
        self, data: bytes | memoryview, record: dict[str, Any], op: Operation
    ) -> None:
        await self.ctx.write_atomic(record["capsule"], record["capsule_tmp"], data)
        op.progress(Status.DEVICE_WRITE, 70)
        value = await self.ctx.os_indications()
        await self.ctx.set_os_indications(
            value | efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
        )

    # ------------------------------------------------------- the result

    async def outcome(self, entry: HistoryEntry, record: dict[str, Any]) -> Reconciliation:
        """What the firmware did with the capsule, read back after the reboot.

        The ESRT entry (drivers/firmware/efi/esrt.c; ``fw_version``,
        ``last_attempt_version``, ``last_attempt_status``) against what it said when
        the capsule was staged (``esrt_before``), and for the NVRAM method whether
        the loader stamped the UPDATE_INFO record. A failure quotes what fwupd-efi
        logged as failing (its debug log, kept with ``efi_debugging``): the ESRT
        says nothing when the firmware has no FMP for the entry and refuses the
        capsule outright (OVMF: UpdateCapsule answers Unsupported).
        """
        verdict = await self._outcome(entry, record)
        if verdict.state == UpdateState.SUCCESS or record.get("method") != "nvram":
            return verdict
        said = await self.ctx.loader_failures()
        if not said:
            return verdict
        return Reconciliation(
            verdict.state, f"{verdict.reason}; fwupd-efi logged: {said}", verdict.version
        )

    async def _outcome(self, entry: HistoryEntry, record: dict[str, Any]) -> Reconciliation:
        await self.refresh()
        esrt = self.entry
        name = self.name
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
            not_run = await self._loader_did_not_run(record)
            if not_run is not None:
                return not_run
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

    async def _loader_did_not_run(self, record: dict[str, Any]) -> Reconciliation | None:
        """UPDATE_INFO still at status 1 after the reboot: why the loader applied nothing."""
        info = await self.ctx.update_info(self.fw_class)
        if info is None or info.status != efi.UPDATE_INFO_STATUS_ATTEMPT_UPDATE:
            return None
        name = self.name
        if record.get("boot_entry") not in await self.ctx.updater_entries():
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
            f"right ESP; {name} still runs {self.entry.fw_version}",
        )
