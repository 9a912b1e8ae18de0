"""The report: figures, tables, index and the honest summary, on fixture records."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pandas as pd
import pytest

from archscale.study import Study
from helpers.study import LAW, write_study

from archscale import search as S
from archscale.io import read_json, write_json, write_parquet
from archscale.law.laws import law_from_conditional
from archscale.report import OUTPUTS, build_report
from archscale.report.findings import factor_shape, findings, knob_sentences
from archscale.report.tables import chosen_rows


def run_study_search(root, st):
    """Search every target of the study on its fixture records (measured = 1.05 x predicted)."""
    cfg = st["config"]
    settings = Study.from_config(cfg).search_settings
    results, paretos = [], []
    for name, target in Study.from_config(cfg).search_targets.items():
        cands, space = S.prepare_from_files(
            target.to_dict(), settings.to_dict(), root / "results/runs.parquet", root / "results/fit/conditional.json",
            root / "results/throughput/cost_model.json",
        )
        eff = S.cost_model_efficiency(st["cost_model"], settings.input_len, settings.output_len, settings.batch_size)
        res, par = S.select(cands, space, lambda a: 1.05 * eff(S.measure_arch(cands, a)))
        S.attach_probabilities(res, cands["law_forms"])  # as search.files.select_interleaved_from_files does
        results.append(root / f"results/search/{name}/result.json")
        paretos.append(root / f"results/search/{name}/pareto.parquet")
        write_json(results[-1], res)
        write_parquet(paretos[-1], par)
    return results, paretos


def report_outputs(root):
    out = {k: str(root / "results/report" / (k + (".png" if kind == "figure" else ".html"))) for k, (kind, _) in OUTPUTS.items()}
    out["index"] = str(root / "results/report/index.json")
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    st = write_study(root)
    st["results"], st["paretos"] = run_study_search(root, st)
    st["root"] = root
    return st


@pytest.fixture(scope="module")
def built(study):
    """The report is drawn once per module (matplotlib dominates the time)."""
    return build(study)


def build(st, **kw):
    root, ids = st["root"], st["runs"]["arch_id"]
    args = dict(
        outputs=report_outputs(root), plan=root / "results/plan/plan.parquet", runs=root / "results/runs.parquet",
        conditional=root / "results/fit/conditional.json", validation=root / "results/fit/validation.parquet",
        curves=[root / f"results/train/{a}/curve.parquet" for a in ids],
        search_results=st["results"], search_pareto=st["paretos"], title="fixture study",
    )
    args.update(kw)
    return build_report(**args), args["outputs"]


def test_report_writes_every_figure_and_table_and_lists_them(study, built):
    index, out = built
    assert [i["name"] for i in index["items"]] == list(OUTPUTS)
    for item in index["items"]:
        path = out[item["name"]]
        assert item["path"] == path
        if item["kind"] == "figure":
            img = mpimg.imread(path)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    by_name = {i["name"]: i for i in index["items"]}
    # One panel per knob (scales as colours), each with the caption the findings page shows.
    assert by_name["loss_vs_d"]["panels"] == 1 and by_name["loss_vs_r"]["panels"] == 1
    assert all(by_name[k]["caption"] for k in ("loss_vs_d", "loss_vs_r", "throughput", "pareto", "validation"))
    assert by_name["loss_curves"]["curves"] == len(study["runs"])
    # Progressive s30k->s50k and s30k+s50k->s100k, and the one-scale-to-next task s50k->s100k.
    assert by_name["validation"]["panels"] == 3
    # s30k alone has too few runs in the r range (the task is skipped, its reason shown);
    # s30k+s50k -> s100k and s50k -> s100k have both forms' predictions for the 7 held-out runs.
    assert by_name["validation"]["points"] == 2 * 2 * 7
    # The validation table under both references, the empirical one flagged optimistic.
    table = index["validation_table"]
    assert len(table) == 6 and {"MSE (own L_opt, optimistic)", "MSE (L_opt extrapolated)"} <= set(table[0])
    page = open(out["findings"]).read()
    assert "Validation table (both references)" in page and "optimistic" in page
    # The effects table (one row per one-knob sweep, intervals of differences) on the same page.
    assert "<table" in page.split("Effects against seed noise (table)")[1].split("<h3>")[0]
    # Every measured batch size of the grid's sweeps at the search's scale, plus the GQA walk.
    assert by_name["throughput"]["batch_sizes"] == study["config"]["throughput"]["batch_sizes"]
    assert by_name["throughput"]["points"] >= 2 * 6
    assert by_name["plan"]["rows"] == len(study["runs"])
    assert read_json(out["index"]) == json.loads(json.dumps(index))

    res = read_json(study["results"][0])
    chosen = open(out["chosen"]).read()
    for pick in ("panda", "surefire", "baseline"):
        assert res[pick]["arch_id"] in chosen
    assert index["searches"] == [{"target": "s100k-default", "panda": res["panda"]["arch_id"],
                                  "surefire": res["surefire"]["arch_id"], "baseline": res["baseline"]["arch_id"],
                                  "probability_within_target": {"panda": None, "surefire": None, "baseline": None}}]
    # The fixture's fit kept no bootstrap samples: the pick probabilities are withheld, with the reason.
    assert "no bootstrap samples" in res["surefire"]["probability_reason"]
    assert "probability of meeting the target withheld for panda and surefire" in " ".join(index["findings"]["Search"]).lower()
    plan_html = open(out["plan"]).read()
    assert all(a in plan_html for a in study["runs"]["arch_id"])


def test_findings_state_the_fitted_optimum_and_the_tiny_scale_caveat(study, built):
    index, out = built
    text = index["findings"]
    shows = " ".join(text["What the runs show"])
    assert "interior optimum at d/sqrt(N) = 0.3" in shows  # a2/a1 of the fixture law
    assert "interior optimum at r = 1.5" in shows
    assert "tiny models" in shows and "they are not the paper's U-shapes" in shows
    effects = " ".join(text["Effects against seed noise (no fitted law)"])
    assert "seed noise not measured" in effects.lower()
    points = index["key_points"]
    assert list(points) == ["Resolved", "Not resolved", "Conditions"]
    assert "d/sqrt(N) 0.300 [0.250, 0.350] and r 1.50 [1.20, 1.80]" in points["Resolved"]
    assert "archscale plan --science" in points["Not resolved"] and "three seeds" in points["Not resolved"]
    assert "fixture-cpu" in points["Conditions"] and "does not transfer to GPU serving" in points["Conditions"]
    res = read_json(study["results"][0])
    answer = {r["role"]: r for r in index["answer"]}
    assert answer["surefire"]["arch_id"] == res["surefire"]["arch_id"]
    assert answer["surefire"]["speed_ratio"] == pytest.approx(
        res["surefire"]["measured_output_tokens_per_s"] / res["baseline"]["measured_output_tokens_per_s"])
    html = open(out["findings"]).read()
    # The answer table comes before the figures and the details.
    assert html.index("id='answer'") < html.index("<h3>Figures</h3>") < html.index("What the runs show")


def test_no_interior_optimum_when_the_fit_has_none(study):
    cond = read_json(study["root"] / "results/fit/conditional.json")
    for form in cond["forms"].values():
        form["a"] = [1.2, -0.05, 0.0]  # loss falls monotonically with d/sqrt(N)
        form["b"] = [0.9, -0.02, 0.0]
        form["optimum"] = {"d_over_sqrt_n": None, "d_over_sqrt_n_ci": [None, None], "r": None, "r_ci": [None, None]}
    text = findings(law_from_conditional(cond, "fit"), study["runs"], None, [], ["cpu"], ["megatron"])
    shows = " ".join(text["What the runs show"])
    assert "no interior optimum of the hidden size" in shows and "loss falls as it grows" in shows
    assert "no interior optimum of the MLP-to-attention ratio" in shows
    assert "interior optimum at" not in shows
    assert "finds no interior optimum inside the sampled range" in shows
    assert text["Cross-scale validation"][0].startswith("No progressive cross-scale validation")


def test_factor_shape_with_the_paper_coefficients():
    a = [2.319, 0.238, 0.0176]  # 1B-only fit: d/sqrtN* = 0.0739
    s = factor_shape(a, 0.05, 0.12)
    assert s["trend"] == "interior minimum" and s["x_star"] == pytest.approx(0.0739, abs=1e-4)
    assert factor_shape(a, 0.1, 0.3)["trend"] == "rises"  # right of the optimum
    assert factor_shape(a, 0.02, 0.05)["trend"] == "falls"
    assert factor_shape([1.0, -0.1, -0.02], 0.1, 0.3)["kind"] == "maximum"
    sentences = knob_sentences(
        law_from_conditional({"r_range": [0.5, 5], "forms": {"multiplicative": {
            "a": a, "b": [0.5104, 0.0051, 0.0062], "optimum": {"d_over_sqrt_n": 0.0739, "r": 1.216}}}}, "fit"),
        pd.DataFrame({"d_over_sqrt_n": [0.1, 0.2], "mlp_attn_ratio": [2.0, 4.0]}),
    )
    # The fitted optima lie left of every sampled point: no interior optimum over that range.
    assert sentences[0].startswith("multiplicative fit: no interior optimum of the hidden size")
    assert "outside the sampled range" in sentences[0]


def test_chosen_rows_report_measured_speedup():
    res = {
        "target": "t", "baseline": {"arch_id": "b", "name": "base", "loss": 3.0, "measured_output_tokens_per_s": 100.0},
        "panda": {"arch_id": "p", "loss": 2.9, "measured_output_tokens_per_s": 90.0},
        "surefire": {"arch_id": "s", "loss": 2.99, "measured_output_tokens_per_s": 140.0},
    }
    df = chosen_rows([res])
    assert df["arch_id"].tolist() == ["b", "p", "s"]
    assert df["measured_vs_baseline"].tolist() == pytest.approx([1.0, 0.9, 1.4])
    assert df["pick"].iloc[0] == "baseline (base)"


def test_law_fixture_matches_the_fit_json(study):
    cond = read_json(study["root"] / "results/fit/conditional.json")
    assert cond["forms"]["multiplicative"]["a"] == LAW["a"]


def test_validation_points_reproduce_the_tables_mse(study):
    from archscale.report.validation import validation_points

    cond = read_json(study["root"] / "results/fit/conditional.json")
    val = pd.read_parquet(study["root"] / "results/fit/validation.parquet")
    pts = validation_points(study["runs"], cond, val)
    # s30k->s50k was skipped by the fit; the progressive and the one-scale-to-next task remain.
    assert set(pts["task"]) == {"s30k+s50k->s100k", "s50k->s100k"}
    for (task, form), grp in pts.groupby(["task", "form"]):
        row = val[(val["task"] == task) & (val["form"] == form)].iloc[0]
        assert grp["mse_recomputed"].iloc[0] == pytest.approx(row["mse"], rel=1e-6)
        assert len(grp) == row["n_test"]


def test_guard_verdicts_and_withheld_optima_in_the_findings(study):
    from archscale.report.findings import guard_sentences

    cond = read_json(study["root"] / "results/fit/conditional.json")
    form = cond["forms"]["multiplicative"]
    # The fitted curve turns inside the sampled range, but the fit withheld the optimum (its interval
    # leaves the range): the findings give the fit's reason, never the number.
    form["optimum"] = dict(form["optimum"], d_over_sqrt_n=None, d_over_sqrt_n_ci=None,
                           d_over_sqrt_n_reason="no interior optimum: its interval leaves the sampled range")
    form["factors"] = {"d_over_sqrt_n": {"fitted": True, "reason": None, "range": [0.2, 0.51]},
                       "r": {"fitted": False, "reason": "r takes 2 distinct value(s)", "range": [1.0, 2.0]}}
    form["warnings"] = ["multiplicative fit: ConvergenceWarning"]
    form["status"] = "flagged: r not fitted"
    cond["status"] = "flagged: multiplicative: flagged: r not fitted"
    law = law_from_conditional(cond, "fit")
    text = findings(law, study["runs"], None, [], ["cpu"], ["megatron"])
    shows = " ".join(text["What the runs show"])
    x_star = form["a"][2] / form["a"][1]
    assert "multiplicative fit: the hidden size has an interior optimum" not in shows
    assert "the fit withholds it: no interior optimum: its interval leaves the sampled range" in shows
    sentence = next(t for t in text["What the runs show"] if t.startswith("multiplicative fit: no interior optimum of the hidden"))
    assert f"= {x_star:.3g}" not in sentence and f"{x_star:.3g}," not in sentence
    verdicts = text["Fit verdicts (identifiability guards)"]
    assert verdicts == guard_sentences(law)
    joined = " ".join(verdicts)
    assert "Conditional fit status: flagged" in joined and "r factor over [1, 2]: left out: r takes 2 distinct values" in joined
    assert "d/sqrt(N) factor over [0.200, 0.510]: fitted." in joined and "ConvergenceWarning" in joined


def test_surefire_ratio_interval_and_verdict_are_reported():
    from archscale.report.findings import surefire_verdict_sentence

    ratio = {"value": 1.04, "low": 0.97, "high": 1.12, "n": 5, "method": "bootstrap", "level": 0.95,
             "withheld_reason": None}
    verdict = {"ratio": ratio, "verdict": "not resolved", "kept": "b", "candidate": "s", "baseline": "b"}
    res = {
        "target": "t", "baseline": {"arch_id": "b", "name": "base", "loss": 3.0, "measured_output_tokens_per_s": 100.0},
        "surefire": {"arch_id": "s", "loss": 2.99, "measured_output_tokens_per_s": 105.0},
        "surefire_verdict": verdict,
    }
    df = chosen_rows([res])
    sure = df[df["arch_id"] == "s"].iloc[0]
    assert sure["measured_vs_baseline"] == 1.04 and sure["measured_vs_baseline_interval"] == "[0.970, 1.120]"
    assert sure["verdict"] == "not resolved (kept: b)"
    text = surefire_verdict_sentence(verdict)
    assert "1.040 [0.970, 1.120]" in text and "not resolved" in text and "the baseline is kept" in text
    assert "Surefire is kept" in surefire_verdict_sentence(dict(verdict, verdict="faster", kept="s"))
    assert surefire_verdict_sentence(None) is None


def test_report_states_the_cost_models_spearman():
    from archscale.report.findings import cost_model_sentences

    model = {"devices": {"Test CPU (fp32)": {
        "jobs": 19, "mean_abs_rel_error": 0.12, "workload": {"mode": "decode_at_context", "context": 1024},
        "spearman": {"within_batch_size_mean": 0.93, "by_batch_size": {
            "8": {"n": 19, "spearman_calibrated": 0.91, "spearman_roofline": 0.88},
            "32": {"n": 19, "spearman_calibrated": 0.95, "spearman_roofline": None}}}}}}
    (text,) = cost_model_sentences(model)
    assert "19 measured architectures on Test CPU (fp32) (decode_at_context at context 1024) with Spearman 0.93" in text
    assert "batch 8: 0.91 calibrated, 0.88 raw roofline (19 architectures)" in text
    assert "batch 32: 0.95 calibrated, undefined raw roofline" in text and "error 12%" in text
    assert cost_model_sentences(None) == []


def test_loss_figures_show_seed_spread_and_the_law_only_where_it_is_a_finding(study, tmp_path):
    """Several seeds: one point per architecture with its seed sd as error bar; one panel per knob
    (scales as colours); the law with its optimum's interval only where the optimum is resolved."""
    from archscale.report.figures import loss_vs_knob, seed_points
    from archscale.report.findings import resolved_optima

    runs = study["runs"].copy()
    runs["run_id"] = runs["arch_id"]
    extra = runs.iloc[:4].copy()  # three points of s30k's d/sqrt(N) sweep and one of its r sweep
    extra["run_id"] = extra["arch_id"] + "-s1"
    extra["valid_loss"] = extra["valid_loss"] + 0.03
    seeded = pd.concat([runs, extra], ignore_index=True)
    law = law_from_conditional(read_json(study["root"] / "results/fit/conditional.json"), "fit")
    resolved = resolved_optima(law, runs)
    assert set(resolved) == {"d_over_sqrt_n", "r"} and resolved["r"]["ci"] == [1.2, 1.8]
    for knob, n_seeded in (("d", 3), ("r", 1)):
        got = loss_vs_knob(seeded, law, knob, tmp_path / f"{knob}.png", resolved)
        assert got["panels"] == 1 and got["seeded_architectures"] == n_seeded and got["law_drawn"]
        assert "error bars are the seed sd" in got["caption"] and "[" in got["caption"]
        assert mpimg.imread(tmp_path / f"{knob}.png").ndim == 3
    first = seeded[seeded["arch_id"] == extra["arch_id"].iloc[0]]
    point = seed_points(first, "d_over_sqrt_n").iloc[0]
    # the error bar is the seed sd: two seeds 0.03 apart
    assert point["n"] == 2 and point["m"] == pytest.approx(first["valid_loss"].mean())
    assert point["sd"] == pytest.approx(0.03 / 2**0.5)
    assert seed_points(runs.iloc[:1], "d_over_sqrt_n").iloc[0]["sd"] == 0.0  # one seed: no bar
    one = loss_vs_knob(runs, law, "d", tmp_path / "one.png", resolved)
    assert one["seeded_architectures"] == 0 and "one seed each" in one["caption"]


