"""The simulated LUO: exclusive open, the errno table, reference counting, kexec."""

import ctypes
import errno
import fcntl
import os
import socket
from pathlib import Path

import pytest

from livefw.errors import InvalidArgument, KernelError
from livefw.kernel import Handle, OpenFlags
from livefw.kernel.fdstore import FdStore
from livefw.kernel.sim.liveupdate import LiveUpdateComponent
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.kernel.uapi import liveupdate as uapi
from livefw.kernel.uapi.ioc import iowr

DEV = "dev/liveupdate"


@pytest.fixture
def machine(tmp_path: Path) -> SimMachine:
    return SimMachine.create(str(tmp_path / "sim"))


@pytest.fixture
def provider(machine: SimMachine) -> SimProvider:
    return SimProvider(machine, FdStore({}))


def luo(machine: SimMachine) -> LiveUpdateComponent:
    component = machine.components["liveupdate"]
    assert isinstance(component, LiveUpdateComponent)
    return component


async def expect_errno(err: int, coro: object) -> KernelError:
    with pytest.raises(KernelError) as info:
        await coro  # type: ignore[misc]
    assert info.value.errno == err, info.value
    return info.value


async def create(provider: SimProvider, device: Handle, name: str) -> Handle:
    arg = uapi.pack_create_session(name)
    await device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg)
    return await provider.adopt_fd(int.from_bytes(arg[4:8], "little", signed=True), name)


async def retrieve(provider: SimProvider, device: Handle, name: str) -> Handle:
    arg = uapi.pack_retrieve_session(name)
    await device.ioctl(uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg)
    return await provider.adopt_fd(int.from_bytes(arg[4:8], "little", signed=True), name)


async def preserve(session: Handle, fd: int, token: int) -> None:
    await session.ioctl(uapi.LIVEUPDATE_SESSION_PRESERVE_FD, uapi.pack_preserve_fd(fd, token))


async def retrieve_fd(session: Handle, token: int) -> int:
    arg = uapi.pack_retrieve_fd(token)
    await session.ioctl(uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg)
    return int.from_bytes(arg[4:8], "little", signed=True)


#: fallocate(2) modes (include/uapi/linux/falloc.h).
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) (Python's os has posix_fallocate only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, mode, ctypes.c_longlong(offset), ctypes.c_longlong(length)):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def punch_hole(fd: int, offset: int, length: int) -> None:
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)


def memfd(data: bytes, sealable: bool = True) -> int:
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING if sealable else 0)
    os.write(fd, data)
    return fd


# --------------------------------------------------------------- the device


async def test_device_is_exclusive(provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    await expect_errno(errno.EBUSY, provider.open(DEV, OpenFlags.RDWR))
    await device.close()
    again = await provider.open(DEV, OpenFlags.RDWR)
    await again.close()


@pytest.mark.parametrize(
    ("knob", "value", "err"),
    [("eio", "1", errno.EIO), ("held_by_other", "1", errno.EBUSY), ("present", "0", errno.ENOENT)],
)
async def test_device_knobs(
    machine: SimMachine, provider: SimProvider, knob: str, value: str, err: int
) -> None:
    luo(machine).configure(knob, value)
    await expect_errno(err, provider.open(DEV, OpenFlags.RDWR))


async def test_empty_profile_has_no_device(tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "e"), "empty")
    assert not await SimProvider(machine, FdStore({})).exists(DEV)


async def test_ioctl_decoding_errors(provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    good = uapi.pack_create_session("x")
    # a session nr on the device, and a nr beyond every table: EINVAL, not ENOTTY
    await expect_errno(errno.EINVAL, device.ioctl(uapi.LIVEUPDATE_SESSION_PRESERVE_FD, good))
    await expect_errno(errno.EINVAL, device.ioctl(0xBA07, good))
    # nr in range, other encoding: ENOTTY
    await expect_errno(errno.ENOTTY, device.ioctl(iowr(0xBA, 0, 72), good))
    short = bytearray(good)
    short[0:4] = (70).to_bytes(4, "little")
    await expect_errno(errno.EINVAL, device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, short))
    longer = bytearray(good) + bytearray(8)
    longer[0:4] = (80).to_bytes(4, "little")
    longer[75] = 1
    await expect_errno(errno.E2BIG, device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, longer))
    longer[75] = 0  # zeros beyond the struct are fine
    await device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, longer)


