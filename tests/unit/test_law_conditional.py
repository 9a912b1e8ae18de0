"""Conditional scaling law: the paper's optima, recovery of a known law, reference loss, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from archscale.law.chinchilla import FitError
from archscale.law.conditional import (
    fit_conditional,
    fit_form,
    l_opt_table,
    normalise_multiplicative,
    optimum,
    predict_loss,
    reference_loss,
    u_factor,
)
from archscale.law.result import FormFit

# method.md section 5 (Bian et al. 2025): multiplicative fits and the optima they imply.
PAPER_SMALL = {"a": [2.697, 0.0974, 0.0078], "b": [0.3870, 0.0063, 0.0065], "x": 0.080, "r": 1.03}
PAPER_1B = {"a": [2.319, 0.238, 0.0176], "b": [0.5104, 0.0051, 0.0062], "x": 0.074, "r": 1.22}


@pytest.mark.parametrize("paper", [PAPER_SMALL, PAPER_1B], ids=["80M-297M", "1B"])
def test_paper_coefficients_give_paper_optima(paper):
    x, why_x = optimum(paper["a"][1], paper["a"][2], "d_over_sqrt_n")
    r, why_r = optimum(paper["b"][1], paper["b"][2], "r")
    assert why_x is None and why_r is None
    assert round(x, 3) == paper["x"]
    assert round(r, 2) == paper["r"]
    # The normalisation the fit uses keeps predictions and optima.
    a, b = normalise_multiplicative(paper["a"], paper["b"])
    assert b[0] + b[2] == pytest.approx(1.0)
    xs, rs = np.geomspace(0.03, 0.3, 7), np.geomspace(0.5, 5, 7)[:, None]
    raw = predict_loss(FormFit("multiplicative", paper["a"], paper["b"]), xs, rs, 3.0)
    norm = predict_loss(FormFit("multiplicative", a, b), xs, rs, 3.0)
    np.testing.assert_allclose(raw, norm, rtol=1e-12)
    assert optimum(a[1], a[2])[0] == pytest.approx(x) and optimum(b[1], b[2])[0] == pytest.approx(r)
    # ... and the loss predicted with the paper's coefficients is lowest at the optimum.
    grid = np.linspace(0.5 * x, 2 * x, 2001)
    assert grid[np.argmin(u_factor(paper["a"], grid))] == pytest.approx(x, rel=1e-3)


def test_no_interior_optimum_is_null_with_reason():
    assert optimum(-0.1, 0.01, "d_over_sqrt_n") == (
        None, "no interior optimum: loss still falling at the largest d_over_sqrt_n (c1 = -0.1 <= 0)"
    )
    val, why = optimum(0.1, -0.01, "r")
    assert val is None and "smallest r" in why
    val, why = optimum(-0.1, -0.01, "r")
    assert val is None and "maximum" in why


def test_predict_loss_broadcasts_both_forms():
    mult = FormFit("multiplicative", (1.0, 0.1, 0.01), (0.99, 0.01, 0.01))
    add = FormFit.from_dict({"form": "additive", "a": [0.1, 0.1, 0.01], "b": [0.0, 0.01, 0.01]})
    x = np.array([0.05, 0.1, 0.2])
    r = np.array([[0.5], [1.0], [4.0]])
    lo = 3.0
    pm = predict_loss(mult, x, r, lo)
    pa = predict_loss(add, x, r, lo)
    assert pm.shape == pa.shape == (3, 3)
    i, j = 2, 1
    assert pm[i, j] == pytest.approx((1 + 0.1 * np.log(0.1) + 0.1) * (0.99 + 0.01 * np.log(4) + 0.0025) * 3)
    assert pa[i, j] == pytest.approx(3 + 0.1 + 0.1 * np.log(0.1) + 0.1 + 0.01 * np.log(4) + 0.0025)
    with pytest.raises(ValueError, match="unknown conditional form"):
        predict_loss(FormFit("joint", (1, 0, 0), (1, 0, 0)), 1, 1, 1)
    with pytest.raises(TypeError, match="takes a FormFit.*FormFit.from_dict"):
        predict_loss({"form": "multiplicative", "a": [1, 0, 0], "b": [1, 0, 0]}, 1, 1, 1)


# ---- synthetic runs from a known law --------------------------------------------------------
CHIN = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.36}
SCALES = [("80m", 80_000_000), ("145m", 145_000_000), ("297m", 297_000_000)]


def chinchilla_l(n, d):
    return CHIN["E"] + CHIN["A"] / n ** CHIN["alpha"] + CHIN["B"] / d ** CHIN["beta"]


def synthetic_runs(form, a, b, noise=0.003, seed=0, xs=None, rs=None):
    rng = np.random.default_rng(seed)
    xs = np.geomspace(0.03, 0.25, 7) if xs is None else xs
    rs = np.array([0.3, 0.5, 0.8, 1.0, 1.5, 2.5, 4.0, 5.0, 8.0]) if rs is None else rs
    rows = []
    for name, n in SCALES:
        d = 100 * n
        lo = chinchilla_l(n, d)
        for x in xs:
            for r in rs:
                if form == "multiplicative":
                    loss = u_factor(a, x) * u_factor(b, r) * lo
                else:
                    loss = lo + u_factor(a, x) + u_factor(b, r)
                rows.append(
                    {
                        "arch_id": f"{name}-x{x:.3f}-r{r:.2f}", "scale": name, "n_target": n,
                        "params_non_embedding": int(n * (1 + rng.uniform(-0.03, 0.03))), "D": d, "tokens": d,
                        "d_over_sqrt_n": x, "mlp_attn_ratio": r, "valid_loss": loss + rng.normal(0, noise),
                    }
                )
    return pd.DataFrame(rows)


def _inside(v, ci):
    return ci[0] <= v <= ci[1]


def test_multiplicative_recovers_coefficients_and_optima():
    a_true, b_true = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]
    runs = synthetic_runs("multiplicative", a_true, b_true)
    out = fit_conditional(
        runs, reference="chinchilla", chinchilla={"params": CHIN}, forms=["multiplicative"], bootstrap=200, seed=0
    )
    assert out["n_points"] == 3 * 7 * 7  # r = 0.3 and 8 are outside [0.5, 5]
    fit = out["forms"]["multiplicative"]
    a_n, b_n = normalise_multiplicative(a_true, b_true)
    for i in range(3):
        assert _inside(a_n[i], fit["a_ci"][i]), (i, a_n[i], fit["a_ci"][i])
        assert _inside(b_n[i], fit["b_ci"][i]), (i, b_n[i], fit["b_ci"][i])
    x_true, r_true = a_true[2] / a_true[1], b_true[2] / b_true[1]
    opt = fit["optimum"]
    assert _inside(x_true, opt["d_over_sqrt_n_ci"]) and _inside(r_true, opt["r_ci"])
    assert opt["d_over_sqrt_n"] == pytest.approx(x_true, rel=0.05)
    assert opt["r"] == pytest.approx(r_true, rel=0.1)
    assert fit["spearman"] > 0.95 and fit["mse"] < 2e-5
    json.dumps(out, allow_nan=False)  # strict JSON


def test_additive_recovers_coefficients_and_optima():
    a_true, b_true = [0.10, 0.12, 0.010], [0.0, 0.02, 0.025]
    runs = synthetic_runs("additive", a_true, b_true, seed=5)
    out = fit_conditional(runs, reference="chinchilla", chinchilla={"params": CHIN}, forms=["additive"])
    fit = out["forms"]["additive"]
    assert fit["b"][0] == 0.0
    for i in range(3):
        assert _inside(a_true[i], fit["a_ci"][i]), (i, fit["a_ci"][i])
    for i in (1, 2):
        assert _inside(b_true[i], fit["b_ci"][i]), (i, fit["b_ci"][i])
        assert fit["b_se"][i] > 0
    assert _inside(a_true[2] / a_true[1], fit["optimum"]["d_over_sqrt_n_ci"])
    assert _inside(b_true[2] / b_true[1], fit["optimum"]["r_ci"])


def test_empirical_reference_recovers_optima():
    a_true, b_true = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]
    runs = synthetic_runs("multiplicative", a_true, b_true, seed=2)
    out = fit_conditional(runs, reference="empirical", bootstrap=200, seed=1)
    assert out["chinchilla"] is None
    # L_opt: lowest observed loss per scale, over every r (also outside the fitted range).
    for name, n in SCALES:
        sub = runs[runs["n_target"] == n]
        assert l_opt_table(out["l_opt"])[(n, 100 * n)] == pytest.approx(sub["valid_loss"].min())
    for form in ("multiplicative", "additive"):
        opt = out["forms"][form]["optimum"]
        assert _inside(a_true[2] / a_true[1], opt["d_over_sqrt_n_ci"]), (form, opt)
        assert _inside(b_true[2] / b_true[1], opt["r_ci"]), (form, opt)


def test_monotone_data_reports_no_optimum():
    # Loss still falling at the largest d/sqrt(N) and r (what tiny CPU models show).
    runs = synthetic_runs("additive", [0.3, -0.15, 0.002], [0.0, -0.03, 0.004], seed=3, noise=0.002)
    out = fit_conditional(runs, bootstrap=50)
    for form in ("multiplicative", "additive"):
        opt = out["forms"][form]["optimum"]
        assert opt["d_over_sqrt_n"] is None and opt["d_over_sqrt_n_ci"] is None
        assert opt["d_over_sqrt_n_reason"].startswith("no interior optimum: loss still falling at the largest")
        assert opt["r"] is None and "no interior optimum" in opt["r_reason"]


def test_reference_loss_contract():
    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065], seed=4)
    emp = fit_conditional(runs, bootstrap=0)
    n, d = SCALES[1][1], 100 * SCALES[1][1]
    lowest = runs[runs["n_target"] == n]["valid_loss"].min()
    assert reference_loss(emp, n, d) == pytest.approx(lowest)
    assert reference_loss(emp, n, d, runs) == pytest.approx(lowest)
    # N is matched within 10% (a variant's exact N), D within 1%.
    assert reference_loss(emp, n * 1.04, d * 1.004) == pytest.approx(lowest)
    with pytest.raises(ValueError, match="no observed runs at N = 1e.09"):
        reference_loss(emp, 1e9, 1e11)
    chin = fit_conditional(runs, reference="chinchilla", chinchilla={"params": CHIN}, bootstrap=0)
    assert chin["chinchilla"]["params"] == CHIN
    assert reference_loss(chin, 1e9, 1e11) == pytest.approx(chinchilla_l(1e9, 1e11))
    assert l_opt_table(chin["l_opt"])[(n, d)] == pytest.approx(chinchilla_l(n, d))
    # Round trip through JSON: what the search stage reads.
    back = json.loads(json.dumps(emp))
    f = FormFit.from_dict(back["forms"]["multiplicative"])
    got = predict_loss(f, 0.08, 1.0, reference_loss(back, n, d))
    assert np.isfinite(got) and abs(got - lowest) < 0.05


def test_bad_input_fails_clearly():
    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065])
    with pytest.raises(FitError, match=r"missing column\(s\) \['mlp_attn_ratio'\]"):
        fit_conditional(runs.drop(columns=["mlp_attn_ratio"]))
    bad = runs.copy()
    bad.loc[5, "valid_loss"] = np.nan
    with pytest.raises(FitError, match=f"run '{bad.loc[5, 'arch_id']}' has nan"):
        fit_conditional(bad)
    with pytest.raises(FitError, match=r"3 runs have r in \[0.5, 5.0\] \(of 4\), fewer than the 5 coefficients"):
        fit_conditional(runs.iloc[:4])
    with pytest.raises(FitError, match="fewer than the 5"):
        fit_form("additive", [0.1] * 3, [1.0] * 3, [3.0] * 3, [3.0] * 3)
    with pytest.raises(FitError, match="r_min"):
        fit_conditional(runs, r_range=(5, 0.5))
    with pytest.raises(FitError, match="no fitted Chinchilla law"):
        fit_conditional(runs, reference="chinchilla", chinchilla={"fitted": False})


def test_authors_table_identifies_chinchilla_and_states_the_d_over_sqrt_n_optimum():
    """The authors' width/depth table (Bian et al., 80M-1B at 20, 40 and 160 tokens per parameter) has
    d_model and N but no knob columns: d/sqrt(N) is derived, r (one value) is withheld with the reason,
    the Chinchilla reference has finite intervals on alpha and beta, and the d/sqrt(N) optimum is stated."""
    from pathlib import Path

    df = pd.read_csv(Path(__file__).parents[1] / "data" / "bian2025_morph_aspect_ratio_losses.csv")
    assert df["D_tokens"].nunique() >= 3 and "mlp_attn_ratio" not in df
    out = fit_conditional(df, reference="chinchilla", columns={"n": "N_params", "d": "D_tokens", "loss": "loss"},
                          bootstrap=60, forms=["additive"])
    chin = out["chinchilla"]
    for k in ("alpha", "beta"):
        lo, hi = chin["ci"][k]
        assert np.isfinite([lo, hi]).all() and 0 < lo <= chin["params"][k] <= hi < 2
    assert any("d_model / sqrt(N_params)" in n for n in out["notes"])
    opt = out["forms"]["additive"]["optimum"]
    x = df["d_model"] / np.sqrt(df["N_params"])
    assert x.min() < opt["d_over_sqrt_n_ci"][0] < opt["d_over_sqrt_n"] < opt["d_over_sqrt_n_ci"][1] < x.max()
    assert opt["d_over_sqrt_n"] == pytest.approx(0.052, abs=0.004)
    assert opt["r"] is None and "the table has no r column" in opt["r_reason"]
    # the empirical reference cannot group these runs (each (N, D) holds one run) and says what to do
    with pytest.raises(FitError, match="use the chinchilla reference"):
        fit_conditional(df, columns={"n": "N_params", "d": "D_tokens", "loss": "loss"}, bootstrap=0)
    # a knob column named by the caller is never derived
    with pytest.raises(FitError, match="missing column"):
        fit_conditional(df, reference="chinchilla", columns={"n": "N_params", "d": "D_tokens", "loss": "loss",
                                                             "x": "dx"}, bootstrap=0)
