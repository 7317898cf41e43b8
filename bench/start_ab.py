#!/usr/bin/env python3
# ruff: noqa: ASYNC230
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Interleaved warm starts of livefwd from two or more source trees, fwupd and the floor.

Each tree with its own ``.venv`` (e.g. main in a scratch worktree and a branch) is
started on the same private bus, round after round, the order of the targets
reversed every other round (ABBA), so that load which drifts during the run weighs on
every target alike. ``FWUPD=1`` adds Debian's fwupd (bench/fwupd.py's fake root, as
many devices) as ``F``; ``FLOOR=1`` (the default) adds ``floor``, a minimal Python
D-Bus daemon on the first tree's venv (bench/floor_daemon.py: asyncio, dbus-fast and
structlog set up as livefwd sets them up, connects, exports one method, requests the
name), the start no Python daemon on these libraries goes under::

    git -C /work/main worktree add --detach /tmp/base main && make -C /tmp/base venv
    TREES="A=/tmp/base B=$PWD" SIZES="3 999" ROUNDS=10 FWUPD=1 .venv/bin/python bench/start_ab.py

Per start: wall time exec -> ``org.freedesktop.fwupd`` owned (the harness's
NameOwnerChanged), the daemon's CPU at that moment (schedstat of all its threads, read
as soon as the name is owned: the steadier figure on a shared machine), and its RSS
after one GetDevices. Each tree's livefw is byte-compiled first (the editable install
has no bytecode, and ``PYTHONDONTWRITEBYTECODE`` would make every start compile it).
One warm-up start per target and size is not counted (it creates the simulated machine
and fills the page cache).

Knobs: TREES (required), SIZES ("3"), ROUNDS (10), FWUPD (0), FLOOR (1), PIN ("none";
"one" pins the daemon and the bus to one CPU), OUT (a JSON file for the samples),
PROFILE_OUT (a folder: the last tree's starts run under cProfile there; their wall
times then measure the profiler too). Prints per size and target the median and
p25-p75 of each figure, the ratios of the medians to fwupd, to the floor and (two
trees) B/A.
"""

from __future__ import annotations

import asyncio
import gc
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.config import FWUPD_NAME, PIN_CPU, log  # first: it sets the client's backend
from bench.fwupd import ensure_fwupd
from bench.harness import Harness
from bench.procfs import apply_pin, cpu_delta, cpu_snapshot, read_mem
from bench.stats import summary
from bench.targets import Target, floor_target, fwupd_target, livefw_target
from livefw.testing import PrivateBus

TREES = dict(item.split("=", 1) for item in os.environ.get("TREES", "").split())
SIZES = [int(x) for x in os.environ.get("SIZES", "3").split()]
ROUNDS = int(os.environ.get("ROUNDS", "10"))
WITH_FWUPD = os.environ.get("FWUPD", "0") == "1"
WITH_FLOOR = os.environ.get("FLOOR", "1") == "1"
PIN = os.environ.get("PIN", "none")
OUT = os.environ.get("OUT", "")
PROFILE_OUT = os.environ.get("PROFILE_OUT", "")
FIGURES = (("wall_ms", "wall ms"), ("cpu_ms", "CPU ms"), ("rss_mib", "RSS MiB"))


def _python(tree: str) -> str:
    return os.path.join(os.path.abspath(tree), ".venv", "bin", "python")


def byte_compile(tree: str) -> None:
    """Each tree's livefw as its venv imports it (the editable build) gets its bytecode."""
    found = glob.glob(os.path.join(os.path.abspath(tree), "build", "__editable__.*", "livefw"))
    pkgs = found or [os.path.join(os.path.abspath(tree), "daemon")]
    subprocess.run([_python(tree), "-m", "compileall", "-q", *pkgs], check=True)


def _targets(scratch: str, bus: PrivateBus, size: int) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for label, tree in TREES.items():
        t = livefw_target(scratch, bus, size, "fast", _python(tree), f"{label}-{size}", label)
        if PROFILE_OUT and label == list(TREES)[-1]:
            out = os.path.join(PROFILE_OUT, f"{label}-{size}-%d.prof")
            t.argv = [t.argv[0], "-m", "cProfile", "-o", out, *t.argv[1:]]
        targets[label] = t
    if WITH_FWUPD:
        targets["F"] = fwupd_target(scratch, bus, size, key=f"F-{size}", label="F")
    if WITH_FLOOR:
        first = _python(next(iter(TREES.values())))
        targets["floor"] = floor_target(scratch, bus, first, key=f"floor-{size}")
    return targets