async def test_session_names(provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    empty = bytearray(uapi.CREATE_SESSION.pack(72, -1, b""))
    await expect_errno(errno.EINVAL, device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, empty))
    unterminated = bytearray(uapi.CREATE_SESSION.pack(72, -1, b"y" * 64))
    await expect_errno(
        errno.EINVAL, device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, unterminated)
    )
    await create(provider, device, "n" * 63)
    await create(provider, device, "dup")
    await expect_errno(errno.EEXIST, create(provider, device, "dup"))
    await expect_errno(errno.ENOENT, retrieve(provider, device, "dup"))


@pytest.mark.parametrize(("kernel", "limited"), [("7.1", True), ("7.2", False)])
async def test_session_limit_is_gone_in_7_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str, limited: bool
) -> None:
    """LUO_SESSION_MAX (744, ENOMEM) up to 7.1; "Remove limit on the number of sessions"."""
    from livefw.kernel.sim import liveupdate as sim_luo

    monkeypatch.setattr(sim_luo, "LUO_SESSION_MAX", 2)
    provider = SimProvider(SimMachine.create(str(tmp_path / "m"), kernel=kernel), FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    await create(provider, device, "one")
    await create(provider, device, "two")
    if limited:
        await expect_errno(errno.ENOMEM, create(provider, device, "three"))
    else:
        await create(provider, device, "three")


async def test_session_knob_is_enomem(machine: SimMachine, provider: SimProvider) -> None:
    luo(machine).configure("max_sessions", "1")
    device = await provider.open(DEV, OpenFlags.RDWR)
    await create(provider, device, "one")
    await expect_errno(errno.ENOMEM, create(provider, device, "two"))


@pytest.mark.parametrize(("kernel", "err"), [("7.1", errno.ENOSPC), ("7.2", errno.ENOMEM)])
async def test_file_limit_is_per_session(tmp_path: Path, kernel: str, err: int) -> None:
    machine = SimMachine.create(str(tmp_path / "m"), kernel=kernel)
    provider = SimProvider(machine, FdStore({}))
    luo(machine).configure("max_files", "2")
    device = await provider.open(DEV, OpenFlags.RDWR)
    first = await create(provider, device, "a")
    second = await create(provider, device, "b")
    for session in (first, second):
        await preserve(session, memfd(b"1"), 1)
        await preserve(session, memfd(b"2"), 2)
    await expect_errno(err, preserve(first, memfd(b"3"), 3))
    # the token check comes first (luo_preserve_file)
    await expect_errno(errno.EEXIST, preserve(first, memfd(b"3"), 1))


@pytest.mark.parametrize(("kernel", "limited"), [("6.19", True), ("7.2", False)])
async def test_file_limit_is_gone_in_7_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str, limited: bool
) -> None:
    """LUO_FILE_MAX (128 per session, ENOSPC) up to 7.1; removed with the session limit."""
    from livefw.kernel.sim import liveupdate as sim_luo

    monkeypatch.setattr(sim_luo, "LUO_FILE_MAX", 1)
    provider = SimProvider(SimMachine.create(str(tmp_path / "m"), kernel=kernel), FdStore({}))
    session = await create(provider, await provider.open(DEV, OpenFlags.RDWR), "s")
    await preserve(session, memfd(b"1"), 1)
    if limited:
        await expect_errno(errno.ENOSPC, preserve(session, memfd(b"2"), 2))
    else:
        await preserve(session, memfd(b"2"), 2)


# ------------------------------------------------------------------ preserve


async def test_only_memfds_are_preserved(provider: SimProvider, tmp_path: Path) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    read_end, write_end = os.pipe()
    left, right = socket.socketpair()
    regular = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (read_end, left.fileno(), regular, null):
        await expect_errno(errno.ENOENT, preserve(session, fd, 1))
    await expect_errno(errno.ENOENT, preserve(session, session.fileno(), 1))
    await expect_errno(errno.EBADF, preserve(session, 9999, 1))
    assert luo(provider.machine).state.sessions[0].files == []
    for fd in (read_end, write_end, regular, null):
        os.close(fd)
    left.close()
    right.close()


