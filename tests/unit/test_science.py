"""Plan the science: batched fits, simulated optima, suggestions, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from archscale.config import load_config
from archscale.law import load_law
from archscale.law.calibration import fit_form
from archscale.science import science_plan, seed_noise_from_runs, suggest, with_suggestions
from archscale.science.fits import fit_batch
from archscale.science.simulate import draw, fit_reference, plan_frame, reference_losses, simulate_study
from archscale.study import Study
from helpers.study import REPO

PAPER = load_config(REPO / "config" / "paper.yaml")
PRIOR = "paper-80m-297m"  # optimum d/sqrt(N)* = 0.0801, r* = 1.032


def study_80m(xs, rs, extra=()) -> Study:
    """The paper's 80M scale alone, one GQA, grid xs x rs (plus ``extra`` sweeps); no search targets."""
    cfg = copy.deepcopy(PAPER)
    scale = dict(cfg["scales"][0])
    scale["grid"] = [{"d_over_sqrt_n": list(xs), "r": list(rs), "gqa": [4]}, *extra]
    cfg["scales"] = [scale]
    cfg["search"]["targets"] = []
    return Study.from_config(cfg)


STRADDLE_X, STRADDLE_R = [0.05, 0.065, 0.08, 0.1, 0.12], [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]


def full(res, form="multiplicative"):
    return res["scale_sets"][res["full_set"]]["forms"][form]


# ---- the batched fits are the fit stage's fits ----------------------------------------------
@pytest.fixture(scope="module")
def simulated():
    study = study_80m(STRADDLE_X, STRADDLE_R)
    law = load_law(PRIOR)
    df = plan_frame(study)
    lopt_true, _ = reference_losses(law, df)
    x, r = df["d_over_sqrt_n"].to_numpy(float), df["mlp_attn_ratio"].to_numpy(float)
    losses = draw(np.asarray(law.predict(x, r, lopt_true), float), 0.01, 4, seed=3)
    return x, r, losses, fit_reference(losses, df, lopt_true, "empirical")


@pytest.mark.parametrize("form", ["additive", "multiplicative"])
def test_batched_fit_matches_fit_form(simulated, form):
    x, r, losses, lopt = simulated
    batch = fit_batch(form, x, r, losses, lopt)
    for k in range(losses.shape[0]):
        ref = fit_form(form, x, r, losses[k], lopt[k], bootstrap=0)
        a, b = ref["a"], ref["b"]
        np.testing.assert_allclose(batch.params[k], [a[0], a[1], a[2], b[1], b[2]], rtol=1e-5, atol=1e-9)
        for key in ("d_over_sqrt_n", "r"):
            assert batch.optimum[key][k] == pytest.approx(ref["optimum"][key], rel=1e-5)
            if form == "additive":  # same delta-method interval as the fit stage
                np.testing.assert_allclose(batch.ci[key][k], ref["optimum"][f"{key}_ci"], rtol=1e-6)


def test_too_few_values_of_a_knob_is_not_fitted():
    from archscale.science.simulate import knob_summary, verdict

    x = np.tile([0.05, 0.065, 0.08, 0.1, 0.12], 2)
    r = np.repeat([1.0, 2.0], 5)
    law = load_law(PRIOR)
    mean = np.asarray(law.predict(x, r, 3.0), float)
    losses = draw(mean, 0.002, 8, seed=0)
    fit = fit_batch("multiplicative", x, r, losses, np.full_like(losses, 3.0))
    assert fit.factors["r"] and fit.factors["d_over_sqrt_n"] is None
    summ = {k: knob_summary(fit, k, None) for k in ("d_over_sqrt_n", "r")}
    assert not summ["r"]["fitted"] and summ["r"]["p_interior"] == 0.0
    assert verdict(summ, "r").startswith("cannot find an optimum of r: r not fitted")
    assert summ["d_over_sqrt_n"]["p_interior"] > 0.5


# ---- the acceptance tests ---------------------------------------------------------------------
def test_straddling_grid_covers_the_optimum_and_shrinks_with_points_near_it():
    law = load_law(PRIOR)
    base = simulate_study(study_80m(STRADDLE_X, STRADDLE_R), law, 0.01, 200, seed=1)
    res_truth = base["prior_optimum"]
    near = [{"d_over_sqrt_n": [0.06, 0.07, 0.09, 0.1], "r": [0.6, 0.8, 1.25, 1.7], "gqa": [4]}]
    denser = simulate_study(study_80m(STRADDLE_X, STRADDLE_R, near), law, 0.01, 200, seed=1)
    ratios = []
    for key in ("d_over_sqrt_n", "r"):
        truth = res_truth[key]
        b, d = full(base)[key], full(denser)[key]
        assert b["p_interior"] > 0.75 and d["p_interior"] >= b["p_interior"] - 0.05
        lo, _, hi = b["spread_2.5_50_97.5"]
        assert lo < truth < hi
        assert b["coverage"] > 0.85
        ratios.append(d["median_interval_width"] / b["median_interval_width"])
    assert max(ratios) < 1.0 and sum(ratios) / 2 < 0.95


