"""Live update over a private bus: sessions, memfds across `livefw sim kexec`, privacy."""

import array
import asyncio
import ctypes
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from livefw.bus.backend import Message, MessageBus
from livefw.cli import exitcodes
from livefw.kernel.fdstore import LocalFdStore
from livefw.kernel.uapi import fs
from livefw.testing import NOBODY, Cli, DaemonProcess, PolkitMock, as_user

BUS = "org.livefw.Daemon1"
SESSION_IFACE = "org.livefw.Daemon1.LiveUpdateSession"
REPO = Path(__file__).resolve().parents[2]


def sessions(cli: Cli, uid: int | None = None) -> dict[str, dict[str, object]]:
    out = cli("liveupdate", "list", "--json", uid=uid).stdout
    return {s["name"]: s for s in json.loads(out)}


def restart_after_kexec(daemon: DaemonProcess, cli: Cli) -> None:
    cli("sim", "kexec")
    assert daemon.wait_exit(30) == 0
    daemon.start()


def test_two_memfds_survive_sim_kexec_and_restart(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"guest memory A\n" * 100)
    second.write_bytes(os.urandom(70000))
    cli("liveupdate", "create", "vm1", "--label", "test vm")
    cli("liveupdate", "preserve", "vm1", str(first), "--token", "1")
    cli("liveupdate", "preserve", "vm1", str(second), "--token", "18446744073709551615")
    assert cli("liveupdate", "tokens", "vm1", "--json").stdout.split() != []
    tokens = json.loads(cli("liveupdate", "tokens", "vm1", "--json").stdout)
    assert tokens == [1, 18446744073709551615]
    assert sessions(cli)["vm1"]["state"] == "outgoing"

    restart_after_kexec(daemon, cli)

    listed = sessions(cli)
    assert listed["vm1"]["state"] == "incoming"
    assert listed["vm1"]["label"] == "test vm"
    out_a, out_b = tmp_path / "a.out", tmp_path / "b.out"
    cli("liveupdate", "retrieve", "vm1", "--token", "1", "-o", str(out_a))
    cli("liveupdate", "retrieve", "vm1", "--token", "18446744073709551615", "-o", str(out_b))
    assert out_a.read_bytes() == first.read_bytes()
    assert out_b.read_bytes() == second.read_bytes()
    assert sessions(cli)["vm1"]["state"] == "retrieved"
    cli("liveupdate", "finish", "vm1")
    assert sessions(cli) == {}


