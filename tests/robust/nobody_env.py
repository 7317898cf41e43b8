"""A hostile local user against livefwd: the shipped bus policy, polkit, a real other uid.

:func:`hostile` starts a private system-type bus with only the system defaults, the
shipped ``dbus/org.livefw.Daemon1.conf`` and ``dbus/org.freedesktop.fwupd.conf`` and
what polkitd ships for its own name; the polkitd mock; and ``livefwd --simulate
--fwupd-compat`` (as root, like the real service). Attacks run as ``nobody`` under
``setpriv`` (:meth:`Hostile.attack`), each a short Python program that talks to the
bus with livefw's own client. What they must not do is measured from outside:
livefwd's memory (``/proc/PID/status``), its open descriptors (``/proc/PID/fd``) and
how long a root client's ``Peer.Ping`` waits while the attack runs
(:class:`LatencyProbe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from livefw.bus.backend import Message, MessageBus, MessageType, call
from livefw.testing import NOBODY, SYSTEM_DEFAULTS, DaemonProcess, PolkitMock, PrivateBus, as_user

REPO = Path(__file__).resolve().parents[2]
BUS = "org.livefw.Daemon1"
FWUPD = "org.freedesktop.fwupd"
#: no attack may keep livefwd from answering for longer than this (issue 13).
LOOP_BUDGET = 0.1


#: what polkitd's own org.freedesktop.PolicyKit1.conf grants, plus the mock's control
#: interface for root (the test sets the verdicts through it).
POLKIT_POLICY = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"
           send_interface="org.freedesktop.PolicyKit1.Authority"/>
  </policy>
</busconfig>
"""

#: imported by every attack program (it runs as nobody, from the repo's venv).
PRELUDE = """
import asyncio, json, os, sys
from livefw.bus.backend import Variant
from livefw.cli.client import CallError, Client
ADDRESS = os.environ["LIVEFW_BUS_ADDRESS"]
FWUPD = dict(path="/", interface="org.freedesktop.fwupd", destination="org.freedesktop.fwupd")

async def outcome(awaitable):
    try:
        await awaitable
        return "ok"
    except CallError as error:
        return error.name.rsplit(".", 1)[-1] + ": " + error.message
    except (TimeoutError, asyncio.TimeoutError):
        return "timeout"
"""


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("a client under another uid (setpriv) needs root")
    for tool in ("dbus-daemon", "setpriv", "busctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make test installs it)")


def world_dir() -> str:
    """A temp dir nobody can read (for files an attacker opens)."""
    directory = tempfile.mkdtemp(prefix="livefw-hostile.")
    os.chmod(directory, 0o755)
    return directory


