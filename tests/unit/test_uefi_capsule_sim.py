"""The simulated UEFI platform: ESRT files, efivarfs semantics, ESP, the boot firmware."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from livefw.errors import KernelError
from livefw.kernel import OpenFlags
from livefw.kernel.sim.machine import DEFAULT_KERNEL, FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.sim.uefi_capsule import (
    DEVICE_FW_CLASS,
    ESP_PARTUUID,
    SYSTEM_FW_CLASS,
    UefiCapsuleComponent,
)
from livefw.kernel.sim.vfs import Attr
from livefw.kernel.uapi import efi

GLOBAL = efi.EFI_GLOBAL_VARIABLE_GUID
EFIVARS = efi.EFIVARS_DIR


def _machine(
    tmp_path: Path, profile: str = "default", kernel: str = DEFAULT_KERNEL
) -> tuple[SimMachine, SimProvider]:
    machine = SimMachine.create(str(tmp_path / "sim"), profile, kernel=kernel)
    return machine, SimProvider(machine)


def _component(machine: SimMachine) -> UefiCapsuleComponent:
    component = machine.components["uefi_capsule"]
    assert isinstance(component, UefiCapsuleComponent)
    return component


async def _write(provider: SimProvider, name: str, guid: str, content: bytes) -> None:
    handle = await provider.open(f"{EFIVARS}/{name}-{guid}", OpenFlags.WRITE | OpenFlags.CREATE)
    try:
        await handle.write(content)
    finally:
        await handle.close()


async def _errno(coro: object) -> int:
    try:
        await coro  # type: ignore[misc]
    except KernelError as error:
        return error.errno
    raise AssertionError("no error")


async def test_esrt_tree_is_the_kernels(tmp_path: Path) -> None:
    _, provider = _machine(tmp_path)
    assert await provider.read_attr("sys/firmware/efi/esrt/fw_resource_count") == "2"
    assert await provider.read_attr("sys/firmware/efi/esrt/fw_resource_version") == "1"
    assert await provider.listdir(efi.ESRT_ENTRIES) == ["entry0", "entry1"]
    entry = f"{efi.ESRT_ENTRIES}/entry0"
    assert sorted(await provider.listdir(entry)) == sorted(efi.ESRT_ENTRY_FILES)
    assert await provider.read_attr(f"{entry}/fw_class") == SYSTEM_FW_CLASS
    assert await provider.read_attr(f"{entry}/capsule_flags") == "0x8010"
    node = provider.lookup(f"{entry}/fw_version")
    assert isinstance(node, Attr)
    assert node.mode == 0o400
    assert (await provider.read_file(f"{entry}/fw_type")) == b"1\n"
    assert await provider.read_attr("sys/firmware/efi/fw_platform_size") == "64"


async def test_esp_mount_block_device_and_udev(tmp_path: Path) -> None:
    _, provider = _machine(tmp_path)
    mounts = {m.mount_point: m for m in await provider.mounts()}
    esp = mounts["/boot/efi"]
    assert esp.fs_type == "vfat"
    assert mounts["/sys/firmware/efi/efivars"].fs_type == "efivarfs"
    base = f"sys/dev/block/{esp.major}:{esp.minor}"
    assert await provider.read_attr(f"{base}/partition") == "1"
    assert int(await provider.read_attr(f"{base}/start")) == 2048
    props = await provider.udev_properties("block", esp.major, esp.minor)
    assert props["ID_PART_ENTRY_UUID"] == ESP_PARTUUID
    assert await provider.exists("usr/libexec/fwupd/efi/fwupdx64.efi")


async def test_efivarfs_write_rules(tmp_path: Path) -> None:
    machine, provider = _machine(tmp_path)
    # fewer than 4 bytes, unknown attribute bits, BootNext of the wrong size
    assert await _errno(_write(provider, "Foo", efi.FWUPDATE_GUID, b"\x07")) == errno.EINVAL
    bad_attrs = efi.encode_var(0x80, b"x")
    assert await _errno(_write(provider, "Foo", efi.FWUPDATE_GUID, bad_attrs)) == errno.EINVAL
    three = efi.encode_var(7, b"\x01\x00\x00")
    assert await _errno(_write(provider, "BootNext", GLOBAL, three)) == errno.EINVAL
    # a valid BootNext; a zero-length write cannot delete it (validation first), unlink can
    await _write(provider, "BootNext", GLOBAL, efi.encode_var(7, b"\x01\x00"))
    path = f"{EFIVARS}/BootNext-{GLOBAL}"
    assert await provider.read_file(path) == bytes.fromhex("070000000100")
    assert not await provider.get_immutable(path)
    assert await _errno(_write(provider, "BootNext", GLOBAL, efi.encode_var(7, b""))) == (
        errno.EINVAL
    )
    await provider.unlink(path)
    assert not await provider.exists(path)
    # BootOrder can be deleted with an attributes-only write
    await _write(provider, "BootOrder", GLOBAL, efi.encode_var(7, b""))
    assert not await provider.exists(f"{EFIVARS}/BootOrder-{GLOBAL}")
    # malformed names
    assert await _errno(_write(provider, "NoGuid", "", efi.encode_var(7, b"x"))) == errno.EINVAL
    state = _component(machine).state
    assert f"BootOrder-{GLOBAL}" not in state.variables


async def test_efivarfs_immutable_files(tmp_path: Path) -> None:
    machine, provider = _machine(tmp_path)
    name, guid = "fwupd-x-0", efi.FWUPDATE_GUID
    path = f"{EFIVARS}/{name}-{guid}"
    # the creating open may write although the new file is immutable
    await _write(provider, name, guid, efi.encode_var(7, b"record"))
    assert await provider.get_immutable(path)
    assert await _errno(provider.open(path, OpenFlags.WRITE)) == errno.EPERM
    assert await _errno(provider.unlink(path)) == errno.EPERM
    await provider.set_immutable(path, False)
    await _write(provider, name, guid, efi.encode_var(7, b"second"))
    assert (await provider.read_file(path))[4:] == b"second"
    await provider.unlink(path)
    # OsIndicationsSupported: immutable, and write-protected by the firmware
    supported = f"{EFIVARS}/OsIndicationsSupported-{GLOBAL}"
    assert await _errno(provider.open(supported, OpenFlags.WRITE)) == errno.EPERM
    await provider.set_immutable(supported, False)
    content = efi.encode_var(6, bytes(8))
    assert await _errno(_write(provider, "OsIndicationsSupported", GLOBAL, content)) == errno.EROFS
    # persisted: a reloaded machine has the same variables and flags
    reloaded = SimMachine.load(machine.directory)
    assert _component(reloaded).state.variables == _component(machine).state.variables


async def test_efivarfs_store_full_read_only_and_chattr_faults(tmp_path: Path) -> None:
    machine, provider = _machine(tmp_path)
    component = _component(machine)
    free = await provider.free_space(EFIVARS)
    assert 0 < free < component.state.var_store_size
    big = efi.encode_var(7, bytes(free))
    assert await _errno(_write(provider, "Big", efi.FWUPDATE_GUID, big)) == errno.ENOSPC
    machine.add_fault(FaultSpec(component="uefi_capsule", kind="varstore-full"))
    small = efi.encode_var(7, b"x")
    assert await _errno(_write(provider, "Small", efi.FWUPDATE_GUID, small)) == errno.ENOSPC
    await _write(provider, "Small", efi.FWUPDATE_GUID, small)  # the fault fired once
    machine.add_fault(FaultSpec(component="uefi_capsule", kind="efivarfs-ro"))
    assert await _errno(_write(provider, "Other", efi.FWUPDATE_GUID, small)) == errno.EROFS
    machine.add_fault(FaultSpec(component="uefi_capsule", kind="chattr-denied"))
    path = f"{EFIVARS}/Small-{efi.FWUPDATE_GUID}"
    assert await _errno(provider.set_immutable(path, False)) == errno.EPERM
    assert await provider.get_immutable(path)


async def test_esp_space_and_persistence(tmp_path: Path) -> None:
    machine, provider = _machine(tmp_path)
    free = await provider.free_space("boot/efi")
    await provider.makedirs("boot/efi/EFI/debian/fw")
    await provider.write_file("boot/efi/EFI/debian/fw/a.cap", b"abc", durable=True)
    assert await provider.free_space("boot/efi") == free - 3
    assert await _errno(provider.write_file("boot/efi/big", bytes(free))) == errno.ENOSPC
    machine.add_fault(FaultSpec(component="uefi_capsule", kind="esp-full"))
    assert await _errno(provider.write_file("boot/efi/b", b"x")) == errno.ENOSPC
    await provider.rename("boot/efi/EFI/debian/fw/a.cap", "boot/efi/EFI/debian/fw/b.cap")
    reloaded = SimMachine.load(machine.directory)
    files = _component(reloaded).state.esp_files
    assert "EFI/debian/fw/b.cap" in files
    assert "EFI/debian/fw/a.cap" not in files


async def test_reboot_consumes_boot_next_and_ignores_foreign_entries(tmp_path: Path) -> None:
    machine, provider = _machine(tmp_path)
    await _write(provider, "BootNext", GLOBAL, efi.encode_var(7, b"\x00\x00"))
    machine.reboot()
    assert f"BootNext-{GLOBAL}" not in _component(machine).state.variables
    assert "not the fwupd loader" in _component(machine).state.boot_log[-1]


async def test_malformed_record_aborts_the_loader(tmp_path: Path) -> None:
    """fwupd-efi deletes a malformed record and applies nothing that boot (efi/fwupdate.c)."""
    machine, provider = _machine(tmp_path)
    component = _component(machine)
    capsule = component.sample(f"uefi_capsule/{SYSTEM_FW_CLASS}", None, None)
    await provider.makedirs("boot/efi/EFI/debian/fw")
    await provider.write_file("boot/efi/EFI/debian/fw/c.cap", capsule)
    await provider.write_file("boot/efi/EFI/debian/fwupdx64.efi", b"")
    loader = await provider.read_file("usr/libexec/fwupd/efi/fwupdx64.efi")
    await provider.write_file("boot/efi/EFI/debian/fwupdx64.efi", loader)
    hd = efi.HardDriveNode(1, 2048, 1048576, ESP_PARTUUID)
    info = efi.UpdateInfo(SYSTEM_FW_CLASS, 0, [hd, efi.FilePathNode("\\EFI\\debian\\fw\\c.cap")])
    name = efi.update_info_name(SYSTEM_FW_CLASS)
    await _write(provider, name, efi.FWUPDATE_GUID, efi.encode_var(7, info.pack()))
    await _write(provider, "Stray", efi.FWUPDATE_GUID, efi.encode_var(7, b"\x01"))
    option = efi.LoadOption(
        1, "Linux Firmware Updater", [hd, efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")]
    )
    await _write(provider, "Boot0007", GLOBAL, efi.encode_var(7, option.pack()))
    await _write(provider, "BootNext", GLOBAL, efi.encode_var(7, struct.pack("<H", 7)))
    before = component.state.entries[0].model_copy()
    machine.reboot()
    component = _component(machine)
    assert component.state.entries[0] == before
    assert f"Stray-{efi.FWUPDATE_GUID}" not in component.state.variables
    raw = await SimProvider(machine).read_file(f"{EFIVARS}/{name}-{efi.FWUPDATE_GUID}")
    assert efi.UpdateInfo.unpack(raw[4:]).status == 1
    # without the stray record the next boot applies it
    await _write(SimProvider(machine), "BootNext", GLOBAL, efi.encode_var(7, struct.pack("<H", 7)))
    machine.reboot()
    entry = _component(machine).state.entries[0]
    assert entry.fw_version == before.fw_version + 1
    assert entry.last_attempt_status == 0
    raw = await SimProvider(machine).read_file(f"{EFIVARS}/{name}-{efi.FWUPDATE_GUID}")
    stamped = efi.UpdateInfo.unpack(raw[4:])
    assert stamped.status == 2
    assert stamped.time_attempted.timezone == efi.EFI_UNSPECIFIED_TIMEZONE


@pytest.mark.parametrize("profile", ["legacy", "xen-dom0", "empty"])
async def test_no_esrt_profiles(tmp_path: Path, profile: str) -> None:
    # a Xen dom0 shows the ESRT from 6.3 on (docs/kernel.md); 6.1 does not
    _, provider = _machine(tmp_path, profile, kernel="6.1")
    assert not await provider.exists(efi.ESRT_DIR)
    assert await provider.exists(efi.EFI_DIR) == (profile != "legacy")
    if profile == "xen-dom0":
        assert await provider.read_attr("sys/hypervisor/type") == "xen"


def test_sample_kinds_and_devices(tmp_path: Path) -> None:
    machine, _ = _machine(tmp_path)
    component = _component(machine)
    keys = [device.key for device in component.devices()]
    assert keys == [f"uefi_capsule/{SYSTEM_FW_CLASS}", f"uefi_capsule/{DEVICE_FW_CLASS}"]
    good = efi.inspect_capsule(component.sample(keys[1], "50", None))
    assert good.images[0].version == 50
    assert good.images[0].image_type == DEVICE_FW_CLASS
    too_old = efi.inspect_capsule(component.sample(keys[1], None, "too-old"))
    assert too_old.images[0].version == 29
    no_version = efi.inspect_capsule(
        component.sample(keys[1], None, "no-version"), (DEVICE_FW_CLASS,)
    )
    assert no_version.images[0].version is None
    for kind in ("truncated", "bad-header"):
        with pytest.raises(ValueError, match=r"truncated or corrupt|HeaderSize"):
            efi.inspect_capsule(component.sample(keys[1], None, kind))


async def test_scale_profile_renders_many_entries(tmp_path: Path) -> None:
    """Load tests only: the kernel itself refuses ESRTs of more than 128 entries."""
    machine = SimMachine.create(str(tmp_path / "sim"), "scale", scale=300)
    provider = SimProvider(machine)
    assert await provider.read_attr("sys/firmware/efi/esrt/fw_resource_count") == "302"
    assert len(await provider.listdir(efi.ESRT_ENTRIES)) == 302
    assert len(_component(machine).devices()) == 302


async def test_sim_reboot_says_that_the_boot_hung(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`livefw sim reboot` (no daemon running) prints the hang, its cause and what to do."""
    import argparse

    from livefw.cli import exitcodes
    from livefw.cli.output import Output
    from livefw.cli.sim import _dispatch

    machine, provider = _machine(tmp_path)
    component = _component(machine)
    await provider.makedirs("boot/efi/EFI/debian/fw")
    loader = await provider.read_file("usr/libexec/fwupd/efi/fwupdx64.efi")
    await provider.write_file("boot/efi/EFI/debian/fwupdx64.efi", loader)
    hd = component.firmware_hd()
    missing = f"\\EFI\\debian\\fw\\fwupd-{SYSTEM_FW_CLASS}.cap"  # never written
    info = efi.UpdateInfo(
        guid=SYSTEM_FW_CLASS, capsule_flags=0, device_path=[hd, efi.FilePathNode(missing)]
    )
    fwupd = efi.FWUPDATE_GUID
    await _write(
        provider, efi.update_info_name(SYSTEM_FW_CLASS), fwupd, efi.encode_var(7, info.pack())
    )
    option = efi.LoadOption(
        efi.LOAD_OPTION_ACTIVE,
        efi.FWUPD_BOOT_DESCRIPTION,
        [hd, efi.FilePathNode("\\EFI\\debian\\fwupdx64.efi")],
    )
    await _write(provider, "Boot0007", GLOBAL, efi.encode_var(7, option.pack()))
    await _write(provider, "BootNext", GLOBAL, efi.encode_var(7, struct.pack("<H", 7)))
    machine.save()
    args = argparse.Namespace(state_dir=str(tmp_path), sim_command="reboot")

    assert _dispatch(args, Output()) == exitcodes.OK
    said = capsys.readouterr()
    assert "Simulated reboot done" in said.out
    assert "THE BOOT HUNG in the fwupd EFI loader" in said.err
    assert "could not find or open" in said.err
    assert "no such file on the ESP" in said.err
    assert "power-cycle" in said.err
    assert "livefw esp" in said.err

    # the power-cycled machine boots normally (BootNext was consumed): nothing is said
    assert _dispatch(args, Output()) == exitcodes.OK
    said = capsys.readouterr()
    assert "Simulated reboot done" in said.out
    assert "HUNG" not in said.out + said.err