def test_grid_on_one_side_of_the_optimum_rarely_finds_it():
    res = simulate_study(study_80m([0.12, 0.15, 0.18, 0.22], STRADDLE_R), load_law(PRIOR), 0.01, 100)
    f = full(res)
    assert f["d_over_sqrt_n"]["p_interior"] < 0.1
    assert f["r"]["p_interior"] > 0.8
    assert "outside the sampled range" in f["verdict"][0]


def test_embedded_default_says_plainly_whether_it_can_find_an_optimum():
    study = Study.from_config(load_config(REPO / "config" / "config.yaml"))
    res = simulate_study(study, load_law(PRIOR), 0.01, 50)
    verdicts = full(res)["verdict"]
    assert verdicts[0].startswith("cannot find an interior optimum of d_over_sqrt_n")
    assert len(verdicts) == 2 and all(v.startswith(("cannot find", "finds")) for v in verdicts)


def test_suggested_points_narrow_the_simulated_interval():
    study = study_80m([0.05, 0.08, 0.12], [0.5, 1.0, 2.0, 4.0])
    law = load_law(PRIOR)
    sug = suggest(study, law, 0.01, top=4)
    assert len(sug["suggestions"]) == 4
    assert all(s["arch_id"] not in set(study.plan.ids) for s in sug["suggestions"])
    before = simulate_study(study, law, 0.01, 200, seed=2)
    after = simulate_study(Study.from_config(with_suggestions(dict(study.config), sug)), law, 0.01, 200, seed=2)
    assert after["architectures"] == before["architectures"] + 4
    widths = [(full(before)[k]["median_interval_width"], full(after)[k]["median_interval_width"])
              for k in ("d_over_sqrt_n", "r")]
    assert sum(a / b for b, a in widths) / 2 < 0.95


def test_paper_plan_prints_probabilities_widths_picks_and_suggestions():
    cfg = copy.deepcopy(PAPER)
    res = science_plan(Study.from_config(cfg), PRIOR, 0.01, 20, top=3)
    assert {p["target"] for p in res["panda"]} == {"1b", "3b"}
    assert all(0 <= p["p_prior_panda"] <= 1 for p in res["panda"])
    assert [t["task"] for t in res["validation"]][0] == "80m->145m"
    assert res["suggestions"]["yaml"].count("- d_over_sqrt_n:") == 3
    f = full(res)
    assert f["d_over_sqrt_n"]["median_interval_width"] > 0 and f["r"]["p_interior"] > 0.5


def test_noise_free_search_picks_the_priors_panda():
    cfg = copy.deepcopy(PAPER)
    res = simulate_study(Study.from_config(cfg), load_law(PRIOR), 0.0, 3)
    assert [p["p_prior_panda"] for p in res["panda"]] == [1.0, 1.0]


# ---- seed noise and the CLI -----------------------------------------------------------------
def test_seed_noise_from_repeated_seeds():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame({"arch_id": np.repeat([f"a{i}" for i in range(40)], 3),
                         "valid_loss": np.repeat(rng.uniform(3, 4, 40), 3) + rng.normal(0, 0.02, 120)})
    est = seed_noise_from_runs(runs)
    assert est["ci95"][0] < 0.02 < est["ci95"][1] and est["dof"] == 80
    with pytest.raises(ValueError, match="no architecture .* two or more runs"):
        seed_noise_from_runs(runs.drop_duplicates("arch_id"), where="runs.parquet")


