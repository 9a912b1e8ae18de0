"""Config validation, grid expansion and the compute plan."""

import copy
from pathlib import Path

import pytest
import yaml

from archscale.config import ConfigError, load_config, validate_config
from archscale.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def default_config():
    return load_config(ROOT / "config" / "config.yaml")


def test_shipped_configs_validate_and_resolve():
    for name in ("config.yaml", "paper.yaml"):
        plan = build_plan(load_config(ROOT / "config" / name))
        assert plan.ids
        for run in plan.runs.values():
            a, s = run.arch, run.scale
            assert abs(a.params_non_embedding / s.n_target - 1) <= s.n_tolerance


def test_paper_config_has_over_200_architectures_and_the_baselines():
    plan = build_plan(load_config(ROOT / "config" / "paper.yaml"))
    assert len(plan.ids) > 200
    names = {run.arch.name for run in plan.runs.values()}
    assert {"llama-3.2-1b", "llama-3.2-3b", "panda-1b", "surefire-1b"} <= names
    assert plan.baseline("llama-3.2-1b").arch.params_total == 1_235_814_400


def test_defaults_are_filled(default_config):
    assert default_config["training"]["adam_beta2"] == 0.95
    assert default_config["data"]["on_bad_record"] == "error"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"training.*learning_rate"):
        validate_config({"scales": [], "training": {"learning_rate": 1e-3}})


