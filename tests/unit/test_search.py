"""Search logic (Algorithm 1) with the paper's coefficients as test vectors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from archscale.study import Study

from archscale.arch import Architecture, Scale
from archscale.config import ConfigError, load_config
from archscale.cost import inference_flops_per_token
from archscale.law.laws import Law
from archscale.search import (
    SearchError,
    SearchSettings,
    SearchTarget,
    check_target_feasible,
    enumerate_space,
    fitted_ranges,
    law_from_fit,
    gqa_walk,
    pareto_mask,
    prepare,
    run_search,
    select,
    throughput_at,
)

# Paper, fit on 1B only (multiplicative): d/sqrtN* = 0.0739, r* = 1.216.
PAPER_1B = {"a": [2.319, 0.238, 0.0176], "b": [0.5104, 0.0051, 0.0062]}
# Paper, fit on 80M + 145M + 297M: d/sqrtN* = 0.080, r* = 1.03.
PAPER_SMALL = {"a": [2.697, 0.0974, 0.0078], "b": [0.3870, 0.0063, 0.0065]}

SCALE_1B = Scale(
    name="1b", n_target=973_146_112, layers=16, head_dim=64, vocab=128_256, tied=True,
    d_multiple=64, ffn_multiple=64, n_tolerance=0.05, r_tolerance=0.15, tokens_per_param=100,
)
LLAMA_1B = Architecture(
    d_model=2048, ffn=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128_256, scale="1b", name="llama-3.2-1b"
)
L_OPT_1B = 2.78


def conditional_json(coef: dict, l_opt: list | None = None, additive: dict | None = None) -> dict:
    """A results/fit/conditional.json in the fitting stage's format."""
    a, b = coef["a"], coef["b"]
    forms = {
        "multiplicative": {
            "a": a, "b": b,
            "optimum": {"d_over_sqrt_n": a[2] / a[1], "d_over_sqrt_n_ci": [None, None], "r": b[2] / b[1], "r_ci": [None, None]},
            "mse": 1e-4, "spearman": 0.9,
        }
    }
    if additive is not None:
        forms["additive"] = additive
    return {
        "reference": "empirical", "r_range": [0.5, 5.0], "n_points": 40, "forms": forms,
        "l_opt": l_opt or [{"n": SCALE_1B.n_target, "d": SCALE_1B.train_tokens, "l_opt": L_OPT_1B}], "chinchilla": None,
    }


def multiplicative(form: dict, x: float, r: float, l_opt: float) -> float:
    """Eq. 3 of the paper, the test oracle."""
    a, b = form["a"], form["b"]
    return (a[0] + a[1] * math.log(x) + a[2] / x) * (b[0] + b[1] * math.log(r) + b[2] / r) * l_opt


def additive(form: dict, x: float, r: float, l_opt: float) -> float:
    a, b = form["a"], form["b"]
    return l_opt + (a[0] + a[1] * math.log(x) + a[2] / x) + (b[1] * math.log(r) + b[2] / r)


class OracleLaw(Law):
    """The law evaluated with the paper's equations (independent of archscale.law)."""

    @classmethod
    def of(cls, conditional: dict) -> "OracleLaw":
        return cls(**vars(law_from_fit(conditional)))

    def fit_reference_loss(self, n: int, tokens: int) -> float:
        return next(float(r["l_opt"]) for r in self.fit["l_opt"] if (r["n"], r["d"]) == (n, tokens))

    def predict_forms(self, d_over_sqrt_n: float, r: float, l_opt: float) -> dict[str, float]:
        fns = {"multiplicative": multiplicative, "additive": additive}
        return {f: fns[f](self.fit["forms"][f], d_over_sqrt_n, r, l_opt) for f in self.fitted_forms}


def toy_efficiency(arch: Architecture) -> float:
    """Stand-in for the calibrated cost model: decode at context 5120 with a KV-cache term."""
    return 1e15 / (inference_flops_per_token(arch, 5120) + 4000.0 * arch.kv_cache_bytes_per_token())


