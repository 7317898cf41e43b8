"""The simulated fwctl kernel: generic ioctl rules, scopes, taint, drivers, hotplug."""

import asyncio
import errno
import struct
from pathlib import Path
from typing import Any

import pytest

from livefw.errors import KernelError
from livefw.kernel import OpenFlags
from livefw.kernel.sim.fwctl import FwctlComponent
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import fwctl as uapi

CXL = "dev/fwctl/fwctl0"
MLX5 = "dev/fwctl/fwctl1"
MEDIA = "6b0c3a2e-6f1d-4c1e-9a53-1f2d3c4b5a60"  # vendor feature, reset-only effects
THERMAL = "a7c3d1e4-0b2f-4e7a-8c19-5d6e7f809112"  # immediate effects
SCRUB = "96dad7d6-fde8-482b-a733-75774e06db8a"  # kernel-owned


@pytest.fixture
def provider(tmp_path: Path) -> SimProvider:
    return SimProvider(SimMachine.create(str(tmp_path / "sim")))


def comp(provider: SimProvider) -> FwctlComponent:
    component = provider.machine.components["fwctl"]
    assert isinstance(component, FwctlComponent)
    return component


async def rpc(
    provider: SimProvider, path: str, scope: int, request: bytes, out_len: int = 4096
) -> tuple[bytes, int]:
    handle = await provider.open(path, OpenFlags.RDWR)
    try:
        arg = uapi.pack_rpc(scope, len(request), out_len)
        out = bytearray(out_len)
        await handle.ioctl(uapi.FWCTL_RPC, arg, pointers={16: bytearray(request), 24: out})
    finally:
        await handle.close()
    (length,) = struct.unpack_from("<I", arg, 12)
    return bytes(out[: min(length, out_len)]), length


async def errno_of(coro: Any) -> int:
    with pytest.raises(KernelError) as info:
        await coro
    return info.value.errno


async def tainted(provider: SimProvider) -> int:
    return int(await provider.read_attr("proc/sys/kernel/tainted"))


# ------------------------------------------------------------------ sysfs


async def test_sysfs_nodes_and_parents(provider: SimProvider) -> None:
    assert await provider.listdir("sys/class/fwctl") == ["fwctl0", "fwctl1"]
    assert await provider.read_attr("sys/class/fwctl/fwctl0/dev") == "239:0"
    assert "DEVNAME=fwctl/fwctl0" in await provider.read_attr("sys/class/fwctl/fwctl0/uevent")
    memdev = await provider.read_attr("sys/class/fwctl/fwctl0/device/uevent")
    assert "DEVNAME=cxl/mem0" in memdev
    # a memdev is a bus device: no `device` link (only class devices have one); its PCI
    # function is the directory that holds it
    assert not await provider.exists("sys/class/fwctl/fwctl0/device/device")
    pci = await provider.read_attr("sys/bus/pci/devices/0000:0d:00.0/uevent")
    assert "PCI_SLOT_NAME=0000:0d:00.0" in pci
    assert "DRIVER=cxl_pci" in pci
    assert await provider.exists("sys/bus/pci/devices/0000:0d:00.0/mem0/fwctl/fwctl0")
    assert await provider.exists("sys/bus/cxl/devices/mem0/fwctl/fwctl0/dev")
    assert await provider.exists(CXL)
    assert await tainted(provider) == 0


async def test_mlx5_fwctl_hangs_under_the_pci_function(provider: SimProvider) -> None:
    """drivers/fwctl/mlx5/main.c mlx5ctl_probe: fwctl_alloc_device(&mdev->pdev->dev)."""
    parent = await provider.read_attr("sys/class/fwctl/fwctl1/device/uevent")
    assert "PCI_SLOT_NAME=0000:08:00.0" in parent
    assert "DRIVER=mlx5_core" in parent
    assert await provider.read_attr("sys/class/fwctl/fwctl1/device/vendor") == "0x15b3"
    assert await provider.exists("sys/devices/pci0000:00/0000:08:00.0/fwctl/fwctl1/dev")
    # the auxiliary device mlx5_fwctl binds to exists, but fwctl1 is not below it
    aux = "sys/bus/auxiliary/devices/mlx5_core.fwctl.0"
    assert "DRIVER=mlx5_fwctl" in await provider.read_attr(f"{aux}/uevent")
    assert not await provider.exists(f"{aux}/fwctl")
    assert comp(provider).devpath(comp(provider).state.nodes[1]) == (
        "devices/pci0000:00/0000:08:00.0/fwctl/fwctl1"
    )


