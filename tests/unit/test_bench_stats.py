"""The benchmark's verdict arithmetic (bench/stats.py): noise bands decide, not medians."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.stats import band, judge, ratio_band, summary


def test_band_is_the_interquartile_range_from_four_samples() -> None:
    s = summary([10, 11, 12, 13, 100])
    assert s is not None
    assert s["median"] == 12
    assert band(s) == (11, 13)  # the outlier does not widen the band
    small = summary([10, 30])
    assert band(small) == (10, 30)  # too few samples: min-max


def test_verdict_is_met_only_when_the_whole_band_is_within_the_target() -> None:
    peer = summary([100, 100, 100, 100])
    assert judge(ratio_band(summary([60, 62, 64, 66]), peer), 0.7) == "met"
    assert judge(ratio_band(summary([80, 82, 84, 86]), peer), 0.7) == "not met"
    # median 0.68 but the band reaches 0.75: the run cannot tell
    assert judge(ratio_band(summary([60, 66, 70, 75]), peer), 0.7) == "within noise"
    assert judge(ratio_band(None, peer), 0.7) == "n/a"


def _soaked(rss_mib: list[float], seconds: float, counts: tuple[list[int], list[int]]) -> dict:
    from bench.soak import reduce

    step = seconds / len(rss_mib)
    samples = [[i * step, v * 1024] for i, v in enumerate(rss_mib)]
    r = reduce(samples, seconds, warm=seconds / 5)
    r.update(label="livefwd", calls=1000, seconds=seconds, refused={})
    r["after_warmup"], r["at_end"] = counts
    return r


def test_the_soak_verdict_sees_growth_a_leak_and_a_descriptor_left_open() -> None:
    """bench/soak.py's windows and bench/verdicts.py's rule: a steady RSS (after its
    warm-up growth) is met, a steady climb is not, and so is a descriptor more at the
    end than after the warm-up."""
    from bench.verdicts import _soak_verdict

    steady = [30.0] * 20 + [35.0 + 0.01 * (i % 3) for i in range(80)]  # warm-up, then flat
    leaking = [35.0 + 0.05 * i for i in range(100)]  # 5 MiB over the loop
    same = ([16, 4], [16, 4])
    cases = {
        "steady": (steady, same, "met"),
        "leaking": (leaking, same, "not met"),
        "descriptor": (steady, ([16, 4], [17, 4]), "not met"),
    }
    for name, (rss, counts, verdict) in cases.items():
        results = {
            "soak": {
                "devices": 51,
                "seconds": 600.0,
                "targets": {"soak-livefw-fast-51": _soaked(rss, 600.0, counts)},
            }
        }
        out: list[dict[str, str]] = []
        _soak_verdict(results, out)
        (row,) = out
        assert row["verdict"] == verdict, (name, row)
    assert _soaked(leaking, 600.0, same)["slope_mib_per_min"] > 0.4
