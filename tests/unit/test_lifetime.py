"""Lifetime cost (archscale.search.lifetime): training plus serving over N, D and shape."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from helpers.study import write_study
from scipy.optimize import minimize_scalar

from archscale.arch import Scale
from archscale.law import load_law
from archscale.law.laws import Law
from archscale.search.anyscale import LossTarget
from archscale.search.lifetime import (
    Deployment,
    LifetimeError,
    LossModel,
    Prices,
    Serving,
    check_demand,
    crossover,
    evaluate,
    candidates_over_n,
    lifetime_for_target,
    lifetime_search,
    settings_from_config,
)
from archscale.study import Study

# Hoffmann et al. (2022) approach-3 coefficients, the law Sardana et al. build on.
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
PEAK, MFU = 1e15, 0.5


def chinchilla_only() -> Law:
    """A law whose shape terms are off (factor 1 at every d/sqrt(N) and r): the Chinchilla law alone."""
    return Law(name="chinchilla-only", source="test", range={}, chinchilla={"params": HOFFMANN},
               forms={"multiplicative": {"form": "multiplicative", "a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0]}})


def flops_serving() -> Serving:
    """Sardana et al.'s serving cost: 2N FLOPs per output token at the training MFU."""
    return Serving(Deployment(1, 1, 1), rate_fn=lambda a: PEAK * MFU / (2.0 * a.params_non_embedding),
                   rate_source="assumption: 2N FLOPs per token")


def big_scale(n: float = 13e9) -> Scale:
    # A tiny vocabulary and (in the prices) sequence length make training FLOPs 6ND to 1e-4.
    return Scale(name="big", n_target=int(n), layers=40, head_dim=128, vocab=32, d_multiple=512, ffn_multiple=512,
                 n_tolerance=0.01)


def chin_target(n: float) -> tuple[float, float]:
    """Loss and tokens of the Chinchilla compute-optimal model of N parameters."""
    p = HOFFMANN
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    d = (n / g) ** ((p["alpha"] + p["beta"]) / p["beta"]) / n
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"], d


def tokens_needed(n: float, loss: float) -> float:
    p = HOFFMANN
    return (p["B"] / (loss - p["E"] - p["A"] / n ** p["alpha"])) ** (1 / p["beta"])


def run_chinchilla(demand: float, factors, prices=None) -> dict:
    loss, d = chin_target(13e9)
    return lifetime_search(chinchilla_only(), big_scale(), d, demand, flops_serving(),
                           prices or Prices(mfu=MFU, peak_flops=PEAK, seq_length=1), loss_target=loss,
                           n_factors=factors, gqa=[8], x_range=(0.05, 0.07), curve_points=5)


FACTORS = tuple(2.0 ** np.linspace(-2.5, 0.5, 61))


def test_with_no_serving_the_optimum_is_the_compute_optimal_chinchilla_point():
    res = run_chinchilla(0.0, FACTORS)
    opt = res["optimum"]
    loss, _ = chin_target(13e9)
    # The compute-optimal N at this loss: the N minimising 6 N D(N) along the iso-loss curve.
    best = minimize_scalar(lambda ln: math.log(np.exp(ln) * tokens_needed(np.exp(ln), loss)),
                           bounds=(math.log(4e9), math.log(30e9)), method="bounded")
    assert opt["params_non_embedding"] == pytest.approx(math.exp(best.x), rel=0.04)  # grid step 3.5%
    assert opt["params_non_embedding"] == pytest.approx(13e9, rel=0.04)
    assert opt["predicted_loss"]["value"] == pytest.approx(loss, rel=1e-9)
    assert opt["serving"]["cost"]["value"] == 0 and opt["total"]["value"] == opt["training"]["cost"]["value"]
    # The same with a demand but serving priced at zero.
    free = run_chinchilla(1e13, FACTORS, Prices(mfu=MFU, peak_flops=PEAK, seq_length=1, serve_price_per_gpu_hour=0))
    assert free["optimum"]["arch_id"] == opt["arch_id"]