@pytest.mark.parametrize(("kernel", "present"), [("6.14", False), ("6.15", True)])
async def test_fwctl_exists_from_6_15(tmp_path: Path, kernel: str, present: bool) -> None:
    provider = SimProvider(SimMachine.create(str(tmp_path / "sim"), kernel=kernel))
    assert await provider.exists("sys/class/fwctl") is present
    assert await provider.exists(CXL) is present
    assert (await provider.read_attr("proc/sys/kernel/osrelease")).startswith(kernel + ".")


async def test_empty_profile_has_no_class(tmp_path: Path) -> None:
    provider = SimProvider(SimMachine.create(str(tmp_path / "sim"), "empty"))
    assert not await provider.exists("sys/class/fwctl")


# ------------------------------------------------------------------ generic rules


async def test_generic_ioctl_rules(provider: SimProvider) -> None:
    handle = await provider.open(CXL, OpenFlags.RDWR)
    request = uapi.pack_get_supported_features(0, 0)
    pointers = {16: bytearray(request), 24: bytearray(64)}
    # wrong number and wrong type -> ENOTTY
    assert await errno_of(handle.ioctl(0x9A05, uapi.pack_rpc(0, 24, 64), pointers)) == errno.ENOTTY
    assert await errno_of(handle.ioctl(0x40089A01, uapi.pack_rpc(0, 24, 64))) == errno.ENOTTY
    # size below the last known field -> EINVAL
    short = uapi.pack_rpc(0, 24, 64)
    struct.pack_into("<I", short, 0, 28)
    assert await errno_of(handle.ioctl(uapi.FWCTL_RPC, short, pointers)) == errno.EINVAL
    # larger struct with a non-zero tail -> E2BIG; zero tail is fine
    big = uapi.pack_rpc(0, 24, 64) + bytearray(8)
    struct.pack_into("<I", big, 0, 40)
    await handle.ioctl(uapi.FWCTL_RPC, big, pointers)
    big[36] = 1
    assert await errno_of(handle.ioctl(uapi.FWCTL_RPC, big, pointers)) == errno.E2BIG
    # over 2 MiB -> EMSGSIZE; unknown scope -> EOPNOTSUPP
    huge = uapi.pack_rpc(0, 24, uapi.MAX_RPC_LEN + 1)
    assert await errno_of(handle.ioctl(uapi.FWCTL_RPC, huge, pointers)) == errno.EMSGSIZE
    bad_scope = uapi.pack_rpc(7, 24, 64)
    assert await errno_of(handle.ioctl(uapi.FWCTL_RPC, bad_scope, pointers)) == errno.EOPNOTSUPP
    # info flags must be zero
    info = uapi.pack_info(0)
    struct.pack_into("<I", info, 4, 1)
    assert await errno_of(handle.ioctl(uapi.FWCTL_INFO, info)) == errno.EOPNOTSUPP
    await handle.close()
    assert await tainted(provider) == 0


async def test_info_zero_length_returns_zero(provider: SimProvider) -> None:
    handle = await provider.open(MLX5, OpenFlags.RDWR)
    arg = uapi.pack_info(0)
    await handle.ioctl(uapi.FWCTL_INFO, arg)
    assert struct.unpack_from("<II", arg, 8) == (uapi.DeviceType.MLX5, 0)
    arg = uapi.pack_info(64)
    data = bytearray(b"\xff" * 64)
    await handle.ioctl(uapi.FWCTL_INFO, arg, pointers={16: data})
    assert struct.unpack_from("<II", arg, 8) == (uapi.DeviceType.MLX5, 8)
    uid, caps = struct.unpack_from("<II", data)
    assert uid >= 1
    assert caps == uapi.MLX5_UCTX_CAP_TOOLS_RESOURCES
    assert data[8:] == bytes(56)  # zero-filled past the driver's data
    await handle.close()
    handle = await provider.open(CXL, OpenFlags.RDWR)
    arg = uapi.pack_info(16)
    data = bytearray(b"\xff" * 16)
    await handle.ioctl(uapi.FWCTL_INFO, arg, pointers={16: data})
    assert struct.unpack_from("<II", arg, 8) == (uapi.DeviceType.CXL, 0)
    assert data == bytes(16)
    await handle.close()


