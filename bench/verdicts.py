# ruff: noqa: RUF001
"""The targets of issue 17 judged from one run's results, with noise bands.

Every verdict compares a livefwd figure with fwupd's (or a floor) measured in the same
run: the ratio of the medians, and its band from the two figures' noise bands
(bench.stats). Latency figures are ``pin=one`` medians, their band the spread of the
per-repeat medians; start-up the median of START_RUNS starts, band p25-p75.
"""

from __future__ import annotations

from typing import Any

from bench.config import BACKENDS, MEM_CALLS
from bench.stats import _get, fmt_band, judge, ratio, ratio_band


def _latency(by: dict[str, Any], key: str, call: str) -> dict[str, float] | None:
    r = _get(by, key, "steady", "latency", "one", call)
    if not r:
        return None
    found: dict[str, float] | None = r.get("repeat_medians_us") or r.get("latency_us")
    return found


def _point(value: float | None) -> dict[str, float] | None:
    """A single reading as a summary with no spread (memory, a floor ratio)."""
    if value is None:
        return None
    return {"n": 1, "min": value, "median": value, "max": value}


def _combine(per_backend: list[tuple[str, str]]) -> str:
    """One verdict per backend -> the table's verdict."""
    if not per_backend:
        return "n/a"
    kinds = {v for _, v in per_backend}
    if len(kinds) == 1:
        return kinds.pop()
    return "; ".join(f"dbus-{b}: {v}" for b, v in per_backend)


