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
    """The default config as archscale loads it (validated, schema defaults filled, numbers
    canonical), where tests/conftest.py's is the file as written."""
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
    from archscale.plan import plan_totals

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
        typed = after.train_run(f"{run.arch_id}-s2")
        assert (typed.arch_id, typed.seed, typed.tokens, typed.schedule) == (run.arch_id, 2, run.tokens, None)
    swept = [r for r in after.runs.values() if any("(scales[1].grid[0])" in o for o in r.origins)]
    assert swept and all(7 in r.seeds for r in swept)
    only7 = [r for r in swept if r.seeds == [7]]
    assert only7 and all(r.primary_run_id == f"{r.arch_id}-s7" for r in only7)
    # every base-seed run that still trains keeps its id; the new ids are exactly the added seeds
    new = set(after.train_ids) - set(before.train_ids)
    assert new == {f"{r.arch_id}-s{s}" for r in first for s in (1, 2)} | {f"{r.arch_id}-s7" for r in only7}
    assert plan_totals(after.rows())["training_runs"] == len(after.train_ids)
    with pytest.raises(KeyError, match="is not in the plan"):
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


# ---- canonical numbers: an equivalent spelling never changes a job's params -------------------
def job_params(config: dict) -> dict[str, str]:
    """Every job's params as Snakemake records them (``repr``), built the way the rules build
    them (common.smk: one preflight of Snakemake's ``config``, then STUDY/PLAN and ``config``)."""
    from archscale.preflight import preflight

    study = preflight(config, notify=lambda line: None)
    plan, cfg = study.plan, study.config
    out = {}
    for run in plan.train_ids:
        entry, seed = plan.of_run(run)
        recipe = {**study.training_recipe(), "seed": seed}
        budget = {"tokens": entry.tokens, "scale": entry.scale.name, "n_target": entry.scale.n_target}
        out[f"train/{run}"] = repr([entry.arch.to_dict(), budget, recipe, cfg["model"]["rope_base"]])
    for arch in plan.ids:
        out[f"throughput/{arch}"] = repr([plan[arch].arch.to_dict(), study.throughput_workload()])
    out["tokenizer"] = repr([cfg["tokenizer"], cfg["data"]["valid_fraction"], cfg["data"]["on_bad_record"]])
    out["data_manifest"] = repr([cfg["data"]["mixture"], cfg["data"]["seed"]])
    out["plan"] = repr([plan.rows(), plan.skipped])
    out["fit"] = repr(study.fit)
    out["search"] = repr(study.search_settings.to_dict())
    return out


def respell(value):
    """An equivalent spelling of a config value: 32 -> 32.0, 0.1 -> 1 / 10 as text '1e-1' style,
    1.0 -> 1; lists element by element; anything else unchanged."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else f"{value:e}"  # '3.000000e-03': PyYAML's reading of 3e-3
    if isinstance(value, list):
        return [respell(v) for v in value]
    return value


EQUIVALENT_KEYS = (
    [("training", k) for k in ("seq_length", "global_batch", "lr", "min_lr_ratio", "warmup_fraction",
                               "weight_decay", "adam_beta1", "adam_beta2", "clip_grad", "init_std", "seed",
                               "eval_tokens", "eval_interval", "micro_batch", "threads")]
    + [("throughput", k) for k in ("context", "input_len", "output_len", "batch_sizes", "warmup", "repeats",
                                   "threads", "nvml_interval_s")]
    + [("model", "rope_base"), ("data", "seed"), ("data", "valid_fraction"), ("tokenizer", "vocab_size"),
       ("fit", "r_min"), ("fit", "r_max"), ("fit", "bootstrap"), ("compute", "peak_flops")]
)


@pytest.mark.parametrize("section,key", EQUIVALENT_KEYS, ids=[f"{s}.{k}" for s, k in EQUIVALENT_KEYS])
def test_an_equivalent_spelling_changes_no_job_params(default_config, section, key):
    before = job_params(copy.deepcopy(default_config))
    cfg = copy.deepcopy(default_config)
    value = validate_config(copy.deepcopy(default_config))[section][key]
    cfg.setdefault(section, {})[key] = respell(value)
    assert repr(respell(value)) != repr(value) or value is None
    assert job_params(cfg) == before, f"{section}.{key}: {value!r} spelt {respell(value)!r} changed params"


def test_the_issue_spellings_read_from_yaml_change_nothing(default_config, tmp_path):
    """global_batch: 32.0, repeats: 7.0, lr: 3e-3 (a string to PyYAML), rope_base: 500000.0."""
    from archscale.config import deep_merge, read_yaml

    overlay = tmp_path / "respelt.yaml"
    overlay.write_text("training:\n  global_batch: 32.0\n  lr: 3e-3\n  clip_grad: 1\n"
                       "throughput:\n  repeats: 7.0\n  batch_sizes: [8.0, 32]\nmodel:\n  rope_base: 500000.0\n")
    base = copy.deepcopy(default_config)
    base["training"]["lr"] = 0.003
    respelt = deep_merge(copy.deepcopy(base), read_yaml(overlay))
    assert job_params(respelt) == job_params(base)
    assert respelt["training"]["global_batch"] == 32 and type(respelt["training"]["global_batch"]) is int


def test_schema_defaults_are_canonical():
    from archscale.config import canonicalise

    cfg = validate_config({"scales": [{"name": "a", "n_target": 1000, "layers": 1, "head_dim": 8}]})
    assert repr(canonicalise(copy.deepcopy(cfg))) == repr(cfg)


def test_shipped_study_configs_are_canonical():
    """The studies users run keep every param when their numbers are made canonical."""
    from archscale.config import canonicalise, read_yaml

    for path in (ROOT / "config" / name for name in ("config.yaml", "paper.yaml", "study-cpu.yaml")):
        raw = read_yaml(path)
        assert repr(canonicalise(copy.deepcopy(raw))) == repr(raw), path
