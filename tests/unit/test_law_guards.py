"""Identifiability guards: degenerate tables give an error or a flagged result, never an optimum."""

import warnings

import numpy as np
import pandas as pd
import pytest

from archscale.law.chinchilla import FitError, fit_chinchilla
from archscale.law.conditional import fit_conditional, fit_form
from archscale.law.guards import capture_warnings, distinct, knob_support, optimum_in_range, rank_check
from test_law_conditional import SCALES, synthetic_runs

A, B = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]


def test_distinct_and_knob_support():
    assert distinct([1.0, 1.0, 1.0 + 1e-12, 2.0]) == 2
    assert knob_support([0.05, 0.08, 0.12], "x") is None
    why = knob_support([0.05, 0.08, 0.05], "d_over_sqrt_n")
    assert why.startswith("d_over_sqrt_n not fitted: it takes 2 distinct value(s)") and "at least 3" in why


def test_singleton_groups_are_an_error_naming_the_remedy():
    # No group columns: every run's N differs, so every run would be its own (N, D) group.
    runs = synthetic_runs("multiplicative", A, B).drop(columns=["n_target", "tokens"])
    with pytest.raises(FitError, match=r"groups hold fewer than 2 runs.*--group-n/--group-d"):
        fit_conditional(runs, bootstrap=0)
    # Naming the group columns fixes it.
    out = fit_conditional(synthetic_runs("multiplicative", A, B), bootstrap=0)
    assert out["status"] == "ok"


@pytest.mark.parametrize("form", ["multiplicative", "additive"])
def test_constant_r_leaves_the_factor_out_and_reports_no_r_optimum(form):
    runs = synthetic_runs("multiplicative", A, B, rs=np.array([1.5]), noise=0.002, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape to stderr
        out = fit_conditional(runs, forms=[form], bootstrap=30, seed=0)
    f = out["forms"][form]
    assert f["factors"]["r"]["fitted"] is False and "1 distinct value" in f["factors"]["r"]["reason"]
    assert f["b"][1] == 0.0 and f["b"][2] == 0.0
    assert f["optimum"]["r"] is None and f["optimum"]["r_ci"] is None
    assert "r not fitted" in f["optimum"]["r_reason"]
    assert f["status"].startswith("flagged: r not fitted") and out["status"].startswith("flagged")
    # The other knob is still fitted and its optimum recovered.
    x_true = A[2] / A[1]
    assert f["factors"]["d_over_sqrt_n"]["fitted"] is True
    lo, hi = f["optimum"]["d_over_sqrt_n_ci"]
    assert lo <= x_true <= hi


def test_two_values_of_a_knob_give_no_optimum():
    runs = synthetic_runs("multiplicative", A, B, xs=np.array([0.05, 0.12]), seed=6)
    out = fit_conditional(runs, bootstrap=0)
    for form in ("multiplicative", "additive"):
        f = out["forms"][form]
        assert f["optimum"]["d_over_sqrt_n"] is None
        assert "2 distinct value(s)" in f["optimum"]["d_over_sqrt_n_reason"]
        assert f["status"].startswith("flagged")


def test_optimum_outside_the_sampled_range_is_withheld():
    # True optimum d/sqrt(N) = 0.080; the runs only sample 0.12 .. 0.3 (loss still rising there).
    runs = synthetic_runs("multiplicative", A, B, xs=np.geomspace(0.12, 0.3, 5), noise=0.002, seed=11)
    out = fit_conditional(runs, bootstrap=40)
    for form in ("multiplicative", "additive"):
        opt = out["forms"][form]["optimum"]
        assert opt["d_over_sqrt_n"] is None and opt["d_over_sqrt_n_ci"] is None, (form, opt)
        assert opt["d_over_sqrt_n_reason"].startswith("no interior optimum"), opt
    assert optimum_in_range(0.08, [0.07, 0.2], 0.05, 0.15, "x", True)[2].startswith("no interior optimum: the interval")
    assert optimum_in_range(0.08, None, 0.05, 0.15, "x", False) == (0.08, None, None)


def test_collinear_knobs_are_rank_deficient():
    x = np.geomspace(0.03, 0.25, 12)
    r = 20 * x  # ln r = ln x + const: the design loses a column
    loss = 3.0 + 0.1 * np.log(x) + 0.01 / x
    with pytest.raises(FitError, match="rank"):
        fit_form("additive", x, r, loss, np.full_like(x, 3.0), bootstrap=0)
    with pytest.raises(FitError, match="rank"):
        fit_form("multiplicative", x, r, loss, np.full_like(x, 3.0), bootstrap=0)
    err, _ = rank_check(np.column_stack([np.ones(4), np.arange(4.0)]), ["c", "s"], "t")
    assert err is None


def test_library_warnings_reach_the_result():
    sink: list[str] = []
    with capture_warnings(sink, "fit: "):
        warnings.warn("singular matrix", RuntimeWarning)
        np.log(np.array([0.0]))
    assert sink[0] == "fit: RuntimeWarning: singular matrix" and any("divide by zero" in w for w in sink)


def test_chinchilla_on_one_scale_is_not_identifiable():
    runs = synthetic_runs("multiplicative", A, B)
    one = runs[runs["n_target"] == SCALES[1][1]]
    with pytest.raises(FitError, match="Chinchilla law not identifiable: D takes 1 distinct value"):
        fit_chinchilla(one["params_non_embedding"], one["D"], one["valid_loss"], bootstrap=0)
    with pytest.raises(FitError, match="not identifiable"):
        fit_conditional(one, reference="chinchilla", bootstrap=0)


def test_bootstrap_resamples_runs_not_checkpoints():
    runs = synthetic_runs("multiplicative", A, B, noise=0.004, seed=12)
    base = fit_conditional(runs, forms=["multiplicative"], bootstrap=60, seed=3)["forms"]["multiplicative"]
    # Each run reports three checkpoints with (almost) the same loss.
    rep = pd.concat([runs.assign(valid_loss=runs["valid_loss"] + k * 1e-6) for k in range(3)], ignore_index=True)
    by_run = fit_conditional(rep, forms=["multiplicative"], bootstrap=60, seed=3)["forms"]["multiplicative"]
    by_row = fit_conditional(rep.drop(columns=["arch_id"]), forms=["multiplicative"], bootstrap=60,
                             seed=3)["forms"]["multiplicative"]
    assert by_run["bootstrap_unit"] == "run" and by_row["bootstrap_unit"] == "point"

    def width(f):
        return f["optimum"]["d_over_sqrt_n_ci"][1] - f["optimum"]["d_over_sqrt_n_ci"][0]

    # Rows of one run are not independent: resampling rows understates the spread ~ sqrt(3).
    assert width(by_row) < 0.8 * width(by_run)
    assert 0.6 < width(by_run) / width(base) < 1.6
    # The noisy law is still recovered within the run-resampled intervals.
    assert by_run["optimum"]["d_over_sqrt_n_ci"][0] <= A[2] / A[1] <= by_run["optimum"]["d_over_sqrt_n_ci"][1]
    assert by_run["optimum"]["r_ci"][0] <= B[2] / B[1] <= by_run["optimum"]["r_ci"][1]