async def test_vfio_handler_switch(
    machine: SimMachine, provider: SimProvider, tmp_path: Path
) -> None:
    vfio_dir = tmp_path / "vfio"
    (vfio_dir / "devices").mkdir(parents=True)
    (vfio_dir / "devices" / "vfio0").write_bytes(b"")
    (vfio_dir / "7").write_bytes(b"")  # a group file
    luo(machine).configure("vfio_prefix", str(vfio_dir) + "/")
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = os.open(vfio_dir / "devices" / "vfio0", os.O_RDWR)
    group = os.open(vfio_dir / "7", os.O_RDWR)
    await expect_errno(errno.ENOENT, preserve(session, fd, 1))
    luo(machine).configure("vfio_handler", "1")
    await expect_errno(errno.ENOENT, preserve(session, group, 2))  # group fds never
    await preserve(session, fd, 1)
    assert luo(machine).state.sessions[0].files[0].kind == "vfio"
    os.close(fd)
    os.close(group)


async def test_tokens_and_double_preserve(provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    first = await create(provider, device, "a")
    second = await create(provider, device, "b")
    one, two = memfd(b"1"), memfd(b"2")
    await preserve(first, one, 5)
    await expect_errno(errno.EEXIST, preserve(first, two, 5))
    await expect_errno(errno.EBUSY, preserve(first, one, 6))
    await expect_errno(errno.EBUSY, preserve(second, os.dup(one), 5))
    await preserve(second, two, 5)  # tokens are per session
    # outgoing sessions have no retrieve/finish
    await expect_errno(errno.EINVAL, retrieve_fd(first, 5))
    await expect_errno(
        errno.EINVAL, first.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, uapi.pack_finish())
    )


async def test_get_name_and_its_switch(machine: SimMachine, provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "named")
    arg = uapi.pack_get_name()
    await session.ioctl(uapi.LIVEUPDATE_SESSION_GET_NAME, arg)
    assert uapi.decode_name(bytes(arg[8:])) == "named"
    bad = bytearray(uapi.GET_NAME.pack(72, 1, b""))
    await expect_errno(errno.EINVAL, session.ioctl(uapi.LIVEUPDATE_SESSION_GET_NAME, bad))
    luo(machine).configure("get_name", "0")
    await expect_errno(errno.EINVAL, session.ioctl(uapi.LIVEUPDATE_SESSION_GET_NAME, arg))


@pytest.mark.parametrize("kernel", ["6.19", "7.1"])
async def test_no_get_name_before_7_2(tmp_path: Path, kernel: str) -> None:
    machine = SimMachine.create(str(tmp_path / "m"), kernel=kernel)
    provider = SimProvider(machine, FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "named")
    arg = uapi.pack_get_name()
    await expect_errno(errno.EINVAL, session.ioctl(uapi.LIVEUPDATE_SESSION_GET_NAME, arg))


async def test_closing_the_last_fd_drops_an_outgoing_session(provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "gone")
    fd = memfd(b"data")
    await preserve(session, fd, 1)
    await device.close()  # closing the device does not affect sessions
    assert [s.name for s in luo(provider.machine).state.sessions] == ["gone"]
    await session.close()
    assert luo(provider.machine).state.sessions == []
    device = await provider.open(DEV, OpenFlags.RDWR)
    other = await create(provider, device, "again")
    await preserve(other, fd, 1)  # no longer preserved anywhere: no EBUSY


# --------------------------------------------------------------------- kexec


