"""Intervals, interleaving and verdicts of throughput comparisons (injected clock, no timing)."""

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from archscale.throughput import stats


def test_median_interval_order_statistics():
    e = stats.median_interval([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert e.value == 5.5 and e.n == 10
    # n = 10: k = 2 covers 1 - 2 * P(B <= 1) = 0.9785; k = 3 would cover 0.891 < 0.95
    assert (e.low, e.high) == (2.0, 9.0)
    assert 1 - 2 * binom.cdf(1, 10, 0.5) >= 0.95 > 1 - 2 * binom.cdf(2, 10, 0.5)
    assert "0.9785" in e.method


def test_median_interval_withheld_below_five_repeats_and_bad_input():
    e = stats.median_interval([1.0, 2.0, 3.0])
    assert e.value == 2.0 and e.low is None and "at least 5" in e.withheld_reason
    assert "no interval" in e.text()
    with pytest.raises(ValueError, match="no values"):
        stats.median_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        stats.median_interval([1.0, float("nan"), 2, 3, 4])


def test_median_interval_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(1)
    hits = sum(
        e.low <= 1.0 <= e.high
        for e in (stats.median_interval(rng.lognormal(0.0, 0.3, 15)) for _ in range(400))
    )
    assert 0.93 <= hits / 400 <= 1.0


def test_interleave_alternates_arms_with_an_injected_clock():
    calls, ticks = [], itertools.count()
    arms = {"a": lambda: calls.append("a") or "ra", "b": lambda: calls.append("b") or "rb"}
    out = stats.interleave(arms, repeats=3, warmup=2, clock=lambda: float(next(ticks)) * 0.5)
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed rounds A B A B A B
    assert [r["round"] for r in out["a"]] == [0, 1, 2]
    assert all(r["wall_s"] == 0.5 and r["result"] == "ra" for r in out["a"])
    assert out["b"][2]["result"] == "rb"
    with pytest.raises(ValueError, match="repeats"):
        stats.interleave(arms, repeats=0)


def test_interleave_timing_uses_the_clock_around_each_call():
    now = [0.0]
    arms = {"slow": lambda: now.__setitem__(0, now[0] + 2.0), "fast": lambda: now.__setitem__(0, now[0] + 1.0)}
    out = stats.interleave(arms, repeats=5, warmup=0, clock=lambda: now[0])
    assert [r["wall_s"] for r in out["slow"]] == [2.0] * 5
    assert [r["wall_s"] for r in out["fast"]] == [1.0] * 5


def test_ratio_and_verdicts():
    rng = np.random.default_rng(0)
    base = 100 * (1 + 0.02 * rng.standard_normal(9))
    fast = 130 * (1 + 0.02 * rng.standard_normal(9))
    r = stats.ratio_interval(fast, base)
    assert r.value == pytest.approx(np.median(fast) / np.median(base))
    assert 1 < r.low < r.value < r.high
    assert stats.verdict(r) == stats.FASTER
    assert stats.verdict(stats.ratio_interval(base, fast)) == stats.SLOWER
    noisy = 100 * (1 + 0.3 * rng.standard_normal(9))
    same = stats.ratio_interval(noisy, base)
    assert same.low < 1 < same.high and stats.verdict(same) == stats.NOT_RESOLVED
    few = stats.ratio_interval(fast[:3], base[:3])
    assert few.low is None and stats.verdict(few) == stats.NOT_RESOLVED
    assert stats.compare_rates(fast, base)["verdict"] == "faster"
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_interval([0.0] * 5, base)


def test_gqa_walk_keeps_steps_only_while_resolved_faster():
    def est(lo, hi):
        return stats.Estimate((lo + hi) / 2, lo, hi, 7, "test")

    table = {(2, 1): est(1.1, 1.3), (4, 2): est(1.05, 1.2), (8, 4): est(0.95, 1.2), (16, 8): est(1.5, 2)}
    walk = stats.gqa_walk([1, 2, 4, 8, 16], lambda c, cur: table[(c, cur)])
    assert walk["chosen"] == 4
    assert [s["verdict"] for s in walk["steps"]] == ["faster", "faster", "not resolved"]
    assert stats.gqa_walk([1], lambda c, cur: None) == {"chosen": 1, "steps": []}