def test_cli_plan_science_json(capsys, tmp_path):
    from archscale.cli.main import main

    cfg = copy.deepcopy(PAPER)
    cfg["search"]["targets"] = []
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    assert main(["plan", "--science", str(path), "--law", PRIOR, "--seed-noise", "0.02", "--simulations", "10",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seed_noise"] == 0.02 and out["simulations"] == 10
    with pytest.raises(SystemExit, match="no seed noise"):
        main(["plan", "--science", str(path), "--law", PRIOR])


def test_interpolating_fit_has_no_interval_and_no_optimum():
    x, r = np.array([0.05, 0.07, 0.08, 0.1, 0.12]), np.array([0.5, 1.0, 2.0, 1.0, 3.0])
    losses = draw(np.asarray(load_law(PRIOR).predict(x, r, 3.0), float), 0.01, 5, seed=0)
    fit = fit_batch("additive", x, r, losses, np.full_like(losses, 3.0))
    assert "interpolates" in fit.interval_note
    assert not fit.interior["r"].any() and not fit.interior["d_over_sqrt_n"].any()


def test_report_shows_the_plan_beside_the_fit(tmp_path):
    from archscale.law.laws import law_from_conditional
    from archscale.report.science import load_science, plan_vs_fit, plan_vs_fit_sentences

    assert load_science(tmp_path / "missing.json") is None and plan_vs_fit_sentences(None, None) == []
    res = simulate_study(study_80m(STRADDLE_X, STRADDLE_R), load_law(PRIOR), 0.01, 50)
    optimum = {"d_over_sqrt_n": 0.081, "d_over_sqrt_n_ci": [0.075, 0.088], "r": None, "r_ci": None,
               "r_reason": "no interior optimum: the fitted minimum r = 7 lies outside the sampled range"}
    law = law_from_conditional({"forms": {"multiplicative": {
        "a": [2.7, 0.1, 0.0081], "b": [0.39, 0.001, 0.007], "optimum": optimum}}}, "fit")
    rows = {r["knob"]: r for r in plan_vs_fit(res, law)}
    assert rows["d_over_sqrt_n"]["within_planned_range"] is True and rows["d_over_sqrt_n"]["fitted_ci"] == [0.075, 0.088]
    assert rows["r"]["fitted"] is None and rows["r"]["planned_p_interior"] > 0.5
    text = plan_vs_fit_sentences(res, law)
    assert "inside the planned range" in text[0] and "the fit reports none" in text[1]


def test_workflow_settings_need_a_seed_noise_and_cli_estimates_it(tmp_path, capsys):
    from archscale.cli.main import main
    from archscale.io import write_parquet
    from archscale.science import science_from_config

    cfg = copy.deepcopy(PAPER)
    cfg["search"]["targets"] = []
    cfg["plan"] = {"science": {"law": PRIOR}}
    with pytest.raises(ValueError, match="plan.science.seed_noise: set the seed noise"):
        science_from_config(Study.from_config(copy.deepcopy(cfg)))
    rng = np.random.default_rng(1)
    runs = pd.DataFrame({"arch_id": np.repeat(["a", "b", "c", "d"], 4), "seed": np.tile([1, 2, 3, 4], 4),
                         "valid_loss": 3.5 + rng.normal(0, 0.03, 16) + np.tile(rng.normal(0, 0.03, 4), 4)})
    write_parquet(tmp_path / "runs.parquet", runs)
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["plan", "--science", str(tmp_path / "c.yaml"), "--seed-noise-from", str(tmp_path / "runs.parquet"),
                 "--simulations", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seed_noise"] == pytest.approx(out["seed_noise_estimate"]["seed_noise"]) and out["law"] == PRIOR
    assert out["seed_noise_estimate"]["dof"] == 12
    # the simulation uses the measured seed-shared part of the noise, and says so
    assert out["seed_shared_fraction"] == pytest.approx(out["seed_noise_estimate"]["rho"])
    assert out["seed_noise_estimate"]["anova_dof"] == [3, 9]
    assert any("share common to a seed" in n for n in out["notes"])


# ---- paired seed noise: measured and simulated ----------------------------------------------
def test_seed_decomposition_recovers_the_shared_part_of_the_seed_noise():
    from archscale.science import seed_decomposition

    rng = np.random.default_rng(4)
    archs, seeds = 6, 40
    u = rng.normal(0, 0.04, seeds)  # shared by every architecture at a seed: rho = 0.04^2 / (0.04^2 + 0.03^2) = 0.64
    runs = pd.DataFrame([{"arch_id": f"a{a}", "seed": s, "scale": "s", "valid_loss": 3 + 0.01 * a + u[s]
                          + rng.normal(0, 0.03)} for a in range(archs) for s in range(seeds)])
    est = seed_decomposition(runs)
    assert est["rho_ci95"][0] < 0.64 < est["rho_ci95"][1] and est["rho"] == pytest.approx(0.64, abs=0.12)
    assert est["sigma_e_ci95"][0] < 0.03 < est["sigma_e_ci95"][1]
    assert est["seed_noise"] == pytest.approx(0.05, abs=0.01)  # the per-run sd holds both parts
    assert seed_decomposition(runs.drop(columns="seed"))["shared"] is None


def _r_sweep_study(seeds):
    cfg = copy.deepcopy(PAPER)
    scale = dict(cfg["scales"][0])
    scale["grid"] = [{"d_over_sqrt_n": [0.08], "r": [0.5, 1.0, 3.0], "gqa": [4]}]
    scale["seeds"] = seeds
    cfg["scales"], cfg["search"]["targets"] = [scale], []
    return Study.from_config(cfg)


def test_science_plan_reads_each_sweep_with_the_paired_rule_and_the_measured_shared_noise():
    study, law = _r_sweep_study([1, 2, 3, 4]), load_law(PRIOR)
    indep = simulate_study(study, law, 0.004, 300, seed=1)
    paired = simulate_study(study, law, 0.004, 300, seed=1, shared=0.8)
    (a,), (b,) = indep["sweeps"], paired["sweeps"]
    assert indep["runs"] == 12 and a["seeds"] == 4 and a["true_shape"] == "interior minimum"
    # the same per-run sd, 80% of its variance shared at a seed: matched-seed differences resolve more often
    assert b["p_interior_resolved"] > a["p_interior_resolved"] + 0.1
    assert "Holm" in paired["sweep_rule"]
    one = simulate_study(_r_sweep_study([1]), law, 0.004, 20)
    assert one["sweeps"][0]["p_resolved"] == 0.0 and "never resolved" in one["sweeps"][0]["note"]
    with pytest.raises(ValueError, match="seed-shared fraction"):
        simulate_study(study, law, 0.004, 20, shared=1.0)
