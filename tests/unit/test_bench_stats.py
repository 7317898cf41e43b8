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