async def test_write_scopes_taint_once_even_when_the_driver_refuses(
    provider: SimProvider,
) -> None:
    await rpc(provider, MLX5, uapi.Scope.DEBUG_READ_ONLY, uapi.pack_mlx5_in(uapi.MLX5_OP_NOP))
    assert await tainted(provider) == 0
    # an unknown opcode at debug-write: the driver refuses, but the core tainted first
    request = uapi.pack_mlx5_in(0x9999)
    assert await errno_of(rpc(provider, MLX5, uapi.Scope.DEBUG_WRITE, request)) == errno.EBADMSG
    assert await tainted(provider) == 524288
    assert comp(provider).state.tainted
    provider.machine.reboot()
    assert await tainted(provider) == 0


async def test_full_debug_needs_rawio_and_does_not_taint_without_it(
    provider: SimProvider,
) -> None:
    comp(provider).state.daemon_has_rawio = False
    request = uapi.pack_mlx5_in(uapi.MLX5_OP_NOP)
    scope = uapi.Scope.DEBUG_WRITE_FULL
    assert await errno_of(rpc(provider, MLX5, scope, request)) == errno.EPERM
    assert await tainted(provider) == 0
    comp(provider).state.daemon_has_rawio = True
    response, _ = await rpc(provider, MLX5, scope, request)
    assert response[0] == uapi.MLX5_CMD_STAT_OK
    assert await tainted(provider) == uapi.TAINT_FWCTL


# ------------------------------------------------------------------ mlx5


async def test_mlx5_scope_table_and_headers(provider: SimProvider) -> None:
    nop = uapi.pack_mlx5_in(uapi.MLX5_OP_NOP)
    assert await errno_of(rpc(provider, MLX5, 0, nop)) == errno.EBADMSG  # needs debug-read
    response, length = await rpc(provider, MLX5, 1, nop)
    assert (length, response[0]) == (4096, 0)  # mlx5ctl_fw_rpc never sets out_len
    assert await errno_of(rpc(provider, MLX5, 1, nop[:8])) == errno.EMSGSIZE
    assert await errno_of(rpc(provider, MLX5, 1, nop, out_len=8)) == errno.EMSGSIZE
    # ACCESS_REG write at configuration, read needs debug-read
    write = uapi.pack_mlx5_in(uapi.MLX5_OP_ACCESS_REG, 0, struct.pack(">HHI", 0, 0x5002, 0))
    await rpc(provider, MLX5, 0, write + b"\x11" * 16)
    read = uapi.pack_mlx5_in(uapi.MLX5_OP_ACCESS_REG, 1, struct.pack(">HHI", 0, 0x5002, 0))
    assert await errno_of(rpc(provider, MLX5, 0, read)) == errno.EBADMSG
    response, _ = await rpc(provider, MLX5, 1, read)
    assert response[16 + 8 : 16 + 8 + 16] == b"\x11" * 16


@pytest.mark.parametrize("out_len", [16, 64, 300])
async def test_mlx5_reply_length_is_the_callers_buffer(provider: SimProvider, out_len: int) -> None:
    """fwctl_cmd_rpc reports the driver's out_len; mlx5ctl_fw_rpc leaves it untouched."""
    issi = uapi.pack_mlx5_in(uapi.MLX5_OP_QUERY_ISSI)  # answers 16 + 84 bytes
    response, length = await rpc(provider, MLX5, 1, issi, out_len=out_len)
    assert length == out_len
    assert len(response) == out_len
    assert response[0] == uapi.MLX5_CMD_STAT_OK
    if out_len > 100:
        assert response[100:] == bytes(out_len - 100)  # past the command's output


