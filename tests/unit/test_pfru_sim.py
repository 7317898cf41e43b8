"""The simulated PFRU/PFRT drivers and firmware, at the uAPI level (no plugin)."""

import errno
import struct
from pathlib import Path

import pytest

from livefw.errors import KernelError
from livefw.kernel.provider import OpenFlags
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.pfru import PfruComponent
from livefw.kernel.sim.pfru_capsule import sim_digest
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import pfru as uapi

CODE = "pfru/code-injection"
DRIVER = "pfru/driver-update"


def make(tmp_path: Path, profile: str = "default") -> tuple[SimMachine, SimProvider, PfruComponent]:
    machine = SimMachine.create(str(tmp_path / "sim"), profile)
    component = machine.components["pfru"]
    assert isinstance(component, PfruComponent)
    return machine, SimProvider(machine), component


async def query(provider: SimProvider) -> uapi.UpdateCapInfo:
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    arg = bytearray(uapi.CAP_INFO.size)
    await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, arg)
    await handle.close()
    return uapi.UpdateCapInfo.unpack(arg)


async def errno_of(coro: object) -> int:
    with pytest.raises(KernelError) as info:
        await coro  # type: ignore[misc]
    return info.value.errno


async def test_nodes_and_misc_names(tmp_path: Path) -> None:
    _, provider, _ = make(tmp_path)
    assert await provider.exists("dev/acpi_pfr_update0")
    assert await provider.exists("dev/acpi_pfr_telemetry0")
    assert await provider.read_attr("sys/class/misc/pfru0/dev") == "10:121"
    assert await provider.exists("sys/class/misc/pfrt0/uevent")
    _, empty, _ = make(tmp_path / "e", "empty")
    assert not await empty.exists("dev/acpi_pfr_update0")
    assert not await empty.exists("dev/acpi_pfr_telemetry0")


async def test_query_cap_reports_the_platform(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    cap = await query(provider)
    assert cap.status == 0
    assert cap.code_type == uapi.CODE_INJECTION_GUID
    assert cap.drv_type == uapi.DRIVER_UPDATE_GUID
    assert (cap.code_rt_version, cap.drv_rt_version, cap.drv_svn) == (3, 7, 2)
    assert cap.platform_id == component.state.platform_id
    _, minimal, _ = make(tmp_path / "m", "minimal")
    assert not (await query(minimal)).has_type(uapi.UpdateType.DRIVER_UPDATE)


async def test_set_rev_and_unknown_ioctls(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    await handle.ioctl(uapi.PFRU_IOC_SET_REV, bytearray(struct.pack("<I", 2)))
    assert component.state.rev_id == 2
    assert (
        await errno_of(handle.ioctl(uapi.PFRU_IOC_SET_REV, bytearray(struct.pack("<I", 3))))
        == errno.EINVAL
    )
    assert component.state.rev_id == 2
    assert await errno_of(handle.ioctl(uapi.PFRT_LOG_IOC_GET_INFO, bytearray(12))) == errno.ENOTTY
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, bytearray(4))) == errno.EFAULT
    telemetry = await provider.open(uapi.TELEMETRY_NODE)
    assert await errno_of(telemetry.ioctl(uapi.PFRU_IOC_STAGE)) == errno.ENOTTY
    assert await errno_of(telemetry.write(b"x")) == errno.EINVAL  # no write op
    await handle.close()
    await telemetry.close()


async def test_stage_and_activate_change_the_version(tmp_path: Path) -> None:
    machine, provider, component = make(tmp_path)
    data = component.sample(CODE, "5", None)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await handle.write(data) == len(data)
    assert (await query(provider)).code_rt_version == 3  # loading changes nothing
    await handle.ioctl(uapi.PFRU_IOC_STAGE)
    assert component.state.staged is not None
    assert (await query(provider)).code_rt_version == 3
    await handle.ioctl(uapi.PFRU_IOC_ACTIVATE)
    assert (await query(provider)).code_rt_version == 5
    assert component.state.staged is None
    # ACTIVATE without STAGE: the firmware answers a non-zero status
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_ACTIVATE)) == errno.EBUSY
    # the state persisted
    assert SimMachine.load(machine.directory).components["pfru"].state.code_rt_version == 5
    await handle.close()