def test_sardana_direction_smaller_n_more_tokens_as_demand_grows():
    picks = [run_chinchilla(t, FACTORS)["optimum"] for t in (0.0, 1e11, 1e12, 2e12, 1e13)]
    ns = [p["params_non_embedding"] for p in picks]
    ds = [p["tokens"]["value"] for p in picks]
    assert ns == sorted(ns, reverse=True) and ds == sorted(ds)
    assert ns[-1] < 0.6 * ns[0] and ds[-1] > 2 * ds[0]
    # At 2T tokens of demand the grid optimum is the continuous optimum of Sardana et al.'s objective
    # (6ND + 2NT FLOPs at the 13B Chinchilla model's loss): about 8.0B parameters with these coefficients.
    loss, _ = chin_target(13e9)
    best = minimize_scalar(lambda ln: 6 * np.exp(ln) * tokens_needed(np.exp(ln), loss) + 2 * np.exp(ln) * 2e12,
                           bounds=(math.log(3e9), math.log(13e9)), method="bounded")
    assert ns[3] == pytest.approx(math.exp(best.x), rel=0.04)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifetime")
    data = write_study(root)
    config = data["config"]
    target = Study.from_config(config).search_targets["s100k-default"]
    # A 1% N tolerance keeps the candidate count (and the test) small.
    return {"root": root, "cost_model": data["cost_model"], "target": target, "config": config,
            "scale": replace(target.scale, n_tolerance=0.01),
            "law": load_law(root / "results" / "fit" / "conditional.json")}


SPACE = {"gqa": [1, 2], "x_range": (0.15, 0.55)}
N_FACTORS = (0.5, 0.707, 1.0, 1.414, 2.0)


def fixture_search(study, demand: float, prices: Prices | None = None, records=None, **kw) -> dict:
    t = study["target"]
    serving = Serving(Deployment(batch_size=8, input_len=64, output_len=32), study["cost_model"], records)
    return lifetime_search(study["law"], study["scale"], t.tokens, demand, serving, prices or Prices(seq_length=128),
                           loss_target=LossTarget(baseline=t.baseline), n_factors=N_FACTORS, **SPACE, **kw)


@pytest.fixture(scope="module")
def at_1e9(study):
    """One search at 1e9 tokens with the latency of every pick (an unbounded latency bound)."""
    return fixture_search(study, 1e9, max_latency_ms=1e12)


def test_with_no_training_cost_the_optimum_is_the_fastest_shape_meeting_the_target(study):
    res = fixture_search(study, 1e9, Prices(seq_length=128, train_price_per_gpu_hour=0.0))
    archs = candidates_over_n(study["scale"], N_FACTORS, **SPACE)
    lm = LossModel(study["law"])
    serving = Serving(Deployment(8, 64, 32), study["cost_model"])
    cols = evaluate(archs, lm, serving, Prices(seq_length=128), res["loss_target"]["threshold"])
    fastest = max(r["value"] for r, ok in zip(cols["rates"], cols["feasible"]) if ok)
    assert res["optimum"]["serving"]["output_tokens_per_s"]["value"] == pytest.approx(fastest)
    assert res["optimum"]["training"]["cost"]["value"] == 0
    assert res["optimum"]["meets_target"]


def test_monotone_in_demand(at_1e9):
    # The curve re-chooses the optimum at every demand (0, then 1e6 to 1e12 tokens).
    curve = at_1e9["curve"]
    opt = curve["choices"]["lifetime"]
    assert curve["demand"] == sorted(curve["demand"]) and curve["demand"][0] == 0
    assert opt["total"] == sorted(opt["total"]) and opt["training"] == sorted(opt["training"])
    assert opt["per_token"] == sorted(opt["per_token"], reverse=True)
    assert opt["per_token"][-1] < opt["per_token"][0] and len(set(opt["arch_id"])) > 1  # the demand moves the pick


def test_result_names_sources_intervals_and_crossovers(at_1e9):
    res = at_1e9
    assert set(res["choices"]) == {"baseline", "panda", "surefire", "lifetime"}
    opt = res["optimum"]
    assert opt["serving"]["cost"]["source"] == "cost model" and opt["training"]["cost"]["source"].startswith("assumption")
    assert opt["energy"]["cost"]["source"] == "not measured"
    assert any("Epoch AI" in n for n in res["notes"])  # the fixture's law has no Chinchilla part
    for x in res["crossovers"]:
        if x["status"] == "overtakes":
            assert x["low"] <= x["demand"] and (x["high"] is None or x["demand"] <= x["high"])
    curve = res["curve"]["choices"]
    assert len(curve["lifetime"]["total"]) == len(res["curve"]["demand"])
    # The lifetime optimum is never above any fixed choice that meets the target with its interval.
    for role, c in res["choices"].items():
        if c["meets_target"]:
            assert opt["total"]["value"] <= c["total"]["value"] * (1 + 1e-9)


