#!/usr/bin/env python3
# ruff: noqa: ASYNC110, ASYNC220, ASYNC230, ASYNC240, RUF001
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""livefwd beside fwupd 2.0 on the same machine, in the same run: ``make bench``.

Writes ``bench/REPORT.md`` (and ``bench/results.json``); ``QUICK=1`` keeps it to a few
minutes and writes ``bench/REPORT-quick.md``; ``run.py --report`` rewrites the report
from the saved results (``bench/NOTES.md``, the analysis, is appended to it).

Everything runs on a private ``dbus-daemon`` (system type, socket in a temp dir) with
python-dbusmock's polkitd template: nothing touches the system bus, /sys, /dev, /etc or
/var. fwupd runs from Debian's package (installed here when missing)
on a hermetic fake root (see :func:`fwupd_root`); livefwd runs ``--simulate
--fwupd-compat`` on the simulator's profiles.

Knobs (environment): QUICK=1; SIZES="2 50 1000"; CALLS (sequential calls per
repeat); REPEATS; START_RUNS; IDLE_SECONDS; MEM_CALLS (calls before the second memory
reading); STAGE_MIB; STAGE_RUNS; BACKENDS="next fast"; PROFILE=0 skips the cProfile
run; FWUPD=0 skips fwupd; KEEP=1 keeps the scratch directory.

Figures are min / median / max and are read as ratios to fwupd or to a floor taken
in the same run (``Peer.Ping`` to the same daemon; ``cp`` + ``sha256sum``): absolute
numbers move between runs and machines, ratios much less. Nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import importlib.util
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The harness's own client: dbus-fast when installed (its client costs 3-9x less CPU
# than dbus-next's, so the daemon, not the client, dominates the figures).
if importlib.util.find_spec("dbus_fast") is not None:
    os.environ["LIVEFW_DBUS_BACKEND"] = "fast"
else:
    os.environ["LIVEFW_DBUS_BACKEND"] = "next"

from livefw.bus.backend import BACKEND as CLIENT_LIB
from livefw.bus.backend import Message, MessageBus, MessageType, Variant
from livefw.cabinet import make_cabinet, make_metainfo
from livefw.testing import PolkitMock, PrivateBus

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
QUICK = os.environ.get("QUICK", "0") == "1"


def _env_int(name: str, full: int, quick: int) -> int:
    return int(os.environ.get(name, quick if QUICK else full))


def _env_float(name: str, full: float, quick: float) -> float:
    return float(os.environ.get(name, quick if QUICK else full))


SIZES = [int(x) for x in os.environ.get("SIZES", "2 50 1000").split()]
CALLS = _env_int("CALLS", 1000, 200)
REPEATS = _env_int("REPEATS", 3, 1)
WARMUP = _env_int("WARMUP", 50, 10)
START_RUNS = _env_int("START_RUNS", 10, 3)
IDLE_SECONDS = _env_float("IDLE_SECONDS", 30, 5)
MEM_CALLS = _env_int("MEM_CALLS", 10_000, 2_000)
STAGE_MIB = _env_int("STAGE_MIB", 64, 64)
STAGE_RUNS = _env_int("STAGE_RUNS", 3, 1)
CONCURRENCY = 16
REPEAT_BUDGET = _env_float("REPEAT_BUDGET", 4.0, 1.5)  # seconds per latency repeat
PIN_MODES = ("none", "one")
PIN_CPU = 0
BACKENDS = [
    b
    for b in os.environ.get("BACKENDS", "next fast").split()
    if b != "fast" or importlib.util.find_spec("dbus_fast") is not None
]
FWUPD_BIN = os.environ.get("FWUPD_BIN", "/usr/libexec/fwupd/fwupd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALL_CPUS = os.sched_getaffinity(0)

DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
FWUPD_NAME = "org.freedesktop.fwupd"
LIVEFW_NAME = "org.livefw.Daemon1"
LIVEFW_PATH = "/org/livefw/Daemon1"
#: staging goes to the simulator's first UEFI ESRT device (System Firmware)
STAGE_PLUGIN = "uefi_capsule"


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------------ statistics


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0],
        "median": statistics.median(v),
        "max": v[-1],
        "p90": v[min(len(v) - 1, int(0.9 * len(v)))],
    }


