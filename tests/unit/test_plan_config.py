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
