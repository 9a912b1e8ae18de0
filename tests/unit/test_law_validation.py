"""Progressive cross-scale validation and the fit rule's outputs (fit_outputs)."""

import json

import numpy as np
import pytest

from archscale.law import fit_outputs
from archscale.law.conditional import l_opt_table
from archscale.law.validation import VALIDATION_SCHEMA, progressive_validation, validation_table
from test_law_conditional import SCALES, synthetic_runs

A, B = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]


def test_progressive_tasks_predict_the_next_scale():
    runs = synthetic_runs("multiplicative", A, B, noise=0.002, seed=7)
    full = progressive_validation(runs)
    df = full[full["kind"] == "progressive"]
    assert list(df["task"]) == ["80m->145m", "80m->145m", "80m+145m->297m", "80m+145m->297m"]
    assert list(df["form"]) == ["multiplicative", "additive"] * 2
    assert list(df["n_train"]) == [49, 49, 98, 98] and set(df["n_test"]) == {49}
    assert (df["status_empirical"] == "ok").all()
    assert (df["mse"] < 5e-5).all() and (df["spearman"] > 0.9).all()
    np.testing.assert_allclose(df["d_over_sqrt_n_opt"], A[2] / A[1], rtol=0.1)
    np.testing.assert_allclose(df["r_opt"], B[2] / B[1], rtol=0.25)
    # Every row says its empirical reference is optimistic; one or two scales at 100 tokens per
    # parameter leave D with < 3 values: the extrapolated reference is missing and says why.
    assert full["reference_note"].str.startswith("optimistic").all()
    assert full["status_extrapolated"].str.startswith("Chinchilla law not identifiable").all()
    assert full["mse_extrapolated"].isna().all() and not (full["status"] == "ok").any()
    # The paper's other task form: the law fitted on one scale predicts the next.
    nxt = full[full["kind"] == "next"]
    assert list(nxt["task"]) == ["145m->297m", "145m->297m"] and set(nxt["n_train"]) == {49}
    assert (nxt["status_empirical"] == "ok").all() and (nxt["spearman"] > 0.9).all()
    table = validation_table(full)
    assert table.schema == VALIDATION_SCHEMA


@pytest.mark.slow
def test_chinchilla_reference_extrapolates_from_training_scales():
    runs = synthetic_runs("multiplicative", A, B, noise=0.002, seed=8)
    df = progressive_validation(runs, reference="chinchilla", forms=["multiplicative"], kinds=["progressive"])
    # One or two scales at 100 tokens per parameter give D one or two distinct values: the
    # Chinchilla law is not identifiable, and the rows say so (never "ok").
    assert len(df) == 2 and df["status"].str.startswith("Chinchilla law not identifiable").all()


def test_task_without_enough_points_is_kept_and_says_why():
    runs = synthetic_runs("multiplicative", A, B, noise=0.002, seed=9)
    first_scale = runs["n_target"] == SCALES[0][1]
    small = runs[~first_scale | (runs["mlp_attn_ratio"] == 1.0) & (runs["d_over_sqrt_n"] < 0.1)]
    df = progressive_validation(small, forms=["additive"], kinds=["progressive"])
    first = df.iloc[0]
    assert first["status"].startswith("skipped:") and "fewer than the 5 coefficients" in first["status"]
    assert first["mse"] is None or np.isnan(first["mse"])
    assert df.iloc[1]["status_empirical"] == "ok"