@pytest.mark.parametrize(
    ("kernel", "allowed"), [("6.15", False), ("6.17", False), ("6.18", True), ("7.2", True)]
)
async def test_mlx5_allow_list_grew_in_6_18(tmp_path: Path, kernel: str, allowed: bool) -> None:
    """MODIFY_CONG_STATUS and the adjacent-function commands: EBADMSG before 6.18."""
    provider = SimProvider(SimMachine.create(str(tmp_path / "sim"), kernel=kernel))
    for opcode, scope in ((0x823, 0), (0x731, 0), (0x730, 1), (0x732, 1)):
        request = uapi.pack_mlx5_in(opcode)
        if allowed:
            response, _ = await rpc(provider, MLX5, scope, request)
            assert response[0] == uapi.MLX5_CMD_STAT_BAD_OP_ERR  # reached the firmware
        else:
            assert await errno_of(rpc(provider, MLX5, scope, request)) == errno.EBADMSG
    # the 6.15 table answers on every release
    response, _ = await rpc(provider, MLX5, 1, uapi.pack_mlx5_in(uapi.MLX5_OP_NOP))
    assert response[0] == uapi.MLX5_CMD_STAT_OK


async def test_mlx5_device_errors_travel_in_the_response(provider: SimProvider) -> None:
    request = uapi.pack_mlx5_in(uapi.MLX5_OP_SET_DIAGNOSTIC_PARAMS, 0, b"\x01")  # body too short
    response, _ = await rpc(provider, MLX5, uapi.Scope.DEBUG_WRITE, request)
    status, syndrome = struct.unpack_from(uapi.MLX5_OUT_HDR_FMT, response)
    assert status == uapi.MLX5_CMD_STAT_BAD_PARAM_ERR
    assert syndrome != 0


async def test_mlx5_uids_are_per_open_and_freed_on_close(provider: SimProvider) -> None:
    component = comp(provider)
    component.state.mlx5_max_uids = 2
    first = await provider.open(MLX5, OpenFlags.RDWR)
    second = await provider.open(MLX5, OpenFlags.RDWR)
    assert component.open_uids[1] == {1, 2}
    assert await errno_of(provider.open(MLX5, OpenFlags.RDWR)) == errno.EAGAIN
    await first.close()
    assert component.open_uids[1] == {2}
    third = await provider.open(MLX5, OpenFlags.RDWR)
    assert component.open_uids[1] == {1, 2}
    await second.close()
    await third.close()
    assert component.open_uids[1] == set()


# ------------------------------------------------------------------ CXL


async def test_cxl_get_supported_features_masks_kernel_owned(provider: SimProvider) -> None:
    response, length = await rpc(provider, CXL, 0, uapi.pack_get_supported_features(0, 0), 16)
    decoded = uapi.unpack_supported_features(response)
    # the reported length counts sizeof(struct fwctl_rpc_cxl_out) = 16 (header + union)
    assert (length, decoded.supported, decoded.entries) == (24, 6, ())
    request = uapi.pack_get_supported_features(48 * 100, 0)
    response, length = await rpc(provider, CXL, 0, request)
    decoded = uapi.unpack_supported_features(response)
    assert length == 24 + 6 * 48
    scrub = next(e for e in decoded.entries if e.uuid == SCRUB)
    assert (scrub.set_size, scrub.changeable) == (0, False)
    media = next(e for e in decoded.entries if e.uuid == MEDIA)
    assert media.changeable
    assert media.set_size == 96
    # paging and the start index check
    response, _ = await rpc(provider, CXL, 0, uapi.pack_get_supported_features(48, 5))
    assert [e.index for e in uapi.unpack_supported_features(response).entries] == [5]
    request = uapi.pack_get_supported_features(48, 6)
    assert await errno_of(rpc(provider, CXL, 0, request)) == errno.EINVAL