async def test_kexec_carries_held_sessions_with_contents_and_seals(
    machine: SimMachine, provider: SimProvider
) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    held = await create(provider, device, "held")
    dropped = await create(provider, device, "dropped")
    data = os.urandom(10000)
    sealed = memfd(data)
    os.ftruncate(sealed, 12000)  # size beyond the written data: a hole of zeros
    os.lseek(sealed, 1234, os.SEEK_SET)
    fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
    plain = memfd(b"plain", sealable=False)
    await preserve(held, sealed, 1)
    await preserve(held, plain, 2)
    await preserve(dropped, memfd(b"x"), 1)
    await dropped.close()
    os.pwrite(plain, b"PL", 0)  # written after preserve, within the frozen size
    os.write(plain, b" and later")  # past the end: the kernel refuses it, the sim cannot
    old_boot = machine.state.boot_id
    machine.kexec()
    assert machine.state.boot_id != old_boot

    reloaded = SimMachine.load(machine.directory)
    provider2 = SimProvider(reloaded, FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    await expect_errno(errno.ENOENT, retrieve(provider2, device2, "dropped"))
    session = await retrieve(provider2, device2, "held")
    await expect_errno(errno.EINVAL, retrieve(provider2, device2, "held"))
    await expect_errno(errno.EINVAL, preserve(session, memfd(b"new"), 9))
    restored = await retrieve_fd(session, 1)
    assert os.fstat(restored).st_size == 12000
    assert os.pread(restored, 12000, 0) == data + bytes(2000)
    assert os.lseek(restored, 0, os.SEEK_CUR) == 1234
    seals = fcntl.fcntl(restored, fcntl.F_GET_SEALS)
    assert seals == fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
    other = await retrieve_fd(session, 2)
    assert os.pread(other, 100, 0) == b"PLain"  # the size recorded at preserve time
    assert fcntl.fcntl(other, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SEAL
    # the same token twice: another fd for the same file
    again = await retrieve_fd(session, 2)
    os.pwrite(again, b"Q", 0)
    assert os.pread(other, 1, 0) == b"Q"
    await expect_errno(errno.ENOENT, retrieve_fd(session, 77))
    # an outgoing session of the same name is allowed next to the incoming one
    await create(provider2, device2, "held")
    await session.close()  # closing a retrieved session finishes it
    names = [(s.name, s.direction) for s in luo(reloaded).state.sessions]
    assert names == [("held", "outgoing")]


@pytest.mark.parametrize(("kernel", "busy"), [("6.19", False), ("7.1", True), ("7.2", True)])
async def test_retrieved_file_is_managed_until_finish(
    tmp_path: Path, kernel: str, busy: bool
) -> None:
    """7.1 "liveupdate: prevent double management of files" (00d0b372374f).

    luo_file.c ``luo_retrieve_file`` puts the retrieved file into
    ``luo_preserved_files`` and ``luo_file_finish`` takes it out again, so until
    FINISH a retrieved memfd cannot be preserved into an outgoing session (EBUSY).
    """
    machine = SimMachine.create(str(tmp_path / "m"), kernel=kernel)
    provider = SimProvider(machine, FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "vm")
    await preserve(session, memfd(b"guest"), 1)
    machine.kexec()
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "vm")
    restored = await retrieve_fd(incoming, 1)
    outgoing = await create(provider2, device2, "next")
    if busy:
        await expect_errno(errno.EBUSY, preserve(outgoing, restored, 1))
    else:
        await preserve(outgoing, restored, 1)
    await incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, uapi.pack_finish())
    if busy:
        await preserve(outgoing, restored, 1)  # released by FINISH
    assert [f.token for s in luo(provider2.machine).state.sessions for f in s.files] == [1]


async def test_finish_releases_the_incoming_session(
    machine: SimMachine, provider: SimProvider
) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    machine.kexec()
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "s")
    await incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, uapi.pack_finish())
    # the session stays until its fd is closed (luo_session_release): a second FINISH
    # succeeds, RETRIEVE_FD finds nothing (luo_retrieve_file on an empty list)
    await expect_errno(errno.ENOENT, retrieve_fd(incoming, 1))
    # luo_session_finish() never looks at ``reserved``
    await incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, bytearray(uapi.FINISH.pack(8, 1)))
    assert [s.name for s in luo(provider2.machine).state.sessions] == ["s"]
    await expect_errno(errno.EINVAL, retrieve(provider2, device2, "s"))
    await incoming.close()
    assert luo(provider2.machine).state.sessions == []