@pytest.mark.slow
def test_fit_outputs_on_synthetic_runs():
    xs, rs = np.geomspace(0.03, 0.25, 5), np.array([0.3, 0.5, 1.0, 2.5, 5.0])
    runs = synthetic_runs("multiplicative", A, B, noise=0.002, seed=10, xs=xs, rs=rs)
    chin, cond, val = fit_outputs(runs, {"bootstrap": 20, "reference": "empirical"})
    assert chin["fitted"] is True and chin["objective"] == "huber" and chin["lm"]["objective"] == "squared"
    assert chin["n_points"] == len(runs)
    assert set(cond["forms"]) == {"multiplicative", "additive"}
    assert cond["reference"] == "empirical" and cond["r_range"] == [0.5, 5.0]
    for form in cond["forms"].values():
        assert set(form) >= {"a", "b", "optimum", "mse", "spearman"}
        assert set(form["optimum"]) >= {"d_over_sqrt_n", "d_over_sqrt_n_ci", "r", "r_ci"}
    json.dumps([chin, cond], allow_nan=False)
    assert len(val) == 6 and list(val["kind"]) == ["progressive"] * 4 + ["next"] * 2

    cchin, ccond, _ = fit_outputs(runs, {"bootstrap": 0, "reference": "chinchilla"})
    assert ccond["chinchilla"]["params"] == cchin["params"]
    n, d = SCALES[0][1], 100 * SCALES[0][1]
    assert l_opt_table(ccond["l_opt"])[(n, d)] == pytest.approx(
        cchin["params"]["E"] + cchin["params"]["A"] / n ** cchin["params"]["alpha"]
        + cchin["params"]["B"] / d ** cchin["params"]["beta"]
    )


def test_too_few_runs_for_chinchilla_is_recorded_not_fatal_with_empirical_reference():
    runs = synthetic_runs("multiplicative", A, B, xs=np.array([0.05, 0.08, 0.12]), rs=np.array([1.0]))
    runs = runs[runs["n_target"] == SCALES[2][1]].iloc[:3]
    with pytest.raises(Exception, match="fewer than the 5"):
        fit_outputs(runs, {"bootstrap": 0})
    runs2 = synthetic_runs("multiplicative", A, B, xs=np.array([0.04, 0.08]), rs=np.array([0.5, 1.0, 3.0]))
    runs2 = runs2[runs2["n_target"] == SCALES[2][1]]
    chin, cond, val = fit_outputs(runs2, {"bootstrap": 0, "forms": ["additive"]})
    # One scale: D takes one value, the Chinchilla law is not identifiable (recorded, not fatal).
    assert chin["fitted"] is False and "not identifiable" in chin["reason"]
    assert val.empty  # one scale: no progressive task


@pytest.mark.slow  # one Chinchilla fit of the Hoffmann grid: minutes on a loaded 2-core machine
def test_extrapolated_reference_when_the_training_scales_identify_chinchilla():
    # Four scales at different tokens per parameter: three training scales give D three values,
    # so the last task also reports MSE/Spearman with L_opt extrapolated from the training scales.
    import pandas as pd
    from archscale.law.conditional import u_factor
    from test_law_conditional import chinchilla_l

    rng = np.random.default_rng(41)
    rows = []
    for name, n, tpp in (("50m", 50e6, 40), ("80m", 80e6, 100), ("145m", 145e6, 60), ("297m", 297e6, 150)):
        for x in np.geomspace(0.03, 0.25, 5):
            for r in (0.5, 1.0, 2.0, 4.0):
                nn = n * (1 + rng.uniform(-0.03, 0.03))
                loss = u_factor(A, x) * u_factor(B, r) * chinchilla_l(nn, tpp * n)
                rows.append({"arch_id": f"{name}-{x:.3f}-{r}", "scale": name, "n_target": n, "params_non_embedding": nn,
                             "D": tpp * n, "tokens": tpp * n, "d_over_sqrt_n": x, "mlp_attn_ratio": r,
                             "valid_loss": loss + rng.normal(0, 0.002)})
    runs = pd.DataFrame(rows)
    df = progressive_validation(runs, forms=["multiplicative"], kinds=["progressive"])
    last = df.iloc[-1]
    assert last["task"] == "50m+80m+145m->297m"
    assert np.isfinite(last["mse_extrapolated"]) and last["spearman_extrapolated"] > 0.9
    assert last["status_extrapolated"].startswith(("ok", "flagged"))
    assert not last["status_extrapolated"].startswith("Chinchilla law not identifiable")
    assert df.iloc[0]["status_extrapolated"].startswith("Chinchilla law not identifiable")
    assert np.isnan(df.iloc[0]["mse_extrapolated"])
