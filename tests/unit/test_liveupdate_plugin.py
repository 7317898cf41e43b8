"""The liveupdate device and its sessions on the simulated kernel: bad input, restart, kexec."""

import errno
import fcntl
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.config import Config
from livefw.engine import Engine
from livefw.errors import AuthFailed, Busy, InvalidArgument, InvalidFile, NotFound, NotSupported
from livefw.kernel.fdstore import FdStore, LocalFdStore
from livefw.kernel.sim.liveupdate import LiveUpdateComponent
from livefw.kernel.sim.machine import FaultSpec, SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.plugins.liveupdate import LiveUpdateDevice, LiveUpdatePlugin, kernel_session_name
from livefw.plugins.liveupdate.records import NAME_MAX, REGISTRY_SESSIONS

ALICE, BOB = 1000, 1001

Starter = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    """``await start(store=None)``: a new daemon process on the same state dir."""
    engines: list[Engine] = []

    async def factory(
        store: FdStore | None = None,
        profile: str = "default",
        kernel: str = "7.2",
        config: Config | None = None,
    ) -> Engine:
        sim = tmp_path / "sim"
        if (sim / "machine.json").exists():
            machine = SimMachine.load(str(sim))
        else:
            machine = SimMachine.create(str(sim), profile, kernel=kernel)
        machine.start()
        provider = SimProvider(machine, store or FdStore({}))
        engine = Engine(provider, config or Config(), str(tmp_path), [LiveUpdatePlugin])
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.history.close()


def broker(engine: Engine) -> LiveUpdateDevice:
    """The liveupdate device: it brokers the sessions."""
    (device,) = [d for d in engine.devices.values() if isinstance(d, LiveUpdateDevice)]
    return device


def machine_of(engine: Engine) -> SimMachine:
    provider = engine.provider
    assert isinstance(provider, SimProvider)
    return provider.machine


def memfd(data: bytes) -> int:
    fd = os.memfd_create("client", os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    return fd


async def read_token(device: LiveUpdateDevice, uid: int, kernel_name: str, token: int) -> bytes:
    handle = await device.session(uid, kernel_name).retrieve_file(token)
    try:
        fd = handle.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        await handle.close()


# ---------------------------------------------------------------- the device


async def test_one_device_not_updatable(start: Starter) -> None:
    engine = await start()
    (device,) = engine.devices.values()
    assert device.plugin == "liveupdate"
    assert device.protocol == "org.livefw.liveupdate"
    assert "updatable" not in device.flags
    assert type(device).interfaces == ("org.livefw.Daemon1.LiveUpdate",)


async def test_another_orchestrator_owning_the_device(start: Starter, tmp_path: Path) -> None:
    machine = SimMachine.create(str(tmp_path / "sim"))
    machine.components["liveupdate"].configure("held_by_other", "1")
    machine.save()
    engine = await start()
    record = engine.plugins["liveupdate"]
    assert record.probe.result == "unsupported"
    assert "another orchestrator owns /dev/liveupdate" in record.probe.reason
    assert engine.devices == {}


async def test_no_device_without_luo(start: Starter) -> None:
    engine = await start(profile="empty")
    assert "no /dev/liveupdate" in engine.plugins["liveupdate"].probe.reason


# ------------------------------------------------------------------ sessions


def test_kernel_names_keep_users_apart() -> None:
    assert kernel_session_name(ALICE, "vm") == "livefw.1000.vm"
    assert kernel_session_name(BOB, "vm") != kernel_session_name(ALICE, "vm")
    longest = kernel_session_name(4294967295, "n" * NAME_MAX)
    assert len(longest) == 63
    assert all(not name.split(".")[1].isdigit() for name in REGISTRY_SESSIONS)


async def test_create_list_and_ownership(start: Starter) -> None:
    device = broker(await start())
    await device.create_session(ALICE, "vm", {"label": "guest"})
    await device.create_session(BOB, "vm")
    assert [s.owner for s in device.list_sessions(ALICE)] == [ALICE]
    assert [s.label for s in device.list_sessions(ALICE)] == ["guest"]
    assert {s.kernel_name for s in device.list_sessions(0)} == {"livefw.1000.vm", "livefw.1001.vm"}
    with pytest.raises(AuthFailed, match="another user"):
        device.session(BOB, "livefw.1000.vm").tokens()
    with pytest.raises(AuthFailed):
        await device.session(BOB, "livefw.1000.vm").drop()
    with pytest.raises(AuthFailed):
        await device.session(BOB, "livefw.1000.vm").preserve(memfd(b"x"), 1)
    assert device.session(ALICE, "livefw.1000.vm").tokens() == {}
    assert device.session(0, "livefw.1000.vm").tokens() == {}  # root may


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("n" * (NAME_MAX + 1), "at most 45"),
        ("a/b", "only letters"),
        ("-x", "must start"),
        ("é", "only letters"),
        ("a b", "only letters"),
    ],
)
async def test_bad_session_names(start: Starter, name: str, message: str) -> None:
    device = broker(await start())
    with pytest.raises(InvalidArgument, match=message):
        await device.create_session(ALICE, name)
    assert device.list_sessions(0) == []


