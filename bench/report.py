# ruff: noqa: RUF001
# (a measuring harness: blocking set-up between timed sections is deliberate)
"""bench/REPORT.md from the results (the verdict table included)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from typing import Any

from bench.config import (
    CALLS,
    CONCURRENCY,
    HERE,
    IDLE_SECONDS,
    MEM_CALLS,
    PIN_MODES,
    REPEATS,
    STAGE_MIB,
    STAGE_RUNS,
    START_RUNS,
    WARMUP,
)
from bench.stats import _get, fmt_band, mmm, ratio, ratio_band
from livefw.bus.backend import BACKEND as CLIENT_LIB


def _ms(value: Any, missing: str) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else f"{missing!s:.40}"


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


def _soak_section(results: dict[str, Any], w: Any) -> None:
    """The long call loop (bench/soak.py), when the run made it."""
    soak = results.get("soak")
    if not soak or not soak.get("targets"):
        return
    window = next(iter(soak["targets"].values())).get("window_s", 0)
    w(f"## Memory over a {soak['seconds'] / 60:g}-minute call loop")
    w("")
    w(
        f"bench/soak.py: every daemon at once, each on its own private bus, at "
        f"{soak['devices']} devices, each under a client calling without pause (the compat "
        "`GetDevices`, `GetRemotes`, `GetHistory` and properties, livefwd's "
        "`GetManagedObjects` and `Ping`, and every tenth round `GetDetails` of a small "
        "cabinet and of a file that is no cabinet, both passed as descriptors). RSS every "
        f"few seconds; the first {window:.0f} s are the warm-up. *First* and *last*: the "
        f"RSS of the {window:.0f} s after the warm-up and of the last {window:.0f} s "
        "(median, p25-p75); *slope*: least squares over everything after the warm-up. "
        "Descriptors and threads: counted between two calls after the warm-up and at "
        "the end. Refusals are the calls' expected errors (no history yet, a file that "
        "is no cabinet)."
    )
    w("")
    w(
        "| target | calls | calls/s | first MiB | last MiB | last / first | "
        "slope MiB/min | descriptors | threads | refusals |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in soak["targets"].values():
        first, last = r.get("first_mib"), r.get("last_mib")
        if not first or not last:
            continue
        refusals = sum(r.get("refused", {}).values())
        (fd0, th0), (fd1, th1) = r["after_warmup"], r["at_end"]
        w(
            f"| {r['label']} | {r['calls']} | {r['calls'] / r['seconds']:.0f} | "
            f"{first['median']:.1f} ({first['p25']:.1f}-{first['p75']:.1f}) | "
            f"{last['median']:.1f} ({last['p25']:.1f}-{last['p75']:.1f}) | "
            f"{fmt_band(ratio_band(last, first))} | {r['slope_mib_per_min']:+.3f} | "
            f"{fd0} → {fd1} | {th0} → {th1} | {refusals} |"
        )
    w("")


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
        f"{', BENCH_QUICK=1' if results['quick'] else ''}; wall time {results['wall_s']:.0f} s)."
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
    w("## Targets (issue 17)")
    w("")
    w(
        "Each verdict is judged on the ratio's noise band (bench/stats.py): *met* when the "
        "whole band is within the target, *not met* when the whole band misses it, *within "
        "noise* when the band straddles it. Latency: `pin=one` medians, band = spread of "
        "the per-repeat medians; start-up: median of the starts, band p25-p75."
    )
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
        "*warm*: an ordinary restart. *floor*: a minimal Python D-Bus daemon on the same "
        "venv (bench/floor_daemon.py: asyncio, dbus-fast and structlog set up as livefwd "
        "sets them up; it connects, exports one method and requests the name), the start "
        "no Python daemon on these libraries goes under; *floor / warm*: its share of "
        "each warm start."
    )
    w("")
    w(
        "| devices | target | empty state | warm | warm / fwupd warm | floor / warm "
        "| RSS at ready MiB |"
    )
    w("|---|---|---|---|---|---|---|")
    for n in sizes:
        peer = _get(by, f"fwupd-{n}", "start", "warm", "ms", "median")
        floor = _get(by, f"floor-{n}", "start", "warm", "ms", "median")
        for key, label in labels[str(n)]:
            s = _get(by, key, "start")
            if not s:
                continue
            warm = s["warm"]["ms"]["median"]
            w(
                f"| {n} | {label} | {mmm(s['empty']['ms'])} | {mmm(s['warm']['ms'])} | "
                f"{ratio(warm, peer)} | {ratio(floor, warm)} | {mmm(s['warm']['rss_mib'])} |"
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
    _soak_section(results, w)
    # --------------------------------------------------------------- staging
    w(f"## Staging a {STAGE_MIB} MiB capsule (s)")
    w("")
    w(
        "`Install` on the simulated UEFI System Firmware, fd passed over D-Bus, to the "
        "reply (read, validate, checksum, write to the simulated ESP, set UEFI variables), "
        "then `Cancel` (*raw*, *cabinet*); *pfru*: `Install` on the simulated PFRU "
        "code-injection device (written into the firmware's communication buffer and "
        "staged with `PFRU_IOC_STAGE`; at most 32 MiB, the plugin's default limit). "
        "Floor: `cp` of the same file plus `sha256sum` of the copy. "
        "Throughput ratio = floor time / staging time (target ≥ 0.8)."
    )
    w("")
    w("| target | payload | bytes | staging s | floor s | throughput / floor | errors |")
    w("|---|---|---|---|---|---|---|")
    for key, label in labels.get(str(sizes[0]) if sizes else "", []):
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
    for key, label in labels.get(str(sizes[0]) if sizes else "", []):
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
    # --------------------------------------------------------------- scale
    scale_results = results.get("scale") or {}
    if scale_results:
        w("## Scale: 1,000 to 10,000 devices (livefwd only)")
        w("")
        w(
            "bench/scale.py, one backend at a time (fwupd is not run at 10,000 devices: "
            "its fake root would need 10,000 ESRT entries and the series would take longer "
            "than the rest of the run; its 999-device figures are above). Medians; start-up "
            "warm; the install stages a UEFI capsule on the system firmware among all the "
            "devices; the property change is its `Cancel` until the device's "
            "`PropertiesChanged` reaches another client. *Loop held*: worst `Ping` wait "
            "of another process while the largest calls run back to back. *CPU*: the "
            "daemon's own CPU per call (schedstat of its threads), which the harness's and "
            "dbus-daemon's share of the round trip does not move."
        )
        w("")
        w(
            "| backend | devices | objects | start ms | GetDevices ms (CPU) | "
            "GetManagedObjects ms (CPU) | property change ms | install ms | loop held ms | "
            "RSS MiB |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|")
        for backend, sc in scale_results.items():
            for _n, r in sc.get("sizes", {}).items():
                inst = r.get("install", {})
                err = inst.get("error", "—")
                w(
                    f"| dbus-{backend} | {r.get('devices')} | {r.get('objects')} | "
                    f"{_get(r, 'start_warm_ms', 'median') or 0:.0f} | "
                    f"{(_get(r, 'GetDevices_us', 'median') or 0) / 1e3:.1f} "
                    f"({(_get(r, 'GetDevices_cpu_us', 'median') or 0) / 1e3:.1f}) | "
                    f"{(_get(r, 'GetManagedObjects_us', 'median') or 0) / 1e3:.1f} "
                    f"({(_get(r, 'GetManagedObjects_cpu_us', 'median') or 0) / 1e3:.1f}) | "
                    f"{_ms(inst.get('property_change_ms'), err)} | "
                    f"{_ms(inst.get('install_ms'), err)} | "
                    f"{_ms(_get(r, 'stall', 'max_ms'), '—')} | "
                    f"{(r.get('rss_after_kib') or 0) / 1024:.1f} |"
                )
            lin = sc.get("linear")
            if lin:
                w("")
                w(f"dbus-{backend}: {lin['detail']}.")
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
