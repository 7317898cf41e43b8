"""Load: many clients hammer the daemon while an install and an activation run.

The simulated machine uses the ``scale`` profile (synthetic LFA images, ESRT entries
and fwctl nodes beyond the kernel's limits: load only, not faithful). Clients, each
on its own bus connection, call GetManagedObjects and, with ``--fwupd-compat``, the
compatible GetDevices (replies of hundreds of KB) back to back; one more client is
stuck: it sends calls and never reads a byte of the replies. Meanwhile ``livefw
install`` stages a PFRU capsule and ``livefw activate`` activates an LFA image.

Passes when: no client loses its connection, every call is answered, the daemon keeps
its bus name (the same unique name, so it never reconnected), the install and the
activation both complete, and the stuck client delayed nobody beyond the budget.

``make test`` runs a short load (100 devices, 10 clients, 5 s); ``make robust`` the
full one (1,000 devices, 50 clients, 60 s).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from livefw.bus.backend import Message, marshal
from livefw.cli.client import Client
from livefw.testing import Cli, DaemonProcess, PolkitMock, PrivateBus

BUS = "org.livefw.Daemon1"
FWUPD = "org.freedesktop.fwupd"
MANAGER_PATH = "/org/livefw/Daemon1"

#: a call slower than this counts as "not answered" (the budget for a loaded daemon).
CALL_TIMEOUT = 60.0


@dataclass
class Stats:
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    slowest: float = 0.0
    reply_bytes: int = 0


async def _hammer(address: str, compat: bool, deadline: float, stats: Stats) -> None:
    client = await Client.connect(address)
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if compat:
                    (devices,) = await client.call(
                        "GetDevices",
                        path="/",
                        interface=FWUPD,
                        destination=FWUPD,
                        timeout=CALL_TIMEOUT,
                    )
                    stats.reply_bytes = max(stats.reply_bytes, len(repr(devices)))
                else:
                    objects = await client.managed_objects()
                    stats.reply_bytes = max(stats.reply_bytes, len(repr(objects)))
            except Exception as error:  # every failure is a finding; keep going
                stats.errors.append(f"{type(error).__name__}: {error}")
                if not client.bus.connected:
                    stats.errors.append("connection dropped")
                    return
            stats.calls += 1
            stats.slowest = max(stats.slowest, time.monotonic() - started)
    finally:
        await client.close()


def _stuck_client(socket_path: str, calls: int) -> socket.socket:
    """A connection that sends GetManagedObjects calls and never reads the replies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    uid = str(os.getuid()).encode().hex()
    sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
    assert sock.recv(256).startswith(b"OK"), "the bus refused the stuck client"
    sock.sendall(b"BEGIN\r\n")
    hello = Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="Hello",
        serial=1,
    )
    sock.sendall(marshal(hello))
    for serial in range(2, calls + 2):
        message = Message(
            destination=BUS,
            path=MANAGER_PATH,
            interface="org.freedesktop.DBus.ObjectManager",
            member="GetManagedObjects",
            serial=serial,
        )
        sock.sendall(marshal(message))
    return sock  # never read from


def _owner(bus: PrivateBus, name: str) -> str:
    from livefw.testing import busctl

    result = busctl(
        bus.address,
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        "s",
        name,
        check=False,
    )
    return result.stdout.strip()


def run_load(
    daemon_factory: Callable[..., DaemonProcess],
    private_bus: PrivateBus,
    cli: Cli,
    tmp_path: Path,
    devices: int,
    clients: int,
    seconds: float,
) -> dict[str, object]:
    scale = max(0, math.ceil((devices - 10) / 3))
    daemon = daemon_factory(["--profile", "scale", "--scale", str(scale), "--fwupd-compat"])
    try:
        private_bus.wait_for_name(FWUPD, timeout=20, proc=daemon)
        compat = True
    except TimeoutError:
        compat = False  # the name was taken (a real fwupd?): native API only
    assert compat, "livefwd --fwupd-compat did not take org.freedesktop.fwupd\n" + daemon.log()
    owner = _owner(private_bus, BUS)
    payload = tmp_path / "pfru.cap"
    cli("sim", "sample", "pfru/code-injection", "-o", str(payload))
    stuck = _stuck_client(private_bus.socket, 20)

    async def main() -> tuple[list[Stats], subprocess.CompletedProcess[str], ...]:
        deadline = time.monotonic() + seconds
        stats = [Stats() for _ in range(clients)]
        tasks = [
            asyncio.create_task(
                _hammer(private_bus.address, compat and i % 2 == 1, deadline, stats[i])
            )
            for i in range(clients)
        ]
        await asyncio.sleep(min(1.0, seconds / 5))
        install = await asyncio.to_thread(
            cli, "install", str(payload), "code injection", check=False, timeout=seconds + 120
        )
        activate = await asyncio.to_thread(
            cli, "activate", "TF-A BL31", check=False, timeout=seconds + 120
        )
        await asyncio.gather(*tasks)
        return stats, install, activate

    try:
        stats, install, activate = asyncio.run(main())
    finally:
        stuck.close()
    listed = len(asyncio.run(_device_count(private_bus.address)))
    assert install.returncode == 0, install.stderr + daemon.log()[-3000:]
    assert activate.returncode == 0, activate.stderr
    errors = [error for s in stats for error in s.errors]
    assert not errors, errors[:5]
    assert all(s.calls > 0 for s in stats), [s.calls for s in stats]
    assert _owner(private_bus, BUS) == owner, "the daemon lost or re-took its bus name"
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, "the daemon died"
    assert listed >= devices
    slowest = max(s.slowest for s in stats)
    assert slowest < CALL_TIMEOUT
    return {
        "devices": listed,
        "clients": clients,
        "calls": sum(s.calls for s in stats),
        "slowest": round(slowest, 2),
        "reply_bytes": max(s.reply_bytes for s in stats),
        "compat": compat,
    }


async def _device_count(address: str) -> list[object]:
    client = await Client.connect(address)
    try:
        return await client.devices()
    finally:
        await client.close()


def test_short_load(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    private_bus: PrivateBus,
    cli: Cli,
    tmp_path: Path,
) -> None:
    result = run_load(daemon_factory, private_bus, cli, tmp_path, 100, 10, 5.0)
    print("load", result)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_load(
    daemon_factory: Callable[..., DaemonProcess],
    polkit: PolkitMock,
    private_bus: PrivateBus,
    cli: Cli,
    tmp_path: Path,
) -> None:
    result = run_load(daemon_factory, private_bus, cli, tmp_path, 1000, 50, 60.0)
    print("load", result)