def test_multi_horizon_runs_are_drawn_and_counted_at_one_budget(study, tmp_path):
    """Multi-horizon runs give one row per token budget: the loss figures compare each scale's
    architectures at the largest budget all have (the longer horizon's loss, not a mean over
    budgets), and the study sentence counts seeds and budgets, not rows."""
    from archscale.report.answer import study_sentence
    from archscale.report.figures import at_scale_budget, loss_vs_knob

    runs = study["runs"].copy()
    runs["run_id"], runs["seed"] = runs["arch_id"], 1234
    short = runs.copy()
    short["run_id"] = short["arch_id"] + "-D-half"
    short["tokens"] = short["tokens"] // 2
    short["valid_loss"] = short["valid_loss"] + 0.5  # a shorter budget: a much higher loss
    both = pd.concat([runs, short], ignore_index=True)
    at, several = at_scale_budget(both)
    assert several and len(at) == len(runs) and (at["valid_loss"].to_numpy() == runs["valid_loss"].to_numpy()).all()
    law = law_from_conditional(read_json(study["root"] / "results/fit/conditional.json"), "fit")
    got = loss_vs_knob(both, law, "d", tmp_path / "d.png")
    assert got["seeded_architectures"] == 0 and "largest token budget" in got["caption"]
    text = study_sentence(both, ["cpu"], [], None)
    assert "1 seed, 2 token budgets each" in text, text
    assert "1 seed each" in study_sentence(runs, ["cpu"], [], None)
    from archscale.report.findings import _seed_counts

    assert set(_seed_counts(both)) == {1}  # two rows per architecture, one seed


