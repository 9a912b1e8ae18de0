"""Sequential design: from a finished run's law and paired noise to a config overlay of new runs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from archscale.config import deep_merge, read_yaml, validate_config
from archscale.io import write_json, write_parquet
from archscale.law.conditional import fit_conditional
from archscale.law.laws import law_from_conditional
from archscale.plan import build_plan
from archscale.analysis.noise import seed_decomposition
from archscale.science.suggest import _t_half, format_sequential, sequential_design
from helpers.study import REPO

SEEDS = [1234, 1, 2, 3]


def _raw(horizons=None) -> dict:
    """The default config with one 100k scale: a d/sqrt(N) sweep at r 1 and an r sweep at d/sqrt(N) 0.2
    (they share the point (0.2, 1)), four seeds."""
    raw = read_yaml(REPO / "config" / "config.yaml")
    scale = {"name": "s100k", "n_target": 100000, "layers": 4, "head_dim": 8, "tokens_per_param": 20, "seeds": SEEDS,
             "grid": [{"d_over_sqrt_n": [0.1, 0.2, 0.3, 0.4], "r": [1.0], "gqa": [1]},
                      {"d_over_sqrt_n": [0.2], "r": [0.25, 1.0, 4.0, 12.0], "gqa": [1]}]}
    if horizons:
        scale["horizons"] = horizons
    raw["scales"], raw["search"] = [scale], {"targets": []}
    return raw


def _factor(c, v):
    return c[0] + c[1] * np.log(v) + c[2] / v


def _finished(raw, a, b, seed=0, sd_seed=0.02, sd_run=0.006):
    """(runs table, conditional.json, law, paired noise) of the plan of ``raw`` trained under the
    multiplicative law ``a``, ``b`` with a seed-shared and an independent part of the noise."""
    plan = build_plan(copy.deepcopy(raw))
    rng = np.random.default_rng(seed)
    shared = {s: rng.normal(0, sd_seed) for s in SEEDS}
    rows = []
    for rid, tr in plan.train_runs.items():
        p = plan.runs[tr.arch_id]
        lopt = 3.3 + 2e6 / tr.tokens * 0.1  # a longer budget lowers the loss
        loss = _factor(a, p.arch.d_over_sqrt_n) * _factor(b, p.arch.mlp_attn_ratio) * lopt
        rows.append({"run_id": rid, "arch_id": tr.arch_id, "seed": tr.seed, "scale": p.scale.name,
                     "sweeps": ";".join(p.sweeps), "tokens": tr.tokens, "D": tr.tokens,
                     "schedule": "wsd" if tr.horizon else "cosine", "n_target": p.scale.n_target,
                     "params_non_embedding": p.arch.params_non_embedding, "d_over_sqrt_n": p.arch.d_over_sqrt_n,
                     "mlp_attn_ratio": p.arch.mlp_attn_ratio,
                     "valid_loss": loss + shared[tr.seed] + rng.normal(0, sd_run)})
    runs = pd.DataFrame(rows)
    cond = fit_conditional(runs, r_range=(0.2, 12.0), forms=("multiplicative",), bootstrap=50)
    return runs, cond, law_from_conditional(cond, "conditional.json"), seed_decomposition(runs)


# d/sqrt(N)* = 0.2 strong; r* = 3 weak: the r sweep's rise toward r 12 is within the noise
STRONG_D, WEAK_R = [1.0, 0.2, 0.04], [0.985, 0.004, 0.012]


@pytest.mark.parametrize("horizons", [None, [10, 20]])
def test_proposals_target_the_unresolved_optimum_and_the_overlay_adds_only_them(horizons):
    raw = _raw(horizons)
    runs, cond, law, noise = _finished(raw, STRONG_D, WEAK_R)
    res = sequential_design(raw, law, cond, runs, noise, top=3)
    # one unresolved optimum: the r sweep (the d/sqrt(N) sweep and both fitted optima are resolved)
    assert [t["target"] for t in res["targets"]] == ["s100k, r sweep at d/sqrt(N) 0.2"]
    assert any(n.startswith("s100k, d/sqrt(N) sweep") and "resolved" in n for n in res["notes"])
    assert len(res["proposals"]) == 3
    for p in res["proposals"]:
        assert p["why"] == "s100k, r sweep at d/sqrt(N) 0.2" and p["where"] == "scales[0].grid[1]"
        assert p["after"]["relative_width"] < p["before"]["relative_width"] and p["device_hours"] > 0
    # the overlay, layered the way Snakemake layers config files, is a valid config ...
    merged = deep_merge(raw, res["overlay"])
    validate_config(copy.deepcopy(merged))
    assert set(res["overlay"]) == {"scales"} and len(res["overlay"]["scales"]) == len(raw["scales"])
    # ... that keeps every existing run (same id, same job) and adds exactly the proposed ones
    old_plan, new_plan = build_plan(copy.deepcopy(raw)), build_plan(copy.deepcopy(merged))
    old, new = old_plan.train_runs, new_plan.train_runs
    assert all(new[rid] == tr for rid, tr in old.items())
    # the train rule's params of every existing run are unchanged, so Snakemake trains none of them again
    assert all(old_plan.budget(r) == new_plan.budget(r) and old_plan.runs[tr.arch_id].arch.to_dict()
               == new_plan.runs[tr.arch_id].arch.to_dict() for r, tr in old.items())
    added = set(new) - set(old)
    assert added == set(res["new_runs"]) == {r for p in res["proposals"] for r in p["runs"]}
    r_sweep = {a for a, p in build_plan(copy.deepcopy(raw)).runs.items() if any(s.startswith("r@") for s in p.sweeps)}
    assert {new[r].arch_id for r in added} == r_sweep  # the seeds go to the r sweep's architectures only
    assert merged["scales"][0]["grid"][1]["seeds"] == SEEDS + [4, 5, 6]
    assert len(added) == len(r_sweep) * 3 * len(horizons or [None])
    assert res["device_hours"] == pytest.approx(sum(p["device_hours"] for p in res["proposals"]))


def test_expected_interval_of_a_rise_narrows_as_the_t_interval_of_more_paired_seeds():
    raw = _raw()
    runs, cond, law, noise = _finished(raw, STRONG_D, WEAK_R)
    p = sequential_design(raw, law, cond, runs, noise, top=1)["proposals"][0]
    b, a = p["before"], p["after"]
    half_b, half_a = (b["interval"][1] - b["interval"][0]) / 2, (a["interval"][1] - a["interval"][0]) / 2
    assert half_a / half_b == pytest.approx(_t_half(5, b["level"]) / _t_half(4, b["level"]))
    assert a["estimate"] == b["estimate"]  # a seed narrows the interval; the rise is the measured one


def test_a_sweep_whose_rise_is_small_at_its_end_is_extended_past_it():
    raw = _raw()
    # d/sqrt(N)* = 0.35: the high end (0.4) is barely above the best; r is strong and resolved
    runs, cond, law, noise = _finished(raw, [1.0, 0.1, 0.035], [0.9, 0.05, 0.06], sd_run=0.01)
    res = sequential_design(raw, law, cond, runs, noise, top=2)
    ext = [p for p in res["proposals"] if p["kind"] == "extend"]
    assert ext and ext[0]["where"] == "scales[0].grid[0]" and ext[0]["reads"] == "high rise"
    assert ext[0]["after"]["estimate"] > ext[0]["before"]["estimate"]  # the fitted law's rise at the new end
    merged = deep_merge(raw, res["overlay"])
    values = merged["scales"][0]["grid"][0]["d_over_sqrt_n"]
    assert values[:4] == [0.1, 0.2, 0.3, 0.4] and values[4] > 0.4
    old, new = build_plan(copy.deepcopy(raw)), build_plan(copy.deepcopy(merged))
    arch = {new.train_runs[r].arch_id for r in ext[0]["runs"]}
    assert len(arch) == 1 and arch.pop() in ext[0]["runs"]  # the base seed's run keeps the arch id
    assert len(ext[0]["runs"]) == len(SEEDS) and set(old.train_ids) <= set(new.train_ids)


def test_a_wide_fitted_optimum_gets_new_grid_points_near_it():
    raw = _raw()
    runs, cond, law, noise = _finished(raw, STRONG_D, [0.97, 0.01, 0.03])  # every sweep resolved
    res = sequential_design(raw, law, cond, runs, noise, top=2, width=0.05)  # r*'s interval is wider than 5%
    assert [t["target"] for t in res["targets"]] == ["fitted r*"]
    assert all(p["why"] == "fitted r*" and p["after"]["relative_width"] < p["before"]["relative_width"]
               for p in res["proposals"])
    points = [p for p in res["proposals"] if p["kind"] == "point"]
    assert points, "new design points narrow a fitted optimum more per hour than repeats here"
    merged = deep_merge(raw, res["overlay"])
    assert len(merged["scales"][0]["grid"]) == 2 + len(points)
    old, new = build_plan(copy.deepcopy(raw)).train_runs, build_plan(copy.deepcopy(merged)).train_runs
    assert set(old) <= set(new) and set(new) - set(old) == set(res["new_runs"])


def test_nothing_to_propose_when_every_optimum_is_resolved():
    raw = _raw()
    runs, cond, law, noise = _finished(raw, STRONG_D, [0.97, 0.01, 0.03])
    res = sequential_design(raw, law, cond, runs, noise)
    assert res["proposals"] == [] and res["overlay"] is None and "no unresolved optimum" in res["reason"]
    assert "no unresolved optimum" in format_sequential(res)


def _results(tmp_path, raw, runs, cond):
    write_parquet(tmp_path / "results" / "runs.parquet", runs)
    write_json(tmp_path / "results" / "fit" / "conditional.json", cond)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return ["plan", str(tmp_path / "study.yaml"), "--no-base", "--science", "--suggest", "--from-results",
            str(tmp_path / "results")]


def test_cli_prints_the_table_and_writes_the_overlay(tmp_path, capsys):
    from archscale.cli.main import main

    raw = _raw()
    runs, cond, _, _ = _finished(raw, STRONG_D, WEAK_R)
    args = _results(tmp_path, raw, runs, cond)
    assert main(args + ["--overlay-out", str(tmp_path / "next.yaml"), "--budget", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "proposal" in out and "interval before -> after" in out and "seed 4 on scales[0].grid[1]" in out
    assert "device-h" in out and "overlay written to" in out
    text = (tmp_path / "next.yaml").read_text()
    assert text.startswith("# archscale sequential design: 8 new training runs")
    assert "snakemake --cores N --configfile" in text
    overlay = yaml.safe_load(text)
    assert overlay["scales"][0]["grid"][1]["seeds"] == SEEDS + [4, 5]  # two seeds fit 0.9 device-hours
    assert main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["proposals"]) == 5 and res["noise"]["paired_difference_sd"] > 0


def test_bad_inputs_give_one_clear_error(tmp_path):
    from archscale.cli.main import main

    raw = _raw()
    runs, cond, _, _ = _finished(raw, STRONG_D, WEAK_R)
    args = _results(tmp_path, raw, runs, cond)
    (tmp_path / "results" / "fit" / "conditional.json").unlink()
    with pytest.raises(SystemExit, match=r"conditional.json does not exist; it holds the fitted law"):
        main(args)
    write_json(tmp_path / "results" / "fit" / "conditional.json", cond)
    write_parquet(tmp_path / "results" / "runs.parquet", runs.assign(seed=None))
    with pytest.raises(SystemExit, match=r"runs.parquet: the 'seed' column is empty"):
        main(args)
    write_parquet(tmp_path / "results" / "runs.parquet", runs[runs["seed"] == 1234])
    with pytest.raises(SystemExit, match=r"no architecture .* two or more runs"):
        main(args)
    write_parquet(tmp_path / "results" / "runs.parquet", runs.drop(columns="sweeps"))
    with pytest.raises(SystemExit, match=r"missing column\(s\) \['sweeps'\]"):
        main(args)
    write_parquet(tmp_path / "results" / "runs.parquet", runs.assign(run_id=runs["run_id"] + "-x"))
    with pytest.raises(SystemExit, match="the config does not plan"):
        main(args)
    with pytest.raises(SystemExit, match="--law does not apply"):
        main(args + ["--law", "paper-1b"])
    with pytest.raises(SystemExit, match="--overlay-out and --budget need --from-results"):
        main(args[:4] + ["--law", "paper-1b", "--seed-noise", "0.01", "--overlay-out", str(tmp_path / "o.yaml")])


def test_the_text_says_which_optima_the_proposals_do_not_settle():
    def target(name, after):
        return {"target": name, "what": "high rise", "estimate": 0.01, "interval": [-0.1, 0.12],
                "after": {"what": "high rise", "estimate": 0.01, "interval": after, "level": 0.99}}

    res = {"noise": {"per_run_sd": 0.05, "per_run_sd_ci95": [0.04, 0.06], "shared_fraction": 0.0,
                     "shared_fraction_ci95": None, "paired_difference_sd": 0.07},
           "law": "fit", "form": "multiplicative", "notes": [], "new_runs": ["a"], "device_hours": 0.1,
           "targets": [target("s25k, r sweep at d/sqrt(N) 0.1", [-0.01, 0.03]),
                       target("s100k, r sweep at d/sqrt(N) 0.2", [0.002, 0.02])],
           "proposals": [{"what": "seed 2 on scales[0].grid[1]", "why": "s25k, r sweep at d/sqrt(N) 0.1",
                          "reads": "high rise", "before": {"what": "rise", "estimate": 0.01, "interval": [-0.1, 0.12]},
                          "after": {"what": "rise", "estimate": 0.01, "interval": [-0.01, 0.03]},
                          "device_hours": 0.1, "runs": ["a"]}]}
    line = next(ln for ln in format_sequential(res).splitlines() if ln.startswith("expected to stay unresolved"))
    assert "s25k, r sweep at d/sqrt(N) 0.1, high rise" in line and "s100k" not in line