@pytest.mark.parametrize("how", ["knob", "fault"])
async def test_failed_freeze_changes_nothing(
    machine: SimMachine, provider: SimProvider, how: str
) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    if how == "knob":
        luo(machine).configure("fail_freeze", "1")
    else:
        machine.add_fault(FaultSpec(component="liveupdate", kind="freeze-failure"))
    boot = machine.state.boot_id
    before = luo(machine).state.model_dump()
    await expect_errno(errno.EINVAL, provider.kexec())  # the handler's errno
    assert machine.state.boot_id == boot
    assert luo(machine).state.model_dump()["sessions"] == before["sessions"]
    await preserve(session, memfd(b"2"), 2)  # still a live outgoing session


async def test_offline_kexec_carries_nothing_nobody_holds(machine: SimMachine) -> None:
    provider = SimProvider(machine, FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    # another process (`livefw sim kexec` with no daemon) loads the machine: nobody
    # holds the session there, so nothing is carried
    offline = SimMachine.load(machine.directory)
    offline.kexec()
    assert luo(SimMachine.load(machine.directory)).state.sessions == []


async def test_reboot_keeps_nothing(machine: SimMachine, provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    machine.kexec()
    machine.reboot()
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    await expect_errno(errno.ENOENT, retrieve(provider2, device2, "s"))
    assert luo(provider2.machine).state.sessions == []


async def test_a_failed_retrieve_stays_failed(
    machine: SimMachine, provider: SimProvider, tmp_path: Path
) -> None:
    vfio = tmp_path / "vfio"
    (vfio / "devices").mkdir(parents=True)
    (vfio / "devices" / "vfio0").write_bytes(b"")
    luo(machine).configure("vfio_prefix", str(vfio) + "/")
    luo(machine).configure("vfio_handler", "1")
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = os.open(vfio / "devices" / "vfio0", os.O_RDWR)
    await preserve(session, fd, 1)
    machine.kexec()
    (vfio / "devices" / "vfio0").unlink()  # the device did not come back
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "s")
    await expect_errno(errno.ENOENT, retrieve_fd(incoming, 1))
    (vfio / "devices" / "vfio0").write_bytes(b"")  # even once it is back
    await expect_errno(errno.ENOENT, retrieve_fd(incoming, 1))


async def test_hugetlb_memfds_are_refused(provider: SimProvider) -> None:
    try:
        huge = os.memfd_create("huge", os.MFD_HUGETLB)
    except OSError:
        pytest.skip("no hugetlbfs here")
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await expect_errno(errno.ENOENT, preserve(session, huge, 1))
    await preserve(session, memfd(b"plain"), 1)
    os.close(huge)


# ------------------------------------------- kernel_kexec() errnos (issue 14.3)


async def test_kexec_loaded_is_rendered(machine: SimMachine, provider: SimProvider) -> None:
    assert await provider.read_attr("sys/kernel/kexec_loaded") == "1"
    luo(machine).configure("kexec_loaded", "0")
    machine.render()
    assert await provider.read_attr("sys/kernel/kexec_loaded") == "0"


@pytest.mark.parametrize(
    ("how", "err", "kernel"),
    [
        ("unloaded", errno.EINVAL, "7.2"),  # kernel_kexec: no kexec_image
        ("kexec-busy", errno.EBUSY, "7.2"),  # kernel_kexec: kexec_trylock failed
        ("freeze-failure", errno.EINVAL, "7.2"),  # luo_file_freeze: the handler's errno
        ("kho-finalize", errno.EAGAIN, "6.19"),  # liveupdate_reboot: kho_finalize failed
        ("kho-finalize", errno.EAGAIN, "7.0"),
    ],
)
async def test_kexec_errnos_change_nothing(tmp_path: Path, how: str, err: int, kernel: str) -> None:
    machine = SimMachine.create(str(tmp_path / "m"), kernel=kernel)
    provider = SimProvider(machine, FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    if how == "unloaded":
        luo(machine).configure("kexec_loaded", "0")
    else:
        machine.add_fault(FaultSpec(component="liveupdate", kind=how))
    boot = machine.state.boot_id
    before = luo(machine).state.model_dump()["sessions"]
    await expect_errno(err, provider.kexec())
    assert machine.state.boot_id == boot
    assert luo(machine).state.model_dump()["sessions"] == before
    await preserve(session, memfd(b"2"), 2)  # still a live outgoing session


@pytest.mark.parametrize("kernel", ["7.1", "7.2"])
async def test_no_kho_finalisation_from_7_1(tmp_path: Path, kernel: str) -> None:
    """6b0dd42d7681 removed kho_finalize(): the fault cannot be armed, the kexec works."""
    machine = SimMachine.create(str(tmp_path / "m"), kernel=kernel)
    with pytest.raises(InvalidArgument, match="no KHO finalisation step"):
        machine.add_fault(FaultSpec(component="liveupdate", kind="kho-finalize"))
    assert machine.state.faults == []
    provider = SimProvider(machine, FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    await preserve(session, memfd(b"1"), 1)
    boot = machine.state.boot_id
    await provider.kexec()
    assert machine.state.boot_id != boot
    assert [s.name for s in luo(machine).state.sessions] == ["s"]


def test_fault_list_follows_the_kernel(tmp_path: Path) -> None:
    from livefw.kernel.sim.control import execute

    old = SimMachine.create(str(tmp_path / "old"), kernel="7.0")
    new = SimMachine.create(str(tmp_path / "new"), kernel="7.1")
    assert "kho-finalize" in execute(old, "faults", {})["available"]["liveupdate"]
    assert "kho-finalize" not in execute(new, "faults", {})["available"]["liveupdate"]


# ------------------------------------------- preserved memfds are frozen (14.5)


def can_set_append_only() -> bool:
    """Whether this process may set FS_APPEND_FL (CAP_LINUX_IMMUTABLE)."""
    from livefw.kernel.sim import liveupdate as sim_luo

    fd = os.memfd_create("probe", 0)
    try:
        return sim_luo._set_append_only(fd, True)
    finally:
        os.close(fd)


async def test_a_preserved_memfd_is_frozen(machine: SimMachine, provider: SimProvider) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"0123456789")
    await preserve(session, fd, 1)
    # memfd_luo_preserve -> shmem_freeze: size changes fail with EPERM
    # (shmem_write_begin, shmem_setattr, shmem_fallocate)
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"past the end", 10)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 3)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 4096)
    with pytest.raises(PermissionError):
        os.posix_fallocate(fd, 0, 8192)
    if can_set_append_only():
        with pytest.raises(PermissionError):
            punch_hole(fd, 0, 4096)
    os.pwrite(fd, b"AB", 0)  # writing inside the file is allowed
    assert luo(machine).state.sessions[0].files[0].size == 10
    machine.kexec()
    assert luo(machine).state.divergences == []
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "s")
    restored = await retrieve_fd(incoming, 1)
    assert os.pread(restored, 100, 0) == b"AB23456789"


