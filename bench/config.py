# (a measuring harness: blocking set-up between timed sections is deliberate)
"""The benchmark's knobs (environment variables) and the names it calls."""

from __future__ import annotations

import importlib.util
import os
import time

# The harness's own client: dbus-fast when installed (its client costs 3-9x less CPU
# than dbus-next's, so the daemon, not the client, dominates the figures). Set before
# any module imports livefw.bus.backend, which reads it once.
if importlib.util.find_spec("dbus_fast") is not None:
    os.environ["LIVEFW_DBUS_BACKEND"] = "fast"
else:
    os.environ["LIVEFW_DBUS_BACKEND"] = "next"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: BENCH_QUICK=1 (QUICK=1 still works): a development run of a few minutes; its report
#: goes to REPORT-quick.md and never replaces the full run's.
QUICK = (os.environ.get("BENCH_QUICK") or os.environ.get("QUICK") or "0") == "1"


def _env_int(name: str, full: int, quick: int) -> int:
    return int(os.environ.get(name, quick if QUICK else full))


def _env_float(name: str, full: float, quick: float) -> float:
    return float(os.environ.get(name, quick if QUICK else full))


#: device counts both daemons get (the simulator's profiles give 3 or 7 + 2S devices;
#: fwupd gets as many: N - 1 fake ESRT entries and its test webcam)
SIZES = [int(x) for x in os.environ.get("SIZES", "3 51 999").split()]
CALLS = _env_int("CALLS", 1000, 100)
REPEATS = _env_int("REPEATS", 3, 2)
WARMUP = _env_int("WARMUP", 50, 10)
START_RUNS = _env_int("START_RUNS", 10, 3)
IDLE_SECONDS = _env_float("IDLE_SECONDS", 30, 1)
#: settling time after a daemon owns its name, before the first memory reading
SETTLE_SECONDS = _env_float("SETTLE_SECONDS", 2.0, 0.5)
MEM_CALLS = _env_int("MEM_CALLS", 10_000, 500)
STAGE_MIB = _env_int("STAGE_MIB", 64, 64)
STAGE_RUNS = _env_int("STAGE_RUNS", 3, 1)
#: the staging series' payloads (bench/staging.py): raw, cabinet (UEFI capsule), pfru
STAGE_KINDS = os.environ.get("STAGE_KINDS", "raw cabinet pfru").split()
CONCURRENCY = 16
REPEAT_BUDGET = _env_float("REPEAT_BUDGET", 4.0, 0.5)  # seconds per latency repeat
#: the verdicts use pin=one; a quick run measures only that
PIN_MODES = ("one",) if QUICK else ("none", "one")
PIN_CPU = 0
BACKENDS = [
    b
    for b in os.environ.get("BACKENDS", "next fast").split()
    if b != "fast" or importlib.util.find_spec("dbus_fast") is not None
]
#: the cProfile run (PROFILE=0 skips it; a quick run skips it unless PROFILE=1)
PROFILE = os.environ.get("PROFILE", "0" if QUICK else "1") == "1"
#: the 1,000 -> 10,000 devices series (bench/scale.py): SCALE=0 skips it (a quick run
#: skips it unless SCALE=1); SCALE_BACKENDS the livefwd backends it runs on
SCALE = os.environ.get("SCALE", "0" if QUICK else "1") == "1"
SCALE_BACKENDS = [b for b in os.environ.get("SCALE_BACKENDS", "fast next").split() if b in BACKENDS]
#: the call loop of bench/soak.py (issue 17 item 2: no growth over 10 minutes): SOAK=0
#: skips it; SOAK_SECONDS long, RSS read every SOAK_SAMPLE s, the first SOAK_WARMUP s
#: not judged (and the window compared at each end that long), at SOAK_DEVICES devices
SOAK = os.environ.get("SOAK", "1") == "1"
SOAK_SECONDS = _env_float("SOAK_SECONDS", 600, 30)
SOAK_SAMPLE = _env_float("SOAK_SAMPLE", 2.0, 1.0)
SOAK_WARMUP = _env_float("SOAK_WARMUP", 60, 10)
SOAK_DEVICES = _env_int("SOAK_DEVICES", 51, 51)
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
