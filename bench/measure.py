# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Start-up, round trips, in-flight throughput, memory and idle of one daemon."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from typing import Any

from bench.config import (
    CALLS,
    CONCURRENCY,
    FWUPD_NAME,
    IDLE_SECONDS,
    LIVEFW_NAME,
    LIVEFW_PATH,
    MEM_CALLS,
    PIN_MODES,
    REPEAT_BUDGET,
    REPEATS,
    SETTLE_SECONDS,
    START_RUNS,
    WARMUP,
    log,
)
from bench.fwupd import wipe
from bench.harness import Harness
from bench.procfs import apply_pin, cpu_delta, cpu_snapshot, read_mem
from bench.stats import mmm, summary
from bench.targets import Target
from livefw.bus.backend import MessageBus


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
    medians: list[float] = []
    for _ in range(REPEATS):
        gc.collect()
        a = cpu_snapshot(pid)
        t0 = time.perf_counter_ns()
        this: list[float] = []
        for _ in range(calls):
            s = time.perf_counter_ns()
            await h.call(dest, path, iface, member, bus=bus)
            this.append((time.perf_counter_ns() - s) / 1000)
        lat.extend(this)
        medians.append(statistics.median(this))
        t1 = time.perf_counter_ns()
        d = cpu_delta(a, cpu_snapshot(pid))
        cpu.append(d["cpu_ms"] * 1000 / calls)
        rate.append(calls * 1e9 / (t1 - t0))
    return {
        "latency_us": summary(lat),
        # one median per repeat: its spread is the run-to-run noise band of the figure
        "repeat_medians_us": summary(medians),
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
        await asyncio.sleep(SETTLE_SECONDS)
        reply = await h.call(FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
        res["devices"] = len(reply.body[0])
        res["reply_bytes"] = len(reply._marshall(False))
        calls_made += 1
        res["mem_start"] = read_mem(pid)
        await asyncio.sleep(SETTLE_SECONDS / 2)
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