async def test_bad_options_and_duplicates(start: Starter) -> None:
    device = broker(await start())
    with pytest.raises(InvalidArgument, match="unknown options"):
        await device.create_session(ALICE, "vm", {"colour": "red"})
    with pytest.raises(InvalidArgument, match="label"):
        await device.create_session(ALICE, "vm", {"label": "x" * 300})
    await device.create_session(ALICE, "vm")
    with pytest.raises(InvalidArgument, match="already have a session"):
        await device.create_session(ALICE, "vm")
    assert len(device.list_sessions(0)) == 1


async def test_preserve_bad_input_leaves_the_session_as_it_was(
    start: Starter, tmp_path: Path
) -> None:
    device = broker(await start())
    info = await device.create_session(ALICE, "vm")
    name = info.kernel_name
    good = memfd(b"good")
    await device.session(ALICE, name).preserve(good, 1, {"label": "ram"})
    read_end, write_end = os.pipe()
    left, right = socket.socketpair()
    regular = os.open(tmp_path / "plain", os.O_RDWR | os.O_CREAT)
    null = os.open("/dev/null", os.O_RDONLY)
    for fd in (left.fileno(), read_end, regular, null):
        with pytest.raises(InvalidFile, match="only memfds"):
            await device.session(ALICE, name).preserve(fd, 2)
    with pytest.raises(InvalidArgument, match="token 1 is already used"):
        await device.session(ALICE, name).preserve(memfd(b"other"), 1)
    with pytest.raises(InvalidFile, match="already preserved"):
        await device.session(ALICE, name).preserve(good, 2)
    other = await device.create_session(ALICE, "other")
    with pytest.raises(InvalidFile, match="already preserved"):
        await device.session(ALICE, other.kernel_name).preserve(good, 1)
    with pytest.raises(InvalidArgument, match="cannot be finished"):
        await device.session(ALICE, name).finish()
    with pytest.raises(InvalidArgument, match="after the kexec"):
        await device.session(ALICE, name).retrieve_file(1)
    with pytest.raises(InvalidArgument, match="after the kexec"):
        await device.retrieve_session(ALICE, "vm")
    with pytest.raises(NotFound):
        await device.session(ALICE, "livefw.1000.nothing").preserve(good, 3)
    assert device.session(ALICE, name).tokens() == {1: "ram"}
    component = machine_of_device(device).components["liveupdate"]
    assert isinstance(component, LiveUpdateComponent)
    (kernel,) = [s for s in component.state.sessions if s.name == name]
    assert [f.token for f in kernel.files] == [1]
    for fd in (read_end, write_end, regular, null):
        os.close(fd)
    left.close()
    right.close()