def law_models(conditional: dict) -> list[Law]:
    """The oracle and archscale.law's implementation: the search must agree with both."""
    return [OracleLaw.of(conditional), law_from_fit(conditional)]


def target_1b(**kw) -> SearchTarget:
    base = dict(name="1b", scale=SCALE_1B, tokens=SCALE_1B.train_tokens, loss_target="llama-3.2-1b",
                gqa_candidates=(1, 2, 4, 8, 16), baseline=LLAMA_1B)
    base.update(kw)
    return SearchTarget(**base)


FINE = SearchSettings(
    d_over_sqrt_n=tuple(np.geomspace(0.04, 0.14, 61)), r=tuple(np.geomspace(0.5, 5.0, 61)),
    measure_top_k=2, input_len=4096, output_len=1024, batch_size=64,
)


# ---- Panda lands on the fitted optimum ---------------------------------------------------------
@pytest.mark.parametrize("coef,x_star,r_star", [(PAPER_1B, 0.074, 1.22), (PAPER_SMALL, 0.080, 1.03)])
def test_panda_near_fitted_optimum_with_paper_coefficients(coef, x_star, r_star):
    for law in law_models(conditional_json(coef)):
        cands, space = prepare(target_1b(), FINE, law, toy_efficiency)
        panda = cands["panda"]
        assert abs(panda["d_over_sqrt_n"] - x_star) < 0.004, panda
        assert abs(panda["mlp_attn_ratio"] - r_star) / r_star < 0.08, panda
        # Panda is the minimum of the predicted loss over every enumerated architecture.
        assert panda["loss"] == pytest.approx(space["loss"].min())
        assert panda["gqa"] == 4 and panda["heads"] % panda["kv_heads"] == 0
        # Every architecture is on the scale's N and its resolved d/sqrt(N), r are what the law saw.
        assert (abs(space["params_non_embedding"] / SCALE_1B.n_target - 1) <= 0.05).all()
        row = space.iloc[len(space) // 2]
        expect = multiplicative(conditional_json(coef)["forms"]["multiplicative"], row["d_over_sqrt_n"], row["mlp_attn_ratio"], L_OPT_1B)
        assert row["loss"] == pytest.approx(expect, rel=1e-9)


def test_surefire_is_fastest_within_the_baselines_predicted_loss():
    law = OracleLaw.of(conditional_json(PAPER_1B))
    cands, space = prepare(target_1b(), FINE, law, toy_efficiency)
    target = multiplicative(law.fit["forms"]["multiplicative"], LLAMA_1B.d_over_sqrt_n, LLAMA_1B.mlp_attn_ratio, L_OPT_1B)
    assert cands["loss_target"]["value"] == pytest.approx(target)
    assert cands["loss_target"]["baseline"] == LLAMA_1B.arch_id
    ok = space[space["loss"] <= target]
    assert len(ok) == cands["grid"]["within_target"] > 0
    sp = cands["surefire_predicted"]
    assert sp["loss"] <= target
    assert sp["pred_output_tokens_per_s"] == pytest.approx(ok["pred_output_tokens_per_s"].max())
    # LLaMA-3.2-1B is narrow and MLP-heavy: the law prefers a wider model than the baseline
    # and the fastest model within its loss is faster than the baseline (the paper's claim).
    assert cands["panda"]["d_over_sqrt_n"] > LLAMA_1B.d_over_sqrt_n
    assert sp["pred_output_tokens_per_s"] > toy_efficiency(LLAMA_1B)
    # The Pareto flags are consistent: Panda is on the front, no front point dominates another.
    front = space[space["pareto"]].sort_values("loss")
    assert cands["panda"]["arch_id"] in set(front["arch_id"])
    assert front["pred_output_tokens_per_s"].is_monotonic_increasing


def test_measurement_plan_walks_gqa_upward_from_4_with_heads_reresolved():
    law = OracleLaw.of(conditional_json(PAPER_1B))
    cands, _ = prepare(target_1b(), FINE, law, toy_efficiency)
    assert len(cands["walks"]) == 2
    ids = [m["arch_id"] for m in cands["measure"]]
    assert len(ids) == len(set(ids))
    roles = {r for m in cands["measure"] for r in m["roles"]}
    assert {"baseline", "panda", "walk"} <= roles
    for walk in cands["walks"]:
        gqas = [s["gqa"] for s in walk["steps"]]
        assert gqas[0] == 4 and gqas == sorted(gqas) and set(gqas) <= {4, 8, 16}
        base = next(m for m in cands["measure"] if m["arch_id"] == walk["steps"][0]["arch_id"])
        for step in walk["steps"]:
            m = next(x for x in cands["measure"] if x["arch_id"] == step["arch_id"])
            assert m["heads"] == step["gqa"] * m["kv_heads"]
            assert m["d_model"] == base["d_model"]
            assert abs(m["params_non_embedding"] / SCALE_1B.n_target - 1) <= 0.05


# ---- the GQA walk with synthetic measurements ------------------------------------------------
def steps(*gqas, out_of_target=()):
    return [{"gqa": g, "arch_id": f"a{g}", "within_target": g not in out_of_target} for g in gqas]


def test_walk_stops_at_first_throughput_below_the_base_and_measures_lazily():
    measured = {"a4": 100.0, "a8": 130.0, "a16": 90.0, "a32": 500.0}
    calls = []

    def tput(a):
        calls.append(a)
        return measured[a]

    walk = gqa_walk(steps(4, 8, 16, 32), tput)
    assert walk["stopped_at_gqa"] == 16
    assert walk["best"]["gqa"] == 8 and walk["best"]["throughput"] == 130.0
    assert calls == ["a4", "a8", "a16"]  # GQA 32 is never measured
    assert [s["status"] for s in walk["steps"]] == ["base", "kept", "below base: stop"]


def test_walk_keeps_base_when_nothing_is_faster_and_skips_out_of_target_steps():
    walk = gqa_walk(steps(4, 8), {"a4": 100.0, "a8": 99.0}.__getitem__)
    assert walk["best"]["gqa"] == 4 and walk["stopped_at_gqa"] == 8
    # A faster step whose predicted loss misses the target is walked through but not picked;
    # a slower-than-base step later still stops the walk.
    walk = gqa_walk(steps(1, 2, 4, 8, out_of_target=(4,)), {"a1": 10.0, "a2": 12.0, "a4": 20.0, "a8": 11.0}.__getitem__)
    assert walk["best"]["gqa"] == 2
    assert walk["stopped_at_gqa"] is None
    assert walk["steps"][2]["status"] == "above loss target"


def test_walk_rejects_unordered_steps():
    with pytest.raises(SearchError, match="increasing GQA"):
        gqa_walk(steps(8, 4), lambda a: 1.0)


def test_select_picks_the_measured_fastest_over_all_walks():
    law = OracleLaw.of(conditional_json(PAPER_1B))
    cands, space = prepare(target_1b(), FINE, law, toy_efficiency)
    by_id = {m["arch_id"]: m for m in cands["measure"]}
    # Synthetic measurements: throughput rises with GQA up to 8 then collapses, so every walk
    # stops at 16 and the second-ranked candidate at GQA 8 is the fastest.
    second = cands["walks"][1]["base_arch_id"]

    def measured(arch_id):
        m = by_id[arch_id]
        bonus = 50.0 if m.get("base_arch_id") == second else 0.0
        return {4: 1000.0, 8: 1200.0 + bonus}.get(m["gqa"], 10.0) + (0 if "walk" in m["roles"] else 0)

    result, pareto = select(cands, space, measured)
    sf = result["surefire"]
    assert sf["gqa"] == 8 and sf["base_arch_id"] == second
    assert sf["measured_output_tokens_per_s"] == 1250.0
    assert all(w["stopped_at_gqa"] in (16, None) for w in result["gqa_walks"])
    assert result["baseline"]["arch_id"] == LLAMA_1B.arch_id
    assert result["versus_baseline"]["surefire"]["measured_speedup_vs_baseline"] == pytest.approx(1250.0 / measured(LLAMA_1B.arch_id))
    assert result["panda"]["measured_output_tokens_per_s"] == measured(cands["panda"]["arch_id"])
    assert pareto["is_panda"].sum() == 1 and pareto["pareto"].any()
    assert pareto["loss"].is_monotonic_increasing
    assert np.isfinite(pareto.loc[pareto["is_panda"], "measured_output_tokens_per_s"]).all()


def test_no_architecture_within_target_reports_it():
    law = OracleLaw.of(conditional_json(PAPER_1B))
    result, _ = run_search(target_1b(loss_target=1.0, baseline=None), FINE, law, toy_efficiency)
    assert result["surefire"] is None and result["panda"] is not None
    assert "no architecture meets the loss target" in result["note"]


def test_additive_form_can_drive_the_pick():
    add = {"a": [0.0, 0.238 * L_OPT_1B * 0.5, 0.0176 * L_OPT_1B * 0.5], "b": [0.0, 0.0051 * 3, 0.0062 * 3],
           "optimum": {"d_over_sqrt_n": 0.0739, "r": 1.216}, "mse": 1e-4, "spearman": 0.9}
    cond = conditional_json(PAPER_1B, additive=add)
    settings = SearchSettings(**{**FINE.to_dict(), "form": "additive"})
    settings = SearchSettings.from_dict(settings.to_dict())
    cands, space = prepare(target_1b(), settings, OracleLaw.of(cond), toy_efficiency)
    assert {"loss_multiplicative", "loss_additive"} <= set(space.columns)
    assert (space["loss"] == space["loss_additive"]).all()
    assert abs(cands["panda"]["d_over_sqrt_n"] - 0.074) < 0.004


# ---- infeasible targets, grids and config ------------------------------------------------------
def test_scale_without_valid_architecture_is_a_clear_error():
    bad = Scale(name="tiny", n_target=5000, layers=4, head_dim=64, vocab=512, d_multiple=8, ffn_multiple=8)
    target = SearchTarget(name="hopeless", scale=bad, tokens=100_000, loss_target=5.0, gqa_candidates=(4,))
    with pytest.raises(SearchError) as err:
        check_target_feasible(target, SearchSettings())
    msg = str(err.value)
    assert "search target 'hopeless'" in msg and "no valid architecture at scale 'tiny'" in msg
    assert "infeasible" in msg and "head_dim" in msg
    with pytest.raises(SearchError, match="no valid architecture"):
        prepare(target, FINE, OracleLaw.of(conditional_json(PAPER_1B)), toy_efficiency)


def test_enumeration_counts_infeasible_points_and_merges_duplicates():
    space = enumerate_space(SCALE_1B, [0.074, 0.0741, 2.0], [1.2, 1.2001], 4)
    assert space.points == 6
    assert space.infeasible == 2  # d/sqrt(N) = 2: r cannot reach 1.2 with a single kv group
    assert "grid point d_over_sqrt_n=2.0, r=1.2" in space.examples[0]
    assert len(space.archs) == 1  # the other four points land on one architecture


def test_default_grid_spans_the_fitted_box():
    runs = pd.DataFrame({
        "d_over_sqrt_n": [0.05, 0.08, 0.12, 0.2], "mlp_attn_ratio": [0.6, 1.0, 4.0, 9.0],
        "valid_loss": [3.0, 2.9, 3.1, 3.5],
    })
    (x, r) = fitted_ranges({"r_range": [0.5, 5.0]}, runs)
    assert x == (0.05, 0.12) and r == (0.6, 4.0)
    with pytest.raises(SearchError, match="search.d_over_sqrt_n"):
        fitted_ranges({"r_range": [0.5, 5.0]}, None)


def test_targets_from_the_default_and_paper_configs():
    cfg = load_config("config/config.yaml")
    targets = Study.from_config(cfg).search_targets
    t = targets["s100k-default"]
    assert t.baseline.name == "mini-llama" and t.walk_base_gqa == 1 and t.walk_gqas == [1, 2, 3, 6]
    assert check_target_feasible(t, Study.from_config(cfg).search_settings) > 10
    paper = load_config("config/paper.yaml")
    pt = Study.from_config(paper).search_targets
    assert pt["1b"].baseline.arch_id == "1b-L16-d2048-h32g8x64-f8192"
    assert pt["1b"].walk_gqas == [4, 8, 16]
    assert Study.from_config(paper).search_settings.batch_size == max(paper["throughput"]["batch_sizes"])
    rt = SearchTarget.from_dict(t.to_dict())
    assert rt == t


def test_config_errors_name_the_key():
    cfg = load_config("config/config.yaml")
    cfg["search"]["targets"][0]["scale"] = "s7"
    with pytest.raises(ConfigError, match=r"search.targets\[0\].*scale 's7'"):
        Study.from_config(cfg).search_targets
    cfg = load_config("config/config.yaml")
    cfg["search"]["targets"][0]["loss_target"] = "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model"):
        Study.from_config(cfg).search_targets
    cfg = load_config("config/config.yaml")
    cfg["search"]["batch_size"] = 3
    with pytest.raises(ConfigError, match="search.batch_size"):
        Study.from_config(cfg).search_settings


