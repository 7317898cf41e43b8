# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Interleaved A/B of livefwd's GetDevices and GetManagedObjects (and fwupd's GetDevices).

Two source trees with their own ``.venv`` (e.g. main in a scratch worktree and a
branch) are started one after the other on the same private bus, round after round,
in alternating order, pinned with the bus to one CPU (``PIN=one``); each round
measures the median round trip and the daemon's CPU per call (schedstat of all its
threads, the steadier figure on a shared machine). ``FWUPD=1`` adds Debian's fwupd
(bench/fwupd.py's fake root) as ``F`` in the same rounds::

    git -C /work/main worktree add --detach /tmp/base main && make -C /tmp/base venv
    TREES="A=/tmp/base B=$PWD" SIZES="3 51 999" ROUNDS=3 FWUPD=1 .venv/bin/python bench/ab.py

Knobs: TREES, SIZES, ROUNDS, BUDGET (seconds of calls per measurement), AB_CALLS
(GetDevices GetManagedObjects), PIN (one/none), PROFILE_OUT (a folder: the second
tree runs under cProfile there), FWUPD=1, AB_BACKEND (livefwd's: fast or next),
INFLIGHT (1: after the timed calls, each call 16 at once, as the steady series does).
Prints one line per figure with each tree's median and range over the rounds and the
ratios B/A and to fwupd's GetDevices; ``RSS-after-start`` is the daemon's VmRSS
SETTLE_SECONDS after it owns its name and one GetDevices (as bench/measure.py reads
it), ``RSS-after-calls`` once its calls are done.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.config import CONCURRENCY, SETTLE_SECONDS  # first: it sets the client's D-Bus backend
from bench.harness import Harness
from bench.procfs import apply_pin, cpu_delta, cpu_snapshot, read_mem
from bench.targets import Target, fwupd_target, livefw_target
from livefw.bus.backend import marshal
from livefw.testing import PrivateBus

TREES = dict(item.split("=", 1) for item in os.environ.get("TREES", "").split())
SIZES = [int(x) for x in os.environ.get("SIZES", "3").split()]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BUDGET = float(os.environ.get("BUDGET", "1.5"))
CALLS = os.environ.get("AB_CALLS", "GetDevices GetManagedObjects").split()
PIN = os.environ.get("PIN", "one")
PROFILE_OUT = os.environ.get("PROFILE_OUT", "")
WITH_FWUPD = os.environ.get("FWUPD", "0") == "1"
INFLIGHT = os.environ.get("INFLIGHT", "1") == "1"
BACKEND = os.environ.get("AB_BACKEND", "fast")

CALL = {
    "GetDevices": ("org.freedesktop.fwupd", "/", "org.freedesktop.fwupd", "GetDevices"),
    "GetManagedObjects": (
        "org.livefw.Daemon1",
        "/org/livefw/Daemon1",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ),
}


def _target(scratch: str, bus: PrivateBus, label: str, size: int) -> Target:
    if label == "F":
        return fwupd_target(scratch, bus, size, key=f"F-{size}", label="F")
    python = os.path.join(TREES[label], ".venv", "bin", "python")
    t = livefw_target(scratch, bus, size, BACKEND, python, key=f"{label}-{size}", label=label)
    if PROFILE_OUT and label == list(TREES)[-1]:
        out = os.path.join(PROFILE_OUT, f"{label}-{size}.prof")
        t.argv = [python, "-m", "cProfile", "-o", out, *t.argv[1:]]
    return t


async def _measure(h: Harness, pid: int, call: tuple[str, str, str, str]) -> tuple[float, float]:
    """(median round trip µs, daemon CPU µs per call) of about BUDGET seconds of calls."""
    t0 = time.perf_counter()
    for _ in range(20):
        await h.call(*call)
    calls = max(20, min(2000, int(BUDGET / ((time.perf_counter() - t0) / 20))))
    gc.collect()
    before = cpu_snapshot(pid)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        await h.call(*call)
        latencies.append((time.perf_counter_ns() - start) / 1000)
    cpu = cpu_delta(before, cpu_snapshot(pid))["cpu_ms"] * 1000 / calls
    return statistics.median(latencies), cpu


async def main() -> None:
    if not TREES:
        raise SystemExit('TREES="A=/path/to/tree B=/path/to/other" is required')
    scratch = tempfile.mkdtemp(prefix="livefw-ab.")
    bus = PrivateBus().start()
    h = Harness(bus, scratch)
    await h.connect()
    gc.disable()
    figures: dict[str, dict[str, list[float]]] = {}
    sizes: dict[str, dict[str, int]] = {}
    labels = [*TREES, *(["F"] if WITH_FWUPD else [])]
    try:
        await h.watch("org.freedesktop.fwupd")
        for size in SIZES:
            targets = {label: _target(scratch, bus, label, size) for label in labels}
            for rnd in range(ROUNDS):
                for label in labels if rnd % 2 == 0 else labels[::-1]:
                    target = targets[label]
                    proc, _ = await h.launch(target, f"{label}-{size}-{rnd}.log")
                    # as the steady series reads it: settled, after one GetDevices
                    await asyncio.sleep(SETTLE_SECONDS)
                    await h.call(*CALL["GetDevices"])
                    figures.setdefault(f"{size} RSS-after-start MiB", {}).setdefault(
                        label, []
                    ).append(read_mem(proc.pid)["VmRSS"] / 1024)
                    apply_pin(PIN, [proc.pid, *([h.bus_pid] if h.bus_pid else [])])
                    for name in CALLS:
                        if label == "F" and name != "GetDevices":
                            continue
                        if rnd == 0:
                            reply: Any = await h.call(*CALL[name])
                            sizes.setdefault(f"{size} {name} bytes", {})[label] = len(
                                marshal(reply)
                            )
                        latency, cpu = await _measure(h, proc.pid, CALL[name])
                        figures.setdefault(f"{size} {name} latency µs", {}).setdefault(
                            label, []
                        ).append(latency)
                        figures.setdefault(f"{size} {name} daemon CPU µs", {}).setdefault(
                            label, []
                        ).append(cpu)
                    if label != "F" and INFLIGHT:
                        # the steady series' 16 in flight (bench/measure.py): their
                        # replies at once are what the memory figure has seen there
                        for name in CALLS:
                            await asyncio.gather(*[h.call(*CALL[name]) for _ in range(CONCURRENCY)])
                    figures.setdefault(f"{size} RSS-after-calls MiB", {}).setdefault(
                        label, []
                    ).append(read_mem(proc.pid)["VmRSS"] / 1024)
                    apply_pin("none", [h.bus_pid] if h.bus_pid else [])
                    await h.stop(proc, target)
    finally:
        h.close(bus)
        shutil.rmtree(scratch, ignore_errors=True)
    for key, by_label in sizes.items():
        print(key, by_label)
    for key, by_label in figures.items():
        size, name, *_ = key.split(" ")
        medians = {label: statistics.median(values) for label, values in by_label.items()}
        line = [key]
        for label, values in by_label.items():
            line.append(f"{label} {medians[label]:.1f} [{min(values):.1f}-{max(values):.1f}]")
        tree_labels = list(TREES)
        if len(tree_labels) == 2:
            a, b = tree_labels
            line.append(f"{b}/{a} {medians[b] / medians[a]:.2f}")
        if name.startswith("RSS") and "F" in medians:
            line += [f"{label}/F {medians[label] / medians['F']:.2f}" for label in TREES]
        peer = figures.get(key.replace(name, "GetDevices"), {}).get("F")
        if peer and not name.startswith("RSS"):
            line += [
                f"{label}/F(GetDevices) {medians[label] / statistics.median(peer):.2f}"
                for label in by_label
                if label != "F"
            ]
        print("  ".join(line))


if __name__ == "__main__":
    asyncio.run(main())