def machine_of_device(device: LiveUpdateDevice) -> SimMachine:
    provider = device.ctx.provider
    assert isinstance(provider, SimProvider)
    return provider.machine


async def test_drop_releases_the_kernel_session(start: Starter) -> None:
    device = broker(await start())
    info = await device.create_session(ALICE, "vm")
    fd = memfd(b"x")
    await device.session(ALICE, info.kernel_name).preserve(fd, 1)
    await device.session(ALICE, info.kernel_name).drop()
    assert device.list_sessions(0) == []
    component = machine_of_device(device).components["liveupdate"]
    assert isinstance(component, LiveUpdateComponent)
    assert [s.name for s in component.state.sessions if not s.name.startswith("livefw.reg")] == []
    again = await device.create_session(ALICE, "vm")  # the name is free again
    await device.session(ALICE, again.kernel_name).preserve(fd, 1)  # and the memfd too


async def test_session_fd_is_not_offered_by_the_simulation(start: Starter) -> None:
    device = broker(await start())
    info = await device.create_session(ALICE, "vm")
    with pytest.raises(NotSupported, match="simulated"):
        device.session(ALICE, info.kernel_name).client_handle()


# ----------------------------------------------------------------- kexec


async def test_sessions_and_registry_survive_kexec(start: Starter, tmp_path: Path) -> None:
    device = broker(await start())
    a = await device.create_session(ALICE, "vm", {"label": "alice's vm"})
    b = await device.create_session(BOB, "db")
    data_a, data_b = os.urandom(5000), b"bob's state"
    fd_a = memfd(data_a)
    fcntl.fcntl(fd_a, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    await device.session(ALICE, a.kernel_name).preserve(fd_a, 11, {"label": "ram"})
    await device.session(BOB, b.kernel_name).preserve(memfd(data_b), 1)
    lost = await device.create_session(ALICE, "lost")
    await device.session(ALICE, lost.kernel_name).drop()
    await device.kexec()  # the simulation switches kernels (the daemon would exit now)
    (tmp_path / "plugins" / "liveupdate" / "registry.json").unlink()  # only the kernel knows

    device = broker(await start())
    listed = {s.kernel_name: s for s in device.list_sessions(0)}
    assert set(listed) == {a.kernel_name, b.kernel_name}
    assert listed[a.kernel_name].state == "incoming"
    assert listed[a.kernel_name].label == "alice's vm"
    assert listed[a.kernel_name].tokens == {11: "ram"}
    assert [s.name for s in device.list_sessions(BOB)] == ["db"]
    with pytest.raises(NotFound):
        await device.retrieve_session(BOB, "vm")  # alice's name, bob's uid
    with pytest.raises(InvalidArgument, match="RetrieveSession"):
        await device.session(ALICE, a.kernel_name).retrieve_file(11)
    await device.retrieve_session(ALICE, "vm")
    await device.retrieve_session(ALICE, "vm")  # idempotent
    assert await read_token(device, ALICE, a.kernel_name, 11) == data_a
    with pytest.raises(NotFound, match="token 12"):
        await device.session(ALICE, a.kernel_name).retrieve_file(12)
    with pytest.raises(InvalidArgument, match="created in this boot"):
        await device.session(ALICE, a.kernel_name).preserve(memfd(b"x"), 1)
    await device.session(ALICE, a.kernel_name).finish()
    # bob never retrieved his file: finishing would discard it, so only with force
    with pytest.raises(Busy, match=r"nobody retrieved \(tokens 1\).*--force"):
        await device.session(BOB, b.kernel_name).finish()
    assert [s.name for s in device.list_sessions(BOB)] == ["db"]
    with pytest.raises(InvalidArgument, match="unknown options"):
        await device.session(BOB, b.kernel_name).finish({"forse": True})
    with pytest.raises(Busy, match=r"dropping session 'db' finishes it.*tokens 1"):
        await device.session(BOB, b.kernel_name).drop()  # closing it would finish it too
    await device.session(BOB, b.kernel_name).finish({"force": True})
    assert device.list_sessions(0) == []


async def test_failed_freeze_keeps_every_session(start: Starter) -> None:
    engine = await start()
    device = broker(engine)
    info = await device.create_session(ALICE, "vm")
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"1"), 1)
    machine = machine_of(engine)
    machine.components["liveupdate"].configure("fail_freeze", "1")
    boot = machine.state.boot_id
    from livefw.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"refused to freeze.*every session is as it was"):
        await device.kexec()
    assert machine.state.boot_id == boot
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"2"), 2)
    assert set(device.session(ALICE, info.kernel_name).tokens()) == {1, 2}