async def test_stage_activate_in_one_call_for_driver_update(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    data = component.sample(DRIVER, "4", None)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    await handle.write(data)
    await handle.ioctl(uapi.PFRU_IOC_STAGE_ACTIVATE)
    cap = await query(provider)
    assert (cap.drv_svn, cap.drv_rt_version) == (4, 9)
    await handle.close()


@pytest.mark.parametrize(
    ("broken", "err"),
    [
        ("header-v3", errno.EINVAL),
        ("wrong-image-type", errno.EINVAL),
        ("too-large", errno.EINVAL),
        ("downgrade", errno.EINVAL),
        ("not-a-capsule", errno.EINVAL),
    ],
)
async def test_write_refusals(tmp_path: Path, broken: str, err: int) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await errno_of(handle.write(component.sample(CODE, None, broken))) == err
    # nothing valid reached the firmware: STAGE fails too
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY
    assert component.state.staged is None
    await handle.close()


@pytest.mark.parametrize("broken", ["truncated", "no-payload-count", "image-past-end"])
async def test_the_kernel_accepts_what_applicable_image_accepts(
    tmp_path: Path, broken: str
) -> None:
    """pfr_update.c applicable_image() checks no length and no count (issue 14.9)."""
    _, provider, component = make(tmp_path)
    data = component.sample(CODE, None, broken)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await handle.write(data) == len(data)
    # livefw's own walk refuses each of them, as stricter than the kernel
    with pytest.raises(uapi.StricterThanKernel):
        uapi.walk_capsule(data)
    # the firmware reads CapsuleImageSize bytes, checks them itself and refuses
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY
    assert component.state.staged is None
    await handle.close()


async def test_a_short_write_is_walked_over_the_previous_capsule(tmp_path: Path) -> None:
    """The kernel reads past a short write into what an earlier write left."""
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    full = component.sample(CODE, None, None)
    await handle.write(full)
    # 20 bytes: no complete EFI_CAPSULE_HEADER; the rest is the earlier capsule
    assert await handle.write(full[:20]) == 20
    with pytest.raises(uapi.StricterThanKernel):
        uapi.walk_capsule(full[:20])
    _, fresh_provider, _ = make(tmp_path / "fresh")
    fresh = await fresh_provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    # on a buffer never written, the same 20 bytes lead the walk to zeros: refused
    assert await errno_of(fresh.write(full[:20])) == errno.EINVAL
    await fresh.close()
    await handle.close()


async def test_a_failed_write_still_overwrites_the_buffer(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    await handle.write(component.sample(CODE, None, None))
    assert await errno_of(handle.write(component.sample(CODE, None, "header-v3"))) == errno.EINVAL
    # the kernel copied the bytes before checking them (pfr_update.c pfru_write():
    # copy_from_iter_full() into the buffer, then applicable_image())
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY
    # too large: refused before the copy, the earlier buffer is kept
    await handle.write(component.sample(CODE, None, None))
    assert await errno_of(handle.write(component.sample(CODE, None, "too-large"))) == errno.EINVAL
    await handle.ioctl(uapi.PFRU_IOC_STAGE)
    await handle.close()


@pytest.mark.parametrize("broken", ["other-platform", "corrupt-auth"])
async def test_firmware_refuses_what_the_kernel_lets_through(tmp_path: Path, broken: str) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    data = component.sample(CODE, None, broken)
    assert await handle.write(data) == len(data)
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY
    assert component.state.staged is None
    await handle.close()


async def test_driver_version_gate_svn_or_rt(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    data = component.sample(DRIVER, None, "svn-downgrade")
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await errno_of(handle.write(data)) == errno.EINVAL  # 6.17+: svn gate
    _, old_kernel, old = make(tmp_path / "rfc", "rfc")
    assert old.state.driver_gate == "rt"
    handle2 = await old_kernel.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    data = old.sample(DRIVER, None, "svn-downgrade")
    assert await handle2.write(data) == len(data)  # older kernels compare rt_ver only
    assert await errno_of(handle2.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY  # firmware: svn
    await handle.close()
    await handle2.close()


async def test_faults(tmp_path: Path) -> None:
    machine, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    machine.add_fault(FaultSpec(component="pfru", kind="busy"))
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, bytearray(92))) == errno.EBUSY
    await handle.ioctl(uapi.PFRU_IOC_QUERY_CAP, bytearray(92))  # one shot
    await handle.write(component.sample(CODE, None, None))
    machine.add_fault(FaultSpec(component="pfru", target=CODE, kind="stage-fail"))
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_STAGE)) == errno.EBUSY
    await handle.ioctl(uapi.PFRU_IOC_STAGE)
    machine.add_fault(FaultSpec(component="pfru", kind="activate-fail"))
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_ACTIVATE)) == errno.EBUSY
    assert component.state.staged is not None  # still staged: a retry works
    await handle.ioctl(uapi.PFRU_IOC_ACTIVATE)
    assert component.state.code_rt_version == 4
    await handle.close()