async def test_cxl_get_feature_rules(provider: SimProvider) -> None:
    response, length = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 16))
    size, retval = struct.unpack_from("<II", response)
    assert (size, retval, length) == (16, 0, 16 + 16)
    assert response[24:] == bytes(8)  # the zeros past the reply
    request = uapi.pack_get_feature(MEDIA, 0, 0)
    assert await errno_of(rpc(provider, CXL, 0, request)) == errno.EINVAL  # count 0
    # cxlctl_get_feature does not compare count with out_len (drivers/cxl/core/features.c;
    # docs/kernel.md, "CXL Get Feature"): the reply
    # is 8 + count long and the core copies what fits
    request = uapi.pack_get_feature(MEDIA, 0, 64)
    response, length = await rpc(provider, CXL, 0, request, out_len=32)
    assert (len(response), length) == (32, 16 + 64)
    assert struct.unpack_from("<II", response) == (64, 0)
    unknown = "00000000-0000-4000-8000-000000000001"
    response, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(unknown, 0, 4))
    assert struct.unpack_from("<II", response) == (0, uapi.CXL_MBOX_CMD_RC_UNSUPPORTED)


async def test_cxl_set_feature_scopes_and_errnos(provider: SimProvider) -> None:
    data = b"\xaa" * 8
    media = uapi.pack_set_feature(MEDIA, data, version=1)
    assert await errno_of(rpc(provider, CXL, 1, media)) == errno.EINVAL  # escalation
    assert await tainted(provider) == 0
    response, _ = await rpc(provider, CXL, 2, media)
    assert struct.unpack_from("<II", response) == (0, 0)
    assert await tainted(provider) == uapi.TAINT_FWCTL
    current, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 8))
    assert current[8:16] == data
    thermal = uapi.pack_set_feature(THERMAL, data, version=1)
    assert await errno_of(rpc(provider, CXL, 2, thermal)) == errno.EINVAL  # needs full
    await rpc(provider, CXL, 3, thermal)
    scrub = uapi.pack_set_feature(SCRUB, data, version=1)
    assert await errno_of(rpc(provider, CXL, 3, scrub)) == errno.EPERM  # kernel owns it
    # unsupported opcode at any scope
    other = uapi.pack_cxl_rpc(0x4500, b"")
    assert await errno_of(rpc(provider, CXL, 3, other)) == errno.EINVAL
    # device-level error only in the out buffer: wrong feature version
    wrong = uapi.pack_set_feature(MEDIA, data, version=9)
    response, _ = await rpc(provider, CXL, 2, wrong)
    assert struct.unpack_from("<II", response)[1] == uapi.CXL_MBOX_CMD_RC_FEATUREVERSION


async def test_cxl_set_feature_ignores_transfer_flags_and_always_saves(
    provider: SimProvider,
) -> None:
    """cxl_set_feature(): the caller's transfer action is dropped, saved is forced."""
    component = comp(provider)

    async def retval(request: bytes) -> int:
        response, length = await rpc(provider, CXL, 2, request)
        assert length == 16  # header + the 8-byte union of struct fwctl_rpc_cxl_out
        return int(struct.unpack_from("<II", response)[1])

    new = bytes(range(96))
    # "initiate" with the whole value: the kernel sends one Full Data Transfer, saved
    request = uapi.pack_set_feature(MEDIA, new, version=1, flags=1)
    assert await retval(request) == 0
    (command,) = component.mailbox_log
    assert command.flags == uapi.CXL_SET_FEAT_FLAG_DATA_SAVED_ACROSS_RESET  # full + saved
    assert (command.offset, command.length) == (0, 96)
    saved, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 96, selection=2))
    assert saved[8:104] == new
    # "abort" is not an abort: its data is written like any other
    assert await retval(uapi.pack_set_feature(MEDIA, b"\xee" * 4, version=1, flags=4)) == 0
    current, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 4))
    assert current[8:12] == b"\xee" * 4
    assert not component.state.nodes[0].transfers