# --------------------------------------------------------------- restarts


async def test_restart_keeps_sessions_that_were_in_the_fd_store(
    start: Starter, tmp_path: Path
) -> None:
    store = LocalFdStore(str(tmp_path / "notify"))
    try:
        device = broker(await start(store.client()))
        assert device.ctx.fd_store_available
        info = await device.create_session(ALICE, "vm")
        data = b"survives a restart and then a kexec"
        fd = memfd(data)
        await device.session(ALICE, info.kernel_name).preserve(fd, 3)
        os.close(fd)  # the client is gone too: only the kernel (and the store) hold it
        store.wait_idle()
        assert "luo.livefw.1000.vm" in store.names()

        engine = await start(store.client())  # a new livefwd process
        device = broker(engine)
        (session,) = device.list_sessions(0)
        assert (session.kernel_name, session.state, session.tokens) == (
            info.kernel_name,
            "outgoing",
            {3: ""},
        )
        await device.session(ALICE, info.kernel_name).preserve(memfd(b"more"), 4)
        machine_of(engine).kexec()

        device = broker(await start())
        await device.retrieve_session(ALICE, "vm")
        assert await read_token(device, ALICE, info.kernel_name, 3) == data
        assert await read_token(device, ALICE, info.kernel_name, 4) == b"more"
    finally:
        store.close()


async def test_restart_without_fd_store_loses_sessions(start: Starter) -> None:
    device = broker(await start())
    await device.create_session(ALICE, "vm")
    assert not device.ctx.fd_store_available
    engine = await start()  # no fd store: the previous process took its fds along
    assert broker(engine).list_sessions(0) == []
    assert engine.devices[next(iter(engine.devices))].metadata["fd-store"] == "no"


async def test_registry_json_is_what_a_restart_reads(start: Starter, tmp_path: Path) -> None:
    device = broker(await start())
    await device.create_session(ALICE, "vm", {"label": "x"})
    registry = json.loads((tmp_path / "plugins" / "liveupdate" / "registry.json").read_text())
    assert [s["kernel_name"] for s in registry["sessions"]] == ["livefw.1000.vm"]
    assert registry["boot_id"] == machine_of_device(device).state.boot_id


async def test_a_retrieved_session_survives_a_restart_too(start: Starter, tmp_path: Path) -> None:
    device = broker(await start())
    info = await device.create_session(ALICE, "vm")
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"before the kexec"), 1)
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"second"), 2)
    await device.kexec()
    store = LocalFdStore(str(tmp_path / "notify"))
    try:
        device = broker(await start(store.client()))
        await device.retrieve_session(ALICE, "vm")
        handle = await device.session(ALICE, info.kernel_name).retrieve_file(1)
        os.pwrite(handle.fileno(), b"B", 0)  # the VMM changes its retrieved file
        await handle.close()
        store.wait_idle()

        device = broker(await start(store.client()))  # restart before finishing
        (session,) = device.list_sessions(ALICE)
        assert session.state == "retrieved"
        assert await read_token(device, ALICE, info.kernel_name, 1) == b"Before the kexec"
        assert await read_token(device, ALICE, info.kernel_name, 2) == b"second"
        await device.session(ALICE, info.kernel_name).finish()
        assert device.list_sessions(0) == []
    finally:
        store.close()


