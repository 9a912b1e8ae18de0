"""Rules export and evaluate run by Snakemake end to end on CPU, offline: a tiny corpus, a trained
default-style model, its Hugging Face export, lm-evaluation-harness on the local task of
resources/eval; then the wiring into the aggregate and what re-runs when the config changes."""

import json
import subprocess
from pathlib import Path

import pytest
from helpers.rules import (
    REPO,
    SNAKEMAKE,
    default_config,
    job_counts,
    run_snakemake,
    snakemake_env,
    write_config,
    write_corpus,
)

MINI = "t30k-L2-d44-h6g2x8-f72"  # d % heads != 0: exported as the mistral type
GRID = "t30k-L2-d40-h8g4x8-f60"

pytestmark = pytest.mark.slow


def _corpus(root: Path) -> None:
    write_corpus(root, {"plays": (40, 1), "code": (10, 1)})


def _config(root: Path, **evaluate) -> dict:
    cfg = default_config()
    cfg["data"].update(corpus_dir="corpus", valid_fraction=0.1)
    cfg["tokenizer"].update(vocab_size=300)
    cfg["scales"] = [{
        "name": "t30k", "n_target": 30000, "layers": 2, "head_dim": 8, "tokens_per_param": 2,
        "grid": [{"d_over_sqrt_n": [0.25], "r": [1.0], "gqa": [2]}],
        "architectures": [{"name": "mini", "d_model": 44, "ffn": 72, "heads": 6, "kv_heads": 2}],
    }]
    cfg["search"]["targets"] = []
    cfg["training"].update(eval_tokens=4096, checkpoint_interval=1000)
    cfg["export"].update(architectures=["mini"])
    cfg["evaluate"].update({"enabled": True, "architectures": ["mini"], "tasks": ["archscale_mc"],
                            "include_path": [str(REPO / "resources" / "eval")], "batch_size": 8, **evaluate})
    return cfg


def _snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(root, *args, env=snakemake_env(HF_DATASETS_CACHE=str(root / "hf-datasets")))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_eval")
    _corpus(root)
    write_config(root, _config(root))
    proc = _snakemake(root, f"results/eval/{MINI}.json")
    assert proc.returncode == 0, proc.stderr[-5000:]
    return root


def test_export_directory(run):
    out = run / "results" / "export" / MINI
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["archscale.json", "config.json", "generation_config.json", "model.safetensors",
                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mistral" and cfg["sliding_window"] is None
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (44, 6, 2, 8)
    assert cfg["vocab_size"] == 300 and cfg["max_position_embeddings"] == 128 and cfg["rope_theta"] == 500000
    rec = json.loads((out / "archscale.json").read_text())
    meta = json.loads((run / "results" / "tokenizer" / "tokenizer.meta.json").read_text())
    assert cfg["eos_token_id"] == meta["eod_id"]
    # the job compared the exported model's logits with the trained megatron model's
    assert rec["verify"]["max_abs_logit_diff"] < 1e-4 and rec["dtype"] == "float32"
    assert rec["source_checkpoint"] == f"results/train/{MINI}/final" and rec["source"]["step"] >= 1
    assert rec["parameters"] == 30_492 + 300 * 44
    assert (run / "logs" / "export" / f"{MINI}.log").exists()
    assert (run / "benchmarks" / "export" / f"{MINI}.tsv").exists()


def test_evaluation_record(run):
    rec = json.loads((run / "results" / "eval" / f"{MINI}.json").read_text())
    r = rec["tasks"]["archscale_mc"]
    assert rec["arch_id"] == MINI and rec["task_names"] == ["archscale_mc"] and rec["num_fewshot"] == 0
    assert r["n_samples"] == 32 and r["primary_metric"] == "acc"
    assert 0 <= r["accuracy"] <= 1 and (r["accuracy"] * 32) == pytest.approx(round(r["accuracy"] * 32))
    assert rec["average_accuracy"] == r["accuracy"]
    assert set(r["metrics"]) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
    assert rec["device"] == "cpu" and rec["batch_size"] == 8
    log = (run / "logs" / "eval" / f"{MINI}.log").read_text()
    assert "lm_eval --model hf" in log and "archscale_mc: acc =" in log


def test_aggregate_takes_the_records_only_when_enabled(run):
    jobs = job_counts(_snakemake(run, "results/runs.parquet", "-n", "--quiet", "rules"))
    assert jobs["aggregate"] == 1 and "evaluate" not in jobs  # mini is evaluated already
    cfg = _config(run, architectures="all")
    write_config(run, cfg)
    jobs = job_counts(_snakemake(run, "results/runs.parquet", "-n", "--quiet", "rules"))
    assert jobs["evaluate"] == 1 and jobs["export"] == 1  # the grid model joins
    cfg["evaluate"]["enabled"] = False
    write_config(run, cfg)
    jobs = job_counts(_snakemake(run, "results/runs.parquet", "-n", "--quiet", "rules"))
    assert jobs["aggregate"] == 1 and "evaluate" not in jobs and "export" not in jobs
    write_config(run, _config(run))


def test_reruns_follow_identity_not_hardware(run):
    target = f"results/eval/{MINI}.json"
    cfg = _config(run)
    cfg["evaluate"].update(batch_size=2, device="cpu", threads=2, runtime_min=10)
    cfg["export"].update(verify=False, mem_mb=1000)
    write_config(run, cfg)
    proc = _snakemake(run, "-n", target)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    cfg["evaluate"]["limit"] = 4
    write_config(run, cfg)
    assert job_counts(_snakemake(run, target, "-n", "--quiet", "rules")) == {"evaluate": 1}
    cfg["evaluate"]["limit"] = None
    cfg["export"]["dtype"] = "bfloat16"
    write_config(run, cfg)
    assert job_counts(_snakemake(run, target, "-n", "--quiet", "rules")) == {"export": 1, "evaluate": 1}
    write_config(run, _config(run))


def test_bad_selection_is_a_config_error(run):
    cfg = _config(run, architectures=["panda-1b"])
    write_config(run, cfg)
    proc = _snakemake(run, "-n", "results/runs.parquet")
    assert proc.returncode != 0 and "evaluate.architectures: 'panda-1b'" in proc.stdout + proc.stderr
    write_config(run, _config(run))


def test_paper_config_plans_an_evaluation_per_trained_architecture():
    cmd = [str(SNAKEMAKE), "-n", "--quiet", "rules", "--configfile", "config/paper.yaml"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=snakemake_env())
    jobs = job_counts(proc)
    assert jobs["train"] > 200 and jobs["evaluate"] == jobs["export"] == jobs["train"]
