"""The steps of the fits, one at a time: points, knobs, design check, starts, optimisation,
bootstrap and guard (conditional forms), guard/grid/polish/bootstrap (Chinchilla), the
batched L-BFGS's parts, the validation task steps and the one law object."""

from __future__ import annotations

import numpy as np
import pytest

from archscale.law.calibration import (
    FitOptions,
    FormData,
    bootstrap_intervals,
    check_design,
    fit_form,
    guard_optima,
    knob_factors,
    multiplicative_starts,
    optimise_multiplicative,
    prepare_points,
    resample_index,
    u_factor,
)
from archscale.law.chinchilla import (
    FitError,
    LogPoints,
    grid_search,
    identifiability_warnings,
    polish_best,
    start_grid,
)
from archscale.law.laws import LawError, law_from_conditional, load_law
from archscale.law.optim import _Memory, armijo_search
from archscale.law.validation import form_row, task_data

X5 = np.array([0.04, 0.06, 0.08, 0.11, 0.15])
R5 = np.array([0.5, 0.8, 1.2, 2.0, 3.5])


def grid_points(a=(2.7, 0.1, 0.008), b=(0.39, 0.0063, 0.0065), l_opt=3.0):
    x, r = (v.ravel() for v in np.meshgrid(X5, R5))
    loss = u_factor(np.array(a), x) * u_factor(np.array(b), r) * l_opt
    return x, r, loss, np.full(x.size, l_opt)