async def test_holds_sessions(start: Starter) -> None:
    device = broker(await start())
    assert not device.holds_sessions
    info = await device.create_session(ALICE, "vm")
    assert device.holds_sessions
    await device.session(ALICE, info.kernel_name).drop()
    assert not device.holds_sessions


@pytest.mark.parametrize("limit", [1, 2])
async def test_no_room_rolls_back_the_create(start: Starter, tmp_path: Path, limit: int) -> None:
    """limit 1: the kernel refuses the session; 2: it refuses the new registry."""
    from livefw.errors import NoSpace

    engine = await start()
    device = broker(engine)
    machine_of(engine).components["liveupdate"].configure("max_sessions", str(limit))
    with pytest.raises(NoSpace, match="no room"):
        await device.create_session(ALICE, "vm")
    assert device.list_sessions(0) == []
    component = machine_of(engine).components["liveupdate"]
    assert isinstance(component, LiveUpdateComponent)
    assert [s.name for s in component.state.sessions] == [REGISTRY_SESSIONS[1]]
    registry = json.loads((tmp_path / "plugins" / "liveupdate" / "registry.json").read_text())
    assert registry["sessions"] == []


# ------------------------------------------------ kexec errnos (issue 14.3)


@pytest.mark.parametrize(
    ("how", "error", "message", "kernel"),
    [
        ("unloaded", "NothingToDo", "no kernel is loaded.*kexec -l -s", "7.2"),
        ("kexec-busy", "Busy", "another kexec is in progress", "7.2"),
        # 6.19 and 7.0 only: 6b0dd42d7681 removed kho_finalize() in 7.1
        ("kho-finalize", "Busy", "EAGAIN: on 6.19 and 7.0 its Kexec HandOver", "6.19"),
        ("freeze-failure", "InvalidArgument", "refused to freeze", "7.2"),
    ],
)
async def test_kexec_failures_say_what_to_do(
    start: Starter, how: str, error: str, message: str, kernel: str
) -> None:
    import livefw.errors

    engine = await start(kernel=kernel)
    device = broker(engine)
    info = await device.create_session(ALICE, "vm")
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"1"), 1)
    machine = machine_of(engine)
    if how == "unloaded":
        machine.components["liveupdate"].configure("kexec_loaded", "0")
        machine.render()
    else:
        machine.add_fault(FaultSpec(component="liveupdate", kind=how))
    boot = machine.state.boot_id
    with pytest.raises(getattr(livefw.errors, error), match=message):
        await device.kexec()
    assert machine.state.boot_id == boot
    assert set(device.session(ALICE, info.kernel_name).tokens()) == {1}


def test_kexec_eperm_names_both_causes() -> None:
    """EPERM comes from a missing CAP_SYS_BOOT or from the unit's seccomp filter.

    The VM lane's sandbox-kexec drops each in turn from livefwd.service: both answer
    EPERM, and the message used to name the capability alone.
    """
    from livefw.errors import KernelError
    from livefw.plugins.liveupdate.errors import map_kexec_error

    mapped = map_kexec_error(KernelError(errno.EPERM, "reboot", "kexec"), [])
    assert isinstance(mapped, NotSupported)
    text = str(mapped)
    assert "CAP_SYS_BOOT" in text
    assert "SystemCallFilter=reboot" in text
    assert "every session is as it was" in text


# ------------------------------------------------ frozen memfds (issue 14.5)


async def test_a_preserved_memfd_cannot_grow(start: Starter) -> None:
    device = broker(await start())
    info = await device.create_session(ALICE, "vm")
    fd = memfd(b"guest")
    await device.session(ALICE, info.kernel_name).preserve(fd, 1)
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"more", 5)
    os.pwrite(fd, b"G", 0)


# ---------------------------------------------------- VFIO (issue 14.14)


