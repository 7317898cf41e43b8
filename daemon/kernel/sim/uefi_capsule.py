"""Simulated UEFI: the ESRT, efivarfs, the EFI System Partition and the boot firmware.

This module is the kernel side and the sim commands: it renders
``/sys/firmware/efi/esrt`` (0400 files, ``entry<N>`` directories), efivarfs with its
real write semantics (:class:`EfivarfsPolicy`), the ESP as a vfat mount with limited
space (:class:`EspPolicy`) plus the block device's sysfs attributes and udev
properties, and an installed fwupd EFI loader (docs/kernel.md, section "UEFI: ESRT,
efivarfs, boot variables"). The firmware side (capsules on disk, BootNext, the
fwupd-efi loader, UpdateCapsule) is :class:`~livefw.kernel.sim.uefi_firmware.UefiFirmware`,
run from :meth:`UefiCapsuleComponent.on_reboot`; the state and constants are in
livefw.kernel.sim.uefi_model. Variables and ESP files are persisted in the
component state; ESP files larger than 64 KiB as blob files the state refers to
(machine.BlobStore).
"""

from __future__ import annotations

import errno
import hashlib
import posixpath
import struct
import uuid
from collections.abc import Callable

from livefw.errors import InvalidArgument
from livefw.kernel.provider import MountEntry
from livefw.kernel.sim.machine import SimComponent, SimDevice, SimMachine
from livefw.kernel.sim.uefi_firmware import UefiFirmware
from livefw.kernel.sim.uefi_model import (
    AUTOFS_MINOR,
    COMPONENT_NAME,
    DEVICE_FW_CLASS,
    DISK_MAJOR,
    DISK_MINOR,
    EFIVARS_MINOR,
    ESP_AUTOMOUNT,
    ESP_MAJOR,
    ESP_MBR_PARTUUID,
    ESP_MINOR,
    ESP_MOUNT,
    ESP_PARTUUID,
    ESP_SECTORS,
    ESP_START,
    LOADER_MARKER,
    MS_SIGNED_MARKER,
    SHIM_MARKER,
    SIGNED_MARKER,
    SIM_CERT_PREFIX,
    STATUS_FAULTS,
    SYSTEM_FW_CLASS,
    EsrtEntryState,
    UefiState,
    VarState,
    b64,
    sim_signature,
    unb64,
)
from livefw.kernel.sim.vfs import Attr, Dir, File, FsPolicy, Node, fail
from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi
from livefw.model import Model

#: hostile_mounts kinds: mount point, device, MAJ:MIN, disk MAJ:MIN, removable, options.
HOSTILE_MOUNTS: dict[
    str, tuple[str, str, tuple[int, int], tuple[int, int], bool, tuple[str, ...]]
] = {
    "udisks-usb": (
        "/media/alice/ESPSTICK",
        "/dev/sda1",
        (8, 1),
        (8, 0),
        True,
        ("nosuid", "nodev", "uid=1000", "gid=1000", "shortname=mixed", "utf8=1", "flush"),
    ),
    "loop-esp": ("/mnt/esp-image", "/dev/loop0p1", (259, 8), (7, 0), False, ("fmask=0022",)),
    "home": ("/home/alice/esp", "/dev/sdb1", (8, 17), (8, 16), False, ("fmask=0022",)),
}


class _AutofsDir(Dir):
    """An autofs mount point: the first lookup below it mounts the real directory.

    fs/autofs/root.c ``autofs_d_automount()``: a path walk through the mount point
    asks the automount daemon (systemd) and waits until the file system is mounted.
    """

    def __init__(self, trigger: Callable[[], Dir]) -> None:
        self._trigger = trigger
        self._mounted: Dir | None = None
        super().__init__()

    def _target(self) -> Dir:
        if self._mounted is None:
            self._mounted = self._trigger()
        return self._mounted

    @property
    def children(self) -> dict[str, Node]:
        return self._target().children

    @children.setter
    def children(self, value: dict[str, Node]) -> None:
        pass  # Dir.__init__ assigns an empty dict; the mounted directory has the content

    @property
    def policy(self) -> FsPolicy | None:
        return self._target().policy if getattr(self, "_trigger", None) else None

    @policy.setter
    def policy(self, value: FsPolicy | None) -> None:
        pass


class EfiVarFile(File):
    """An efivarfs inode; ``committed`` is False between O_CREAT and the first write."""

    def __init__(self, data: bytes = b"", immutable: bool = False, committed: bool = True) -> None:
        super().__init__(data=data, mode=0o644, immutable=immutable)
        self.committed = committed
        self.immutable_on_commit = immutable


_FIRMWARE_READ_ONLY = {
    efi.OS_INDICATIONS_SUPPORTED,
    efi.SECURE_BOOT,
    "BootCurrent",
    efi.CAPSULE_MAX,
    efi.CAPSULE_LAST,
}