# ---- conditional forms ----------------------------------------------------------------
def test_prepare_points_drops_groups_when_every_run_gives_one_point():
    x, r, loss, lo = grid_points()
    assert prepare_points("additive", x, r, loss, lo, groups=np.arange(x.size)).groups is None
    g = np.repeat(np.arange(x.size // 5 + 1), 5)[: x.size]
    assert prepare_points("additive", x, r, loss, lo, groups=g).groups is not None
    with pytest.raises(FitError, match="different lengths"):
        prepare_points("additive", x, r, loss, lo, groups=g[:-1])
    with pytest.raises(FitError, match="unknown form"):
        prepare_points("cubic", x, r, loss, lo)
    bad = loss.copy()
    bad[3] = -1.0
    with pytest.raises(FitError, match="point 3"):
        prepare_points("additive", x, r, bad, lo)


def test_knob_with_two_values_is_fixed_and_says_why():
    x = np.tile(X5, 2)
    r = np.repeat([1.0, 2.0], 5)
    free, factors = knob_factors(x, r)
    assert free.tolist() == [True, True, True, False, False]
    assert factors["d_over_sqrt_n"]["fitted"] and factors["d_over_sqrt_n"]["range"] == [0.04, 0.15]
    assert not factors["r"]["fitted"] and factors["r"]["reason"].startswith("r not fitted")


def test_design_check_rejects_a_knob_tied_to_the_other():
    x = np.tile(X5, 2)
    with pytest.raises(FitError, match="not separately identifiable|rank"):
        check_design(x, 2 * x, np.ones(5, bool), "additive")
    x, r, *_ = grid_points()
    assert check_design(x, r, np.ones(5, bool), "additive") == []


def test_batched_starts_are_the_single_fits_starts_and_respect_fixed_coefficients():
    x, r, loss, lo = grid_points()
    rng = np.random.default_rng(0)
    losses = loss[None] * (1 + rng.normal(0, 1e-3, (3, loss.size)))
    free = np.array([True, True, True, False, False])
    batched = multiplicative_starts(x, r, losses, np.tile(lo, (3, 1)), free)
    assert len(batched) == 4 and all(s.shape == (3, 5) for s in batched)
    for k in range(3):
        single = multiplicative_starts(x, r, losses[k], lo, free)
        for s_b, s_1 in zip(batched, single):
            np.testing.assert_array_equal(s_b[k], s_1[0])
    assert all(np.all(s[:, 3:] == 0) for s in batched)
    np.testing.assert_array_equal(batched[1], np.tile([1.0, 0, 0, 0, 0], (3, 1)))
    np.testing.assert_allclose(batched[2][:, 1:3], 2 * batched[0][:, 1:3])


def test_optimise_multiplicative_recovers_exact_coefficients():
    a, b = (2.7, 0.1, 0.008), (0.39, 0.0063, 0.0065)
    x, r, loss, lo = grid_points(a, b)
    warns: list[str] = []
    p, starts = optimise_multiplicative(FormData(x, r, loss, lo), np.ones(5, bool), warns)
    k = b[0] + b[2]  # the fit's normalisation: b0 + b2 = 1
    np.testing.assert_allclose(p, [a[0] * k, a[1] * k, a[2] * k, b[1] / k, b[2] / k], rtol=1e-6)
    assert 1 <= len(starts) <= 3 and np.allclose(starts[0], p)


def test_resample_index_takes_whole_runs():
    groups = np.repeat(["a", "b", "c", "d"], 3)
    idx = resample_index(np.random.default_rng(1), groups, groups.size)
    assert idx.size == groups.size
    for chunk in idx.reshape(4, 3):  # each run's points stay together
        assert len(set(groups[chunk])) == 1
    assert resample_index(np.random.default_rng(1), None, 7).size == 7


def test_bootstrap_intervals():
    assert bootstrap_intervals(None, FitOptions())["a_ci"] == [None] * 3
    samples = np.tile(np.arange(6.0), (101, 1)) + np.linspace(-1, 1, 101)[:, None]
    out = bootstrap_intervals(samples, FitOptions(ci_level=0.9))
    assert out["a_ci"][0] == pytest.approx([-0.9, 0.9]) and out["b_ci"][2] == pytest.approx([4.1, 5.9])
    assert out["a_se"][1] == pytest.approx(np.std(np.linspace(-1, 1, 101), ddof=1))


def test_guard_keeps_only_optima_inside_the_sampled_range():
    factors = {"d_over_sqrt_n": {"range": [0.04, 0.15]}, "r": {"range": [0.5, 3.5]}}
    opt = {"d_over_sqrt_n": 0.08, "d_over_sqrt_n_ci": [0.07, 0.09], "d_over_sqrt_n_reason": None,
           "r": 5.0, "r_ci": [4.0, 6.0], "r_reason": None}
    guard_optima(opt, factors, interval_expected=True)
    assert opt["d_over_sqrt_n"] == 0.08 and opt["d_over_sqrt_n_reason"] is None
    assert opt["r"] is None and "outside the sampled range" in opt["r_reason"]
    opt = {"d_over_sqrt_n": 0.08, "d_over_sqrt_n_ci": None, "d_over_sqrt_n_reason": None,
           "r": None, "r_ci": None, "r_reason": "no interior optimum"}
    guard_optima(opt, factors, interval_expected=False)
    assert opt["d_over_sqrt_n"] == 0.08 and opt["d_over_sqrt_n_reason"].startswith("point estimate only")
    assert opt["r_reason"] == "no interior optimum"


def test_fit_form_is_its_steps():
    x, r, loss, lo = grid_points()
    fit = fit_form("multiplicative", x, r, loss, lo, bootstrap=0)
    assert fit["status"] == "ok" and "bootstrap" not in fit and fit["a_ci"] == [None] * 3
    assert fit["optimum"]["d_over_sqrt_n"] == pytest.approx(0.08, rel=1e-6)
    assert fit["optimum"]["d_over_sqrt_n_reason"].startswith("point estimate only")


# ---- Chinchilla -----------------------------------------------------------------------
def test_identifiability_guard():
    n = np.array([1e8, 2e8, 1e8, 2e8, 1e8, 2e8])
    with pytest.raises(FitError, match="N takes 2 distinct"):
        identifiability_warnings(n, np.array([1e9, 2e9, 3e9, 4e9, 5e9, 6e9]))
    n = np.geomspace(1e7, 1e9, 6)
    assert any("collinear" in w for w in identifiability_warnings(n, 20 * n))
    assert identifiability_warnings(n, np.array([3e9, 1e9, 8e9, 2e10, 5e9, 4e10])) == []
    n5 = n[:5]
    assert any("interpolates" in w for w in identifiability_warnings(n5, np.array([3e9, 1e9, 8e9, 2e10, 5e9])))


def chinchilla_points():
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(7, 10, 60)
    d = n * 10 ** rng.uniform(0.5, 2.5, 60)
    loss = 1.9 + 300.0 / n**0.32 + 900.0 / d**0.3
    return n, d, LogPoints(np.log(n), np.log(d), np.log(loss))


def test_grid_search_and_polish_recover_an_exact_law():
    n, d, pts = chinchilla_points()
    picks = grid_search(pts, "squared", 1e-3, start_grid(), polish=3)
    assert 1 <= len(picks) <= 3
    for i, p in enumerate(picks):  # distinct minima
        assert all(np.max(np.abs(p - q)) > 1e-4 for q in picks[:i])
    warnings: list[str] = []
    theta, val = polish_best(picks, pts, "squared", 1e-3, warnings)
    np.testing.assert_allclose(theta, [np.log(300.0), np.log(900.0), np.log(1.9), 0.32, 0.3], rtol=1e-4)
    assert val < 1e-16


# ---- the batched L-BFGS's parts ---------------------------------------------------------
def test_memory_without_pairs_steps_along_the_negative_gradient():
    mem = _Memory.empty(2, 4, 3)
    g = np.array([[3.0, 0.0, 4.0], [0.1, 0.2, 0.2]])
    d, gd, gnorm = mem.direction(np.arange(2), g)
    np.testing.assert_allclose(gnorm, [5.0, 0.3])
    np.testing.assert_allclose(d[0], -g[0] / 5.0)  # first step: unit length for a large gradient
    np.testing.assert_allclose(d[1], -g[1])  # ... and the gradient itself for a small one
    assert np.all(gd < 0)


def test_memory_pair_gives_the_newton_step_on_a_quadratic():
    h = np.array([2.0, 8.0])  # f = sum h x^2 / 2 in one coordinate at a time
    mem = _Memory.empty(1, 3, 2)
    mem.push(np.array([0]), np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), 1)
    mem.push(np.array([0]), np.array([[0.0, 1.0]]), np.array([[0.0, 8.0]]), 1)
    x = np.array([[1.0, 1.0]])
    d, _, _ = mem.direction(np.array([0]), h * x)
    np.testing.assert_allclose(d, -x)


def test_armijo_search_accepts_the_full_step_and_backtracks_an_overshoot():
    def fun(x, rows):
        return np.sum(x**2, axis=1), 2 * x

    xa = np.array([[1.0], [1.0]])
    fa = np.array([1.0, 1.0])
    d = np.array([[-1.0], [-10.0]])
    gd = np.array([-2.0, -20.0])
    t, fn, _, pending = armijo_search(fun, np.arange(2), xa, fa, d, gd, 40)
    assert not pending.any()
    assert t[0] == 1.0 and fn[0] == 0.0
    assert t[1] < 1.0 and fn[1] < 1.0


# ---- validation tasks -------------------------------------------------------------------
def test_task_without_test_points_in_range_is_kept_with_both_statuses():
    from test_law_conditional import SCALES, synthetic_runs

    from archscale.law.conditional import resolve_columns

    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065])
    cols = resolve_columns(runs)
    runs = runs[~((runs["n_target"] == SCALES[1][1]) & (runs["mlp_attn_ratio"] <= 5.0))]
    t = task_data(runs, cols, "progressive", [SCALES[0][1]], SCALES[1][1], (0.5, 5.0))
    assert t.task == "80m->145m" and len(t.test) == 0
    assert t.emp_err.startswith("skipped: no runs of 145m") and t.chin_err == t.emp_err
    row = form_row(t, "multiplicative", cols, "chinchilla")
    assert row["mse"] is None and row["status"].startswith(t.chin_err + "; empirical reference:")