async def test_cxl_set_feature_is_split_into_mailbox_pieces(provider: SimProvider) -> None:
    component = comp(provider)
    component.state.cxl_mbox_payload = 64  # 32 header bytes + 32 data bytes per command
    new = bytes(range(96))
    response, _ = await rpc(provider, CXL, 2, uapi.pack_set_feature(MEDIA, new, version=1))
    assert struct.unpack_from("<II", response) == (0, 0)
    sets = [c for c in component.mailbox_log if c.opcode == uapi.CXL_MBOX_OP_SET_FEATURE]
    saved = uapi.CXL_SET_FEAT_FLAG_DATA_SAVED_ACROSS_RESET
    assert [(c.flags, c.offset, c.length) for c in sets] == [
        (1 | saved, 0, 32),  # initiate
        (2 | saved, 32, 32),  # continue
        (3 | saved, 64, 32),  # finish
    ]
    after, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 96, selection=2))
    assert after[8:104] == new
    # Get Feature is read in mailbox pieces too
    gets = [c for c in component.mailbox_log if c.opcode == uapi.CXL_MBOX_OP_GET_FEATURE]
    assert [(c.offset, c.length) for c in gets] == [(0, 64), (64, 32)]
    # a device error stops the transfer where it is: no abort, left in progress
    too_long = uapi.pack_set_feature(MEDIA, bytes(200), version=9)
    response, _ = await rpc(provider, CXL, 2, too_long)
    assert struct.unpack_from("<II", response)[1] == uapi.CXL_MBOX_CMD_RC_FEATUREVERSION
    # a mailbox too small for header + 10 bytes: INVALID_INPUT, nothing sent
    component.state.cxl_mbox_payload = 40
    before = len(component.mailbox_log)
    response, _ = await rpc(provider, CXL, 2, uapi.pack_set_feature(MEDIA, new, version=1))
    assert struct.unpack_from("<II", response) == (0, uapi.CXL_MBOX_CMD_RC_INPUT)
    assert len(component.mailbox_log) == before


# ------------------------------------------------------------------ hotplug


async def test_hot_remove_gives_enodev_on_old_fds_and_add_emits_uevents(
    provider: SimProvider,
) -> None:
    machine = provider.machine
    queue = machine.subscribe()
    handle = await provider.open(MLX5, OpenFlags.RDWR)
    component = comp(provider)
    component.remove_device("fwctl/fwctl1")
    event = await asyncio.wait_for(queue.get(), 5)
    assert (event.action, event.subsystem) == ("remove", "fwctl")
    assert event.devpath.endswith("/0000:08:00.0/fwctl/fwctl1")
    assert not await provider.exists(MLX5)
    assert not await provider.exists("sys/class/fwctl/fwctl1")
    arg = uapi.pack_info(0)
    assert await errno_of(handle.ioctl(uapi.FWCTL_INFO, arg)) == errno.ENODEV
    await handle.close()
    added = component.add_device({"type": "mlx5", "pci": "0000:09:00.0"})
    assert added.key == "fwctl/fwctl1"
    event = await asyncio.wait_for(queue.get(), 5)
    assert (event.action, event.properties["DEVNAME"]) == ("add", "fwctl/fwctl1")
    reopened = await provider.open(MLX5, OpenFlags.RDWR)
    await reopened.ioctl(uapi.FWCTL_INFO, uapi.pack_info(0))
    await reopened.close()
    # state persists: a reloaded machine has the same nodes
    again = SimMachine.load(machine.directory)
    assert [n.pci for n in again.components["fwctl"].state.nodes] == [  # type: ignore[attr-defined]
        "0000:0d:00.0",
        "0000:09:00.0",
    ]


async def test_firmware_busy_fault_travels_in_the_response(provider: SimProvider) -> None:
    from livefw.kernel.sim.machine import FaultSpec

    provider.machine.add_fault(FaultSpec(component="fwctl", kind="firmware-busy"))
    response, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 4))
    assert struct.unpack_from("<II", response) == (0, uapi.CXL_MBOX_CMD_RC_BUSY)
    response, _ = await rpc(provider, CXL, 0, uapi.pack_get_feature(MEDIA, 0, 4))
    assert struct.unpack_from("<II", response) == (4, 0)  # fired once


async def test_sim_knobs(provider: SimProvider) -> None:
    component = comp(provider)
    component.configure("present", "false")
    assert not await provider.exists("sys/class/fwctl")
    component.configure("present", "true")
    assert await provider.exists("sys/class/fwctl/fwctl0")
    component.configure("tainted", "true")
    assert await tainted(provider) == uapi.TAINT_FWCTL
    provider.machine.kexec()
    assert await tainted(provider) == 0