@dataclass
class Hostile:
    """The bus, polkit mock and daemon of one test."""

    bus: PrivateBus
    polkit: PolkitMock
    daemon: DaemonProcess
    files: str
    started: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def status(self, key: str) -> int:
        """A ``/proc/PID/status`` value in KiB (VmRSS, VmHWM ...)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def reset_peak(self) -> None:
        """Start VmHWM over from the current RSS (``/proc/PID/clear_refs`` 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def fds(self) -> set[str]:
        """What livefwd's descriptors point at."""
        result = set()
        for name in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                result.add(f"{name}->{os.readlink(f'/proc/{self.pid}/fd/{name}')}")
        return result

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def file(self, name: str, data: bytes) -> str:
        """A file nobody may open."""
        path = os.path.join(self.files, name)
        Path(path).write_bytes(data)
        os.chmod(path, 0o644)
        return path

    async def attack(self, source: str, timeout: float = 60.0, uid: int = NOBODY) -> str:
        """Run ``source`` (the body of ``async def main()``) as ``uid``; its stdout."""
        proc = await self.start_attack(source, uid)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, stderr.decode(errors="replace")
        return stdout.decode()

    async def start_attack(self, source: str, uid: int = NOBODY) -> asyncio.subprocess.Process:
        """Start ``source`` as ``uid`` in the background (stopped by the fixture)."""
        body = "\n".join("    " + line for line in source.strip("\n").splitlines())
        program = PRELUDE + "\nasync def main():\n" + body + "\n\nasyncio.run(main())\n"
        env = self.bus.env()
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        proc = await asyncio.create_subprocess_exec(
            *as_user(uid, [sys.executable, "-c", program]),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",
        )
        self.started.append(proc)
        return proc

    async def stop_attacks(self) -> None:
        for proc in self.started:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@contextlib.contextmanager
def hostile(
    bus_dir: str,
    state_dir: Path,
    config_text: str = "",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Hostile]:
    """Bus with the shipped policy, polkit mock (allowing nothing) and livefwd.

    ``env``: extra environment of livefwd (e.g. ``LIVEFW_DBUS_BACKEND``).
    """
    _require_root_tools()
    defaults = os.path.join(bus_dir, "system-defaults.conf")
    Path(defaults).write_text(SYSTEM_DEFAULTS)
    polkit_policy = os.path.join(bus_dir, "polkit.conf")
    Path(polkit_policy).write_text(POLKIT_POLICY)
    policies = [
        defaults,
        polkit_policy,
        str(REPO / "dbus" / "org.livefw.Daemon1.conf"),
        str(REPO / "dbus" / "org.freedesktop.fwupd.conf"),
    ]
    bus = PrivateBus(bus_dir, policy_files=policies, default_policy=False).start()
    polkit = PolkitMock(bus)
    daemon: DaemonProcess | None = None
    files = world_dir()
    try:
        polkit.start()
        polkit.allow_unknown(False)
        polkit.set_allowed([])
        config = state_dir / "hostile.conf"
        config.write_text(config_text)
        daemon = DaemonProcess(
            bus, str(state_dir), ["--fwupd-compat", *extra_args], config=str(config), env=env
        )
        daemon.start()
        bus.wait_for_name(FWUPD, proc=daemon)
        yield Hostile(bus, polkit, daemon, files)
    except BaseException:
        if daemon is not None:
            sys.stderr.write("\n----- livefwd log -----\n" + daemon.log() + "\n")
        raise
    finally:
        if daemon is not None:
            daemon.stop()
        polkit.stop()
        bus.stop()
        shutil.rmtree(files, ignore_errors=True)


@dataclass
class LatencyProbe:
    """A root client pinging livefwd back to back; the slowest answers are kept."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    def worst(self, count: int = 3) -> list[float]:
        return sorted(self.latencies)[-count:]

    def check(self, budget: float = LOOP_BUDGET) -> None:
        """Every ping answered, the median within ``budget``, none over 10 x ``budget``.

        Scheduler noise alone, on the shared 2-core test machine at a load of 15,
        delays single pings by up to half a second, so the slowest ping cannot be held
        to ``budget``. An attack that holds the event loop (main's backtracking regex,
        a read of a hung file system) makes every ping in that time wait, and time out.
        """
        assert self.latencies, "no ping was sent"
        assert not self.failures, f"pings failed: {self.failures}"
        median = sorted(self.latencies)[len(self.latencies) // 2]
        assert median < budget, f"median ping {median:.3f} s: {self.worst(5)}"
        assert self.slowest < 10 * budget, f"a ping waited {self.slowest:.3f} s"


@contextlib.asynccontextmanager
async def probe(
    address: str, destination: str = BUS, timeout: float = 5.0
) -> AsyncIterator[LatencyProbe]:
    """Ping ``destination`` every 20 ms while the body runs."""
    bus = await MessageBus(bus_address=address).connect()
    result = LatencyProbe()
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = await asyncio.wait_for(
                    call(
                        bus,
                        Message(
                            destination=destination,
                            path="/",
                            interface="org.freedesktop.DBus.Peer",
                            member="Ping",
                        ),
                    ),
                    timeout,
                )
                if reply.message_type == MessageType.ERROR:
                    result.failures.append(str(reply.error_name))
            except TimeoutError:
                result.failures.append("timeout")
            result.latencies.append(time.monotonic() - started)
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)

    task = asyncio.ensure_future(run())
    try:
        yield result
    finally:
        stop.set()
        await task
        bus.disconnect()


def parse_lines(stdout: str) -> list[object]:
    """One JSON value per line of an attack's output."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