def test_numbers_sweeps_and_plurals_in_the_readers_words():
    from archscale.report.words import humanize, interval, num, sweep_name

    assert num(17412.3) == "17,400" and num(17412.3, "tokens/s") == "17,400 tokens/s"
    assert num(0.000271) == "0.000271" and num(3.98251) == "3.98" and num(99.96) == "100" and num(96.0) == "96"
    assert num(2.3e12) == "2.30 trillion" and num(None) == "-" and num(float("nan")) == "-"
    assert interval(1.07, 1.642) == "[1.07, 1.64]" and interval(None, 2.0) == ""
    assert sweep_name("r@scales[2].grid[1]|d_over_sqrt_n=0.35,gqa=1", "s100k") == "s100k, r sweep at d/sqrt(N) 0.35"
    assert sweep_name("d_over_sqrt_n@scales[0].grid[0]|r=1,gqa=2") == "d/sqrt(N) sweep at r 1 and GQA 2"
    text = humanize("s100k along scales[2].grid[0]|r=1,gqa=1, 1 seed(s) each, 3 distinct value(s), 1.74e+04 tokens/s")
    assert text == "s100k along sweep at r 1, 1 seed each, 3 distinct values, 17,400 tokens/s"


def test_repeated_causes_are_said_once_with_the_checks_they_hold_for():
    from archscale.report.findings import validation_causes, validation_sentences
    from archscale.report.words import group_causes, repeated_sentences

    why = "Chinchilla law not identifiable: D takes {} distinct value(s). Add runs at more (N, D) budgets"
    val = pd.DataFrame([
        {"task": f"t{i}", "form": f, "kind": "progressive", "mse": 1e-4, "spearman": 0.9,
         "status": f"ok; extrapolated reference: {why.format(1 + i % 2)}"}
        for i in range(3) for f in ("multiplicative", "additive")])
    causes = validation_causes(val)
    assert causes == ["The extrapolated reference is withheld: Chinchilla law not identifiable: D takes 1 or 2 "
                      "distinct values. Add runs at more (N, D) budgets (in all 6 validation checks)."]
    assert not repeated_sentences(" ".join(validation_sentences(val)))
    assert group_causes([("a", "x"), ("b", "y")], "checks") == ["X (in 1 of 2 checks: a).", "Y (in 1 of 2 checks: b)."]
    assert repeated_sentences("Seed noise not measured here. Seed noise not measured here. Other text is fine.") == {
        "Seed noise not measured here.": 2}