def mmm(s: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
    if not s:
        return "—"
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


# ------------------------------------------------------------------------ /proc


def proc_starttime(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return f.read().rsplit(") ", 1)[1].split()[19]


def read_mem(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Pss":
                out["Pss"] = int(value.split()[0])
    return out


def cpu_snapshot(pid: int) -> dict[str, Any]:
    """schedstat run time (ns) and context switches of every live thread."""
    ns = cs = 0
    tasks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                t_ns = int(f.read().split()[0])
            t_cs = 0
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        t_cs += int(line.split()[1])
            tasks[tid] = (t_ns, t_cs)
            ns += t_ns
            cs += t_cs
        except (OSError, ValueError, IndexError):
            pass
    return {"t": time.perf_counter(), "tasks": tasks}


def cpu_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    ns = cs = 0
    for tid, (b_ns, b_cs) in b["tasks"].items():
        a_ns, a_cs = a["tasks"].get(tid, (0, 0))
        ns += b_ns - a_ns
        cs += b_cs - a_cs
    return {"seconds": b["t"] - a["t"], "cpu_ms": ns / 1e6, "wakeups": cs}


def set_affinity(pid: int, cpus: set[int]) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def apply_pin(mode: str, pids: Sequence[int]) -> None:
    cpus = {PIN_CPU} if mode == "one" else set(ALL_CPUS)
    for pid in (os.getpid(), *pids):
        set_affinity(pid, cpus)


# ------------------------------------------------------------------------ set-up


def ensure_fwupd() -> str | None:
    """Debian's fwupd: installed with apt-get only when missing; its service never starts."""
    if os.path.exists(FWUPD_BIN):
        return None
    if os.environ.get("FWUPD", "1") == "0":
        return "skipped (FWUPD=0)"
    log("installing Debian's fwupd (apt-get; service starts blocked by policy-rc.d)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    blocker = "/usr/sbin/policy-rc.d"
    own_blocker = not os.path.exists(blocker)
    try:
        if own_blocker:
            subprocess.run(
                [
                    *sudo,
                    "sh",
                    "-c",
                    f"printf '#!/bin/sh\\nexit 101\\n' >{blocker}; chmod 755 {blocker}",
                ],
                check=True,
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "fwupd"],
            check=True,
            env=env,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        return f"fwupd could not be installed: {error}"
    finally:
        if own_blocker:
            subprocess.run([*sudo, "rm", "-f", blocker], check=False)
    return None if os.path.exists(FWUPD_BIN) else f"{FWUPD_BIN} is missing after install"


def fwupd_root(root: str, esrt_entries: int) -> dict[str, str]:
    """A private root for fwupd: config, state, a fake sysfs with a fake ESRT.

    fwupd reads every path from ``FWUPD_*`` variables; with an otherwise empty sysfs
    its udev backend finds nothing, ``FWUPD_EFIVARS=dummy`` keeps EFI variables in
    memory and ``FWUPD_UEFI_TEST=1`` skips the efivarfs check. ``TestDevices=true``
    adds its test plugin's webcam; the ``cpu`` plugin (real CPUID) is disabled, so
    the device set is the ESRT entries plus that webcam, on any machine.
    """
    for sub in ("etc/fwupd/remotes.d", "etc/pki", "var", "run", "lock", "proc", "dev"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "hostfs/boot/efi"), exist_ok=True)
    conf = os.path.join(root, "etc/fwupd/fwupd.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write("[fwupd]\nIdleTimeout=0\nUpdateMotd=false\nTestDevices=true\nDisabledPlugins=cpu\n")
    os.chmod(conf, 0o640)  # fwupd "fixes" a world-readable config otherwise
    # packaged remotes, every network one disabled
    remotes = "/etc/fwupd/remotes.d"
    if os.path.isdir(remotes):
        for name in os.listdir(remotes):
            if not name.endswith(".conf"):
                continue
            with open(os.path.join(remotes, name), encoding="utf-8") as f:
                text = f.read()
            if "MetadataURI=http" in text:
                text = "\n".join(
                    "Enabled=false" if line.startswith("Enabled=") else line
                    for line in text.splitlines()
                )
            with open(os.path.join(root, "etc/fwupd/remotes.d", name), "w", encoding="utf-8") as f:
                f.write(text + "\n")
    for pki in ("/etc/pki/fwupd", "/etc/pki/fwupd-metadata"):
        if os.path.isdir(pki):
            shutil.copytree(pki, os.path.join(root, "etc/pki", os.path.basename(pki)))
    entries = os.path.join(root, "sysfs/firmware/efi/esrt/entries")
    os.makedirs(entries)
    for index in range(esrt_entries):
        entry = os.path.join(entries, f"entry{index}")
        os.makedirs(entry)
        if index == 0:
            guid, fw_type = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e", 1
        else:
            guid, fw_type = str(uuid.uuid5(uuid.NAMESPACE_URL, f"livefw-bench-{index}")), 2
        values = {
            "fw_class": guid,
            "fw_type": fw_type,
            "fw_version": 65586,
            "lowest_supported_fw_version": 65582,
            "capsule_flags": "0xfe",
            "last_attempt_status": 1,
            "last_attempt_version": 18472960,
        }
        for key, value in values.items():
            with open(os.path.join(entry, key), "w", encoding="ascii") as f:
                f.write(f"{value}\n")
    return {
        "FWUPD_SYSCONFDIR": f"{root}/etc",
        "FWUPD_LOCALSTATEDIR": f"{root}/var",
        "FWUPD_RUNDIR": f"{root}/run",
        "FWUPD_LOCKDIR": f"{root}/lock",
        "FWUPD_SYSFSDIR": f"{root}/sysfs",
        "FWUPD_SYSFSFWDIR": f"{root}/sysfs/firmware",
        "FWUPD_PROCFS": f"{root}/proc",
        "FWUPD_DEVFS": f"{root}/dev",
        "FWUPD_HOSTFS_ROOT": f"{root}/hostfs",
        "FWUPD_HOSTFS_BOOT": f"{root}/hostfs/boot",
        "FWUPD_UEFI_ESP_PATH": f"{root}/hostfs/boot/efi",
        "FWUPD_EFIVARS": "dummy",
        "FWUPD_UEFI_TEST": "1",
    }


def wipe(directory: str) -> None:
    if not directory.startswith(tempfile.gettempdir() + "/"):
        raise SystemExit(f"refusing to wipe {directory}: not under the temp dir")
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# ------------------------------------------------------------------------ targets


@dataclass
class Target:
    """One daemon configuration: how to start it, what it owns, what to call."""

    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    name: str  # the name whose ownership means "ready"
    state_dir: str  # wiped for an empty-state start
    devices_wanted: int
    is_peer: bool = False
    native: bool = False  # has livefw's own API (GetManagedObjects)
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def livefw_profile(devices: int) -> tuple[str, int]:
    """Simulator profile giving about ``devices`` devices on the compat interface.

    minimal: 3 (PFRU, LFA, UEFI); default: 7; scale S: 7 + 2S (S LFA images, S ESRT
    entries; S fwctl nodes too, which fwupd clients do not see).
    """
    if devices <= 3:
        return "minimal", 0
    return "scale", max(0, round((devices - 7) / 2))


def make_targets(scratch: str, bus: PrivateBus, devices: int, fwupd_ok: bool) -> list[Target]:
    targets = []
    if fwupd_ok:
        root = os.path.join(scratch, f"fwupd-{devices}")
        env = dict(bus.env())
        env.update(fwupd_root(root, max(1, devices - 1)))
        targets.append(
            Target(
                key=f"fwupd-{devices}",
                label="fwupd",
                argv=[FWUPD_BIN],
                env=env,
                name=FWUPD_NAME,
                state_dir=os.path.join(root, "var"),
                devices_wanted=devices,
                is_peer=True,
            )
        )
    profile, scale = livefw_profile(devices)
    for backend in BACKENDS:
        state = os.path.join(scratch, f"livefw-{backend}-{devices}")
        os.makedirs(state, exist_ok=True)
        conf = os.path.join(scratch, "livefw.conf")
        if not os.path.exists(conf):
            # never /etc/livefw; unsigned cabinets allowed (the staging test's own)
            os.makedirs(os.path.join(scratch, "remotes.d"), exist_ok=True)
            with open(conf, "w", encoding="utf-8") as f:
                f.write(
                    f'[install]\npki_dir = "{scratch}/pki"\nremotes_dir = "{scratch}/remotes.d"\n'
                    "only_trusted = false\n"
                )
        env = dict(bus.env())
        env["LIVEFW_DBUS_BACKEND"] = backend
        env.pop("JOURNAL_STREAM", None)
        argv = [
            sys.executable,
            "-m",
            "livefw",
            "--simulate",
            "--fwupd-compat",
            "--state-dir",
            state,
            "--bus-address",
            bus.address,
            "--config",
            conf,
            "--profile",
            profile,
            "--scale",
            str(scale),
        ]
        targets.append(
            Target(
                key=f"livefw-{backend}-{devices}",
                label=f"livefwd ({'dbus-fast' if backend == 'fast' else 'dbus-next'})",
                argv=argv,
                env=env,
                name=FWUPD_NAME,  # owned last: both APIs are up then
                state_dir=state,
                devices_wanted=devices,
                native=True,
                backend=backend,
            )
        )
    return targets


# ------------------------------------------------------------------------ D-Bus


class Harness:
    """The harness's bus connection, a NameOwnerChanged watcher and the daemons."""

    def __init__(self, bus: PrivateBus, scratch: str) -> None:
        self.private = bus
        self.scratch = scratch
        self.bus: Any = None
        self.waiters: list[tuple[str, bool, asyncio.Future[float]]] = []
        self.live: dict[int, subprocess.Popen[bytes]] = {}
        self.bus_pid = bus.proc.pid if bus.proc else None
        self.fd_bus: Any = None  # a connection that passes file descriptors (Install)
        self.payloads: dict[str, str] = {}

    async def connect(self) -> None:
        self.bus = await MessageBus(bus_address=self.private.address).connect()
        self.bus.add_message_handler(self._on_message)
        self.fd_bus = await MessageBus(
            bus_address=self.private.address, negotiate_unix_fd=True
        ).connect()

    def _on_message(self, msg: Any) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            now = time.perf_counter()
            name, _old, new = msg.body
            for waiter in list(self.waiters):
                if waiter[0] == name and bool(new) == waiter[1] and not waiter[2].done():
                    waiter[2].set_result(now)
                    self.waiters.remove(waiter)

    async def call(
        self,
        dest: str,
        path: str,
        iface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        unix_fds: Sequence[int] = (),
        bus: Any = None,
    ) -> Any:
        msg = Message(
            destination=dest,
            path=path,
            interface=iface,
            member=member,
            signature=signature,
            body=list(body),
            unix_fds=list(unix_fds),
        )
        reply = await (bus or self.bus).call(msg)
        if reply.message_type != MessageType.METHOD_RETURN:
            raise RuntimeError(f"{iface}.{member} on {dest}: {reply.error_name} {reply.body}")
        return reply

    async def watch(self, name: str) -> None:
        rule = (
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        await self.call(*DBUS, "AddMatch", "s", [rule])

    def expect(self, name: str, owned: bool) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((name, owned, fut))
        return fut

    async def launch(self, t: Target, log_name: str, argv: list[str] | None = None) -> Any:
        """Start ``t``; return (process, seconds from exec to its name being owned)."""
        owner = await self.call(*DBUS, "NameHasOwner", "s", [t.name])
        if owner.body[0]:
            raise RuntimeError(f"{t.name} is already owned before {t.key} starts")
        fut = self.expect(t.name, True)
        log_path = os.path.join(self.scratch, "logs", log_name)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "wb") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv or t.argv,
                env=t.env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.live[proc.pid] = proc
        deadline = t0 + 120
        while not fut.done():
            if proc.poll() is not None:
                self.live.pop(proc.pid, None)
                raise RuntimeError(f"{t.key} exited ({proc.returncode}) early; log {log_path}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{t.key} did not own {t.name} in 120 s; log {log_path}")
            await asyncio.wait([fut], timeout=0.05)
        return proc, fut.result() - t0

    async def stop(self, proc: subprocess.Popen[bytes], t: Target) -> float:
        gone = self.expect(t.name, False)
        t0 = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.perf_counter() - t0 < 15:
            await asyncio.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stopped = time.perf_counter() - t0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gone, 5)
        self.live.pop(proc.pid, None)
        return stopped

    def kill_all(self) -> None:
        for proc in list(self.live.values()):
            if proc.poll() is None:
                proc.terminate()
        for proc in list(self.live.values()):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live.clear()


# ------------------------------------------------------------------------ measurements


async def startup(h: Harness, t: Target) -> dict[str, Any]:
    """exec → name owned; empty state dir first (also creates the warm state), then warm."""
    out: dict[str, Any] = {}
    await h.watch(t.name)
    for series in ("empty", "warm"):
        samples, rss = [], []
        for run in range(START_RUNS):
            if series == "empty":
                wipe(t.state_dir)
            proc, seconds = await h.launch(t, f"{t.key}-start-{series}-{run}.log")
            await h.call(t.name, "/", "org.freedesktop.fwupd", "GetDevices")
            rss.append(read_mem(proc.pid)["VmRSS"] / 1024)
            await h.stop(proc, t)
            samples.append(seconds * 1e3)
            await asyncio.sleep(0.1)
        out[series] = {"ms": summary(samples), "rss_mib": summary(rss)}
        log(f"{t.key}: start {series} {mmm(out[series]['ms'])} ms")
    return out


async def latency(h: Harness, bus: Any, pid: int, call: tuple[Any, ...]) -> dict[str, Any]:
    dest, path, iface, member = call
    t0 = time.perf_counter()
    for _ in range(WARMUP):
        await h.call(dest, path, iface, member, bus=bus)
    per_call = (time.perf_counter() - t0) / WARMUP
    lat: list[float] = []
    cpu: list[float] = []
    rate: list[float] = []
    # slow calls (1,000 devices) get fewer repetitions: each repeat stays near REPEAT_BUDGET
    calls = max(20, min(CALLS, int(REPEAT_BUDGET / per_call)))
    for _ in range(REPEATS):
        gc.collect()
        a = cpu_snapshot(pid)
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            s = time.perf_counter_ns()
            await h.call(dest, path, iface, member, bus=bus)
            lat.append((time.perf_counter_ns() - s) / 1000)
        t1 = time.perf_counter_ns()
        d = cpu_delta(a, cpu_snapshot(pid))
        cpu.append(d["cpu_ms"] * 1000 / calls)
        rate.append(calls * 1e9 / (t1 - t0))
    return {
        "latency_us": summary(lat),
        "daemon_cpu_us": summary(cpu),
        "calls_per_s": summary(rate),
        "calls": calls * REPEATS + WARMUP,
        "per_repeat": calls,
    }


async def inflight(h: Harness, bus: Any, call: tuple[Any, ...], calls: int) -> dict[str, Any]:
    dest, path, iface, member = call
    per = max(2, calls // CONCURRENCY)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in range(per):
            try:
                await h.call(dest, path, iface, member, bus=bus)
            except RuntimeError:
                errors += 1

    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(CONCURRENCY)]), 600)
        rates.append(per * CONCURRENCY / (time.perf_counter() - t0))
    return {"calls_per_s": summary(rates), "errors": errors, "calls": per * CONCURRENCY * REPEATS}


def calls_for(t: Target) -> dict[str, tuple[str, str, str, str]]:
    calls = {
        "Ping": (t.name, "/", "org.freedesktop.DBus.Peer", "Ping"),
        "GetDevices": (FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices"),
    }
    if t.native:
        calls["GetManagedObjects"] = (
            LIVEFW_NAME,
            LIVEFW_PATH,
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
        )
    return calls


async def steady(h: Harness, t: Target, extra_steps: bool) -> dict[str, Any]:
    """One long-running daemon: memory, idle, latency and throughput, memory again."""
    res: dict[str, Any] = {}
    proc, _ = await h.launch(t, f"{t.key}-steady.log")
    pid = proc.pid
    calls_made = 0
    try:
        await asyncio.sleep(2)
        reply = await h.call(FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
        res["devices"] = len(reply.body[0])
        res["reply_bytes"] = len(reply._marshall(False))
        calls_made += 1
        res["mem_start"] = read_mem(pid)
        await asyncio.sleep(1)
        a = cpu_snapshot(pid)
        idle_seconds = IDLE_SECONDS if extra_steps else min(IDLE_SECONDS, 10)
        await asyncio.sleep(idle_seconds)
        res["idle"] = cpu_delta(a, cpu_snapshot(pid))
        log(
            f"{t.key}: {res['devices']} devices, idle {idle_seconds:.0f} s: "
            f"{res['idle']['cpu_ms']:.2f} ms CPU, {res['idle']['wakeups']} wake-ups"
        )
        res["latency"] = {}
        res["inflight"] = {}
        for pin in PIN_MODES:
            apply_pin(pin, [pid, *([h.bus_pid] if h.bus_pid else [])])
            try:
                bus = await MessageBus(bus_address=h.private.address).connect()
                try:
                    for label, call in calls_for(t).items():
                        r = await latency(h, bus, pid, call)
                        calls_made += r["calls"]
                        res["latency"].setdefault(pin, {})[label] = r
                        if label != "Ping":
                            c = await inflight(h, bus, call, r["per_repeat"])
                            calls_made += c["calls"]
                            res["inflight"].setdefault(pin, {})[label] = c
                        log(
                            f"{t.key}: pin={pin} {label} {mmm(r['latency_us'], '{:.0f}')} µs, "
                            f"daemon CPU {r['daemon_cpu_us']['median']:.0f} µs/call"
                        )
                finally:
                    bus.disconnect()
            finally:
                apply_pin("none", [pid, *([h.bus_pid] if h.bus_pid else [])])
        if extra_steps:
            # top up to MEM_CALLS calls (the cheapest useful one: compat GetDevices)
            while calls_made < MEM_CALLS:
                await h.call(FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
                calls_made += 1
        res["calls_made"] = calls_made
        res["mem_after"] = read_mem(pid)
    finally:
        res["stop_ms"] = await h.stop(proc, t) * 1e3
    return res


# ------------------------------------------------------------------------ staging


def _prepare_machine(path: str) -> None:
    """An ESP with room for the capsule and a PFRT log buffer that has wrapped (full).

    The default machine's ESP is 64 MiB (staging needs twice the capsule) and its
    telemetry has only the boot records; both are simulator state in machine.json.
    """
    with open(path, encoding="utf-8") as f:
        machine = json.load(f)
    machine["components"]["uefi_capsule"]["esp_size"] = 1 << 30
    pfru = machine["components"]["pfru"]
    size = pfru["telemetry_size"]
    for key, ring in pfru["rings"].items():
        text, index = "", 0
        while len(text) < size:
            index += 1
            text += f"[{index:06d}] INFO    bench record {index} of log {key}\n"
        ring["data"] = text[:size]
        ring["head"] = 0
        ring["rollover"] = max(1, ring.get("rollover", 0))
    pfru["telemetry_started"] = True
    pfru["sequence"] = max(pfru.get("sequence", 0), 100_000)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(machine, f)
    os.replace(path + ".tmp", path)


async def extras(h: Harness, t: Target) -> dict[str, Any]:
    """Staging and telemetry on the simulator's default machine (UEFI ESP, PFRT running)."""
    res: dict[str, Any] = {}
    wipe(t.state_dir)
    argv = list(t.argv)
    argv[argv.index("--profile") + 1] = "default"
    argv[argv.index("--scale") + 1] = "0"
    proc, _ = await h.launch(t, f"{t.key}-extras-create.log", argv)
    await h.stop(proc, t)
    _prepare_machine(os.path.join(t.state_dir, "sim", "machine.json"))
    proc, _ = await h.launch(t, f"{t.key}-extras.log", argv)
    try:
        res["stage"] = await staging(h, t)
        res["telemetry"] = await telemetry(h, t, proc.pid)
    finally:
        await h.stop(proc, t)
        wipe(t.state_dir)
    return res


def _make_payloads(scratch: str) -> dict[str, str]:
    size = STAGE_MIB << 20
    raw = os.path.join(scratch, f"capsule-{STAGE_MIB}M.bin")
    with open(raw, "wb") as f:
        for _ in range(STAGE_MIB):
            f.write(os.urandom(1 << 20))  # incompressible, as real capsules mostly are
        f.truncate(size)
    return {"raw": raw}


def _next_version(version: str) -> str:
    """A version one above ``version`` in the same format (1.2.41 -> 1.2.42)."""
    head, _, last = version.rpartition(".")
    if last.isdigit():
        return f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
    return "99"


async def _device_id(h: Harness, plugin: str) -> str:
    reply = await h.call(LIVEFW_NAME, LIVEFW_PATH, "org.livefw.Daemon1.Manager", "GetDevices")
    for device in reply.body[0]:
        if device["Plugin"].value == plugin:
            return str(device["Id"].value)
    raise RuntimeError(f"no {plugin} device")


async def _guid_of(h: Harness, device_id: str) -> tuple[str, str]:
    reply = await h.call(
        LIVEFW_NAME, LIVEFW_PATH, "org.livefw.Daemon1.Manager", "GetDevice", "s", [device_id]
    )
    info = reply.body[0]
    guids = info.get("Guids")
    return str(guids.value[0]) if guids else "", str(info["Version"].value)


def floor_cp_sha256(src: str, scratch: str) -> float:
    dst = os.path.join(scratch, "floor-copy.bin")
    t0 = time.perf_counter()
    subprocess.run(["cp", src, dst], check=True)
    subprocess.run(["sha256sum", dst], check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    os.unlink(dst)
    return seconds


async def staging(h: Harness, t: Target) -> dict[str, Any]:
    """Install (stage) a 64 MiB capsule on the simulated EC, raw and as a cabinet."""
    out: dict[str, Any] = {}
    device = await _device_id(h, STAGE_PLUGIN)
    guid, version = await _guid_of(h, device)
    raw = h.payloads["raw"]
    cab = os.path.join(h.scratch, f"capsule-{STAGE_MIB}M.cab")
    if not os.path.exists(cab):
        with open(raw, "rb") as f:
            payload = f.read()
        metainfo = make_metainfo(
            appstream_id="org.livefw.bench.ec",
            guids=[guid],
            version=_next_version(version),
            payload_name="firmware.bin",
            payload=payload,
            name="Bench EC",
        )
        with open(cab, "wb") as f:
            f.write(make_cabinet({"firmware.bin": payload, "firmware.metainfo.xml": metainfo}))
        del payload
    for kind, path in (("raw", raw), ("cabinet", cab)):
        times, floors, errors = [], [], []
        for _ in range(STAGE_RUNS):
            floors.append(floor_cp_sha256(path, h.scratch))
            fd = os.open(path, os.O_RDONLY)
            try:
                t0 = time.perf_counter()
                try:
                    await h.call(
                        LIVEFW_NAME,
                        LIVEFW_PATH,
                        "org.livefw.Daemon1.Manager",
                        "Install",
                        "sha{sv}",
                        [device, 0, {"filename": Variant("s", os.path.basename(path))}],
                        unix_fds=[fd],
                        bus=h.fd_bus,
                    )
                    times.append(time.perf_counter() - t0)
                except RuntimeError as error:
                    errors.append(str(error))
            finally:
                os.close(fd)
            with contextlib.suppress(RuntimeError):
                await h.call(
                    LIVEFW_NAME,
                    LIVEFW_PATH,
                    "org.livefw.Daemon1.Manager",
                    "Cancel",
                    "sa{sv}",
                    [device, {}],
                )
        out[kind] = {
            "bytes": os.path.getsize(path),
            "seconds": summary(times),
            "floor_seconds": summary(floors),
            "errors": errors[:3],
        }
        log(
            f"{t.key}: staging {kind}: {mmm(summary(times), '{:.3f}')} s, "
            f"floor {mmm(summary(floors), '{:.3f}')} s {errors[:1]}"
        )
    return out


async def telemetry(h: Harness, t: Target, pid: int) -> dict[str, Any]:
    """Read the whole PFRT telemetry buffer (org.livefw.Daemon1.PfruTelemetry.Read)."""
    reply = await h.call(
        LIVEFW_NAME, LIVEFW_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
    )
    found = [
        (path, iface)
        for path, ifaces in reply.body[0].items()
        for iface in ifaces
        if "Telemetry" in iface
    ]
    if not found:
        return {"error": "no telemetry interface exported"}
    path, iface = found[0]
    info = await h.call(LIVEFW_NAME, path, iface, "GetDataInfo")
    sizes, times, cpu = [], [], []
    pings = []
    for _ in range(max(20, CALLS // 10)):
        a = cpu_snapshot(pid)
        t0 = time.perf_counter()
        r = await h.call(LIVEFW_NAME, path, iface, "Read")
        times.append((time.perf_counter() - t0) * 1e6)
        cpu.append(cpu_delta(a, cpu_snapshot(pid))["cpu_ms"] * 1000)
        sizes.append(len(r.body[0]))
        t0 = time.perf_counter()
        await h.call(LIVEFW_NAME, path, "org.freedesktop.DBus.Peer", "Ping")
        pings.append((time.perf_counter() - t0) * 1e6)
    result = {
        "interface": iface,
        "max_data_size": int(info.body[0]["max-data-size"].value),
        "bytes": max(sizes),
        "latency_us": summary(times),
        "daemon_cpu_us": summary(cpu),
        "ping_us": summary(pings),
    }
    log(f"{t.key}: telemetry Read {result['bytes']} bytes {mmm(result['latency_us'], '{:.0f}')} µs")
    return result


# ------------------------------------------------------------------------ profile


async def profile(h: Harness, t: Target) -> dict[str, Any]:
    """cProfile of livefwd serving compat GetDevices at the largest size."""
    out_file = os.path.join(h.scratch, f"{t.key}.prof")
    argv = [t.argv[0], "-m", "cProfile", "-o", out_file, *t.argv[1:]]
    proc, _ = await h.launch(t, f"{t.key}-profile.log", argv)
    calls = 200 if not QUICK else 50
    try:
        for _ in range(calls):
            await h.call(FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
        for _ in range(calls // 4):
            await h.call(
                LIVEFW_NAME, LIVEFW_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
            )
    finally:
        await h.stop(proc, t)
    if not os.path.exists(out_file):
        return {"error": "no profile written"}
    stats = pstats.Stats(out_file)
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        filename, line, name = func
        rows.append((tt, ct, nc, f"{os.path.basename(filename)}:{line}({name})"))
    total = sum(r[0] for r in rows)
    top_tt = sorted(rows, reverse=True)[:15]
    return {
        "calls": {"compat GetDevices": calls, "GetManagedObjects": calls // 4},
        "total_s": total,
        "top_self": [
            {"self_s": r[0], "cum_s": r[1], "ncalls": r[2], "where": r[3]} for r in top_tt
        ],
    }


# ------------------------------------------------------------------------ report


def machine_info() -> dict[str, Any]:
    def deb(pkg: str) -> str:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
        )
        return r.stdout.strip() or "—"

    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError), open("/etc/os-release", encoding="utf-8") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')

    def pyver(mod: str) -> str:
        try:
            from importlib.metadata import version

            return version(mod)
        except Exception:
            return "not installed"

    return {
        "os": os_name,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "fwupd": deb("fwupd"),
        "dbus-daemon": deb("dbus-daemon"),
        "dbus-next": pyver("dbus-next"),
        "dbus-fast": pyver("dbus-fast"),
        "livefw": pyver("livefw"),
        "client": f"dbus-{CLIENT_LIB}",
    }


def _get(d: Any, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def write_report(results: dict[str, Any], path: str) -> None:
    m = results["machine"]
    sizes = results["sizes"]
    by = results["targets"]  # key -> result
    labels = results["labels"]
    lines: list[str] = []
    w = lines.append
    w("# livefwd beside fwupd: benchmark report")
    w("")
    w(
        f"Generated {results['generated']} by `make bench` (`bench/run.py`"
        f"{', QUICK=1' if results['quick'] else ''}; wall time {results['wall_s']:.0f} s)."
    )
    w("")
    w("## Machine and versions")
    w("")
    w(f"- {m['os']}, kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu']}), {m['mem_gib']} GiB")
    w(
        f"- fwupd {m['fwupd']} (Debian), dbus-daemon {m['dbus-daemon']}, Python {m['python']}, "
        f"dbus-next {m['dbus-next']}, dbus-fast {m['dbus-fast']}, livefw {m['livefw']}"
    )
    w(
        f"- harness client: {m['client']}; private system-type dbus-daemon; python-dbusmock "
        "polkitd (allow all); fwupd on a fake root (fake ESRT, TestDevices=true, cpu plugin "
        "disabled); livefwd `--simulate --fwupd-compat`, logging at info level"
    )
    w(
        f"- parameters: sizes {sizes}, {CALLS} sequential calls × {REPEATS} after {WARMUP} "
        f"warm-up, {CONCURRENCY} in flight, {START_RUNS} starts per series, idle "
        f"{IDLE_SECONDS:.0f} s, memory after {MEM_CALLS} calls, {STAGE_MIB} MiB × {STAGE_RUNS} "
        "staging runs"
    )
    w("")
    w(
        "Figures are min / median / max. Compare ratios from the same run: on this kind "
        "of VM a cross-CPU wake-up costs tens of µs, so `pin=none` figures move with "
        "scheduler placement; `pin=one` pins client, dbus-daemon and daemon to one CPU."
    )
    w("")
    # --------------------------------------------------------------- targets
    w("## Targets (issue 10, item 3)")
    w("")
    w("| target | result | detail |")
    w("|---|---|---|")
    for row in results["verdicts"]:
        w(f"| {row['target']} | **{row['verdict']}** | {row['detail']} |")
    w("")
    # --------------------------------------------------------------- start-up
    w("## Start-up: exec → bus name owned (ms)")
    w("")
    w(
        "livefwd is ready when it owns `org.freedesktop.fwupd` (it owns "
        "`org.livefw.Daemon1` first). *empty*: empty state dir (livefwd creates its "
        "simulated machine there; fwupd its history database and client certificate); "
        "*warm*: an ordinary restart."
    )
    w("")
    w("| devices | target | empty state | warm | warm / fwupd warm | RSS at ready MiB |")
    w("|---|---|---|---|---|---|")
    for n in sizes:
        peer = _get(by, f"fwupd-{n}", "start", "warm", "ms", "median")
        for key, label in labels[str(n)]:
            s = _get(by, key, "start")
            if not s:
                continue
            w(
                f"| {n} | {label} | {mmm(s['empty']['ms'])} | {mmm(s['warm']['ms'])} | "
                f"{ratio(s['warm']['ms']['median'], peer)} | {mmm(s['warm']['rss_mib'])} |"
            )
    w("")
    # --------------------------------------------------------------- latency
    w("## Round trips (µs): sequential, and 16 in flight")
    w("")
    w(
        "Floor: `org.freedesktop.DBus.Peer.Ping` to the same daemon (answered inside its "
        "D-Bus library). CPU = daemon schedstat time per call."
    )
    w("")
    w(
        "| devices | target | pin | call | latency µs | / Ping | / fwupd | daemon CPU µs/call "
        "| calls/s | 16 in flight calls/s | errors |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for key, label in labels[str(n)]:
            for pin in PIN_MODES:
                lat = _get(by, key, "steady", "latency", pin) or {}
                ping = _get(lat, "Ping", "latency_us", "median")
                for call, r in lat.items():
                    med = r["latency_us"]["median"]
                    peer = _get(
                        by, f"fwupd-{n}", "steady", "latency", pin, call, "latency_us", "median"
                    )
                    inf = _get(by, key, "steady", "inflight", pin, call) or {}
                    w(
                        f"| {_get(by, key, 'steady', 'devices')} | {label} | {pin} | {call} | "
                        f"{mmm(r['latency_us'], '{:.0f}')} | "
                        f"{ratio(med, ping) if call != 'Ping' else '1'} | "
                        f"{ratio(med, peer) if 'fwupd' not in key else '1'} | "
                        f"{mmm(r['daemon_cpu_us'], '{:.0f}')} | {r['calls_per_s']['median']:.0f} | "
                        f"{mmm(inf.get('calls_per_s'), '{:.0f}')} | {inf.get('errors', '—')} |"
                    )
    w("")
    # --------------------------------------------------------------- scaling
    w("## Cost per device (compat GetDevices, pin=one, median)")
    w("")
    w(
        "Slope = extra latency (and daemon CPU) per extra device between sizes; linear "
        "means the two slopes are close."
    )
    w("")
    w("| target | µs/device 2→50 | µs/device 50→1000 | CPU µs/device 50→1000 | slope / fwupd |")
    w("|---|---|---|---|---|")
    for row in results["slopes"]:
        w(
            f"| {row['label']} | {row['lat_lo']:.1f} | {row['lat_hi']:.1f} | "
            f"{row['cpu_hi']:.1f} | {row['vs_fwupd']} |"
        )
    w("")
    # --------------------------------------------------------------- memory, idle
    w("## Memory (MiB) and idle")
    w("")
    w(
        f"After start (+2 s) and after {MEM_CALLS} calls (at the smallest size; at the "
        f"others after the latency runs). Idle: one window with no calls ({IDLE_SECONDS:.0f} s "
        "at the smallest size, at most 10 s at the others); wake-ups = context switches "
        "of all the daemon's threads."
    )
    w("")
    w(
        "| devices | target | RSS start | PSS start | RSS after calls | PSS after calls | "
        "calls | RSS / fwupd | idle CPU ms | idle wake-ups | threads |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        peer = _get(by, f"fwupd-{n}", "steady", "mem_after", "VmRSS")
        for key, label in labels[str(n)]:
            s = _get(by, key, "steady")
            if not s or "mem_start" not in s:
                continue
            a, b = s["mem_start"], s.get("mem_after", {})
            w(
                f"| {s.get('devices')} | {label} | {a['VmRSS'] / 1024:.1f} | "
                f"{a.get('Pss', 0) / 1024:.1f} | {b.get('VmRSS', 0) / 1024:.1f} | "
                f"{b.get('Pss', 0) / 1024:.1f} | {s.get('calls_made')} | "
                f"{ratio(b.get('VmRSS'), peer)} | "
                f"{s['idle']['cpu_ms']:.2f} in {s['idle']['seconds']:.0f} s | "
                f"{s['idle']['wakeups']} | {a.get('Threads')} |"
            )
    w("")
    # --------------------------------------------------------------- staging
    w(f"## Staging a {STAGE_MIB} MiB capsule (s)")
    w("")
    w(
        "`Install` on the simulated UEFI System Firmware, fd passed over D-Bus, to the "
        "reply (read, validate, checksum, write to the simulated ESP, set UEFI variables), "
        "then `Cancel`. Floor: `cp` of the same file plus `sha256sum` of the copy. "
        "Throughput ratio = floor time / staging time (target ≥ 0.8)."
    )
    w("")
    w("| target | payload | bytes | staging s | floor s | throughput / floor | errors |")
    w("|---|---|---|---|---|---|---|")
    for key, label in labels[str(sizes[0])]:
        st = _get(by, key, "steady", "stage") or {}
        for kind, r in st.items():
            med, fl = _get(r, "seconds", "median"), _get(r, "floor_seconds", "median")
            w(
                f"| {label} | {kind} | {r['bytes']} | {mmm(r['seconds'], '{:.3f}')} | "
                f"{mmm(r['floor_seconds'], '{:.3f}')} | {ratio(fl, med)} | "
                f"{'; '.join(r['errors']) or '0'} |"
            )
    w("")
    w("## PFRU telemetry: reading the full buffer")
    w("")
    w("| target | interface | bytes | Read µs | / Ping | daemon CPU µs | MB/s |")
    w("|---|---|---|---|---|---|---|")
    for key, label in labels[str(sizes[0])]:
        tel = _get(by, key, "steady", "telemetry")
        if not tel or "error" in tel:
            if tel:
                w(f"| {label} | — | — | {tel['error']} | — | — | — |")
            continue
        med = tel["latency_us"]["median"]
        w(
            f"| {label} | `{tel['interface']}` | {tel['bytes']} | "
            f"{mmm(tel['latency_us'], '{:.0f}')} | {ratio(med, tel['ping_us']['median'])} | "
            f"{mmm(tel['daemon_cpu_us'], '{:.0f}')} | {tel['bytes'] / med:.1f} |"
        )
    w("")
    # --------------------------------------------------------------- backends
    w("## D-Bus backend: dbus-next vs dbus-fast (same daemon, same run)")
    w("")
    w("| devices | call | pin | dbus-next µs | dbus-fast µs | fast / next | CPU next | CPU fast |")
    w("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for pin in PIN_MODES:
            nxt = _get(by, f"livefw-next-{n}", "steady", "latency", pin) or {}
            fst = _get(by, f"livefw-fast-{n}", "steady", "latency", pin) or {}
            for call in nxt:
                if call not in fst:
                    continue
                a, b = nxt[call], fst[call]
                w(
                    f"| {n} | {call} | {pin} | {a['latency_us']['median']:.0f} | "
                    f"{b['latency_us']['median']:.0f} | "
                    f"{ratio(b['latency_us']['median'], a['latency_us']['median'])} | "
                    f"{a['daemon_cpu_us']['median']:.0f} | {b['daemon_cpu_us']['median']:.0f} |"
                )
    w("")
    # --------------------------------------------------------------- profile
    prof = results.get("profile")
    if prof:
        w("## Profile of the slowest path")
        w("")
        if "error" in prof:
            w(prof["error"])
        else:
            w(
                f"cProfile of `{prof['target']}` ({prof['devices']} devices) serving "
                f"{prof['calls']['compat GetDevices']} compat `GetDevices` and "
                f"{prof['calls']['GetManagedObjects']} `GetManagedObjects` (the whole process, "
                f"start-up included; {prof['total_s']:.2f} s of profiled time). Top 15 by "
                "own time:"
            )
            w("")
            w("| own s | cumulative s | calls | function |")
            w("|---|---|---|---|")
            for r in prof["top_self"]:
                w(f"| {r['self_s']:.3f} | {r['cum_s']:.3f} | {r['ncalls']} | `{r['where']}` |")
        w("")
    notes_path = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes_path):
        with open(notes_path, encoding="utf-8") as f:
            w(f.read().rstrip())
        w("")
    if results["errors"]:
        w("## Errors during the run")
        w("")
        for e in results["errors"]:
            w(f"- {e}")
        w("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------------ verdicts


def verdicts(results: dict[str, Any]) -> None:
    by, sizes = results["targets"], results["sizes"]
    out: list[dict[str, str]] = []
    backends = [b for b in BACKENDS]

    def med(*keys: Any) -> float | None:
        return _get(by, *keys, "median")

    def verdict(oks: list[tuple[str, bool]]) -> str:
        if not oks:
            return "n/a"
        bad = {name for name, ok in oks if not ok}
        good = sorted({name for name, ok in oks if ok} - bad)
        if not bad:
            return "met"
        if not good:
            return "not met"
        return "met with " + ", ".join(f"dbus-{name}" for name in good) + " only"

    for n in (2, 50):
        if n not in sizes:
            continue
        peer = med(f"fwupd-{n}", "steady", "latency", "one", "GetDevices", "latency_us")
        parts, oks = [], []
        for b in backends:
            ours = med(f"livefw-{b}-{n}", "steady", "latency", "one", "GetDevices", "latency_us")
            if ours is not None and peer is not None:
                oks.append((b, ours <= peer))
                parts.append(f"dbus-{b}: {ours:.0f} µs vs fwupd {peer:.0f} µs ({ours / peer:.2f}×)")
        out.append(
            {
                "target": f"GetDevices ≤ fwupd at {n} devices (pin=one, median)",
                "verdict": verdict(oks),
                "detail": "; ".join(parts),
            }
        )
    slopes = {row["key"]: row for row in results["slopes"]}
    parts, oks = [], []
    peer_slope = _get(slopes, "fwupd", "lat_hi")
    for b in backends:
        row = slopes.get(f"livefw-{b}")
        if row and peer_slope:
            linear = (
                row["lat_lo"] <= 2.0 * row["lat_hi"] + 5
                and row["lat_hi"] <= 2.0 * row["lat_lo"] + 5
            )
            oks.append((b, row["lat_hi"] < peer_slope and linear))
            parts.append(
                f"dbus-{b}: {row['lat_hi']:.1f} µs/device (2→50: {row['lat_lo']:.1f}) vs fwupd "
                f"{peer_slope:.1f}"
            )
    out.append(
        {
            "target": "cost per device linear to 1,000 devices, lower slope than fwupd",
            "verdict": verdict(oks),
            "detail": "; ".join(parts),
        }
    )
    n0 = sizes[0]
    peer = med(f"fwupd-{n0}", "start", "warm", "ms")
    parts, oks = [], []
    for b in backends:
        ours = med(f"livefw-{b}-{n0}", "start", "warm", "ms")
        if ours is not None and peer:
            oks.append((b, ours <= 2 * peer))
            parts.append(f"dbus-{b}: {ours:.0f} ms vs fwupd {peer:.0f} ms ({ours / peer:.2f}×)")
    out.append(
        {
            "target": f"start-up within 2× of fwupd's warm start ({n0} devices)",
            "verdict": verdict(oks),
            "detail": "; ".join(parts),
        }
    )
    peer_rss = _get(by, f"fwupd-{n0}", "steady", "mem_after", "VmRSS")
    parts, oks = [], []
    for b in backends:
        ours = _get(by, f"livefw-{b}-{n0}", "steady", "mem_after", "VmRSS")
        if ours and peer_rss:
            oks.append((b, ours <= 1.5 * peer_rss))
            parts.append(
                f"dbus-{b}: {ours / 1024:.1f} MiB vs fwupd {peer_rss / 1024:.1f} MiB "
                f"({ours / peer_rss:.2f}×)"
            )
    out.append(
        {
            "target": f"RSS within 1.5× of fwupd's ({n0} devices, after {MEM_CALLS} calls)",
            "verdict": verdict(oks),
            "detail": "; ".join(parts),
        }
    )
    parts, oks = [], []
    for key, res in by.items():
        idle = _get(res, "steady", "idle")
        if idle and key.startswith("livefw"):
            oks.append((key, idle["wakeups"] == 0))
            parts.append(f"{key}: {idle['wakeups']}")
        elif idle:
            parts.append(f"{key} (peer): {idle['wakeups']}")
    out.append(
        {
            "target": f"zero wake-ups at idle ({IDLE_SECONDS:.0f} s)",
            "verdict": verdict(oks),
            "detail": "; ".join(parts),
        }
    )
    parts, oks = [], []
    for b in backends:
        for kind in ("raw", "cabinet"):
            r = _get(by, f"livefw-{b}-{n0}", "steady", "stage", kind)
            t, fl = _get(r, "seconds", "median"), _get(r, "floor_seconds", "median")
            if t and fl:
                oks.append((b, fl / t >= 0.8))
                parts.append(f"dbus-{b} {kind}: {fl / t:.2f}×")
            elif r:
                oks.append((b, False))
                parts.append(f"dbus-{b} {kind}: failed ({'; '.join(r['errors'])[:200]})")
    out.append(
        {
            "target": f"staging ≥ 0.8× the cp + sha256sum floor ({STAGE_MIB} MiB)",
            "verdict": verdict(oks),
            "detail": "; ".join(parts),
        }
    )
    results["verdicts"] = out


def slopes(results: dict[str, Any]) -> None:
    by, sizes = results["targets"], results["sizes"]
    rows = []
    if len(sizes) < 3:
        results["slopes"] = rows
        return
    lo, mid, hi = sizes[0], sizes[1], sizes[-1]
    peer_hi = None
    for prefix, label in [("fwupd", "fwupd")] + [
        (f"livefw-{b}", f"livefwd (dbus-{b})") for b in BACKENDS
    ]:
        pts = {}
        for n in (lo, mid, hi):
            s = _get(by, f"{prefix}-{n}", "steady")
            lat = _get(s, "latency", "one", "GetDevices")
            if s and lat:
                pts[n] = (s["devices"], lat["latency_us"]["median"], lat["daemon_cpu_us"]["median"])
        if len(pts) < 3:
            continue
        (d0, l0, _c0), (d1, l1, c1), (d2, l2, c2) = pts[lo], pts[mid], pts[hi]
        row = {
            "key": prefix,
            "label": label,
            "lat_lo": (l1 - l0) / max(1, d1 - d0),
            "lat_hi": (l2 - l1) / max(1, d2 - d1),
            "cpu_hi": (c2 - c1) / max(1, d2 - d1),
        }
        if prefix == "fwupd":
            peer_hi = row["lat_hi"]
        row["vs_fwupd"] = ratio(row["lat_hi"], peer_hi) if peer_hi else "—"
        rows.append(row)
    results["slopes"] = rows


# ------------------------------------------------------------------------ main


async def main_async(scratch: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    fwupd_problem = ensure_fwupd()
    fwupd_ok = fwupd_problem is None and os.environ.get("FWUPD", "1") != "0"
    errors: list[str] = [fwupd_problem] if fwupd_problem else []
    os.makedirs(os.path.join(scratch, "bus"), exist_ok=True)
    bus = PrivateBus(os.path.join(scratch, "bus")).start()
    polkit = PolkitMock(bus).start()
    polkit.allow_unknown()
    h = Harness(bus, scratch)
    await h.connect()
    h.payloads = _make_payloads(scratch)
    results: dict[str, Any] = {
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": QUICK,
        "machine": machine_info(),
        "sizes": SIZES,
        "targets": {},
        "labels": {},
        "errors": errors,
    }
    try:
        for n in SIZES:
            targets = make_targets(scratch, bus, n, fwupd_ok)
            results["labels"][str(n)] = [(t.key, t.label) for t in targets]
            for t in targets:
                res: dict[str, Any] = {"label": t.label}
                results["targets"][t.key] = res
                log(f"{t.key}: start-up series")
                try:
                    res["start"] = await startup(h, t)
                    res["steady"] = await steady(h, t, extra_steps=n == SIZES[0])
                    if n == SIZES[0] and t.native:
                        log(f"{t.key}: staging and telemetry (default profile)")
                        res["steady"].update(await extras(h, t))
                except Exception as error:  # keep what was measured, say what failed
                    errors.append(f"{t.key}: {type(error).__name__}: {error}")
                    log(f"{t.key}: FAILED: {error}")
        if os.environ.get("PROFILE", "1") == "1":
            n = SIZES[-1]
            t = next(t for t in make_targets(scratch, bus, n, False) if t.backend == BACKENDS[0])
            log(f"{t.key}: cProfile run")
            try:
                prof = await profile(h, t)
                prof.update({"target": t.label, "devices": n})
                results["profile"] = prof
            except Exception as error:
                errors.append(f"profile: {type(error).__name__}: {error}")
    finally:
        h.kill_all()
        with contextlib.suppress(Exception):
            h.bus.disconnect()
            h.fd_bus.disconnect()
        polkit.stop()
        bus.stop()
    results["wall_s"] = time.perf_counter() - t_start
    slopes(results)
    verdicts(results)
    return results


def main() -> int:
    # a quick run never overwrites the full run's report
    suffix = "-quick" if QUICK else ""
    report = os.environ.get("REPORT", os.path.join(HERE, f"REPORT{suffix}.md"))
    results_json = os.path.join(os.path.dirname(report), f"results{suffix}.json")
    if sys.argv[1:] == ["--report"]:
        # rewrite REPORT.md from the last results.json (e.g. after editing NOTES.md)
        with open(results_json, encoding="utf-8") as f:
            results = json.load(f)
        if results.get("quick") == QUICK:  # same parameters: verdicts from this code
            slopes(results)
            verdicts(results)
        write_report(results, report)
        log(f"report: {report}")
        return 0
    scratch = tempfile.mkdtemp(prefix="livefw-bench.")
    keep = os.environ.get("KEEP", "0") == "1"
    log(f"scratch {scratch}{' (kept)' if keep else ''}; QUICK={int(QUICK)}")
    try:
        results = asyncio.run(main_async(scratch))
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.dirname(report), exist_ok=True)
    with open(results_json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=str)
    write_report(results, report)
    log(f"report: {report}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