def _against_fwupd(
    by: dict[str, Any], n: int, method: str, target: float, peer_label: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """Each backend's ``method`` latency at ``n`` devices against fwupd's GetDevices."""
    peer = _latency(by, f"fwupd-{n}", "GetDevices")
    vs, parts = [], []
    for b in BACKENDS:
        ours = _latency(by, f"livefw-{b}-{n}", method)
        rb = ratio_band(ours, peer)
        if rb and ours and peer:
            vs.append((b, judge(rb, target)))
            parts.append(
                f"dbus-{b}: {ours['median']:.0f} µs vs {peer_label} {peer['median']:.0f} µs "
                f"= {fmt_band(rb)}"
            )
    return vs, parts


def _row(target: str, per_backend: list[tuple[str, str]], parts: list[str]) -> dict[str, str]:
    return {"target": target, "verdict": _combine(per_backend), "detail": "; ".join(parts)}


def verdicts(results: dict[str, Any]) -> None:
    """Fill ``results["verdicts"]`` (the report's target table)."""
    by, sizes = results["targets"], results["sizes"]
    out: list[dict[str, str]] = []
    results["verdicts"] = out
    if not sizes:
        _scale_verdicts(results, out)
        return
    n0, n_hi = sizes[0], sizes[-1]

    # 17.1 start-up
    for n, limit in dict.fromkeys(((n0, 2.0), (n_hi, 1.5) if n_hi != n0 else (n0, 2.0))):
        peer = _get(by, f"fwupd-{n}", "start", "warm", "ms")
        vs, parts = [], []
        for b in BACKENDS:
            ours = _get(by, f"livefw-{b}-{n}", "start", "warm", "ms")
            rb = ratio_band(ours, peer)
            if rb:
                vs.append((b, judge(rb, limit)))
                parts.append(
                    f"dbus-{b}: {ours['median']:.0f} ms vs fwupd {peer['median']:.0f} ms "
                    f"= {fmt_band(rb)}"
                )
        floor = _get(by, f"floor-{n}", "start", "warm", "ms", "median")
        if floor is not None and peer:
            parts.append(f"floor (a minimal Python D-Bus daemon) {floor:.0f} ms")
        out.append(_row(f"start-up ≤ {limit}× fwupd's warm start ({n} devices)", vs, parts))

    # 17.2 memory
    for n in dict.fromkeys((n0, n_hi)):
        for when, label in (("mem_start", "after start"), ("mem_after", "after the calls")):
            peer = _get(by, f"fwupd-{n}", "steady", when, "VmRSS")
            vs, parts = [], []
            for b in BACKENDS:
                ours = _get(by, f"livefw-{b}-{n}", "steady", when, "VmRSS")
                rb = ratio_band(_point(ours), _point(peer))
                if rb and ours and peer:
                    vs.append((b, judge(rb, 1.5)))
                    parts.append(
                        f"dbus-{b}: {ours / 1024:.1f} MiB vs fwupd {peer / 1024:.1f} MiB "
                        f"({ours / peer:.2f}×)"
                    )
            calls = f", {MEM_CALLS} calls at the smallest size" if when == "mem_after" else ""
            out.append(_row(f"RSS ≤ 1.5× fwupd's {label} ({n} devices{calls})", vs, parts))

    # 17.3 GetDevices latency at every size, and the slope
    for n in sizes:
        vs, parts = _against_fwupd(by, n, "GetDevices", 0.7, "fwupd")
        out.append(_row(f"GetDevices ≤ 0.7× fwupd's ({n} devices, pin=one)", vs, parts))
    slope_rows = {row["key"]: row for row in results.get("slopes", [])}
    peer_slope = _get(slope_rows, "fwupd", "lat_hi")
    vs, parts = [], []
    for b in BACKENDS:
        row = slope_rows.get(f"livefw-{b}")
        if row and peer_slope:
            vs.append((b, "met" if row["lat_hi"] < 0.5 * peer_slope else "not met"))
            parts.append(
                f"dbus-{b}: {row['lat_hi']:.1f} µs/device vs fwupd {peer_slope:.1f} "
                f"({ratio(row['lat_hi'], peer_slope)})"
            )
    out.append(_row("GetDevices cost per device < 0.5× fwupd's slope", vs, parts))

    # 17.4 GetManagedObjects against fwupd's GetDevices at the largest size
    vs, parts = _against_fwupd(by, n_hi, "GetManagedObjects", 1.0, "fwupd GetDevices")
    out.append(_row(f"GetManagedObjects ≤ fwupd's GetDevices ({n_hi} devices, pin=one)", vs, parts))

    # 17.5 staging: one row per path (raw, cabinet, pfru), each backend's verdict in it
    rows: dict[str, tuple[list[tuple[str, str]], list[str]]] = {}
    for b in BACKENDS:
        stage = _get(by, f"livefw-{b}-{n0}", "steady", "stage") or {}
        for kind, r in stage.items():
            label = f"{kind}, {r['bytes'] / (1 << 20):.0f} MiB" if r.get("bytes") else kind
            vs, parts = rows.setdefault(label, ([], []))
            t, fl = _get(r, "seconds"), _get(r, "floor_seconds")
            if t and fl:
                # throughput ratio = floor / staging: ≥ 0.8 means staging ≤ floor / 0.8
                rb = ratio_band(t, fl)
                verdict = judge(rb, 1 / 0.8)
                vs.append((b, verdict))
                parts.append(
                    f"dbus-{b}: {t['median']:.3f} s vs floor {fl['median']:.3f} s = "
                    f"{fl['median'] / t['median']:.2f}×"
                )
            elif r:
                vs.append((b, "not met"))
                parts.append(f"dbus-{b}: failed ({'; '.join(r['errors'])[:200]})")
    for kind, (vs, parts) in rows.items():
        out.append(_row(f"staging ≥ 0.8× the cp + sha256sum floor ({kind})", vs, parts))

    _scale_verdicts(results, out)
    _idle_verdict(by, out)
    _soak_verdict(results, out)


#: "no growth": the loop's last window at most this much above its first
SOAK_GROWTH = 1.01


def _soak_verdict(results: dict[str, Any], out: list[dict[str, str]]) -> None:
    """17.2: no growth over the call loop (bench/soak.py): RSS, descriptors, threads."""
    soak = results.get("soak")
    if not soak or not soak.get("targets"):
        return
    vs, parts = [], []
    for key, r in soak["targets"].items():
        first, last = r.get("first_mib"), r.get("last_mib")
        rb = ratio_band(last, first)
        if not rb:
            continue
        counts = f"descriptors {r['after_warmup'][0]} → {r['at_end'][0]}, threads "
        counts += f"{r['after_warmup'][1]} → {r['at_end'][1]}"
        text = (
            f"{r['label']}: {first['median']:.1f} → {last['median']:.1f} MiB = "
            f"{fmt_band(rb)}, {r['slope_mib_per_min']:+.3f} MiB/min"
        )
        if key.startswith("soak-fwupd"):
            parts.append(f"{text} (peer)")
            continue
        verdict = judge(rb, SOAK_GROWTH)
        if r["at_end"][0] > r["after_warmup"][0] or r["at_end"][1] > r["after_warmup"][1]:
            verdict = "not met"
        vs.append((key.split("-")[2], verdict))
        parts.append(f"{text}, {counts}")
    minutes = soak["seconds"] / 60
    out.append(
        _row(
            f"no growth over a {minutes:g}-minute call loop (RSS ≤ {SOAK_GROWTH}× its "
            f"first window, no descriptor or thread more; {soak['devices']} devices)",
            vs,
            parts,
        )
    )


def _scale_verdicts(results: dict[str, Any], out: list[dict[str, str]]) -> None:
    """17.6: the 1,000 -> 10,000 series (bench/scale.py)."""
    scale = results.get("scale") or {}
    for b in BACKENDS:
        sc = scale.get(b)
        if not sc:
            continue
        stall = _get(sc, "stall_ms_at_1000")
        if stall is not None:
            out.append(
                _row(
                    "no call holds the loop > 100 ms at 1,000 devices",
                    [(b, "met" if stall <= 100 else "not met")],
                    [f"dbus-{b}: worst Ping wait behind the largest calls {stall:.0f} ms"],
                )
            )
        lin = _get(sc, "linear")
        if lin is not None:
            out.append(
                _row(
                    "cost per device linear from 1,000 to 10,000 devices",
                    [(b, "met" if lin["ok"] else "not met")],
                    [f"dbus-{b}: {lin['detail']}"],
                )
            )


def _idle_verdict(by: dict[str, Any], out: list[dict[str, str]]) -> None:
    vs, parts = [], []
    for key, res in by.items():
        idle = _get(res, "steady", "idle")
        if idle and key.startswith("livefw"):
            vs.append((key, "met" if idle["wakeups"] == 0 else "not met"))
            parts.append(f"{key}: {idle['wakeups']}")
        elif idle:
            parts.append(f"{key} (peer): {idle['wakeups']}")
    out.append(
        {
            "target": "zero wake-ups at idle",
            "verdict": "met" if vs and all(v == "met" for _, v in vs) else "not met",
            "detail": "; ".join(parts),
        }
    )


def slopes(results: dict[str, Any]) -> None:
    """Cost per device of compat GetDevices (pin=one medians) between the sizes."""
    by, sizes = results["targets"], results["sizes"]
    rows: list[dict[str, Any]] = []
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