def test_numerical_warnings_become_a_sentence_not_output(recwarn):
    import numpy as np

    from archscale.report.findings import clean_status
    from archscale.report.words import caught

    notes = []
    with caught(notes, "the effects"):
        np.float64(1.0) / np.float64(0.0)
        import warnings
        warnings.warn("divide by zero encountered in scalar divide", RuntimeWarning)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert notes == ["the effects: divide by zero (numerical warning; the affected values are left out)."]
    assert "RuntimeWarning" not in clean_status("ok; RuntimeWarning: divide by zero encountered in scalar divide")


def test_answer_rows_carry_the_interleaved_speed_interval_and_the_loss_interval():
    import numpy as np

    from archscale.report.answer import answer_frame, answer_rows

    shape = {"d_model": 96, "layers": 2, "heads": 4, "ffn": 144, "d_over_sqrt_n": 0.3}
    res = {"target": "t", "form": "multiplicative", "l_opt": 4.0, "batch_size": 8,
           "baseline": {**shape, "arch_id": "b", "name": "base", "kv_heads": 2, "mlp_attn_ratio": 4.5, "loss": 3.98,
                        "measured_output_tokens_per_s": 100.0},
           "panda": {**shape, "arch_id": "p", "kv_heads": 4, "mlp_attn_ratio": 1.5, "loss": 3.9,
                     "measured_output_tokens_per_s": 90.0},
           "surefire": {**shape, "arch_id": "s", "kv_heads": 1, "mlp_attn_ratio": 3.0, "loss": 3.97,
                        "measured_output_tokens_per_s": 140.0}}
    rng = np.random.default_rng(0)
    rounds = {a: [{"output_tokens_per_s": v * (1 + 0.01 * rng.standard_normal())} for _ in range(9)]
              for a, v in (("b", 100.0), ("p", 90.0), ("s", 140.0))}
    record = {"architectures": {a: {"repeats": r} for a, r in rounds.items()}}
    a, b = np.array(LAW["a"]), np.array(LAW["b"])
    samples = np.column_stack([np.tile(a, (50, 1)), np.tile(b, (50, 1))]) * rng.normal(1, 0.01, (50, 6))
    cond = {"forms": {"multiplicative": {"form": "multiplicative", "a": LAW["a"], "b": LAW["b"],
                                         "samples": samples.tolist()}}}
    rows = answer_rows([res], law_from_conditional(cond, "fit"), {"t": record})
    by = {r["role"]: r for r in rows}
    assert by["surefire"]["speed_verdict"] == "faster" and by["surefire"]["speed_low"] > 1.3
    assert by["panda"]["speed_verdict"] == "slower" and by["panda"]["speed_high"] < 1.0
    lo, hi = by["panda"]["loss_ci"]
    assert lo < hi
    table = answer_frame(rows)
    assert table.loc[2, "speed vs baseline"].startswith("1.4") and "[" in table.loc[2, "speed vs baseline"]
    assert table.loc[0, "heads / KV heads"] == "4 / 2" and table.loc[0, "speed vs baseline"] == "1 (reference)"
    # Without the interleaved rounds: the ratio of the single measurements, and no interval claimed.
    bare = {r["role"]: r for r in answer_rows([res])}
    assert bare["surefire"]["speed_ratio"] == pytest.approx(1.4) and bare["surefire"]["speed_low"] is None
    assert bare["surefire"]["loss_ci"] is None