@pytest.mark.skipif(not can_set_append_only(), reason="needs CAP_LINUX_IMMUTABLE")
async def test_a_memfd_without_sealing_is_frozen_and_thawed(provider: SimProvider) -> None:
    """No seals possible: FS_APPEND_FL refuses truncation and hole punching until the
    session is dropped (memfd_luo_unpreserve unfreezes)."""
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"x" * 8192, sealable=False)
    await preserve(session, fd, 1)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 100)
    with pytest.raises(PermissionError):
        punch_hole(fd, 0, 4096)
    os.pwrite(fd, b"inside", 0)
    await session.close()  # the last fd of an outgoing session: unpreserved
    punch_hole(fd, 0, 4096)
    os.ftruncate(fd, 100)
    assert luo(provider.machine).state.divergences == []


async def test_preserve_fills_the_holes(provider: SimProvider) -> None:
    """memfd_pin_folios allocates a page for every index (mm/memfd_luo.c)."""
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"x")
    os.ftruncate(fd, 1 << 20)  # one page written, the rest a hole
    assert os.fstat(fd).st_blocks * 512 < 1 << 20
    await preserve(session, fd, 1)
    assert os.fstat(fd).st_blocks * 512 >= 1 << 20


@pytest.mark.parametrize(
    ("how", "change"),
    [
        ("grow", "size changed from 8192 to 9000"),
        ("fallocate", "fallocate allocated beyond its end"),
        ("punch", "hole was punched"),
    ],
)
async def test_what_the_sim_cannot_refuse_is_reported(
    machine: SimMachine,
    provider: SimProvider,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    change: str,
) -> None:
    """EPERM on the kernel; on the client's own descriptor the sim cannot refuse a
    memfd without MFD_ALLOW_SEALING growing, fallocate beyond the end with KEEP_SIZE,
    or (without CAP_LINUX_IMMUTABLE) a punched hole, so it records the divergence."""
    from livefw.kernel.sim import liveupdate as sim_luo

    monkeypatch.setattr(sim_luo, "_set_append_only", lambda fd, on: False)
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"x" * 8192, sealable=False)
    await preserve(session, fd, 7)
    if how == "grow":
        os.pwrite(fd, b"!", 8999)
    elif how == "fallocate":
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 8192, 1 << 20)
    else:
        punch_hole(fd, 0, 4096)
    await preserve(session, memfd(b"y"), 8)  # the next ioctl sees it
    (text,) = luo(machine).state.divergences
    assert "token 7" in text
    assert change in text
    assert "EPERM" in text
    (sim_device,) = machine.components["liveupdate"].devices()
    assert "1 divergences from the real kernel" in sim_device.summary
    machine.kexec()  # reported once, and the kexec carries the size recorded at preserve
    assert len(luo(machine).state.divergences) == 1
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    restored = await retrieve_fd(await retrieve(provider2, device2, "s"), 7)
    assert os.fstat(restored).st_size == 8192