def test_crossover_demand_and_interval():
    def choice(role, train, per_token):
        return {"role": role, "training": {"cost": {"value": train[0], "low": train[1], "high": train[2]}},
                "per_token_cost": {"value": per_token[0], "low": per_token[1], "high": per_token[2]}}

    a, b = choice("a", (100, 100, 100), (2.0, 1.9, 2.1)), choice("b", (200, 150, 200), (1.0, 0.9, 1.1))
    x = crossover(a, b)
    assert x["status"] == "overtakes" and x["demand"] == pytest.approx(100.0)
    assert x["low"] == pytest.approx(50 / 1.2) and x["high"] == pytest.approx(100 / 0.8)
    # Overlapping per-token intervals: b may never get cheaper, the upper end is unbounded.
    x = crossover(a, choice("b", (200, 200, 200), (1.95, 1.0, 2.5)))
    assert x["status"] == "overtakes" and x["high"] is None


def test_measured_record_wins_and_energy_is_priced(study):
    t = study["target"]
    base = t.baseline
    rec = {"arch_id": base.arch_id, "records": [{
        "batch_size": 8, "input_len": 64, "output_len": 32, "output_tokens_per_s": 123.0,
        "median": {"output_tokens_per_s": {"value": 120.0, "low": 110.0, "high": 130.0, "n": 7}},
        "energy_j_per_output_token": 36.0}]}
    prices = Prices(seq_length=128, energy_price_per_kwh=0.5)
    res = fixture_search(study, 1e6, prices, records={base.arch_id: ("tp/base.json", rec)})
    b = res["choices"]["baseline"]
    assert b["serving"]["output_tokens_per_s"]["value"] == 120.0
    assert b["serving"]["cost"]["source"] == "measured"
    assert b["serving"]["cost"]["low"] == pytest.approx(1e6 / 130.0 / 3600.0)
    assert b["energy"]["kwh"] == pytest.approx(1e6 * 36.0 / 3.6e6)
    assert b["energy"]["cost"]["value"] == pytest.approx(0.5 * 1e6 * 36.0 / 3.6e6)


def test_latency_bound_keeps_only_fast_shapes(study, at_1e9):
    opt = at_1e9["optimum"]
    assert opt["latency_ms"]["source"] == "cost model"
    lat = [c["latency_ms"]["value"] for c in at_1e9["choices"].values()]
    bound = sorted(lat)[1] * 0.999  # only the fastest of the compared choices' latencies is within it
    tight = fixture_search(study, 1e9, max_latency_ms=bound)
    assert tight["optimum"]["latency_ms"]["value"] <= bound
    assert tight["optimum"]["total"]["value"] >= opt["total"]["value"]
    with pytest.raises(LifetimeError, match="latency bound"):
        fixture_search(study, 1e9, max_latency_ms=1e-9)


def test_bad_inputs(study):
    with pytest.raises(LifetimeError, match="lifetime tokens: -1"):
        check_demand(-1)
    with pytest.raises(LifetimeError, match="lifetime tokens"):
        fixture_search(study, -5.0)
    with pytest.raises(LifetimeError, match="batch size 3 is unknown: measured at none, cost model calibrated at"):
        Serving(Deployment(3, 64, 32), study["cost_model"])
    with pytest.raises(LifetimeError, match="missing throughput"):
        Serving(Deployment(8, 64, 32))
    only = {study["target"].baseline.arch_id: ("b.json", {"records": [{"batch_size": 8, "input_len": 64,
                                                                        "output_len": 32, "output_tokens_per_s": 1.0}]})}
    with pytest.raises(LifetimeError, match="missing throughput for"):
        fixture_search_records_only(study, only)
    with pytest.raises(LifetimeError, match="mfu: 0 must lie"):
        Prices(mfu=0)
    with pytest.raises(LifetimeError, match="deployment batch_size: 0"):
        Deployment(0, 64, 32)


def fixture_search_records_only(study, records):
    t = study["target"]
    serving = Serving(Deployment(8, 64, 32), None, records)
    return lifetime_search(study["law"], study["scale"], t.tokens, 1e6, serving, Prices(), loss_target=1e9,
                           n_factors=(1.0,), **SPACE)


