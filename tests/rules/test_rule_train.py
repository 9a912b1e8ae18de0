"""Rule `train` run by Snakemake on a tiny config and a small synthetic corpus.

The data stage is not what is tested here: a Markov-chain corpus written as Megatron indexed
datasets stands in for `results/data/manifest.json`, and `--allowed-rules train` keeps Snakemake
from rebuilding it. Checked: outputs by content, the log's progress lines, that the job's params
hold only its identity, and that an interrupted job (SIGTERM to Snakemake) leaves no output and
resumes from its checkpoint on the next run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.rules import SAMPLE, default_config, job_counts, snakemake_cmd, snakemake_env, write_config

from archscale.config import schema_default, validate_config
from archscale.data.dataset import write_synthetic_manifest
from archscale.plan import build_plan

pytestmark = pytest.mark.slow


def _config(steps: int) -> dict:
    cfg = default_config()
    cfg["data"]["corpus_dir"] = str(SAMPLE)
    cfg["tokenizer"]["vocab_size"] = 257
    cfg["scales"] = [{
        "name": "r20k", "n_target": 20_000, "layers": 2, "head_dim": 8, "tokens": steps * 512,
        "grid": [{"d_model": [40], "r": [1.0], "gqa": [2]}],
    }]
    cfg["search"] = {"targets": []}
    cfg["training"].update(seq_length=64, global_batch=8, micro_batch=4, eval_tokens=2048, eval_interval=20,
                           log_interval=5, checkpoint_interval=10, checkpoint_min_s=0, threads=1)
    return cfg


def _setup(root: Path, steps: int) -> str:
    cfg = _config(steps)
    write_config(root, cfg)
    data = root / "results" / "data"
    write_synthetic_manifest(data, vocab_size=257, train_tokens=40_000, valid_tokens=6_000, seed=1)
    meta = {"vocab_size": 257, "eod_id": 256, "eod_token": "<eod>", "source": "trained", "path": "x"}
    (root / "results" / "tokenizer").mkdir(parents=True)
    (root / "results" / "tokenizer" / "tokenizer.meta.json").write_text(json.dumps(meta))
    (arch_id,) = build_plan(validate_config(cfg)).ids
    return arch_id


def _cmd(root: Path, target: str) -> list[str]:
    return snakemake_cmd(root, "--allowed-rules", "train", "--", target)


def test_train_rule_outputs_and_identity(tmp_path):
    arch = _setup(tmp_path, steps=40)
    target = f"results/train/{arch}/metrics.json"
    res = subprocess.run(_cmd(tmp_path, target), cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True,
                         timeout=900)
    log = (tmp_path / "logs" / "train" / f"{arch}.log")
    assert res.returncode == 0, res.stderr[-4000:] + (log.read_text()[-4000:] if log.exists() else "")
    m = json.loads((tmp_path / target).read_text())
    assert m["arch_id"] == arch and m["steps"] == 40 and m["tokens_seen"] == 40 * 512
    assert m["valid_loss"] < m["unigram_entropy"] - 0.5, m
    assert m["recipe"]["seq_length"] == 64 and "micro_batch" not in m["recipe"] and m["micro_batch"] == 4
    curve = pq.read_table(tmp_path / f"results/train/{arch}/curve.parquet").to_pandas()
    assert len(curve) == 40 and curve["loss"].notna().all()
    assert curve.dropna(subset=["valid_loss"])["step"].tolist() == [20, 40]
    assert (tmp_path / f"results/train/{arch}/final/metadata.json").exists()
    assert (tmp_path / f"benchmarks/train/{arch}.tsv").exists()
    text = log.read_text()
    assert "launching:" in text and "-m archscale.train" in text
    assert "step 40/40 | loss" in text and "tokens/s" in text and "eta" in text
    # the job description the rule handed over: identity from params, knobs from config
    job = json.loads((tmp_path / f"results/checkpoints/{arch}/job.json").read_text())
    assert job["hardware"]["micro_batch"] == 4 and job["hardware"]["checkpoint_interval"] == 10
    assert "micro_batch" not in job["recipe"] and "threads" not in job["recipe"]
    assert job["arch"]["arch_id"] == arch and job["budget"]["tokens"] == 40 * 512

    # Seeds as a grid dimension: adding seeds keeps the finished run (same id, same params) and
    # schedules exactly the new seed's run, which trains with its own seed.
    cfg = _config(40)
    base = cfg["training"].get("seed", schema_default("training.seed"))
    cfg["scales"][0]["seeds"] = [base, 1]
    write_config(tmp_path, cfg)
    seeded = f"results/train/{arch}-s1/metrics.json"
    dry = subprocess.run(snakemake_cmd(tmp_path, "--allowed-rules", "train", "-n", "--quiet", "rules", "--", target, seeded),
                         cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert job_counts(dry) == {"train": 1}, dry.stdout[-3000:]
    res = subprocess.run(_cmd(tmp_path, seeded), cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    s1 = json.loads((tmp_path / seeded).read_text())
    assert s1["arch_id"] == arch and s1["recipe"]["seed"] == 1 and m["recipe"]["seed"] == base
    assert s1["recipe"] == {**m["recipe"], "seed": 1} and s1["valid_loss"] != m["valid_loss"]
    assert (tmp_path / f"results/checkpoints/{arch}-s1/job.json").exists()


def test_sigterm_then_rerun_resumes(tmp_path):
    arch = _setup(tmp_path, steps=400)
    target = f"results/train/{arch}/metrics.json"
    ckpt_dir = tmp_path / "results" / "checkpoints" / arch
    proc = subprocess.Popen(_cmd(tmp_path, target), cwd=tmp_path, env=snakemake_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (ckpt_dir / "latest").exists():
        assert proc.poll() is None, "snakemake ended before the first checkpoint"
        time.sleep(0.5)
    assert (ckpt_dir / "latest").exists(), "no checkpoint within 600 s"
    os.killpg(proc.pid, signal.SIGTERM)  # what scancel does: the whole job gets SIGTERM
    proc.wait(timeout=300)
    assert proc.returncode != 0
    assert not (tmp_path / target).exists()
    assert not (tmp_path / f"results/train/{arch}/curve.parquet").exists()
    assert not (tmp_path / f"results/train/{arch}/final").exists()
    stopped = int((ckpt_dir / "latest").read_text().strip().split("_")[1])
    assert stopped >= 10
    res = subprocess.run(_cmd(tmp_path, target), cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True,
                         timeout=900)
    log = (tmp_path / "logs" / "train" / f"{arch}.log").read_text()
    assert res.returncode == 0, res.stderr[-3000:] + log[-3000:]
    m = json.loads((tmp_path / target).read_text())
    assert m["resumed_from_step"] is not None and m["resumed_from_step"] >= stopped and m["steps"] == 400
    assert "resumed from" in log
    curve = pq.read_table(tmp_path / f"results/train/{arch}/curve.parquet").to_pandas()
    assert curve["step"].tolist() == list(range(1, 401))  # the curve survives the interruption