async def test_an_unsealable_memfd_keeps_its_size_at_preserve_time(
    machine: SimMachine, provider: SimProvider
) -> None:
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"small", sealable=False)
    await preserve(session, fd, 1)
    os.pwrite(fd, b" grown later", 5)  # the kernel says EPERM; the sim cannot stop it
    machine.kexec()
    assert "size changed from 5 to 17" in luo(machine).state.divergences[0]
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    restored = await retrieve_fd(await retrieve(provider2, device2, "s"), 1)
    assert os.fstat(restored).st_size == 5
    assert os.pread(restored, 100, 0) == b"small"


# ------------------------------------- what 6.19 does differently (issue 14.6)


@pytest.fixture
def old(tmp_path: Path) -> SimProvider:
    return SimProvider(SimMachine.create(str(tmp_path / "619"), kernel="6.19"), FdStore({}))


async def test_6_19_does_not_validate_names(old: SimProvider) -> None:
    device = await old.open(DEV, OpenFlags.RDWR)
    empty = bytearray(uapi.CREATE_SESSION.pack(72, -1, b""))
    await device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, empty)
    unterminated = bytearray(uapi.CREATE_SESSION.pack(72, -1, b"y" * 64))
    await device.ioctl(uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, unterminated)
    names = [s.name for s in luo(old.machine).state.sessions]
    assert names == ["", "y" * 63]  # strscpy truncates to 63 bytes