async def test_reboot_discards_the_staged_capsule(tmp_path: Path) -> None:
    machine, provider, component = make(tmp_path)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    await handle.write(component.sample(CODE, None, None))
    await handle.ioctl(uapi.PFRU_IOC_STAGE)
    await handle.close()
    resets = component.state.reset_cnt
    machine.reboot()
    assert component.state.staged is None
    assert component.state.reset_cnt == resets + 1
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    assert await errno_of(handle.ioctl(uapi.PFRU_IOC_ACTIVATE)) == errno.EBUSY
    await handle.close()


# ------------------------------------------------------------------ telemetry


async def data_info(handle: object) -> uapi.LogDataInfo:
    arg = bytearray(uapi.LOG_DATA_INFO.size)
    await handle.ioctl(uapi.PFRT_LOG_IOC_GET_DATA_INFO, arg)  # type: ignore[attr-defined]
    return uapi.LogDataInfo.unpack(arg)


async def log_info(handle: object) -> uapi.LogInfo:
    arg = bytearray(uapi.LOG_INFO.size)
    await handle.ioctl(uapi.PFRT_LOG_IOC_GET_INFO, arg)  # type: ignore[attr-defined]
    return uapi.LogInfo.unpack(arg)


async def test_log_info_set_and_get(tmp_path: Path) -> None:
    machine, provider, _ = make(tmp_path)
    handle = await provider.open(uapi.TELEMETRY_NODE)
    assert await log_info(handle) == uapi.LogInfo(2, 0, 1)
    await handle.ioctl(uapi.PFRT_LOG_IOC_SET_INFO, bytearray(uapi.LogInfo(4, 1, 2).pack()))
    assert await log_info(handle) == uapi.LogInfo(4, 1, 2)
    # invalid values (level 3, type 7, 0xFFFFFFFF) are silently ignored
    await handle.ioctl(uapi.PFRT_LOG_IOC_SET_INFO, bytearray(uapi.LogInfo(3, 7, 0xFFFFFFFF).pack()))
    assert await log_info(handle) == uapi.LogInfo(4, 1, 2)
    machine.add_fault(FaultSpec(component="pfru", kind="telemetry-busy"))
    got = await log_info(handle)  # the driver stores -EBUSY in the level and returns 0
    assert got.log_level == (-errno.EBUSY) & 0xFFFFFFFF
    machine.add_fault(FaultSpec(component="pfru", kind="telemetry-busy"))
    set_level = handle.ioctl(uapi.PFRT_LOG_IOC_SET_INFO, bytearray(uapi.LogInfo(0, 0, 1).pack()))
    assert await errno_of(set_level) == errno.EBUSY
    await handle.close()


