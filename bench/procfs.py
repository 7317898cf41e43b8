# (a measuring harness: blocking set-up between timed sections is deliberate)
"""What /proc says about a daemon: memory, CPU time, wake-ups; CPU pinning."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.config import ALL_CPUS, PIN_CPU


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