def test_pareto_mask():
    loss = [1.0, 1.0, 2.0, 3.0, 2.5]
    eff = [5.0, 6.0, 7.0, 6.5, 9.0]
    assert pareto_mask(loss, eff).tolist() == [False, True, True, False, True]


def test_throughput_at_reads_the_record_and_names_missing_batch_sizes():
    rec = {"records": [{"batch_size": 1, "output_tokens_per_s": 10.0}, {"batch_size": 8, "output_tokens_per_s": 60.0}]}
    assert throughput_at(rec, 8) == 60.0
    with pytest.raises(SearchError, match=r"no record at batch size 4 \(measured: \[1, 8\]\)"):
        throughput_at(rec, 4, "x.json")


def test_3b_search_with_the_1b_only_fit_lands_near_the_paper_panda():
    """The coefficients are shared across N and D: at 3B (28 layers, head dim 128) the same
    fit puts Panda near d/sqrt(N) = 0.074 and r = 1.22 (paper's Panda-3B: d 4096, r 1.0)."""
    s3 = Scale(name="3b", n_target=2_818_747_392, layers=28, head_dim=128, vocab=128_256, d_multiple=64,
               ffn_multiple=64, tokens=100_000_000_000)
    llama3 = Architecture(d_model=3072, ffn=8192, layers=28, heads=24, kv_heads=8, head_dim=128, vocab=128_256,
                          scale="3b", name="llama-3.2-3b")
    cond = conditional_json(PAPER_1B, l_opt=[{"n": s3.n_target, "d": s3.train_tokens, "l_opt": 2.6}])
    target = SearchTarget(name="3b", scale=s3, tokens=s3.train_tokens, loss_target="llama-3.2-3b",
                          gqa_candidates=(1, 2, 3, 4, 6, 8, 12), baseline=llama3)
    cands, space = prepare(target, FINE, law_from_fit(cond), toy_efficiency)
    panda = cands["panda"]
    assert abs(panda["d_over_sqrt_n"] - 0.074) < 0.004 and abs(panda["mlp_attn_ratio"] - 1.22) / 1.22 < 0.1
    assert panda["head_dim"] == 128 and panda["layers"] == 28
    assert [s["gqa"] for s in cands["walks"][0]["steps"]][0] == 4
    assert cands["surefire_predicted"]["pred_output_tokens_per_s"] > toy_efficiency(llama3)