async def test_mmap_rules(tmp_path: Path) -> None:
    machine, provider, component = make(tmp_path, "minimal")
    handle = await provider.open(uapi.TELEMETRY_NODE)
    info = await data_info(handle)
    assert (info.chunk2_addr, info.max_data_size) == (0, 0)
    assert await errno_of(handle.mmap(4096)) == errno.ENODEV  # telemetry not started
    component.append_record("first record")
    info = await data_info(handle)
    assert info.chunk2_addr % 4096 == 0
    assert info.chunk2_addr >> 32
    assert await errno_of(handle.mmap(info.max_data_size + 1)) == errno.EINVAL
    view = await handle.mmap(info.max_data_size)
    assert view.readonly
    assert b"first record" in bytes(view[: info.chunk2_size])
    component.append_record("second record")  # the mapping is live
    assert b"second record" in bytes(view)
    machine.add_fault(FaultSpec(component="pfru", kind="telemetry-busy"))
    assert await errno_of(handle.mmap(4096)) == errno.EBUSY
    view.release()
    await handle.close()


def chronological(view: memoryview, info: uapi.LogDataInfo) -> bytes:
    offset = info.chunk1_addr - info.chunk2_addr if info.chunk1_size else 0
    return bytes(view[offset : offset + info.chunk1_size]) + bytes(view[: info.chunk2_size])