async def test_6_19_preserves_a_file_twice_and_skips_type_checks(old: SimProvider) -> None:
    device = await old.open(DEV, OpenFlags.RDWR)
    first = await create(old, device, "a")
    second = await create(old, device, "b")
    one = memfd(b"1")
    await preserve(first, one, 1)
    await preserve(second, one, 1)  # no cross-session EBUSY before 7.1
    await expect_errno(errno.EINVAL, retrieve_fd(first, 1))  # reaches the handler
    await expect_errno(errno.ENOENT, retrieve_fd(first, 9))
    await second.close()  # the file stays preserved in the other session
    machine = old.machine
    machine.kexec()
    provider2 = SimProvider(SimMachine.load(machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "a")
    restored = await retrieve_fd(incoming, 1)
    assert os.pread(restored, 10, 0) == b"1"
    await preserve(incoming, memfd(b"x"), 5)  # accepted, never carried


async def test_6_19_carries_no_seals(old: SimProvider) -> None:
    device = await old.open(DEV, OpenFlags.RDWR)
    session = await create(old, device, "s")
    fd = memfd(b"sealed")
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    await preserve(session, fd, 1)
    old.machine.kexec()
    provider2 = SimProvider(SimMachine.load(old.machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    restored = await retrieve_fd(await retrieve(provider2, device2, "s"), 1)
    # memfd_luo_retrieve: memfd_alloc_file(name, 0): unsealed and not sealable
    assert fcntl.fcntl(restored, fcntl.F_GET_SEALS) == fcntl.F_SEAL_SEAL
    os.pwrite(restored, b"S", 0)


async def test_7_1_carries_seals_but_checks_no_session_type(tmp_path: Path) -> None:
    """Seals from 7.1 (mm-stable-2026-04-13); the session-type check only from 7.2."""
    provider = SimProvider(SimMachine.create(str(tmp_path / "71"), kernel="7.1"), FdStore({}))
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "s")
    fd = memfd(b"sealed")
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    await preserve(session, fd, 1)
    provider.machine.kexec()
    provider2 = SimProvider(SimMachine.load(provider.machine.directory), FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "s")
    restored = await retrieve_fd(incoming, 1)
    assert fcntl.fcntl(restored, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    await preserve(incoming, memfd(b"x"), 5)  # 7.2 refuses this with EINVAL


# ------------------------------------------- the VFIO handler (issue 14.14)


def vfio_machine(machine: SimMachine, tmp_path: Path) -> Path:
    vfio = tmp_path / "vfio"
    (vfio / "devices").mkdir(parents=True)
    (vfio / "devices" / "vfio0").write_bytes(b"")
    luo(machine).configure("vfio_prefix", str(vfio) + "/")
    luo(machine).configure("vfio_handler", "1")
    return vfio / "devices" / "vfio0"


async def test_vfio_interrupts_must_be_quiesced_before_kexec(
    machine: SimMachine, provider: SimProvider, tmp_path: Path
) -> None:
    path = vfio_machine(machine, tmp_path)
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "vm")
    await preserve(session, os.open(path, os.O_RDWR), 1)
    luo(machine).configure("vfio_irqs_enabled", "1")
    await expect_errno(errno.EINVAL, provider.kexec())
    assert luo(machine).state.sessions[0].direction == "outgoing"
    luo(machine).configure("vfio_irqs_enabled", "0")
    await provider.kexec()


async def test_vfio_finish_waits_for_retrieve_and_bind(
    machine: SimMachine, provider: SimProvider, tmp_path: Path
) -> None:
    path = vfio_machine(machine, tmp_path)
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "vm")
    await preserve(session, os.open(path, os.O_RDWR), 1)
    await preserve(session, memfd(b"guest"), 2)
    machine.kexec()
    reloaded = SimMachine.load(machine.directory)
    provider2 = SimProvider(reloaded, FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    incoming = await retrieve(provider2, device2, "vm")
    finish = uapi.pack_finish()
    await expect_errno(errno.EBUSY, incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, finish))
    await retrieve_fd(incoming, 1)
    luo(reloaded).configure("vfio_bound", "0")
    await expect_errno(errno.EBUSY, incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, finish))
    assert await retrieve_fd(incoming, 2) >= 0  # nothing was released
    luo(reloaded).configure("vfio_bound", "1")
    await incoming.ioctl(uapi.LIVEUPDATE_SESSION_FINISH, finish)


async def test_opening_the_device_saves_the_machine_only_when_it_purged_a_session(
    machine: SimMachine, provider: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon's first open of /dev/liveupdate deletes the sessions a previous process
    held and nobody handed back; with none to delete, machine.json is not rewritten
    (every daemon start opens it)."""
    device = await provider.open(DEV, OpenFlags.RDWR)
    session = await create(provider, device, "vm")
    await preserve(session, memfd(b"guest"), 1)
    # the process "exits" without closing: a new daemon on the same machine.json
    reloaded = SimMachine.load(machine.directory)
    saved: list[str] = []
    real = reloaded.changed

    def recording(name: str) -> None:
        saved.append(name)
        real(name)

    monkeypatch.setattr(reloaded, "changed", recording)
    provider2 = SimProvider(reloaded, FdStore({}))
    device2 = await provider2.open(DEV, OpenFlags.RDWR)
    assert saved == ["liveupdate"]  # the unheld session was deleted, and that is saved
    assert luo(SimMachine.load(machine.directory)).state.sessions == []
    await device2.close()
    # a third daemon: nothing left to purge, nothing saved
    third = SimMachine.load(machine.directory)
    monkeypatch.setattr(third, "changed", recording)
    saved.clear()
    await (await SimProvider(third, FdStore({})).open(DEV, OpenFlags.RDWR)).close()
    assert saved == []