async def one_start(h: Harness, t: Target, log_name: str, argv: list[str]) -> dict[str, float]:
    """One start: wall to the name owned, CPU at that moment, RSS after a GetDevices."""
    proc, seconds = await h.launch(t, log_name, argv)
    try:
        cpu = cpu_delta({"t": 0.0, "tasks": {}}, cpu_snapshot(proc.pid))["cpu_ms"]
        apply_pin("none", [proc.pid])
        await h.call(FWUPD_NAME, "/", "org.freedesktop.fwupd", "GetDevices")
        rss = read_mem(proc.pid)["VmRSS"] / 1024
    finally:
        await h.stop(proc, t)
    return {"wall_ms": seconds * 1e3, "cpu_ms": cpu, "rss_mib": rss}


async def main() -> None:
    if not TREES:
        raise SystemExit('TREES="A=/path/to/tree B=/path/to/other" is required')
    if WITH_FWUPD and ensure_fwupd() is not None:
        raise SystemExit("fwupd is not installed (FWUPD=1)")
    for tree in TREES.values():
        byte_compile(tree)
    if PROFILE_OUT:
        os.makedirs(PROFILE_OUT, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="livefw-start-ab.")
    bus = PrivateBus().start()
    h = Harness(bus, scratch)
    await h.connect()
    gc.disable()
    samples: dict[int, dict[str, list[dict[str, float]]]] = {}
    try:
        await h.watch(FWUPD_NAME)
        if PIN == "one" and h.bus_pid:
            apply_pin("one", [h.bus_pid])
        for size in SIZES:
            targets = _targets(scratch, bus, size)
            labels = list(targets)
            for label, t in targets.items():  # warm-up: the simulated machine is made here
                await one_start(
                    h, t, f"{label}-{size}-warmup.log", [a.replace("%d", "w") for a in t.argv]
                )
            for rnd in range(ROUNDS):
                for label in labels if rnd % 2 == 0 else labels[::-1]:
                    t = targets[label]
                    argv = [a.replace("%d", str(rnd)) for a in t.argv]
                    if PIN == "one":
                        argv = ["taskset", "-c", str(PIN_CPU), *argv]
                    sample = await one_start(h, t, f"{label}-{size}-{rnd}.log", argv)
                    samples.setdefault(size, {}).setdefault(label, []).append(sample)
                    await asyncio.sleep(0.1)
                log(f"size {size}: round {rnd + 1}/{ROUNDS}")
    finally:
        h.close(bus)
        shutil.rmtree(scratch, ignore_errors=True)
    report(samples)
    if OUT:
        with open(OUT, "w", encoding="utf-8") as f:
            json.dump({str(k): v for k, v in samples.items()}, f, indent=1)


def report(samples: dict[int, dict[str, list[dict[str, float]]]]) -> None:
    for size, by_label in samples.items():
        stats: dict[str, dict[str, Any]] = {
            label: {key: summary([s[key] for s in runs]) for key, _ in FIGURES}
            for label, runs in by_label.items()
        }
        print(f"{size} devices, {ROUNDS} rounds:")
        for label, figs in stats.items():
            line = [f"  {label:6}"]
            for key, name in FIGURES:
                s = figs[key]
                line.append(f"{name} {s['median']:7.1f} [{s['p25']:.1f}-{s['p75']:.1f}]")
            for ref in ("F", "floor"):
                if ref in stats and ref != label:
                    wall = figs["wall_ms"]["median"] / stats[ref]["wall_ms"]["median"]
                    cpu = figs["cpu_ms"]["median"] / stats[ref]["cpu_ms"]["median"]
                    line.append(f"/{ref} wall {wall:.2f}x CPU {cpu:.2f}x")
            print("  ".join(line))
        trees = list(TREES)
        if len(trees) == 2:
            a, b = trees
            print(
                f"  {b}/{a}: "
                + "  ".join(
                    f"{name} {stats[b][key]['median'] / stats[a][key]['median']:.3f}"
                    for key, name in FIGURES
                )
            )


if __name__ == "__main__":
    asyncio.run(main())