def test_settings_from_config_and_the_workflow_entry_point(study):
    config = dict(study["config"])
    assert settings_from_config(config) is None  # off by default
    config["search"] = dict(config["search"], lifetime=dict(config["search"]["lifetime"], tokens=1e9, batch_size=8,
                                                            x_range=[0.15, 0.55], n_factors=[0.5, 1.0, 2.0]))
    s = settings_from_config(config)
    assert s.deployment.batch_size == 8 and s.deployment.context == config["throughput"]["context"]
    assert s.prices.mfu == config["compute"]["mfu"] and s.prices.peak_flops == config["compute"]["peak_flops"]
    target = replace(study["target"], scale=study["scale"], gqa_candidates=(1, 2))
    res = lifetime_for_target(target, s, study["law"], study["cost_model"], {})
    assert res["target"] == "s100k-default" and res["deployment"]["mode"] == "decode_at_context"


def law_args(study, *extra):
    return ["search", "--law", str(study["root"] / "results/fit/conditional.json"), "--n-target", "100000",
            "--layers", "2", "--head-dim", "8", "--vocab", "512", "--tokens", "1000000", "--d-multiple", "8",
            "--ffn-multiple", "4", "--n-tolerance", "0.01", "--x-range", "0.15,0.55", "--gqa", "1,2",
            "--cost-model", str(study["root"] / "results/throughput/cost_model.json"), "--input-len", "64",
            "--output-len", "32", "--n-factors", "0.5,1,2", "--runs", str(study["root"] / "results/runs.parquet"),
            "--loss-target", "predicted:mini-llama", *extra]


def test_cli_prints_the_lifetime_optimum_and_json(study, capsys):
    from archscale.cli import main

    assert main(law_args(study, "--batch-size", "8", "--lifetime-tokens", "1e9", "--mfu", "0.2")) == 0
    text = capsys.readouterr().out
    assert "lifetime optimum:" in text and ("overtakes" in text or "at every demand" in text)
    assert "assumption: --mfu" in text and "cost model" in text
    assert main(law_args(study, "--batch-size", "8", "--lifetime-tokens", "1e9", "--json")) == 0
    out = json.loads(capsys.readouterr().out)["law"]
    assert out["demand_tokens"] == 1e9 and out["optimum"]["total"]["value"] > 0


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "8", "--lifetime-tokens", "-1"], "--lifetime-tokens: -1.0 must be"),
    (["--batch-size", "5", "--lifetime-tokens", "1e9"], "deployment batch size 5 is unknown"),
    (["--batch-size", "8", "--lifetime-tokens", "1e9", "--l-opt", "3"], "--l-opt: the lifetime search varies N and D"),
])
def test_cli_bad_inputs_give_one_clear_error(study, capsys, extra, message):
    from archscale.cli import main

    assert main(law_args(study, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_missing_throughput(study, tmp_path, capsys):
    from archscale.cli import main

    args = [a for a in law_args(study, "--lifetime-tokens", "1e9") if "cost_model" not in a and a != "--cost-model"]
    assert main(args + ["--throughput-dir", str(tmp_path)]) == 2
    assert "missing throughput" in capsys.readouterr().err


def test_report_figure_and_table(at_1e9, tmp_path):
    from archscale.report.lifetime import crossover_figure, lifetime_table_html

    caption = crossover_figure(dict(at_1e9, target="s100k-default"), tmp_path / "crossover.png")
    assert (tmp_path / "crossover.png").stat().st_size > 1000
    assert caption.count("\n") == 0 and "s100k-default" in caption
    table = lifetime_table_html(at_1e9)
    assert table.count("<tr>") == 1 + len(at_1e9["choices"]) and "cost model" in table


def test_a_chinchilla_part_fitted_on_one_token_budget_per_n_is_not_used_to_price_d():
    """A fit whose own warning says N and D are collinear (every run at one tokens per parameter,
    as the embedded default) would pick absurd D (tens of tokens); the search falls back to the
    stated assumption and says why."""
    fitted = {"params": {**HOFFMANN, "beta": 7.2}, "warnings": [
        "N and D are (nearly) collinear (constant tokens per parameter): A, alpha and B, beta are not "
        "separately identifiable; only the loss along the sampled N-D line is constrained"]}
    law = replace(chinchilla_only(), chinchilla=fitted)
    lm = LossModel(law)
    assert lm.params["beta"] != 7.2
    assert "is not identified (N and D are (nearly) collinear" in lm.l_opt_source
    assert lm.l_opt_source.startswith("assumption")
    assert LossModel(chinchilla_only()).params == HOFFMANN  # an identified part is used as is
