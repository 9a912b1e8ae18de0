"""Paired statistics on simulated data with a known effect (archscale.analysis.paired): the intervals'
coverage is the stated level, and a null effect is called resolved no more often than the level allows."""

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.paired import (LEVEL, difference, holm, holm_levels, paired_arrays, sweep_tests,
                                       t_interval, t_pvalue, welch_arrays)

SIMS = 4000
TOL = 0.03  # coverage within 3 points of the stated level


def _draw(rng, means, seeds, sims, sd=0.03, shared=0.05):
    """Losses ``[sims, P, seeds]``: mean + a seed effect shared by the P architectures + a residual."""
    u = rng.normal(0, shared, (sims, 1, seeds))
    return np.asarray(means, float)[None, :, None] + u + rng.normal(0, sd, (sims, len(means), seeds))


def _covers(lo, hi, truth):
    return float(np.mean((lo <= truth) & (truth <= hi)))


@pytest.mark.parametrize("seeds", [3, 5])
def test_paired_t_interval_covers_the_true_difference(seeds):
    y = _draw(np.random.default_rng(seeds), [3.0, 2.95], seeds, SIMS)
    est, se, dof = paired_arrays(y[:, 0], y[:, 1])
    cover = _covers(*t_interval(est, se, dof, LEVEL), 0.05)
    assert abs(cover - LEVEL) <= TOL, cover
    # the one-comparison function gives the same interval as the vectorised one
    d = difference(pd.Series(y[0, 0], index=range(seeds)), pd.Series(y[0, 1], index=range(seeds)))
    assert d.method == "paired t" and d.ci == pytest.approx(tuple(v[0] for v in t_interval(est, se, dof)))


def test_welch_interval_covers_when_the_seeds_are_not_matched():
    rng = np.random.default_rng(7)
    a = 3.0 + rng.normal(0, 0.05, (SIMS, 4))
    b = 2.9 + rng.normal(0, 0.02, (SIMS, 6))
    cover = _covers(*t_interval(*welch_arrays(a, b), LEVEL), 0.1)
    assert abs(cover - LEVEL) <= TOL, cover
    d = difference(pd.Series(a[0], index=[1, 2, 3, 4]), pd.Series(b[0], index=[5, 6, 7, 8, 9, 10]))
    assert d.method == "Welch t" and d.ci[0] < d.estimate < d.ci[1]


def test_bootstrap_over_seeds_covers_from_twenty_seeds():
    rng = np.random.default_rng(11)
    y = _draw(rng, [3.0, 2.97], 20, 250)
    idx = list(range(20))
    hits = [difference(pd.Series(s[0], index=idx), pd.Series(s[1], index=idx), seed=k) for k, s in enumerate(y)]
    assert {h.method for h in hits} == {"bootstrap over seeds"}
    cover = np.mean([h.ci[0] <= 0.03 <= h.ci[1] for h in hits])
    assert abs(cover - LEVEL) <= TOL, cover


def test_one_seed_has_no_interval_and_bad_method_is_named():
    d = difference(pd.Series([3.0], index=[1]), pd.Series([2.9], index=[1]))
    assert d.ci is None and d.p is None and d.method == "none" and "no interval" in d.text()
    with pytest.raises(ValueError, match="difference method 'z'"):
        difference(pd.Series([3.0, 3.1]), pd.Series([2.9, 3.0]), method="z")


def test_rise_intervals_of_a_known_optimum_cover_the_true_rises():
    means = [3.10, 2.90, 2.98]  # the optimum at the middle point, far enough that it is the best
    y = _draw(np.random.default_rng(3), means, 4, SIMS, sd=0.01)
    out = sweep_tests(y)
    assert np.all(out["best"] == 1)
    for key, truth in (("low", 0.20), ("high", 0.08)):
        cover = _covers(*t_interval(out[f"{key}_est"], out[f"{key}_se"], out["dof"], LEVEL), truth)
        assert abs(cover - LEVEL) <= TOL, (key, cover)


@pytest.mark.parametrize("points,seeds", [(3, 3), (5, 3), (4, 6)])
def test_a_null_sweep_is_called_resolved_no_more_often_than_the_level(points, seeds):
    y = _draw(np.random.default_rng(points * 10 + seeds), [3.0] * points, seeds, SIMS)
    rate = float(np.mean(sweep_tests(y)["p_claim"] <= 1 - LEVEL))
    assert rate <= (1 - LEVEL) + 2 * np.sqrt(0.05 * 0.95 / SIMS), rate


def test_several_null_sweeps_with_holm_keep_the_family_wise_level():
    rng = np.random.default_rng(5)
    p = np.stack([sweep_tests(_draw(rng, [3.0] * 4, 3, SIMS))["p_claim"] for _ in range(4)], axis=1)  # [sims, 4]
    any_resolved = np.mean(np.any(holm(p) <= 1 - LEVEL, axis=1))
    uncorrected = np.mean(np.any(p <= 1 - LEVEL, axis=1))
    assert any_resolved <= (1 - LEVEL) + 2 * np.sqrt(0.05 * 0.95 / SIMS), any_resolved
    assert uncorrected > any_resolved  # the correction is doing work


def test_a_real_optimum_is_resolved_with_enough_seeds():
    y = _draw(np.random.default_rng(9), [3.10, 2.90, 2.98], 5, 1000, sd=0.02)
    out = sweep_tests(y)
    assert np.mean(out["interior"] & (out["p_claim"] <= 0.05)) > 0.9


def test_holm_matches_statsmodels_and_levels_match_the_steps():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    ref = multipletests(p[:4], method="holm")[1]
    assert holm(p)[:4] == pytest.approx(ref) and np.isnan(holm(p)[4])
    assert holm_levels(p)[:4] == pytest.approx([1 - 0.05 / 4, 1 - 0.05 / 2, 1 - 0.05 / 3, 1 - 0.05 / 1])
    assert t_pvalue(0.0, 0.0, 3) == 1.0 and t_pvalue(1.0, 0.0, 3) == 0.0