def test_a_session_nobody_holds_is_not_carried(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    data = tmp_path / "x"
    data.write_bytes(b"x")
    cli("liveupdate", "create", "kept")
    cli("liveupdate", "create", "dropped")
    cli("liveupdate", "preserve", "kept", str(data), "--token", "7")
    cli("liveupdate", "preserve", "dropped", str(data), "--token", "7")
    cli("liveupdate", "drop", "dropped")
    restart_after_kexec(daemon, cli)
    assert set(sessions(cli)) == {"kept"}


def test_bad_input_over_the_bus(daemon: DaemonProcess, cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "x"
    data.write_bytes(b"x")
    result = cli("liveupdate", "create", "bad/name", check=False)
    assert result.returncode == 8
    assert "may use only letters" in result.stderr
    result = cli("liveupdate", "create", "n" * 46, check=False)
    assert result.returncode == 8
    cli("liveupdate", "create", "s")
    cli("liveupdate", "preserve", "s", str(data), "--token", "1")
    result = cli("liveupdate", "preserve", "s", str(data), "--token", "1", check=False)
    assert result.returncode == 8
    assert "token 1 is already used" in result.stderr
    result = cli("liveupdate", "finish", "s", check=False)
    assert result.returncode == 8
    assert "drop it" in result.stderr
    assert json.loads(cli("liveupdate", "tokens", "s", "--json").stdout) == [1]


def test_another_uid_cannot_see_or_use_a_session(
    daemon: DaemonProcess, cli: Cli, polkit: PolkitMock, private_bus: object, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as nobody")
    cli("liveupdate", "create", "secret")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    path = row["path"]
    assert sessions(cli, uid=NOBODY) == {}
    result = cli("liveupdate", "finish", "livefw.0.secret", check=False, uid=NOBODY)
    assert result.returncode == 3
    address = private_bus.address  # type: ignore[attr-defined]
    for args in (
        ("call", BUS, path, SESSION_IFACE, "Drop"),
        ("introspect", BUS, path),
        ("get-property", BUS, path, SESSION_IFACE, "Name"),
    ):
        proc = subprocess.run(
            as_user(NOBODY, ["busctl", f"--address={address}", *args]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert "no object at" in proc.stderr, proc.stderr  # UnknownObject
    # root still sees it, and it was not dropped
    assert "secret" in sessions(cli)
    # and the session objects stay out of GetManagedObjects
    managed = subprocess.run(
        [
            "busctl",
            f"--address={address}",
            "--json=short",
            "call",
            BUS,
            "/org/livefw/Daemon1",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "liveupdate/sessions" not in managed


def test_kexec_method_carries_sessions(daemon: DaemonProcess, cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "x"
    data.write_bytes(b"state before kexec")
    cli("liveupdate", "create", "vm")
    cli("liveupdate", "preserve", "vm", str(data), "--token", "3")
    result = cli("liveupdate", "kexec")
    assert "switching" in result.stdout
    assert daemon.wait_exit(30) == 0
    daemon.start()
    out = tmp_path / "out"
    cli("liveupdate", "retrieve", "vm", "--token", "3", "-o", str(out))
    assert out.read_bytes() == b"state before kexec"


def test_finish_refuses_unretrieved_files_without_force(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    data = tmp_path / "x"
    data.write_bytes(b"guest memory")
    cli("liveupdate", "create", "vm")
    cli("liveupdate", "preserve", "vm", str(data), "--token", "3")
    cli("liveupdate", "preserve", "vm", str(data), "--token", "4")
    restart_after_kexec(daemon, cli)
    cli("liveupdate", "retrieve", "vm", "--token", "3", "-o", str(tmp_path / "out"))
    result = cli("liveupdate", "finish", "vm", check=False)
    assert result.returncode == exitcodes.BUSY, result.stderr
    assert "tokens 4" in result.stderr
    assert "--force" in result.stderr
    assert sessions(cli)["vm"]["state"] == "retrieved"
    cli("liveupdate", "finish", "vm", "--force")
    assert sessions(cli) == {}


def test_kexec_without_a_loaded_kernel_says_so(daemon: DaemonProcess, cli: Cli) -> None:
    cli("sim", "set", "liveupdate", "kexec_loaded=0")
    cli("liveupdate", "create", "vm")
    result = cli("liveupdate", "kexec", check=False)
    assert result.returncode == exitcodes.NOTHING_TO_DO, result.stderr
    assert "kexec -l -s" in result.stderr
    assert sessions(cli)["vm"]["state"] == "outgoing"  # the daemon is still there


@pytest.mark.parametrize("interface", ["org.livefw.Daemon1.LiveUpdate"])
def test_liveupdate_introspection_matches_the_xml(
    daemon: DaemonProcess,
    cli: Cli,
    bctl: Callable[..., subprocess.CompletedProcess[str]],
    interface: str,
) -> None:
    import xml.etree.ElementTree as ET

    device = next(
        d for d in json.loads(cli("get-devices", "--json").stdout) if d["Plugin"] == "liveupdate"
    )
    cli("liveupdate", "create", "probe")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    for path, name in (
        (f"/org/livefw/Daemon1/devices/{device['Id']}", interface),
        (row["path"], SESSION_IFACE),
    ):
        reply = bctl(
            "--json=short", "call", BUS, path, "org.freedesktop.DBus.Introspectable", "Introspect"
        )
        live = ET.fromstring(json.loads(reply.stdout)["data"][0])
        contract = ET.fromstring((REPO / "dbus" / f"{name}.xml").read_text())

        def members(root: ET.Element, iface_name: str) -> set[tuple[str, ...]]:
            (iface,) = [i for i in root.iter("interface") if i.get("name") == iface_name]
            found: set[tuple[str, ...]] = set()
            for element in iface:
                args = tuple(
                    f"{a.get('direction', 'in')}:{a.get('name', '')}:{a.get('type')}"
                    for a in element.findall("arg")
                )
                found.add((element.tag, element.get("name", ""), element.get("type", ""), *args))
            return found

        assert members(live, name) == members(contract, name)
    time.sleep(0)


def _start_with_store(daemon: DaemonProcess, store: LocalFdStore) -> None:
    """Start the daemon as systemd would with a non-empty fd store (fds at 3..)."""
    real = subprocess.Popen

    def popen(command: list[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
        argv, fds, env = store.command(command)
        kwargs["env"] = {**kwargs["env"], **env}
        return real(argv, pass_fds=fds, **kwargs)

    subprocess.Popen = popen  # type: ignore[assignment,misc]
    try:
        daemon.start(wait=False)
    finally:
        subprocess.Popen = real  # type: ignore[misc]
    daemon.bus.wait_for_name(BUS, proc=daemon)


def test_daemon_restart_keeps_sessions_through_the_fd_store(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    cli: Cli,
    tmp_path: Path,
) -> None:
    store = LocalFdStore(str(tmp_path / "notify"))
    try:
        daemon = daemon_factory(env={"NOTIFY_SOCKET": store.path})
        data = tmp_path / "payload.bin"
        data.write_bytes(b"kept by systemd's fd store" * 50)
        cli("liveupdate", "create", "vm")
        cli("liveupdate", "preserve", "vm", str(data), "--token", "5")
        assert daemon.stop() == 0
        store.wait_idle()
        assert "luo.livefw.0.vm" in store.names()

        _start_with_store(daemon, store)
        assert sessions(cli)["vm"]["state"] == "outgoing"
        assert json.loads(cli("liveupdate", "tokens", "vm", "--json").stdout) == [5]

        restart_after_kexec(daemon, cli)
        out = tmp_path / "out"
        cli("liveupdate", "retrieve", "vm", "--token", "5", "-o", str(out))
        assert out.read_bytes() == data.read_bytes()
        cli("liveupdate", "finish", "vm")
    finally:
        store.close()


def test_daemon_restart_without_the_fd_store_drops_sessions(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    cli("liveupdate", "create", "vm")
    assert daemon.stop() == 0
    daemon.start()
    assert sessions(cli) == {}


async def _call_with_fd(address: str, path: str, fd: int, token: int) -> Message:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    try:
        reply = await bus.call(
            Message(
                destination=BUS,
                path=path,
                interface=SESSION_IFACE,
                member="Preserve",
                signature="hta{sv}",
                body=[0, token, {}],
                unix_fds=[fd],
            )
        )
    finally:
        bus.disconnect()
    assert reply is not None
    return reply


def _open_fds(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def test_passing_fds_leaks_none_in_the_daemon(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    data = tmp_path / "payload.bin"
    data.write_bytes(b"leak check")
    cli("liveupdate", "create", "vm")
    cli("liveupdate", "preserve", "vm", str(data), "--token", "1")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    before = _open_fds(daemon)
    read_end, write_end = os.pipe()
    for token in (2, 3):  # a pipe is refused, and the daemon closes the fd it received
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], read_end, token))
        assert reply.error_name == "org.livefw.Daemon1.Error.InvalidFile"
        assert "only memfds" in reply.body[0]
    os.close(read_end)
    os.close(write_end)
    time.sleep(0.5)
    assert _open_fds(daemon) == before
    assert json.loads(cli("liveupdate", "tokens", "vm", "--json").stdout) == [1]
    restart_after_kexec(daemon, cli)
    out = tmp_path / "out"
    cli("liveupdate", "retrieve", "vm", "--token", "1", "-o", str(out))
    time.sleep(0.5)
    before = _open_fds(daemon)
    for _ in range(5):
        cli("liveupdate", "retrieve", "vm", "--token", "1", "-o", str(out))
        cli("liveupdate", "retrieve", "vm", "--token", "9", "-o", str(out), check=False)
    time.sleep(1.5)
    assert _open_fds(daemon) == before
    assert out.read_bytes() == b"leak check"


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("vmm-ram", os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    return fd


def _may_set_append_only() -> bool:
    """CAP_LINUX_IMMUTABLE: the simulated kernel then sets FS_APPEND_FL on a preserved
    memfd, which refuses hole punching as the kernel's freeze does."""
    probe = os.memfd_create("probe", 0)
    try:
        fcntl.ioctl(probe, fs.FS_IOC_SETFLAGS, array.array("l", [fs.FS_APPEND_FL]))
    except OSError:
        return False
    finally:
        os.close(probe)
    return True


def _punch_hole(fd: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    mode = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, ctypes.c_longlong(offset), ctypes.c_longlong(length)):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_a_client_memfd_is_frozen_once_preserved(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    cli("liveupdate", "create", "vm")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    fd = _memfd(b"guest memory")
    try:
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], fd, 1))
        assert reply.error_name is None, reply.body
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"grown", 12)  # past the end: EPERM, as mm/memfd_luo.c does
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
        if _may_set_append_only():  # livefwd runs as this user: it froze the inode too
            with pytest.raises(PermissionError):
                _punch_hole(fd, 0, 4096)
        os.pwrite(fd, b"G", 0)  # inside the file: allowed
    finally:
        os.close(fd)
    restart_after_kexec(daemon, cli)
    out = tmp_path / "out"
    cli("liveupdate", "retrieve", "vm", "--token", "1", "-o", str(out))
    assert out.read_bytes() == b"Guest memory"


def test_what_the_sim_cannot_refuse_after_preserve_is_reported(
    daemon: DaemonProcess, cli: Cli
) -> None:
    """A memfd made without MFD_ALLOW_SEALING grows past its end after Preserve: the
    kernel refuses that (EPERM, shmem_freeze); the simulated kernel cannot refuse a
    call on the client's own descriptor, so it reports the divergence instead."""
    cli("liveupdate", "create", "vm")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    fd = os.memfd_create("vmm-ram", 0)
    os.write(fd, b"x" * 8192)
    try:
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], fd, 1))
        assert reply.error_name is None, reply.body
        os.pwrite(fd, b"grown", 8192)
    finally:
        os.close(fd)
    other = _memfd(b"next")
    try:  # the simulated kernel looks at the session's files on its next ioctl
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], other, 2))
        assert reply.error_name is None, reply.body
    finally:
        os.close(other)
    listing = cli("sim", "devices").stdout
    assert "1 divergences from the real kernel" in listing
    assert "size changed from 8192 to 8197" in listing


def test_vfio_rules_over_the_bus(daemon: DaemonProcess, cli: Cli, tmp_path: Path) -> None:
    vfio = tmp_path / "vfio"
    (vfio / "devices").mkdir(parents=True)
    (vfio / "devices" / "vfio0").write_bytes(b"")
    (vfio / "3").write_bytes(b"")
    cli("sim", "set", "liveupdate", f"vfio_prefix={vfio}/")
    cli("sim", "set", "liveupdate", "vfio_handler=1")
    cli("liveupdate", "create", "vm")
    (row,) = json.loads(cli("liveupdate", "list", "--json").stdout)
    group = os.open(vfio / "3", os.O_RDWR)
    device = os.open(vfio / "devices" / "vfio0", os.O_RDWR)
    try:
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], group, 1))
        assert reply.error_name == "org.livefw.Daemon1.Error.InvalidFile"
        assert "VFIO group file" in reply.body[0]
        reply = asyncio.run(_call_with_fd(daemon.bus.address, row["path"], device, 2))
        assert reply.error_name is None, reply.body
    finally:
        os.close(group)
        os.close(device)
    cli("sim", "set", "liveupdate", "vfio_irqs_enabled=1")
    result = cli("liveupdate", "kexec", check=False)
    assert result.returncode == exitcodes.INVALID, result.stderr
    assert "interrupt" in result.stderr
    assert sessions(cli)["vm"]["state"] == "outgoing"  # nothing changed, no kexec


