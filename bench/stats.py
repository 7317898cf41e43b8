# ruff: noqa: RUF001, RUF002
"""Summaries of samples: min / median / max, quartiles and noise bands; ratios.

A figure is the median of its samples; its *noise band* is the interquartile range
(p25-p75) when there are enough samples, else min-max. A ratio of two figures gets
the band of the two bands (low = low / high, high = high / low), and a verdict is
``met`` only when the whole band is within the target, ``not met`` when the whole
band misses it, and ``within noise`` when the band straddles the target: the
machine then cannot tell (bench/REPORT.md says so rather than picking a side).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def _quantile(v: list[float], q: float) -> float:
    if len(v) == 1:
        return v[0]
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    """min, p25, median, p75, p90, max and the count of ``values`` (None if empty)."""
    if not values:
        return None
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0],
        "p25": _quantile(v, 0.25),
        "median": statistics.median(v),
        "p75": _quantile(v, 0.75),
        "max": v[-1],
        "p90": v[min(len(v) - 1, int(0.9 * len(v)))],
    }


def band(s: dict[str, float] | None) -> tuple[float, float] | None:
    """The noise band of a summary: p25-p75 from 4 samples on, else min-max."""
    if not s:
        return None
    if s.get("n", 0) >= 4 and "p25" in s:
        return s["p25"], s["p75"]
    return s["min"], s["max"]


def ratio_band(
    ours: dict[str, float] | None, theirs: dict[str, float] | None
) -> tuple[float, float, float] | None:
    """``(low, median, high)`` of ours / theirs over both noise bands."""
    a, b = band(ours), band(theirs)
    if not a or not b or not ours or not theirs or min(b) <= 0 or theirs["median"] <= 0:
        return None
    return a[0] / b[1], ours["median"] / theirs["median"], a[1] / b[0]


def judge(rb: tuple[float, float, float] | None, limit: float) -> str:
    """``met`` / ``not met`` / ``within noise`` for "ratio ≤ limit" over the band."""
    if rb is None:
        return "n/a"
    low, _median, high = rb
    if high <= limit:
        return "met"
    if low > limit:
        return "not met"
    return "within noise"


def fmt_band(rb: tuple[float, float, float] | None) -> str:
    """``0.92× (0.85-1.01)``."""
    if rb is None:
        return "—"
    return f"{rb[1]:.2f}× ({rb[0]:.2f}-{rb[2]:.2f})"


def mmm(s: dict[str, float] | None, fmt: str = "{:.1f}") -> str:
    """``min / median / max``."""
    if not s:
        return "—"
    return " / ".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23×``."""
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _get(d: Any, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d