# ---- the one law object -----------------------------------------------------------------
def test_law_reads_its_fit_and_its_own_reference_loss():
    cond = {
        "reference": "empirical", "r_range": [0.5, 5.0], "columns": {"loss": "my_loss"},
        "forms": {"multiplicative": {"form": "multiplicative", "a": [2.7, 0.1, 0.008], "b": [0.39, 0.0063, 0.0065]},
                  "additive": {}},
        "l_opt": [{"n": 100_000_000, "d": 10_000_000_000, "l_opt": 3.0}],
    }
    law = law_from_conditional(cond, "fit")
    assert law.fitted_forms == ["multiplicative"] and law.fit is cond and law.column("loss") == "my_loss"
    pred = law.predict_forms(0.08, 1.2, 3.0)
    assert list(pred) == ["multiplicative"] and pred["multiplicative"] == pytest.approx(
        float(u_factor([2.7, 0.1, 0.008], 0.08) * u_factor([0.39, 0.0063, 0.0065], 1.2) * 3.0))
    assert law.fit_reference_loss(105_000_000, 10_000_000_000) == 3.0  # N within 10%
    with pytest.raises(LawError, match="no observed runs"):
        law.fit_reference_loss(300_000_000, 10_000_000_000)
    with pytest.raises(LawError, match="not a fit"):
        load_law("paper-1b").fit_reference_loss(1e9, 1e11)


def test_search_reads_the_fit_as_the_law_object():
    from archscale.search import SearchError, law_from_fit, reference_l_opt

    with pytest.raises(SearchError, match="no fitted form"):
        law_from_fit({"forms": {"additive": {}}})
    law = law_from_fit({"reference": "empirical", "l_opt": [],
                        "forms": {"additive": {"form": "additive", "a": [0.1, 0.1, 0.01], "b": [0.0, 0.02, 0.02]}}})
    with pytest.raises(SearchError, match="reference loss at N=1,000"):
        reference_l_opt(law, 1000, 20000)