class EfivarfsPolicy(FsPolicy):
    """efivarfs semantics over the variables directory.

    fs/efivarfs/file.c ``efivarfs_file_write()`` (4-byte attributes then data, one
    write is one SetVariable, EFI_NOT_FOUND before a first write is EIO),
    fs/efivarfs/inode.c ``efivarfs_create()`` (EPERM for the random-seed GUID,
    immutable unless ``efivar_variable_is_removable()``) and ``efivarfs_unlink()``,
    fs/efivarfs/vars.c ``efivar_validate()`` (Boot####, BootNext, ... checked).
    """

    def __init__(self, component: UefiCapsuleComponent, directory: Dir) -> None:
        self.component = component
        self.directory = directory

    def _used(self, skip: str = "") -> int:
        return sum(
            len(name) * 2 + max(len(node.data) - 4, 0)
            for name, node in self.directory.children.items()
            if isinstance(node, File) and name != skip
        )

    def free_space(self) -> int:
        """QueryVariableInfo's remaining storage (efivarfs statfs, 6.x)."""
        return max(self.component.state.var_store_size - self._used(), 0)

    def _check_writable(self, op: str, path: str) -> None:
        state = self.component.state
        if state.efivarfs_readonly or self.component.machine.take_fault(
            self.component.name, "*", ("efivarfs-ro",)
        ):
            raise fail(errno.EROFS, op, path, "efivarfs is mounted read-only")

    def before_write(self, path: str, existing: File | None, data: bytes) -> File | None:
        """One write(2) is one SetVariable (fs/efivarfs/file.c ``efivarfs_file_write()``)."""
        filename = posixpath.basename(path)
        self._check_writable("write", path)
        try:
            name, guid = efi.parse_var_filename(filename)
        except ValueError as error:
            raise fail(errno.EINVAL, "open", path, str(error)) from error
        if existing is None and not data:
            # open(O_CREAT): an uncommitted inode; immutable from the first write on
            if guid == efi.LINUX_EFI_RANDOM_SEED_TABLE_GUID:
                raise fail(errno.EPERM, "open", path)
            node = EfiVarFile(committed=False)
            node.immutable_on_commit = not efi.var_is_mutable_by_default(name, guid)
            return node
        if existing is not None and existing.immutable:
            raise fail(errno.EPERM, "open", path)
        if len(data) < 4:
            raise fail(errno.EINVAL, "write", path, "efivarfs writes need the 4-byte attributes")
        attributes, value = efi.decode_var(data)
        if attributes & ~efi.EFI_VARIABLE_MASK:
            raise fail(errno.EINVAL, "write", path, "attribute bits outside the mask")
        if guid == efi.EFI_GLOBAL_VARIABLE_GUID and not efi.validate_global_var(name, value):
            raise fail(errno.EINVAL, "write", path, "variable_validate refused the data")
        if guid == efi.EFI_GLOBAL_VARIABLE_GUID and name in _FIRMWARE_READ_ONLY:
            raise fail(errno.EROFS, "write", path, "EFI_WRITE_PROTECTED")
        committed = isinstance(existing, EfiVarFile) and existing.committed
        if existing is not None and not isinstance(existing, EfiVarFile):
            committed = True
        if not value and not attributes & efi.EFI_VARIABLE_APPEND_WRITE:
            if not committed:
                # fs/efivarfs/file.c efivarfs_file_write(): a SetVariable that fails
                # with EFI_NOT_FOUND (-ENOENT) before anything was set becomes -EIO
                raise fail(errno.EIO, "write", path, "EFI_NOT_FOUND")
            return None  # SetVariable with size 0 deletes
        if attributes & efi.EFI_VARIABLE_APPEND_WRITE and committed and existing is not None:
            old_attrs, old_value = efi.decode_var(existing.data)
            value = old_value + value
            attributes = old_attrs
        need = len(name) * 2 + len(value)
        if need > self.component.state.var_store_size - self._used(skip=filename):
            raise fail(errno.ENOSPC, "write", path, "EFI_OUT_OF_RESOURCES")
        if self.component.machine.take_fault(self.component.name, "*", ("varstore-full",)):
            raise fail(errno.ENOSPC, "write", path, "EFI_OUT_OF_RESOURCES (fault)")
        attributes &= ~efi.EFI_VARIABLE_APPEND_WRITE
        if isinstance(existing, EfiVarFile):
            node = existing
        else:
            node = EfiVarFile(immutable=not efi.var_is_mutable_by_default(name, guid))
            node.immutable_on_commit = node.immutable
            node.immutable = False
        node.data = efi.encode_var(attributes, value)
        if not node.committed or existing is None:
            node.immutable = node.immutable_on_commit
        node.committed = True
        return node

    def before_unlink(self, path: str, node: File) -> None:
        """Unlink = delete the variable.

        A read-only mount refuses with EROFS and an immutable inode with EPERM (the VFS,
        before efivarfs is asked). Any failure of the delete itself is EINVAL whatever
        the firmware said: fs/efivarfs/inode.c ``efivarfs_unlink()`` returns -EINVAL
        when ``efivar_entry_delete()`` fails (EFI_WRITE_PROTECTED included).
        """
        self._check_writable("unlink", path)
        if node.immutable:
            raise fail(errno.EPERM, "unlink", path)
        name, guid = efi.parse_var_filename(posixpath.basename(path))
        if guid == efi.EFI_GLOBAL_VARIABLE_GUID and name in _FIRMWARE_READ_ONLY:
            raise fail(errno.EINVAL, "unlink", path, "EFI_WRITE_PROTECTED")

    def before_mkdir(self, path: str) -> None:
        """No directories in efivarfs."""
        raise fail(errno.EPERM, "mkdir", path)

    def set_immutable(self, path: str, node: File, value: bool) -> None:
        """FS_IOC_SETFLAGS (``chattr [+-]i``)."""
        if self.component.machine.take_fault(self.component.name, "*", ("chattr-denied",)):
            raise fail(errno.EPERM, "ioctl", path, "FS_IOC_SETFLAGS refused (CAP_LINUX_IMMUTABLE)")
        node.immutable = value

    def after_change(self) -> None:
        """Persist the committed variables."""
        self.component.sync_variables(self.directory)