def test_findings_page_has_no_internal_key_and_no_repeated_sentence(built):
    import re

    from archscale.report.words import repeated_sentences

    index, out = built
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", open(out["findings"]).read())
    text = re.sub(r"<(h\d|li|p|dt|dd|tr|figcaption)\b", "\n<", re.sub(r"<style>.*?</style>", "", page, flags=re.S))
    text = re.sub(r"<[^>]+>", " ", text)
    for pattern in (r"grid\[", r"\|r=", r"\bNone\b", r"\bnan\b", r"\de\+0", r"\(s\)"):
        assert not re.search(pattern, text), (pattern, re.search(f".{{80}}{pattern}.{{40}}", text, re.S))
    prose = re.sub(r"<[^>]+>", " ", re.sub(r"<table.*?</table>", "\n", re.sub(
        r"<(h\d|li|p|dt|dd|figcaption)\b", "\n<", page), flags=re.S))
    assert repeated_sentences(prose) == {}
    for name in ("chosen", "plan"):
        other = open(out[name]).read()
        assert "arch_id" not in other and "pred_output_tokens_per_s" not in other and "e+0" not in other


def test_no_resolved_optimum_says_so_and_draws_no_law(study, tmp_path):
    from archscale.report.findings import key_points
    from archscale.report.figures import loss_vs_knob

    cond = read_json(study["root"] / "results/fit/conditional.json")
    for form in cond["forms"].values():
        form["optimum"] = {"d_over_sqrt_n": None, "d_over_sqrt_n_ci": [None, None], "r": None, "r_ci": [None, None]}
    law = law_from_conditional(cond, "fit")
    points = key_points(law, study["runs"], None, [], ["cpu"], ["megatron"])
    assert points["Resolved"].startswith("No optimum is resolved")
    got = loss_vs_knob(study["runs"], law, "d", tmp_path / "d.png", resolved={})
    assert got["law_drawn"] is False and "no law is drawn" in got["caption"]