def test_kexec_is_refused_while_an_activation_is_in_flight(
    daemon: DaemonProcess, cli: Cli, tmp_path: Path
) -> None:
    """Issue 15.1: Kexec goes through the engine; it names the activation and waits not."""
    data = tmp_path / "x"
    data.write_bytes(b"state before kexec")
    cli("liveupdate", "create", "vm")
    cli("liveupdate", "preserve", "vm", str(data), "--token", "3")
    cli("sim", "set", "lfa", "activate_seconds=4")
    activation = cli.popen("activate", "bl31")
    try:
        deadline = time.monotonic() + 20
        while not json.loads(cli("history", "--json").stdout):
            assert time.monotonic() < deadline, "the activation wrote no history row"
            time.sleep(0.05)
        result = cli("liveupdate", "kexec", check=False)
        assert result.returncode == exitcodes.BUSY, result.stderr
        assert "kexec refused: activate of TF-A BL31 runtime is in flight" in result.stderr
        _out, err = activation.communicate(timeout=60)
        assert activation.returncode == 0, err
    finally:
        if activation.poll() is None:
            activation.kill()
            activation.wait()
    assert sessions(cli)["vm"]["state"] == "outgoing"  # the daemon did not kexec
    (entry,) = json.loads(cli("history", "--json").stdout)
    assert entry["State"] == "success"
    result = cli("liveupdate", "kexec")  # nothing in flight any more
    assert "switching" in result.stdout
    assert daemon.wait_exit(30) == 0