def test_wrong_type_is_named(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["layers"] = "two"
    with pytest.raises(ConfigError, match=r"scales\[0\]\.layers"):
        validate_config(cfg)


def test_explicit_architecture_with_gqa_not_dividing_heads(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][2]["architectures"] = [{"name": "bad", "d_model": 96, "ffn": 144, "heads": 6, "kv_heads": 4}]
    with pytest.raises(ConfigError, match=r"architectures\[0\] 'bad'.*not a multiple of kv_heads"):
        build_plan(cfg)


def test_infeasible_point_fails_before_any_job(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["grid"].append({"d_over_sqrt_n": [3.0], "r": [1.0], "gqa": [1]})
    with pytest.raises(ConfigError, match=r"scale 's30k', grid point d_over_sqrt_n=3.0"):
        build_plan(cfg)


def test_infeasible_point_can_be_skipped_and_listed(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["model"]["on_infeasible"] = "skip"
    cfg["scales"][0]["grid"].append({"d_over_sqrt_n": [3.0], "r": [1.0], "gqa": [1]})
    plan = build_plan(cfg)
    assert len(plan.skipped) == 1 and "d_over_sqrt_n=3.0" in plan.skipped[0]


def test_explicit_architecture_off_target_n(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][2]["architectures"] = [{"name": "huge", "d_model": 512, "ffn": 2048, "heads": 8, "kv_heads": 8}]
    with pytest.raises(ConfigError, match=r"'huge'.*off the scale's target"):
        build_plan(cfg)


def test_adding_a_grid_point_keeps_existing_ids(default_config):
    before = build_plan(default_config).ids
    cfg = copy.deepcopy(default_config)
    cfg["scales"][1]["grid"].append({"d_over_sqrt_n": [0.25], "r": [1.5], "gqa": [1]})
    after = build_plan(cfg).ids
    assert set(before) < set(after)
    assert [i for i in after if i in before] == before


def test_duplicate_points_are_merged(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["grid"].append(copy.deepcopy(cfg["scales"][0]["grid"][0]))
    plan = build_plan(cfg)
    assert plan.ids == build_plan(default_config).ids
    assert any(len(run.origins) == 2 for run in plan.runs.values())


def test_plan_rows_carry_cost_and_runtime(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["compute"].update(gpu_model="a100", peak_flops=None, gpus_per_job=4, mfu=0.5)
    rows = build_plan(cfg).rows()
    r = rows[0]
    assert r["gpus"] == 4
    assert r["est_hours"] == pytest.approx(r["train_flops"] / (312e12 * 4 * 0.5) / 3600)
    assert r["runtime_min"] >= int(cfg["compute"]["runtime_overhead_min"])
    assert r["steps"] * 32 * 128 >= r["tokens"]


def test_scale_gpus_override_compute_default():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    plan = build_plan(cfg)
    assert {run.gpus for run in plan.runs.values() if run.scale.name == "80m"} == {4}


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("scales: [\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_config_round_trips_through_yaml(default_config, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(default_config))
    assert build_plan(load_config(p)).ids == build_plan(default_config).ids


def test_seeds_default_to_the_training_seed(default_config):
    plan = build_plan(default_config)
    base = default_config["training"]["seed"]
    assert all(run.seeds == [base] for run in plan.runs.values())
    assert plan.train_ids == plan.ids  # one run per architecture, named by its arch id
    assert all(r["n_seeds"] == 1 and r["primary_run_id"] == r["arch_id"] for r in plan.rows())


def test_adding_seeds_keeps_every_existing_run_id(default_config):
    from archscale.plan import plan_totals, split_run_id

    before = build_plan(default_config)
    base = default_config["training"]["seed"]
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["seeds"] = [base, 1, 2]  # scale-wide
    cfg["scales"][1]["grid"][0]["seeds"] = [7]  # one sweep overrides its scale (base seed dropped)
    after = build_plan(cfg)
    assert after.ids == before.ids  # architectures unchanged
    first = [r for r in after.runs.values() if r.scale.name == cfg["scales"][0]["name"]]
    for run in first:
        assert run.run_ids == [run.arch_id, f"{run.arch_id}-s1", f"{run.arch_id}-s2"]
        assert run.primary_run_id == run.arch_id
        assert after.of_run(f"{run.arch_id}-s2") == (run, 2) and after.of_run(run.arch_id) == (run, base)
        assert split_run_id(f"{run.arch_id}-s2") == (run.arch_id, 2) and split_run_id(run.arch_id) == (run.arch_id, None)
    swept = [r for r in after.runs.values() if any("(scales[1].grid[0])" in o for o in r.origins)]
    assert swept and all(7 in r.seeds for r in swept)
    only7 = [r for r in swept if r.seeds == [7]]
    assert only7 and all(r.primary_run_id == f"{r.arch_id}-s7" for r in only7)
    # every base-seed run that still trains keeps its id; the new ids are exactly the added seeds
    new = set(after.train_ids) - set(before.train_ids)
    assert new == {f"{r.arch_id}-s{s}" for r in first for s in (1, 2)} | {f"{r.arch_id}-s7" for r in only7}
    assert plan_totals(after.rows())["training_runs"] == len(after.train_ids)
    with pytest.raises(KeyError, match="not a seed"):
        after.of_run(f"{first[0].arch_id}-s9")


def test_train_priorities_start_the_costliest_runs_first(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["seeds"] = [cfg["training"]["seed"], 1]
    plan = build_plan(cfg)
    prio = plan.train_priorities()
    assert sorted(prio) == sorted(plan.train_ids) and sorted(prio.values()) == list(range(1, len(prio) + 1))
    flops = {rid: plan.of_run(rid)[0].flops for rid in prio}
    by_rank = sorted(prio, key=prio.get)
    assert [flops[r] for r in by_rank] == sorted(flops.values())  # rank follows the estimated cost
    assert flops[by_rank[-1]] == max(flops.values()) > flops[by_rank[0]] == min(flops.values())
    seeded = [r for r in by_rank if r.endswith("-s1")]
    assert seeded and all(abs(prio[r] - prio[r[: -len("-s1")]]) == 1 for r in seeded)  # seeds of a run side by side
    assert build_plan(cfg).train_priorities() == prio  # deterministic


def test_seeds_of_a_duplicated_point_are_merged(default_config):
    cfg = copy.deepcopy(default_config)
    dup = copy.deepcopy(cfg["scales"][0]["grid"][0])
    dup["seeds"] = [5]
    cfg["scales"][0]["grid"].append(dup)
    plan = build_plan(cfg)
    base = default_config["training"]["seed"]
    merged = [r for r in plan.runs.values() if any("(scales[0].grid[0])" in o for o in r.origins)]
    assert merged and all(r.seeds == [base, 5] for r in merged)


@pytest.mark.parametrize("seeds", [[], [1, 1], [-1]])
def test_bad_seeds_are_config_errors(default_config, seeds):
    cfg = copy.deepcopy(default_config)
    cfg["scales"][0]["seeds"] = seeds
    with pytest.raises(ConfigError, match="seeds"):
        validate_config(cfg)
