#!/usr/bin/env python3
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""Only the staging series (bench/staging.py), on one or more source trees, interleaved.

``make bench-staging`` (or ``python bench/staging_ab.py``) runs the series of a full
``make bench`` (64 MiB raw and cabinet on the UEFI capsule path, PFRU) against this
checkout's livefwd, with the same machine preparation, floors and summaries, in a few
minutes. It never writes bench/REPORT.md.

A/B: ``STAGE_TREES="base=/tmp/base new=."`` runs livefwd from each source tree in
turn (a tree is a checkout or ``git archive`` of this repository: its ``daemon`` and
``plugins`` directories are linked as the ``livefw`` package and put first on the
daemon's ``PYTHONPATH``; ``.`` is the installed package). ``STAGE_ROUNDS`` rounds,
the order of the trees reversed every other round (ABBA), so that load which drifts
during the run weighs on both. The client, the payloads and the floors are the same
for every tree. Per tree and kind: the staging times, the floors, the ratio
floor / staging of the medians, and the daemon's peak RSS during each install
(``VmHWM`` reset through ``/proc/PID/clear_refs`` before it).

Knobs: STAGE_TREES, STAGE_ROUNDS (3), STAGE_RUNS (installs per kind per round, 3),
STAGE_MIB (64), STAGE_KINDS ("raw cabinet pfru"), BACKENDS (the first one is used),
KEEP=1 keeps the scratch directory, OUT=file.json writes the samples.
"""

from __future__ import annotations

import asyncio
import compileall
import gc
import json
import os
import shutil
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import staging as stage_mod
from bench.config import BACKENDS, log
from bench.fwupd import wipe
from bench.harness import Harness
from bench.stats import summary
from bench.targets import Target, make_targets
from livefw.testing import PolkitMock, PrivateBus


def link_tree(src: str, dest: str) -> str:
    """A directory holding ``livefw`` built from ``src``'s daemon/ and plugins/."""
    pkg = os.path.join(dest, "livefw")
    os.makedirs(pkg)
    daemon = os.path.join(os.path.abspath(src), "daemon")
    for name in os.listdir(daemon):
        if name != "__pycache__":
            os.symlink(os.path.join(daemon, name), os.path.join(pkg, name))
    os.symlink(os.path.join(os.path.abspath(src), "plugins"), os.path.join(pkg, "plugins"))
    compileall.compile_dir(pkg, quiet=1)
    return dest


def trees() -> list[tuple[str, str | None]]:
    spec = os.environ.get("STAGE_TREES", "").split()
    if not spec:
        return [("this", None)]
    out: list[tuple[str, str | None]] = []
    for item in spec:
        label, _, path = item.partition("=")
        out.append((label, None if path in ("", ".") else path))
    return out


async def one_tree(h: Harness, t: Target, pythonpath: str | None) -> dict[str, Any]:
    env = dict(t.env)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    tt = Target(**{**t.__dict__, "env": env})
    wipe(tt.state_dir)
    argv = list(tt.argv)
    argv[argv.index("--profile") + 1] = "default"
    argv[argv.index("--scale") + 1] = "0"
    await h.watch(tt.name)
    proc, _ = await h.launch(tt, f"{tt.key}-create.log", argv)
    await h.stop(proc, tt)
    stage_mod._prepare_machine(os.path.join(tt.state_dir, "sim", "machine.json"))
    proc, _ = await h.launch(tt, f"{tt.key}-staging.log", argv)
    try:
        gc.collect()
        return await stage_mod.staging(h, tt, proc.pid)
    finally:
        await h.stop(proc, tt)
        wipe(tt.state_dir)


async def main_async(scratch: str) -> dict[str, dict[str, dict[str, list[float]]]]:
    os.makedirs(os.path.join(scratch, "bus"), exist_ok=True)
    bus = PrivateBus(os.path.join(scratch, "bus")).start()
    polkit = PolkitMock(bus).start()
    polkit.allow_unknown()
    h = Harness(bus, scratch)
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    try:
        await h.connect()
        h.payloads = stage_mod.make_payloads(scratch)
        (t,) = [x for x in make_targets(scratch, bus, 3, False) if x.backend == BACKENDS[0]]
        paths = {
            label: link_tree(src, os.path.join(scratch, f"tree-{label}")) if src else None
            for label, src in trees()
        }
        rounds = int(os.environ.get("STAGE_ROUNDS", "3"))
        for r in range(rounds):
            order = list(paths.items())
            if r % 2:
                order.reverse()
            for label, pythonpath in order:
                log(f"round {r + 1}/{rounds}: {label}")
                res = await one_tree(h, t, pythonpath)
                for kind, row in res.items():
                    dest = samples.setdefault(label, {}).setdefault(kind, {})
                    for key in (
                        "seconds",
                        "floor_seconds",
                        "peak_rss_mib",
                        "ratio",
                        "cpu_ms",
                        "rss_before_mib",
                    ):
                        dest.setdefault(key, []).extend(row["samples"][key])
                    dest.setdefault("errors", []).extend(row["errors"])
    finally:
        h.kill_all()
        h.bus.disconnect()
        h.fd_bus.disconnect()
        polkit.stop()
        bus.stop()
    return samples


def main() -> int:
    scratch = tempfile.mkdtemp(prefix="livefw-bench-staging.")
    gc.disable()
    try:
        samples = asyncio.run(main_async(scratch))
    finally:
        if os.environ.get("KEEP", "0") != "1":
            shutil.rmtree(scratch, ignore_errors=True)
    if os.environ.get("OUT"):
        with open(os.environ["OUT"], "w", encoding="utf-8") as f:
            json.dump(samples, f, indent=1)
    for label, kinds in samples.items():
        for kind, row in kinds.items():
            s, fl, rss = (summary(row[k]) for k in ("seconds", "floor_seconds", "peak_rss_mib"))
            ratio = fl["median"] / s["median"] if s and fl else float("nan")
            # each install's floor is taken just before it: the paired ratios follow
            # the load of the moment better than the ratio of two medians
            paired = summary(row["ratio"])
            cpu = summary(row["cpu_ms"])
            base = summary(row["rss_before_mib"])
            print(
                f"{label:>8} {kind:>8}: staging {s['median'] if s else float('nan'):.3f} s "
                f"(min {s['min'] if s else float('nan'):.3f}), floor "
                f"{fl['median'] if fl else float('nan'):.3f} s, ratio {ratio:.2f}x "
                f"(paired {paired['median'] if paired else float('nan'):.2f}x), "
                f"peak RSS {rss['median'] if rss else float('nan'):.0f} MiB "
                f"(from {base['median'] if base else float('nan'):.0f}), "
                f"daemon+reader CPU {cpu['median'] if cpu else float('nan'):.0f} ms "
                f"(min {cpu['min'] if cpu else float('nan'):.0f}), "
                f"errors {len(row['errors'])} {row['errors'][:1]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