class EspPolicy(FsPolicy):
    """A vfat ESP of ``esp_size`` bytes."""

    def __init__(self, component: UefiCapsuleComponent, directory: Dir) -> None:
        self.component = component
        self.directory = directory

    def free_space(self) -> int:
        """Capacity minus the files' sizes."""
        return max(self.component.state.esp_size - _tree_size(self.directory), 0)

    def before_write(self, path: str, existing: File | None, data: bytes) -> File | None:
        """ENOSPC past the capacity or when the ``esp-full`` fault fires.

        ``esp-write-lost`` silently keeps only half of the next capsule written (media
        or cache losing data): only reading it back shows it.
        """
        grow = len(data) - (len(existing.data) if existing is not None else 0)
        if grow > 0 and grow > self.free_space():
            raise fail(errno.ENOSPC, "write", path)
        machine, name = self.component.machine, self.component.name
        if data and machine.take_fault(name, "*", ("esp-full",)):
            raise fail(errno.ENOSPC, "write", path, "fault: ESP full")
        if (
            data
            and ".cap" in posixpath.basename(path)
            and machine.take_fault(name, "*", ("esp-write-lost",))
        ):
            data = data[: len(data) // 2]
        return super().before_write(path, existing, data)

    def after_change(self) -> None:
        """Persist the ESP tree."""
        self.component.sync_esp(self.directory)


def _tree_size(directory: Dir) -> int:
    total = 0
    for node in directory.children.values():
        if isinstance(node, File):
            total += len(node.data)
        elif isinstance(node, Dir):
            total += _tree_size(node)
    return total


def _walk(directory: Dir, prefix: str = "") -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    dirs: list[str] = []
    for name, node in sorted(directory.children.items()):
        path = f"{prefix}{name}"
        if isinstance(node, File):
            files[path] = node.data
        elif isinstance(node, Dir):
            dirs.append(path)
            sub_files, sub_dirs = _walk(node, path + "/")
            files.update(sub_files)
            dirs.extend(sub_dirs)
    return files, dirs


def _var(
    name: str, guid: str, data: bytes, attrs: int = efi.EFI_VARIABLE_DEFAULT
) -> tuple[str, VarState]:
    immutable = not efi.var_is_mutable_by_default(name, guid)
    return efi.var_filename(name, guid), VarState(
        content=b64(efi.encode_var(attrs, data)), immutable=immutable
    )


def _hd() -> efi.HardDriveNode:
    return efi.HardDriveNode(1, ESP_START, ESP_SECTORS, ESP_PARTUUID)


class UefiCapsuleComponent(SimComponent):
    """The UEFI platform: ESRT, variables, ESP and the boot-time capsule processing."""

    name = COMPONENT_NAME
    order = 40
    state_model = UefiState
    state: UefiState
    FAULTS = {
        **{
            kind: f"the next capsule for the target fails with ESRT status {code}"
            for kind, code in STATUS_FAULTS.items()
        },
        "no-fmp": "the firmware has no FMP driver for the next capsule's image (as OVMF): "
        "UpdateCapsule answers EFI_UNSUPPORTED and the ESRT entry is not touched",
        "bootnext-ignored": "at the next boot the firmware drops BootNext without running it",
        "boot-entry-removed": "at the next boot the firmware deletes the BootNext entry",
        "esp-full": "the next write to the ESP fails with ENOSPC",
        "varstore-full": "the next variable write fails with ENOSPC (EFI_OUT_OF_RESOURCES)",
        "chattr-denied": "the next FS_IOC_SETFLAGS on efivarfs fails with EPERM",
        "efivarfs-ro": "the next efivarfs write or unlink fails with EROFS",
        "esp-write-lost": "the next capsule written to the ESP silently loses its second half",
    }
    BROKEN = {
        "truncated": "CapsuleImageSize larger than the file",
        "bad-header": "HeaderSize past the end of the file",
        "wrong-guid": "an FMP image for a GUID no ESRT entry has",
        "bad-signature": "a valid capsule whose image signature does not verify (status 5)",
        "too-old": "a version below lowest_supported_fw_version (status 3)",
        "no-version": "a fwupd-style capsule whose payload has no FMP payload header",
    }

    # ------------------------------------------------------------ profiles

    def __init__(self, machine: SimMachine, state: Model) -> None:
        super().__init__(machine, state)
        #: the platform firmware's part of a boot (capsules on disk, BootNext, loader)
        self.firmware = UefiFirmware(self)

    @classmethod
    def default_state(cls, profile: str, scale: int) -> UefiState:
        """System firmware plus a device firmware; see the module doc for profiles."""
        entries = [
            EsrtEntryState(
                fw_class=SYSTEM_FW_CLASS,
                name="System Firmware",
                fw_type=efi.FW_TYPE_SYSTEM,
                fw_version=65586,
                lowest_supported_fw_version=65536,
                capsule_flags=0x8010,
                last_attempt_version=65586,
            ),
            EsrtEntryState(
                fw_class=DEVICE_FW_CLASS,
                name="Embedded Controller",
                fw_type=efi.FW_TYPE_DEVICE,
                fw_version=41,
                lowest_supported_fw_version=30,
                capsule_flags=0,
            ),
        ]
        state = UefiState(entries=entries)
        if profile == "minimal":
            state.entries = entries[:1]
            state.loader_installed = False
            state.signed_loader_installed = False
        elif profile == "scale":
            # more than the kernel's 128 entries is not faithful; load tests only
            for index in range(scale):
                state.entries.append(
                    EsrtEntryState(
                        fw_class=str(uuid.UUID(int=0xE5A7 << 112 | index)),
                        name=f"Device Firmware {index}",
                        fw_type=efi.FW_TYPE_DEVICE,
                        fw_version=100,
                        lowest_supported_fw_version=1,
                    )
                )
        elif profile == "empty":
            state.esrt_present = False
            state.entries = []
        elif profile == "legacy":
            state.boot = "legacy"
            state.esrt_present = False
            state.entries = []
        elif profile == "xen-dom0":
            # the firmware has an ESRT; the dom0 kernel shows it from 6.3 on (_esrt_visible)
            state.boot = "xen-dom0"
        cls._initial_files(state)
        return state

    @staticmethod
    def _initial_files(state: UefiState) -> None:
        """A Debian install: shim + grub on the ESP and their boot entries."""
        state.esp_dirs = ["EFI", "EFI/BOOT", f"EFI/{state.os_id}"]
        state.esp_files = {
            "EFI/BOOT/BOOTX64.EFI": b64(SHIM_MARKER + MS_SIGNED_MARKER),
            f"EFI/{state.os_id}/shimx64.efi": b64(SHIM_MARKER + MS_SIGNED_MARKER),
            f"EFI/{state.os_id}/grubx64.efi": b64(b"MZ LIVEFW-SIM grub\x00" + bytes(2048)),
        }
        if state.boot == "legacy":
            state.variables = {}
            return
        glob = efi.EFI_GLOBAL_VARIABLE_GUID
        shim = efi.LoadOption(
            efi.LOAD_OPTION_ACTIVE,
            state.os_id,
            [_hd(), efi.FilePathNode(f"\\EFI\\{state.os_id}\\shimx64.efi")],
        )
        shell = efi.LoadOption(
            efi.LOAD_OPTION_ACTIVE, "UEFI Shell", [efi.RawNode(0x04, 0x06, bytes(16))]
        )
        pxe = efi.LoadOption(
            efi.LOAD_OPTION_ACTIVE, "UEFI PXEv4", [efi.RawNode(0x03, 0x0B, bytes(32))]
        )
        supported = efi.OS_INDICATIONS_BOOT_TO_FW_UI | efi.OS_INDICATIONS_FMP_CAPSULE_SUPPORTED
        supported |= efi.OS_INDICATIONS_CAPSULE_RESULT_VAR_SUPPORTED
        if state.capsule_on_disk:
            supported |= efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
        bs_rt = efi.EFI_VARIABLE_BOOTSERVICE_ACCESS | efi.EFI_VARIABLE_RUNTIME_ACCESS
        variables = [
            _var("Boot0000", glob, shim.pack()),
            _var("Boot0001", glob, shell.pack()),
            _var("Boot0002", glob, pxe.pack()),
            _var("BootOrder", glob, struct.pack("<3H", 0, 1, 2)),
            _var("BootCurrent", glob, struct.pack("<H", 0), bs_rt),
            _var("Timeout", glob, struct.pack("<H", 3)),
            _var(efi.OS_INDICATIONS_SUPPORTED, glob, struct.pack("<Q", supported), bs_rt),
            _var(efi.SECURE_BOOT, glob, bytes([int(state.secure_boot)]), bs_rt),
        ]
        state.variables = dict(variables)

    # ------------------------------------------------------------ rendering

    def render(self, root: Dir) -> None:
        """sysfs, efivarfs, the ESP, the fwupd-efi package files, mounts and udev."""
        state = self.state
        machine = self.machine
        os_release = f'PRETTY_NAME="Debian GNU/Linux"\nID={state.os_id}\nVERSION_ID="14"\n'
        root.mkdirs("etc").children["os-release"] = File(data=os_release.encode())
        machine.mount_table.append(
            MountEntry("/", "ext4", "/dev/nvme0n1p2", ESP_MAJOR, ESP_MINOR + 1, ("rw", "relatime"))
        )
        kernel_dir = root.mkdirs("proc/sys/kernel")
        if "osrelease" not in kernel_dir.children:
            release = f"{machine.state.kernel}.0-livefw-sim"
            kernel_dir.children["osrelease"] = Attr(read=lambda: release + "\n")
        if state.boot == "xen-dom0":
            root.mkdirs("sys/hypervisor").children["type"] = Attr(read=lambda: "xen\n")
            root.mkdirs("proc/xen").children["capabilities"] = Attr(read=lambda: "control_d\n")
        self._render_esp(root)
        self._render_hostile_mounts(root)
        self._render_loaders(root)
        if state.boot == "legacy":
            return
        efi_dir = root.mkdirs(efi.EFI_DIR)
        efi_dir.children["fw_platform_size"] = Attr(read=lambda: "64\n")
        self._firmware_variables()
        self._render_efivars(root)
        if self._esrt_visible():
            self._render_esrt(root)
            if state.esrt_snapshot:
                self._render_esrt_snapshot(root)

    def _esrt_visible(self) -> bool:
        """Whether the kernel shows the firmware's ESRT in /sys/firmware/efi/esrt.

        Under Xen (dom0 boots with EFI_PARAVIRT, no EFI_MEMMAP) drivers/firmware/efi/
        esrt.c ``efi_esrt_init()`` gave up before 6.3; commit 01de145dc7fb "efi:
        Actually enable the ESRT under Xen" (6.3) looks the table up through the
        hypervisor (drivers/xen/efi.c ``xen_efi_mem_desc_lookup``), which needs a Xen
        that preserves the ESRT for dom0 (knob ``xen_esrt``).
        """
        state = self.state
        if not state.esrt_present:
            return False
        if state.boot == "xen-dom0":
            return self.machine.kernel_at_least(efi.ESRT_ON_XEN_SINCE) and state.xen_esrt
        return True

    def _esrt_entries_readable(self) -> bool:
        """drivers/firmware/efi/esrt.c ``esre_attr_show()``: EACCES without CAP_SYS_ADMIN.

        The check went with commit d0a1865cf7e2 "efi/esrt: Allow ESRT access without
        CAP_SYS_ADMIN" (6.5); only the entries' attributes have it, not the top-level
        fw_resource_* files. The shipped unit does not grant livefwd CAP_SYS_ADMIN.
        """
        return self.machine.kernel_at_least(efi.ESRT_WITHOUT_SYS_ADMIN_SINCE) or (
            self.state.cap_sys_admin
        )

    def _render_esrt_snapshot(self, root: Dir) -> None:
        """What livefwd.service's ExecStartPre=+ copies to /run/livefw/esrt (as root)."""
        entries = root.mkdirs(f"{efi.ESRT_SNAPSHOT_DIR}/entries")
        for index, entry in enumerate(self.state.entries):
            directory = entries.mkdirs(f"entry{index}")
            for key, value in entry.entry().render().items():
                directory.children[key] = File(data=f"{value}\n".encode(), mode=0o600)

    def _firmware_variables(self) -> None:
        """SecureBoot and OsIndicationsSupported follow the knobs (the firmware sets them)."""
        glob = efi.EFI_GLOBAL_VARIABLE_GUID
        bs_rt = efi.EFI_VARIABLE_BOOTSERVICE_ACCESS | efi.EFI_VARIABLE_RUNTIME_ACCESS
        found = self.get_var(efi.OS_INDICATIONS_SUPPORTED, glob)
        if found is not None:
            (bits,) = struct.unpack_from("<Q", found[1].ljust(8, b"\0"))
            bits &= ~efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            if self.state.capsule_on_disk:
                bits |= efi.OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            self._firmware_var(efi.OS_INDICATIONS_SUPPORTED, struct.pack("<Q", bits), bs_rt)
        self._firmware_var(efi.SECURE_BOOT, bytes([int(self.state.secure_boot)]), bs_rt)

    def _firmware_var(self, name: str, data: bytes, attrs: int) -> None:
        """Set a firmware-owned global variable when its value differs (keeps the flag)."""
        glob = efi.EFI_GLOBAL_VARIABLE_GUID
        current = self.get_var(name, glob)
        if current is None or current[1] != data:
            filename, var = _var(name, glob, data, attrs)
            self.state.variables[filename] = var

    def _render_esrt(self, root: Dir) -> None:
        esrt = root.mkdirs(efi.ESRT_DIR)
        count = len(self.state.entries)
        esrt.children[efi.ESRT_RESOURCE_COUNT] = Attr(read=lambda: f"{count}\n", mode=0o400)
        esrt.children[efi.ESRT_RESOURCE_COUNT_MAX] = Attr(
            read=lambda: f"{max(count, 8)}\n", mode=0o400
        )
        esrt.children[efi.ESRT_RESOURCE_VERSION] = Attr(read=lambda: "1\n", mode=0o400)
        entries = esrt.mkdirs("entries")
        for index in range(count):
            entry_dir = Dir()

            def reader(index: int, key: str) -> Attr:
                def read() -> str:
                    if not self._esrt_entries_readable():
                        raise fail(errno.EACCES, "read", f"{efi.ESRT_ENTRIES}/entry{index}/{key}")
                    return self.state.entries[index].entry().render()[key]

                return Attr(read=read, mode=0o400)

            for key in efi.ESRT_ENTRY_FILES:
                entry_dir.children[key] = reader(index, key)
            entries.children[f"entry{index}"] = entry_dir

    def _render_efivars(self, root: Dir) -> None:
        parent = root.mkdirs(posixpath.dirname(efi.EFIVARS_DIR))
        directory = Dir()
        directory.policy = EfivarfsPolicy(self, directory)
        for filename, var in self.state.variables.items():
            directory.children[filename] = EfiVarFile(unb64(var.content), var.immutable)
        parent.children[posixpath.basename(efi.EFIVARS_DIR)] = directory
        options = ("ro",) if self.state.efivarfs_readonly else ("rw", "nosuid", "nodev")
        self.machine.mount_table.append(
            MountEntry("/" + efi.EFIVARS_DIR, "efivarfs", "efivarfs", 0, EFIVARS_MINOR, options)
        )

    def esp_mount(self) -> str:
        """The ESP's mount point (provider path)."""
        return ESP_AUTOMOUNT if self.state.esp_automount else ESP_MOUNT

    def _render_esp(self, root: Dir) -> None:
        """The ESP as a vfat mount, its partition and disk in sysfs, and udev data.

        sysfs ``start``/``size`` are in 512-byte sectors whatever the disk
        (block/partitions/core.c ``part_start_show``, block/genhd.c
        ``part_size_show``); the disk's ``queue/logical_block_size``
        (block/blk-sysfs.c) follows the ``logical_block_size`` knob. With
        ``esp_automount`` the ESP sits behind an autofs mount at /efi that a path
        lookup below it mounts (fs/autofs/root.c ``autofs_d_automount``).
        """
        state = self.state
        directory = Dir()
        directory.policy = EspPolicy(self, directory)
        for path in state.esp_dirs:
            directory.mkdirs(path)
        for path, content in state.esp_files.items():
            directory.mkdirs(posixpath.dirname(path)).children[posixpath.basename(path)] = File(
                data=self.machine.blobs.unpack(content)
            )
        mount_point = self.esp_mount()
        parent = root.mkdirs(posixpath.dirname(mount_point))
        vfat = MountEntry(
            "/" + mount_point,
            "vfat",
            "/dev/nvme0n1p1",
            ESP_MAJOR,
            ESP_MINOR,
            ("rw", "relatime", "fmask=0077", "dmask=0077"),
        )
        if state.esp_automount:
            self.machine.mount_table.append(
                MountEntry("/" + mount_point, "autofs", "systemd-1", 0, AUTOFS_MINOR, ("rw",))
            )
            if state.esp_automounted:
                self.machine.mount_table.append(vfat)
                parent.children[posixpath.basename(mount_point)] = directory
            else:
                parent.children[posixpath.basename(mount_point)] = _AutofsDir(
                    lambda: self._automount(directory, vfat)
                )
        else:
            parent.children[posixpath.basename(mount_point)] = directory
            self.machine.mount_table.append(vfat)
        block = root.mkdirs(f"{efi.SYS_DEV_BLOCK}/{ESP_MAJOR}:{ESP_MINOR}")
        block.children["partition"] = Attr(read=lambda: "1\n")
        block.children["start"] = Attr(read=lambda: f"{ESP_START}\n")
        block.children["size"] = Attr(read=lambda: f"{ESP_SECTORS}\n")
        block.children["dev"] = Attr(read=lambda: f"{ESP_MAJOR}:{ESP_MINOR}\n")
        self._render_disk(root, DISK_MAJOR, DISK_MINOR, state.logical_block_size, removable=False)
        props = {
            "DEVNAME": "/dev/nvme0n1p1",
            "ID_FS_TYPE": "vfat",
            "ID_PART_ENTRY_SCHEME": "gpt",
            "ID_PART_ENTRY_NUMBER": "1",
            "ID_PART_ENTRY_OFFSET": str(ESP_START),
            "ID_PART_ENTRY_SIZE": str(ESP_SECTORS),
            "ID_PART_ENTRY_DISK": f"{DISK_MAJOR}:{DISK_MINOR}",
            "ID_PART_ENTRY_TYPE": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "ID_PART_ENTRY_UUID": ESP_PARTUUID,
        }
        if state.esp_mbr:
            props.update(
                ID_PART_ENTRY_SCHEME="dos",
                ID_PART_ENTRY_TYPE="0xef",
                ID_PART_ENTRY_UUID=ESP_MBR_PARTUUID,
            )
        self.machine.udev_table[("block", ESP_MAJOR, ESP_MINOR)] = props

    def _automount(self, directory: Dir, vfat: MountEntry) -> Dir:
        """Systemd answers the autofs request: the ESP is mounted on top of /efi."""
        self.state.esp_automounted = True
        self.machine.mount_table.append(vfat)
        return directory

    def _render_disk(
        self, root: Dir, major: int, minor: int, block_size: int, *, removable: bool
    ) -> None:
        disk = root.mkdirs(f"{efi.SYS_DEV_BLOCK}/{major}:{minor}")
        disk.children["removable"] = Attr(read=lambda: f"{int(removable)}\n")
        disk.mkdirs("queue").children["logical_block_size"] = Attr(read=lambda: f"{block_size}\n")

    def _render_hostile_mounts(self, root: Dir) -> None:
        """Vfat mounts a careless ESP search would take (issue 13 item 6)."""
        kinds = {k.strip() for k in self.state.hostile_mounts.split(",") if k.strip()}
        unknown = kinds - set(HOSTILE_MOUNTS)
        if unknown:
            raise InvalidArgument(
                f"unknown hostile_mounts {sorted(unknown)}; known: {sorted(HOSTILE_MOUNTS)}"
            )
        for kind in sorted(kinds):
            point, device, (major, minor), disk, removable, options = HOSTILE_MOUNTS[kind]
            tree = root.mkdirs(point.lstrip("/"))
            tree.mkdirs("EFI/BOOT").children["BOOTX64.EFI"] = File(data=b"MZ not the ESP\x00")
            self.machine.mount_table.append(
                MountEntry(point, "vfat", device, major, minor, ("rw", "relatime", *options))
            )
            self._render_disk(root, disk[0], disk[1], 512, removable=removable)
            self.machine.udev_table[("block", major, minor)] = {
                "DEVNAME": device,
                "ID_FS_TYPE": "vfat",
                "ID_PART_ENTRY_SCHEME": "gpt",
                "ID_PART_ENTRY_NUMBER": "1",
                "ID_PART_ENTRY_DISK": f"{disk[0]}:{disk[1]}",
                "ID_PART_ENTRY_TYPE": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                "ID_PART_ENTRY_UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, kind)),
            }

    def _render_loaders(self, root: Dir) -> None:
        directory = root.mkdirs(efi.FWUPD_EFI_DIRS[0])
        body = bytes(8192)
        if self.state.loader_installed:
            directory.children["fwupdx64.efi"] = File(data=LOADER_MARKER + body)
        if self.state.signed_loader_installed:
            directory.children["fwupdx64.efi.signed"] = File(
                data=LOADER_MARKER + SIGNED_MARKER + body
            )

    # --------------------------------------------------------- persistence

    def sync_variables(self, directory: Dir) -> None:
        """Store the committed efivarfs files (called after every change)."""
        with self.machine.lock:
            self.state.variables = {
                name: VarState(content=b64(node.data), immutable=node.immutable)
                for name, node in sorted(directory.children.items())
                if isinstance(node, File) and (not isinstance(node, EfiVarFile) or node.committed)
            }
            self.machine.changed(self.name)

    def sync_esp(self, directory: Dir) -> None:
        """Store the ESP tree."""
        with self.machine.lock:
            files, dirs = _walk(directory)
            pack = self.machine.blobs.pack
            self.state.esp_files = {path: pack(data) for path, data in files.items()}
            self.state.esp_dirs = dirs
            self.machine.changed(self.name)

    # ------------------------------------------------- firmware-side helpers

    def get_var(self, name: str, guid: str) -> tuple[int, bytes] | None:
        """A committed variable's ``(attributes, data)``, or None."""
        var = self.state.variables.get(efi.var_filename(name, guid))
        return efi.decode_var(unb64(var.content)) if var is not None else None

    def set_var(self, name: str, guid: str, data: bytes, immutable: bool | None = None) -> None:
        """Set a variable as the firmware does (attributes NV|BS|RT)."""
        filename = efi.var_filename(name, guid)
        old = self.state.variables.get(filename)
        if immutable is None:
            immutable = old.immutable if old else not efi.var_is_mutable_by_default(name, guid)
        self.state.variables[filename] = VarState(
            content=b64(efi.encode_var(efi.EFI_VARIABLE_DEFAULT, data)), immutable=immutable
        )

    def del_var(self, name: str, guid: str) -> None:
        """Delete a variable (absent is fine)."""
        self.state.variables.pop(efi.var_filename(name, guid), None)

    def esp_read(self, efi_path: str) -> bytes | None:
        """A file on the ESP by its EFI path (``EFI/...`` or with backslashes), or None."""
        content = self.state.esp_files.get(efi.efi_path_to_esp(efi_path))
        if content is None:
            # vfat is case-insensitive
            wanted = efi.efi_path_to_esp(efi_path).lower()
            content = next(
                (v for k, v in self.state.esp_files.items() if k.lower() == wanted), None
            )
        return self.machine.blobs.unpack(content) if content is not None else None

    def entry_of(self, fw_class: str) -> EsrtEntryState | None:
        """The ESRT entry of ``fw_class``, or None."""
        return next((e for e in self.state.entries if e.fw_class == fw_class.lower()), None)

    def log_boot(self, text: str) -> None:
        """A line in the boot log (`livefw sim devices`, tests); the last 50 are kept."""
        self.state.boot_log = [
            *self.state.boot_log[-49:],
            f"boot {self.machine.state.boots}: {text}",
        ]

    # ------------------------------------------------------------ the boot

    def on_reboot(self) -> None:
        """Play the firmware at boot: capsule on disk, then BootNext (UEFI 2.10 §3.1.2, §8.5.5).

        A boot that hangs in the loader (see :meth:`UefiFirmware.fwupd_efi`) is recorded in
        ``last_boot_hang``; the simulated reboot then stands for the power cycle a
        person does next, so the machine comes up normally with BootNext consumed.
        """
        self.state.esp_automounted = False
        self.state.last_boot_hang = ""
        if self.state.boot == "legacy":
            return
        with self.machine.lock:
            self.firmware.capsules_on_disk()
            self.firmware.boot_next()
            self.machine.changed(self.name)

    def firmware_hd(self) -> efi.HardDriveNode:
        """The ESP's HD() node as the firmware sees it (see :class:`UefiFirmware`)."""
        return self.firmware.firmware_hd()

    # ------------------------------------------------------- sim commands

    def devices(self) -> list[SimDevice]:
        """One device per ESRT entry; a boot that hung in the loader is shown on each."""
        if not self.state.esrt_present:
            return []
        hang = (
            f"; LAST BOOT HUNG IN THE LOADER: {self.state.last_boot_hang}"
            if self.state.last_boot_hang
            else ""
        )
        return [
            SimDevice(
                key=f"uefi_capsule/{entry.fw_class}",
                name=entry.name,
                component=self.name,
                summary=(
                    f"fw_version {entry.fw_version}, lowest {entry.lowest_supported_fw_version},"
                    f" last attempt {entry.last_attempt_version} status "
                    f"{entry.last_attempt_status}"
                    f" ({efi.describe_last_attempt_status(entry.last_attempt_status)})"
                    f"{hang}"
                ),
            )
            for entry in self.state.entries
        ]

    def sample(self, key: str, version: str | None, broken: str | None) -> bytes:
        """A signed FMP capsule for the entry (or a broken one, see BROKEN)."""
        entry = self.entry_of(key.removeprefix("uefi_capsule/"))
        if entry is None:
            raise InvalidArgument(f"no ESRT entry {key}")
        try:
            new = int(version, 0) if version else entry.fw_version + 1
        except ValueError as error:
            raise InvalidArgument(f"ESRT versions are u32 numbers, not {version!r}") from error
        if not 0 <= new < 1 << 32:
            raise InvalidArgument(f"ESRT versions are u32 numbers, not {version!r}")
        if broken == "too-old":
            new = max(entry.lowest_supported_fw_version - 1, 0)
        firmware = hashlib.sha256(f"{entry.fw_class}:{new}".encode()).digest() * 64
        payload = efi.FmpPayloadHeader(new, entry.lowest_supported_fw_version).pack() + firmware
        if broken == "no-version":
            body = firmware
            header = cap.pack_capsule_header(
                entry.fw_class, 4096, entry.capsule_flags, 4096 + len(body)
            )
            return header + body
        signature = sim_signature(payload)
        if broken == "bad-signature":
            signature = SIM_CERT_PREFIX + bytes(32)
        image = cap.pack_image_auth(1, signature) + payload
        image_type = (
            str(uuid.uuid5(uuid.NAMESPACE_DNS, "nowhere"))
            if broken == "wrong-guid"
            else entry.fw_class
        )
        image_header = cap.pack_fmp_image_header(
            3,
            image_type,
            len(image),
            capsule_support=efi.CAPSULE_SUPPORT_AUTHENTICATION,
        )
        fmp_size = cap.FMP_CAPSULE_HEADER.size + 8
        body = cap.pack_fmp_capsule_header([fmp_size]) + image_header + image
        header_size = 32
        flags = cap.CAPSULE_FLAG_PERSIST_ACROSS_RESET | cap.CAPSULE_FLAG_INITIATE_RESET
        image_size = header_size + len(body)
        if broken == "truncated":
            image_size += 4096
        if broken == "bad-header":
            header_size = len(body) + 4096
        head = cap.CAPSULE_HEADER.pack(
            cap.guid_to_efi(cap.FMP_CAPSULE_GUID), header_size, flags, image_size
        )
        return head + bytes(32 - len(head)) + body

    def stage(self, key: str, options: dict[str, str]) -> str:
        """Set an entry's ESRT fields directly (e.g. ``version=N``, as after a BIOS flash)."""
        entry = self.entry_of(key.removeprefix("uefi_capsule/"))
        if entry is None:
            raise InvalidArgument(f"no ESRT entry {key}")
        with self.machine.lock:
            for field_name in ("fw_version", "lowest_supported_fw_version", "last_attempt_status"):
                option = options.get(field_name.replace("_", "-")) or options.get(field_name)
                if option is not None:
                    try:
                        setattr(entry, field_name, int(option, 0))
                    except ValueError as error:
                        raise InvalidArgument(f"{field_name} must be a number") from error
            self.machine.changed(self.name)
        return f"{key}: fw_version {entry.fw_version}"


COMPONENT = UefiCapsuleComponent
