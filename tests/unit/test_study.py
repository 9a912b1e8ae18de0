"""archscale.study: one reading of the config; identity keys and defaults from the schema only;
model.rope_base reaches every job that builds a model."""

from __future__ import annotations

import json
import runpy
import types
from pathlib import Path

import pytest
import yaml

from archscale.arch import Architecture
from archscale.config import ConfigError, deep_merge, load_config, load_schema, schema_default
from archscale.search import SearchSettings
from archscale.study import Study, hardware_keys, identity_keys

ROOT = Path(__file__).resolve().parents[2]
ROPE = 12345.0  # not the schema's default


def tiny_config(**model) -> dict:
    """The shipped tiny config (layered on config/config.yaml as Snakemake does), ``model`` keys replaced."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config = deep_merge(base, yaml.safe_load((ROOT / "config" / "test-tiny.yaml").read_text()))
    config["model"] = {**config.get("model", {}), **model}
    return config


def test_identity_keys_come_from_the_schema_in_its_order():
    assert identity_keys("training") == (
        "seq_length", "global_batch", "lr", "min_lr_ratio", "warmup_fraction", "weight_decay",
        "adam_beta1", "adam_beta2", "clip_grad", "init_std", "seed", "eval_tokens", "eval_interval",
    )
    assert identity_keys("throughput") == ("engine", "weights", "mode", "context", "input_len", "output_len", "batch_sizes",
                                         "warmup", "repeats")
    assert identity_keys("export") == ("dtype", "model_type")
    assert identity_keys("evaluate") == ("tasks", "include_path", "metrics", "num_fewshot", "limit", "seed")
    for stage in ("training", "throughput", "export", "evaluate"):
        keys = set(load_schema()["properties"][stage]["properties"])
        assert set(identity_keys(stage)) | set(hardware_keys(stage)) == keys
        assert not set(identity_keys(stage)) & set(hardware_keys(stage))


def test_views_hold_the_schema_defaults_and_are_copies():
    study = Study.from_config({"scales": tiny_config()["scales"], "model": tiny_config()["model"],
                               "compute": {"gpu_model": "h100"}})
    recipe = study.training_recipe()
    assert recipe["adam_beta2"] == schema_default("training.adam_beta2")
    recipe["lr"] = -1.0
    assert study.training_recipe()["lr"] == schema_default("training.lr")  # a fresh dict each time
    hw = study.training_hardware()
    assert hw["micro_batch"] == schema_default("training.micro_batch") and hw["peak_flops"] is not None
    assert study.throughput_hardware(threads=3)["threads"] == 3
    assert "exclusive" not in study.throughput_hardware()
    assert study.fit["bootstrap"] == schema_default("fit.bootstrap")
    assert study.network == {"rope_base": schema_default("model.rope_base")}
    assert study.spec(study.plan[study.plan.ids[0]].arch.to_dict()).rope_base == schema_default("model.rope_base")
    with pytest.raises(TypeError):
        study.compute["mfu"] = 1.0  # read-only view


def test_search_settings_defaults_agree_with_the_schema():
    study = Study.from_config({"scales": tiny_config()["scales"], "model": tiny_config()["model"]})
    assert study.search_settings == SearchSettings()
    assert SearchSettings().batch_size == max(schema_default("throughput.batch_sizes"))
    assert SearchSettings().grid_points == schema_default("search.grid_points")


def test_one_constructor_for_explicit_architectures():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    study = Study.from_config(cfg)
    base = study.search_targets["1b"].baseline if "1b" in study.search_targets else None
    named = {run.arch.name: run.arch for run in study.plan.runs.values() if run.arch.name}
    if base is not None:
        assert named[base.name] == base
    assert Architecture.from_dict(named["llama-3.2-1b"].to_dict()) == named["llama-3.2-1b"]


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="model.rope_base"):
        Study.from_config(tiny_config(rope_base="high"))


# ---- rope_base reaches every job that builds a model (no megatron run) -------------------------
def _snakemake(tmp_path: Path, config: dict, **fields) -> types.SimpleNamespace:
    ns = dict(config=config, log=[str(tmp_path / "rule.log")], threads=1, wildcards=types.SimpleNamespace(),
              resources=types.SimpleNamespace(gpu=0), input=[], output=[str(tmp_path / "out.json")])
    ns.update(fields)
    return types.SimpleNamespace(**ns)


def test_rope_base_reaches_the_train_job(tmp_path, monkeypatch):
    from archscale.train import launcher

    config = Study.from_config(tiny_config(rope_base=ROPE)).config
    train_rule = (ROOT / "workflow" / "rules" / "train.smk").read_text()
    assert 'rope_base=STUDY.network["rope_base"]' in train_rule  # the train rule's params
    study = Study.from_config(config)
    arch = study.plan[study.plan.ids[0]].arch
    params = types.SimpleNamespace(arch=arch.to_dict(), budget={"tokens": 1000}, recipe=study.training_recipe(),
                                   rope_base=config["model"]["rope_base"], checkpoint_dir=str(tmp_path / "ckpt"))
    smk = _snakemake(
        tmp_path, config, params=params,
        input=types.SimpleNamespace(manifest="m.json", tokenizer_meta="t.json"),
        output=types.SimpleNamespace(metrics="m", curve="c", final="f"),
    )
    seen = {}
    monkeypatch.setattr(launcher, "launch", lambda job, gpus, stdout=None: seen.setdefault("job", job) and 0)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "workflow" / "scripts" / "train.py"), init_globals={"snakemake": smk})
    assert done.value.code == 0
    job = seen["job"]
    assert job.arch.rope_base == ROPE and job.arch == arch
    assert launcher.write_job(job).exists()
    assert json.loads(launcher.write_job(job).read_text())["arch"]["rope_base"] == ROPE
    assert launcher.TrainJob.load(launcher.write_job(job)).arch.rope_base == ROPE
    assert job.fingerprint()["rope_base"] == ROPE


@pytest.mark.parametrize("script", ["throughput.py", "throughput_candidates.py"])
def test_rope_base_reaches_the_throughput_jobs(tmp_path, monkeypatch, script):
    import archscale.throughput as tp
    from archscale.throughput import compare
    from archscale.throughput import job as tjob

    config = Study.from_config(tiny_config(rope_base=ROPE)).config
    study = Study.from_config(config)
    arch = study.plan[study.plan.ids[0]].arch
    built = {}

    class Built(Exception):
        pass

    def fake_build(a, runtime, max_seq, checkpoint):
        built.update(arch=a, rope_base=a.rope_base)
        raise Built  # stop before any model is built

    def fake_decoder(a, runtime, max_seq, seed):
        fake_build(a, runtime, max_seq, None)

    def fake_random_weights(a, runtime, *, seed, **kw):  # random weights: no megatron model
        fake_build(a, runtime, None, None)

    from archscale.throughput import fastdecode

    monkeypatch.setattr(tjob, "build_megatron_model", fake_build)
    monkeypatch.setattr(fastdecode, "random_weights", fake_random_weights)
    monkeypatch.setattr(compare, "build_decoder", fake_decoder)
    monkeypatch.setattr(tp, "run_job", tjob.run_job)
    if script == "throughput.py":
        params = types.SimpleNamespace(arch=arch.to_dict(), workload=study.throughput_workload())
        smk = _snakemake(tmp_path, config, params=params)
    else:
        from archscale.io import write_json

        cand = tmp_path / "candidates.json"
        write_json(cand, {"target": {"name": "x"}, "settings": {"batch_size": 1},
                          "measure": [{**arch.to_dict(), "role": "panda"}]})
        params = types.SimpleNamespace(workload={**study.throughput_workload(), "weights": "random"})
        smk = _snakemake(tmp_path, config, params=params, input=[str(cand)],
                         wildcards=types.SimpleNamespace(arch=arch.arch_id))
    with pytest.raises(Built):
        runpy.run_path(str(ROOT / "workflow" / "scripts" / script), init_globals={"snakemake": smk})
    assert built == {"arch": arch, "rope_base": ROPE}
    assert "Built" in (tmp_path / "rule.log").read_text()  # rule_logging wrote the traceback


def test_trained_checkpoint_must_match_rope_base(tmp_path):
    from archscale.io import write_json
    from archscale.throughput.job import build_megatron_model

    arch = Architecture(d_model=32, ffn=80, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=256, scale="t")
    write_json(tmp_path / "archscale.json", {"arch": arch.to_dict(), "seq_length": 32, "rope_base": 500000.0})
    with pytest.raises(ValueError, match="trained with {'rope_base': 500000.0}, but the study's model settings are "
                                         "{'rope_base': 12345.0}"):
        build_megatron_model(arch.with_network(rope_base=ROPE), None, 16, str(tmp_path))


def test_rules_read_settings_through_the_study():
    """The study is the one reader of the config: no rule file indexes it."""
    workflow_dir = ROOT / "workflow"
    for path in [*workflow_dir.glob("rules/*.smk"), ROOT / "Snakefile"]:
        text = path.read_text()
        assert "config[" not in text, path
        assert "workflow._cores" not in text, path