def vfio_files(engine: Engine, tmp_path: Path, handler: bool = True) -> Path:
    vfio = tmp_path / "vfio"
    (vfio / "devices").mkdir(parents=True, exist_ok=True)
    (vfio / "devices" / "vfio0").write_bytes(b"")
    (vfio / "12").write_bytes(b"")
    component = machine_of(engine).components["liveupdate"]
    component.configure("vfio_prefix", str(vfio) + "/")
    component.configure("vfio_handler", "1" if handler else "0")
    return vfio


async def test_vfio_group_files_and_kernels_without_the_handler(
    start: Starter, tmp_path: Path
) -> None:
    engine = await start()
    device = broker(engine)
    vfio = vfio_files(engine, tmp_path, handler=False)
    info = await device.create_session(ALICE, "vm")
    group = os.open(vfio / "12", os.O_RDWR)
    with pytest.raises(InvalidFile, match=r"VFIO group file.*/dev/vfio/devices/vfioN"):
        await device.session(ALICE, info.kernel_name).preserve(group, 1)
    cdev = os.open(vfio / "devices" / "vfio0", os.O_RDWR)
    with pytest.raises(NotSupported, match="no Live Update handler for VFIO"):
        await device.session(ALICE, info.kernel_name).preserve(cdev, 1)
    assert device.session(ALICE, info.kernel_name).tokens() == {}
    os.close(group)
    os.close(cdev)


async def test_vfio_rules_across_the_kexec(start: Starter, tmp_path: Path) -> None:
    engine = await start()
    device = broker(engine)
    vfio = vfio_files(engine, tmp_path)
    info = await device.create_session(ALICE, "vm")
    cdev = os.open(vfio / "devices" / "vfio0", os.O_RDWR)
    await device.session(ALICE, info.kernel_name).preserve(cdev, 5)
    await device.session(ALICE, info.kernel_name).preserve(memfd(b"ram"), 6)
    component = machine_of(engine).components["liveupdate"]
    component.configure("vfio_irqs_enabled", "1")
    with pytest.raises(InvalidArgument, match=r"VFIO devices \(vm:5\).*interrupt disabled"):
        await device.kexec()
    component.configure("vfio_irqs_enabled", "0")
    await device.kexec()

    device = broker(await start())
    await device.retrieve_session(ALICE, "vm")
    assert await read_token(device, ALICE, info.kernel_name, 6) == b"ram"
    # force does not override the kernel: the VFIO device must be retrieved first
    with pytest.raises(Busy, match=r"VFIO devices \(tokens 5\).*bound to an iommufd"):
        await device.session(ALICE, info.kernel_name).finish({"force": True})
    handle = await device.session(ALICE, info.kernel_name).retrieve_file(5)
    await handle.close()
    await device.session(ALICE, info.kernel_name).finish()
    assert device.list_sessions(0) == []
    os.close(cdev)


@pytest.mark.parametrize("kernel", ["6.19", "7.1", "7.2"])
async def test_the_broker_on_each_supported_kernel(
    start: Starter, tmp_path: Path, kernel: str
) -> None:
    """Sessions, a frozen memfd, a restart and a kexec on each modelled release."""
    store = LocalFdStore(str(tmp_path / "notify"))
    try:
        device = broker(await start(store.client(), kernel=kernel))
        info = await device.create_session(ALICE, "vm")
        fd = memfd(b"guest state")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        await device.session(ALICE, info.kernel_name).preserve(fd, 1)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"!", 11)
        store.wait_idle()
        # a restart in the same boot: the session comes back from the fd store
        # (GET_NAME confirms its name on 7.2; older kernels fall back to the stored name)
        device = broker(await start(store.client(), kernel=kernel))
        assert [s.name for s in device.list_sessions(ALICE)] == ["vm"]
        await device.kexec()
    finally:
        store.close()
    device = broker(await start(kernel=kernel))
    await device.retrieve_session(ALICE, "vm")
    handle = await device.session(ALICE, info.kernel_name).retrieve_file(1)
    try:
        seals = fcntl.fcntl(handle.fileno(), fcntl.F_GET_SEALS)
        assert os.pread(handle.fileno(), 100, 0) == b"guest state"
    finally:
        await handle.close()
    # seals travel from 7.1 on (mm: memfd_luo: preserve file seals); on 6.19 the
    # restored memfd cannot be sealed at all
    assert seals == (fcntl.F_SEAL_SEAL if kernel == "6.19" else fcntl.F_SEAL_SHRINK)
    await device.session(ALICE, info.kernel_name).finish()
    assert device.list_sessions(0) == []