async def test_ring_buffer_wraps(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.TELEMETRY_NODE)
    size = (await data_info(handle)).max_data_size
    for index in range(size // 20):
        component.append_record(f"record {index:05d}")
    info = await data_info(handle)
    assert info.rollover_cnt >= 1
    assert info.chunk1_size + info.chunk2_size == size
    assert info.chunk1_addr == info.chunk2_addr + info.chunk2_size
    view = await handle.mmap(size)
    log = chronological(view, info)
    last = size // 20 - 1
    assert log.rstrip(b"\n").endswith(f"record {last:05d}".encode())
    assert b"record 00000" not in log  # overwritten
    numbers = [int(line.split(b"record ")[1]) for line in log.split(b"\n")[1:-1]]
    assert numbers == sorted(numbers)  # chunk1 is older than chunk2
    view.release()
    await handle.close()


async def test_log_types_have_separate_buffers(tmp_path: Path) -> None:
    _, provider, component = make(tmp_path)
    handle = await provider.open(uapi.TELEMETRY_NODE)
    await handle.ioctl(
        uapi.PFRT_LOG_IOC_SET_INFO, bytearray(uapi.LogInfo(0xFFFFFFFF, 1, 0xFFFFFFFF).pack())
    )
    info = await data_info(handle)
    view = await handle.mmap(info.max_data_size)
    assert b"runtime update enabled" in bytes(view[: info.chunk2_size])
    assert b"service ready" not in bytes(view[: info.chunk2_size])
    assert component.state.log_type == 1
    view.release()
    await handle.close()


async def test_reset_and_append_race_faults(tmp_path: Path) -> None:
    machine, provider, _ = make(tmp_path)
    handle = await provider.open(uapi.TELEMETRY_NODE)
    before = await data_info(handle)
    machine.add_fault(FaultSpec(component="pfru", kind="telemetry-reset"))
    after = await data_info(handle)
    assert after.reset_cnt == before.reset_cnt + 1
    assert after.rollover_cnt == 0
    machine.add_fault(FaultSpec(component="pfru", kind="append-race"))
    first = await data_info(handle)
    second = await data_info(handle)
    assert second.chunk2_size > first.chunk2_size
    await handle.close()


def test_samples_and_broken_kinds(tmp_path: Path) -> None:
    _, _, component = make(tmp_path)
    for kind in component.BROKEN:
        key = DRIVER if kind == "svn-downgrade" else CODE
        assert component.sample(key, None, kind)
    valid = uapi.walk_capsule(component.sample(DRIVER, "9", None))
    assert (valid.payload.svn_ver, valid.update_type) == (9, uapi.UpdateType.DRIVER_UPDATE)
    with pytest.raises(Exception, match="integers"):
        component.sample(CODE, "1.2", None)
    with pytest.raises(Exception, match="samples are for"):
        component.sample("pfru/telemetry", None, None)


@pytest.mark.parametrize(("kernel", "accepted"), [("6.1", True), ("6.16", True), ("6.17", False)])
async def test_driver_version_gate_follows_the_kernel_release(
    tmp_path: Path, kernel: str, accepted: bool
) -> None:
    """pfr_update.c applicable_image(): svn_ver >= drv_svn since 6.17, rt_ver before."""
    machine = SimMachine.create(str(tmp_path / "sim"), "default", kernel=kernel)
    component = machine.components["pfru"]
    assert isinstance(component, PfruComponent)
    assert component.driver_gate() == ("rt" if accepted else "svn")
    data = component.sample(DRIVER, None, "svn-downgrade")  # newer rt_ver, older svn_ver
    handle = await SimProvider(machine).open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    if accepted:
        assert await handle.write(data) == len(data)
    else:
        assert await errno_of(handle.write(data)) == errno.EINVAL
    # a stable kernel with the fix backported: pinned by the knob
    component.configure("driver_gate", "svn")
    assert await errno_of(handle.write(data)) == errno.EINVAL
    await handle.close()


def test_configure_knobs(tmp_path: Path) -> None:
    machine, _, component = make(tmp_path)
    component.configure("code_rt_version", "9")
    assert component.cap_info().code_rt_version == 9
    component.configure("driver_gate", "rt")
    assert component.state.driver_gate == "rt"
    with pytest.raises(Exception, match="svn"):
        component.configure("driver_gate", "maybe")
    with pytest.raises(Exception, match="fixed"):
        component.configure("telemetry_size", "8192")
    component.configure("update_present", "false")
    assert "acpi_pfr_update0" not in machine.root.children["dev"].children  # type: ignore[attr-defined]
    keys = [d.key for d in component.devices()]
    assert keys == ["pfru/telemetry"]


async def test_a_written_capsule_is_kept_hashed_and_saved_without_copies(tmp_path: Path) -> None:
    """The buffer is the written bytes (no copy beyond the kernel's one), saved once as a
    blob, and the stage sees the same capsule (issue 17.5: the simulated firmware made
    ~10 copies of a 32 MiB capsule per write)."""
    machine, provider, component = make(tmp_path)
    capsule = component.sample(CODE, None, None)
    handle = await provider.open(uapi.UPDATE_NODE, OpenFlags.RDWR)
    await handle.write(capsule)
    assert component._comm is capsule  # immutable bytes: kept, not copied
    state = component.state
    assert state.buffer is not None
    assert state.buffer.well_formed
    assert state.buffer.signature_ok
    # one SHA-256 pass: the recorded digest is the one the signature was checked with
    walked = uapi.walk_capsule(capsule)
    signed = sim_digest(
        walked.auth.monotonic_count, capsule[walked.payload_offset : walked.image_end]
    )
    assert state.buffer.sha256 == signed.hex()
    # a shorter write keeps what lies beyond it (pfru_write() copies to the start)
    await handle.write(capsule[:20])
    assert component._comm == capsule
    await handle.ioctl(uapi.PFRU_IOC_STAGE)
    await handle.close()
    # the buffer survives the daemon: a new process loads the same bytes
    again = SimMachine.load(machine.directory).components["pfru"]
    assert isinstance(again, PfruComponent)
    assert again._comm == capsule
