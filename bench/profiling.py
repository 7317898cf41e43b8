# ruff: noqa: ASYNC240
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""cProfile of livefwd serving the slowest calls at the largest size."""

from __future__ import annotations

import os
import pstats
from typing import Any

from bench.config import FWUPD_NAME, LIVEFW_NAME, LIVEFW_PATH, QUICK
from bench.harness import Harness
from bench.targets import Target


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
