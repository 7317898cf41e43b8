#!/usr/bin/env python3
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""livefwd beside fwupd 2.0 on the same machine, in the same run: ``make bench``.

Writes ``bench/REPORT.md`` (and ``bench/results.json``); ``BENCH_QUICK=1`` keeps it
under 3 minutes and writes ``bench/REPORT-quick.md``; ``run.py --report`` rewrites the
report from the saved results (``bench/NOTES.md``, the analysis, is appended to it).

The harness is the ``bench`` package, one role per module: config (knobs), stats
(summaries, noise bands), procfs (memory, CPU, pinning), fwupd (the peer on a fake
root), targets (the daemons and their device counts), harness (bus, launch, stop),
measure (start-up, round trips, memory, idle), staging (capsule staging, telemetry),
scale (1,000 -> 10,000 devices), profiling (cProfile), verdicts and report.

Everything runs on a private ``dbus-daemon`` (system type, socket in a temp dir) with
python-dbusmock's polkitd template: nothing touches the system bus, /sys, /dev, /etc or
/var. fwupd runs from Debian's package (installed here when missing)
on a hermetic fake root (see :func:`fwupd_root`); livefwd runs ``--simulate
--fwupd-compat`` on the simulator's profiles.

Knobs (environment): BENCH_QUICK=1; SIZES="3 51 999"; CALLS (sequential calls per
repeat); REPEATS; START_RUNS; IDLE_SECONDS; MEM_CALLS (calls before the second memory
reading); STAGE_MIB; STAGE_RUNS; BACKENDS="next fast"; PROFILE=0 skips the cProfile
run; FWUPD=0 skips fwupd; SOAK=0 skips the call loop (bench/soak.py; SOAK_SECONDS,
SOAK_DEVICES); KEEP=1 keeps the scratch directory.

Figures are min / median / max and are read as ratios to fwupd or to a floor taken
in the same run (``Peer.Ping`` to the same daemon; ``cp`` + ``sha256sum``): absolute
numbers move between runs and machines, ratios much less. Nothing here is asserted.

The harness itself runs with Python's cyclic garbage collector off (``gc.disable()``;
measure and scale collect explicitly between timed sections): a reply of 10,000
devices is some 500,000 new objects in the client, and the client's own collections
while it unmarshalled them cost 5x the daemon's CPU for the call and grew faster than
linearly (client CPU 6.6 ms at 999 devices, 258 ms at 9,999; 50 ms without them).
The client is the instrument, the same for fwupd and livefwd; it must not weigh.

livefw is byte-compiled before anything is measured (:func:`byte_compile`), as an
installation is (pip compiles what it installs, Debian's dh_python3 at package
install): the development venv's editable install has no ``.pyc`` for livefw, and
with ``PYTHONDONTWRITEBYTECODE`` set (as in the sessions that run this) every start
compiled livefw's ~110 modules from source again, ~110 ms of CPU per start measured
A/B (imports of the start path: 260 ms CPU with the bytecode, 354 ms without).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

# run as a script (`python bench/run.py`): the harness's modules are the `bench` package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.config import (
    BACKENDS,
    HERE,
    PROFILE,
    QUICK,
    SCALE,
    SCALE_BACKENDS,
    SIZES,
    SOAK,
    SOAK_DEVICES,
    log,
)
from bench.fwupd import ensure_fwupd
from bench.harness import Harness
from bench.measure import startup, steady
from bench.profiling import profile
from bench.report import machine_info, write_report
from bench.scale import SCALE_SIZES, scale
from bench.soak import soak
from bench.staging import extras, make_payloads
from bench.targets import make_targets
from bench.verdicts import slopes, verdicts
from livefw.testing import PolkitMock, PrivateBus


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
    h.payloads = make_payloads(scratch)
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
            targets = make_targets(scratch, bus, n, fwupd_ok, floor=True)
            results["labels"][str(n)] = [(t.key, t.label) for t in targets]
            for t in targets:
                res: dict[str, Any] = {"label": t.label}
                results["targets"][t.key] = res
                log(f"{t.key}: start-up series")
                try:
                    res["start"] = await startup(h, t)
                    if t.extra.get("start_only"):  # the floor: start-up only
                        continue
                    res["steady"] = await steady(h, t, extra_steps=n == SIZES[0])
                    if n == SIZES[0] and t.native:
                        log(f"{t.key}: staging and telemetry (default profile)")
                        res["steady"].update(await extras(h, t))
                except Exception as error:  # keep what was measured, say what failed
                    errors.append(f"{t.key}: {type(error).__name__}: {error}")
                    log(f"{t.key}: FAILED: {error}")
        if SOAK:
            try:
                results["soak"] = await soak(scratch, SOAK_DEVICES, fwupd_ok)
                errors.extend(results["soak"].get("errors", []))
            except Exception as error:
                errors.append(f"soak: {type(error).__name__}: {error}")
                log(f"soak: FAILED: {error}")
        if SCALE:
            for backend in SCALE_BACKENDS:
                log(f"scale: livefwd (dbus-{backend}) at {SCALE_SIZES} devices")
                try:
                    results.setdefault("scale", {})[backend] = await scale(h, scratch, bus, backend)
                except Exception as error:
                    errors.append(f"scale {backend}: {type(error).__name__}: {error}")
                    log(f"scale {backend}: FAILED: {error}")
        if PROFILE:
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


def byte_compile() -> None:
    """Write livefw's bytecode (every module of the package, plugins included)."""
    import compileall

    import livefw

    ok = compileall.compile_dir(os.path.dirname(livefw.__file__), quiet=1)
    log(f"livefw byte-compiled ({'ok' if ok else 'with errors'})")


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
    gc.disable()  # the instrument does not collect during a call (see the docstring)
    byte_compile()
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