# ------------------------------- livefwd's own limits (7.2 has none in the kernel)


async def test_livefwd_keeps_its_session_and_file_limits_on_7_2(
    start: Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7.2 dropped LUO_SESSION_MAX and LUO_FILE_MAX; livefwd keeps both (its fds must
    fit LimitNOFILE and its registry stays small), with a message saying so."""
    from livefw.errors import NoSpace
    from livefw.plugins.liveupdate import device as device_module

    monkeypatch.setattr(device_module, "SESSIONS_MAX", 2)
    monkeypatch.setattr(device_module, "FILES_MAX", 1)
    device = broker(await start(kernel="7.2"))
    first = await device.create_session(ALICE, "a")
    await device.create_session(BOB, "b")
    with pytest.raises(NoSpace, match="already brokers 2 live-update sessions"):
        await device.create_session(ALICE, "c")
    session = device.session(ALICE, first.kernel_name)
    await session.preserve(memfd(b"1"), 1)
    with pytest.raises(NoSpace, match="has 1 files, the most livefwd keeps"):
        await session.preserve(memfd(b"2"), 2)
    assert session.tokens() == {1: ""}
    assert [s.name for s in device.list_sessions(0)] == ["a", "b"]


# ------------------------------------------------ sessions per user (issue 13)


def per_user(limit: object) -> Config:
    return Config.model_validate({"plugins": {"liveupdate": {"sessions_per_user": limit}}})


async def test_one_user_cannot_take_every_session(start: Starter) -> None:
    """A uid polkit lets create sessions holds at most sessions_per_user of them; the
    refusal names the limit and what the caller holds; finish and drop count down."""
    from livefw.errors import NoSpace

    device = broker(await start(config=per_user(2)))
    first = await device.create_session(ALICE, "a")
    await device.create_session(ALICE, "b")
    with pytest.raises(NoSpace, match=r"you hold 2 .* at most 2 \(\[plugins.liveupdate\] "):
        await device.create_session(ALICE, "c")
    assert [s.name for s in device.list_sessions(ALICE)] == ["a", "b"]  # nothing changed
    await device.create_session(BOB, "b")  # another user is not affected
    for name in ("r1", "r2", "r3"):
        await device.create_session(0, name)  # root is exempt
    await device.session(ALICE, first.kernel_name).drop()
    await device.create_session(ALICE, "c")  # a dropped session counts down


async def test_sessions_from_before_the_kexec_count_until_finished(start: Starter) -> None:
    from livefw.errors import NoSpace

    device = broker(await start(config=per_user(2)))
    await device.create_session(ALICE, "a")
    await device.create_session(ALICE, "b")
    await device.kexec()
    device = broker(await start(config=per_user(2)))
    assert {s.state for s in device.list_sessions(ALICE)} == {"incoming"}
    # an incoming session still holds one of livefwd's slots and, once retrieved, a fd
    with pytest.raises(NoSpace, match="you hold 2 "):
        await device.create_session(ALICE, "new")
    retrieved = await device.retrieve_session(ALICE, "a")
    with pytest.raises(NoSpace, match="you hold 2 "):
        await device.create_session(ALICE, "new")
    await device.session(ALICE, retrieved.kernel_name).finish()
    await device.create_session(ALICE, "new")  # a finished session counts down


async def test_sessions_per_user_default_is_256(start: Starter) -> None:
    from livefw.plugins.liveupdate.records import SESSIONS_PER_USER, SESSIONS_RESERVED_FOR_ROOT

    engine = await start()
    plugin = engine.plugins["liveupdate"].plugin
    assert isinstance(plugin, LiveUpdatePlugin)
    assert plugin.shared.sessions_per_user == SESSIONS_PER_USER == 256
    assert plugin.shared.sessions_reserved_for_root == SESSIONS_RESERVED_FOR_ROOT == 248
    assert plugin.shared.sessions_for_users == 744 - 248


async def test_users_together_cannot_take_the_sessions_kept_for_root(start: Starter) -> None:
    """Several uids, each within sessions_per_user, together stop at SESSIONS_MAX less
    sessions_reserved_for_root; the refusal names the count, the limit and the key;
    root still creates sessions; a dropped session of any user makes room."""
    from livefw.errors import NoSpace
    from livefw.plugins.liveupdate.records import SESSIONS_MAX

    table = {"sessions_per_user": 2, "sessions_reserved_for_root": SESSIONS_MAX - 3}
    device = broker(await start(config=Config.model_validate({"plugins": {"liveupdate": table}})))
    first = await device.create_session(ALICE, "a")
    await device.create_session(ALICE, "b")
    await device.create_session(BOB, "a")
    expected = (
        r"users other than root hold 3 live-update sessions together and may hold at "
        rf"most 3: livefwd keeps {SESSIONS_MAX - 3} of its {SESSIONS_MAX} for root "
        r"\(\[plugins.liveupdate\] sessions_reserved_for_root in livefw.conf\)"
    )
    with pytest.raises(NoSpace, match=expected):
        await device.create_session(BOB, "b")  # within BOB's own quota
    with pytest.raises(NoSpace, match=expected):
        await device.create_session(BOB + 1, "a")  # a third user holds none yet
    assert [s.name for s in device.list_sessions(BOB)] == ["a"]  # nothing changed
    for name in ("r1", "r2", "r3"):
        await device.create_session(0, name)  # root's sessions do not count
    await device.session(ALICE, first.kernel_name).drop()
    await device.create_session(BOB, "b")  # another user's drop made room


async def test_no_reservation_lets_users_fill_every_session(start: Starter) -> None:
    """sessions_reserved_for_root = 0 is the administrator's choice: only the per-user
    limit and SESSIONS_MAX remain."""
    from livefw.errors import NoSpace

    table = {"sessions_per_user": 1, "sessions_reserved_for_root": 0}
    device = broker(await start(config=Config.model_validate({"plugins": {"liveupdate": table}})))
    await device.create_session(ALICE, "a")
    await device.create_session(BOB, "a")
    with pytest.raises(NoSpace, match="you hold 1 "):
        await device.create_session(BOB, "b")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"sessions_per_user": 0}, "must be 1 to 744"),
        ({"sessions_per_user": 745}, "must be 1 to 744"),
        ({"sessions_per_user": "10"}, "must be a number"),
        ({"sessions_per_user": True}, "must be a number"),
        ({"session_per_user": 10}, "unknown keys"),
        ({"sessions_reserved_for_root": -1}, "sessions_reserved_for_root must be 0 to 744"),
        ({"sessions_reserved_for_root": 745}, "sessions_reserved_for_root must be 0 to 744"),
        ({"sessions_reserved_for_root": 1.5}, "sessions_reserved_for_root must be a number"),
    ],
)
async def test_bad_sessions_per_user_fails_the_plugin_with_the_reason(
    start: Starter, table: dict[str, object], message: str
) -> None:
    engine = await start(config=Config.model_validate({"plugins": {"liveupdate": table}}))
    record = engine.plugins["liveupdate"]
    assert record.plugin is None
    assert record.probe.result == "failed"
    assert message in record.probe.reason
    assert "plugins.liveupdate" in record.probe.reason
