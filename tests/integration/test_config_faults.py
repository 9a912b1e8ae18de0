"""Faults on a finished run of the tiny study (tests/conftest.py: tiny_study):

* fault injection: after a finished training run, a config with ``training.lr: .nan`` fails at
  validation, before any job, and loses nothing (every metrics.json, curve and checkpoint file
  byte-identical, nothing moved aside);
* a YAML syntax error in the workflow's config names file, line and column under snakemake;
* kill: SIGKILL of snakemake mid-training, ``snakemake --unlock``, rerun: the orphaned trainer
  stops by itself, one trainer at a time, no process left behind, bit-identical losses.

The kill test changes the study (it deletes and retrains one run), so it works on a copy.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from archscale.plan import build_plan
from helpers.workflow import SNAKEMAKE, TINY_CONFIG, copy_workflow, env_for_runs, snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("tiny_study"),
              pytest.mark.timeout(1200)]


def digests(workdir: Path, *dirs: str) -> dict[str, str]:
    """sha256 of every file under ``dirs`` (relative paths as keys)."""
    out = {}
    for d in dirs:
        for p in sorted((workdir / d).rglob("*")):
            if p.is_file() and not p.name.endswith(".lock"):
                out[str(p.relative_to(workdir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def arch_ids(workdir: Path) -> list[str]:
    return sorted(p.parent.name for p in (workdir / "results" / "train").glob("*/metrics.json"))


def test_nan_learning_rate_fails_at_validation_and_loses_nothing(tiny_study):
    workdir = tiny_study.workdir
    runs = arch_ids(workdir)
    assert runs == sorted(build_plan(tiny_study.config_copy()).train_ids)
    before = digests(workdir, "results/train", "results/checkpoints")
    assert sum(k.startswith("results/train/") and k.endswith("/metrics.json") for k in before) == len(runs)
    nan = workdir / "config" / "nan-lr.yaml"
    nan.write_text("training:\n  lr: .nan\n  global_batch: 30\n")
    for extra in (("-n",), ()):
        run = tiny_study.snakemake("--until", "train", *extra, configfiles=(str(nan),), check=False)
        assert run.returncode != 0, run.tail()
        # one message, every problem with its key path, before any job
        assert "training.lr" in run.output and "not a finite number" in run.output, run.tail()
        assert "training.micro_batch" in run.output and "does not divide" in run.output, run.tail()
        assert "rule train:" not in run.output and "localrule train:" not in run.output, run.tail()
    assert digests(workdir, "results/train", "results/checkpoints") == before
    assert not (workdir / "results" / "superseded").exists()


def test_yaml_syntax_error_names_file_line_and_column_under_snakemake(tmp_path):
    workdir = copy_workflow(tmp_path / "yaml")
    config = workdir / "config" / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 0.003\n", "  lr: [0.003\n", 1))
    run = snakemake(workdir, "-n", check=False)
    assert run.returncode != 0
    assert "config/config.yaml, line " in run.output and ", column " in run.output, run.tail()
    assert "YAML syntax error" in run.output


def _trainers(workdir: Path) -> list[psutil.Process]:
    """Training processes (python -m archscale.train) of ``workdir``, not their own helpers."""
    found = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "cwd"]):
        argv = p.info["cmdline"] or []
        if argv[1:3] == ["-m", "archscale.train"] and p.info["cwd"] and Path(p.info["cwd"]) == workdir:
            found.append(p)
    pids = {p.pid for p in found}
    return [p for p in found if p.info["ppid"] not in pids]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigkill_of_snakemake_unlock_rerun(tiny_copy):
    workdir = tiny_copy.workdir
    arch = arch_ids(workdir)[-1]
    reference = json.loads((workdir / "results" / "train" / arch / "metrics.json").read_text())
    ref_curve = pq.read_table(workdir / "results" / "train" / arch / "curve.parquet").to_pandas()
    # retrain that architecture from scratch, with a checkpoint every 10 steps (a hardware knob:
    # not part of its identity, so the result must be the reference's bit for bit)
    for sub in ("results/train", "results/checkpoints"):
        for p in sorted((workdir / sub).glob(f"{arch}*")):
            subprocess.run(["rm", "-rf", str(p)], check=True)
    knobs = workdir / "config" / "kill.yaml"
    knobs.write_text("training:\n  checkpoint_interval: 10\n  checkpoint_min_s: 0\n")
    target = f"results/train/{arch}/metrics.json"
    # the target before --configfile, which takes every value that follows it
    args = [SNAKEMAKE, "--cores", "2", target, "--configfile", TINY_CONFIG, str(knobs)]
    ckpt = workdir / "results" / "checkpoints" / arch
    with open(workdir / "test-logs" / "kill-first.log", "w") as log:
        proc = subprocess.Popen(args, cwd=workdir, env=env_for_runs(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        deadline = time.time() + 900
        while time.time() < deadline and not (ckpt / "latest").exists():
            assert proc.poll() is None, (workdir / "test-logs" / "kill-first.log").read_text()[-3000:]
            time.sleep(0.2)
        assert (ckpt / "latest").exists(), "no checkpoint within 900 s"
        below = psutil.Process(proc.pid).children(recursive=True)
        assert _trainers(workdir), [" ".join(p.cmdline()) for p in below]
        proc.send_signal(signal.SIGKILL)  # snakemake alone: its job processes are re-parented
        proc.wait(timeout=60)
    # the orphaned launcher notices and stops its trainer; nothing below snakemake survives
    deadline = time.time() + 120
    while time.time() < deadline and _alive(below):
        time.sleep(0.5)
    left = _alive(below)
    for p in left:
        p.kill()
    assert not left, [(p.pid, " ".join(p.cmdline())) for p in left]
    assert not (workdir / target).exists()

    snakemake(workdir, "--unlock", "--configfile", TINY_CONFIG, str(knobs))
    with open(workdir / "test-logs" / "kill-rerun.log", "w") as log:
        rerun = subprocess.Popen(args, cwd=workdir, env=env_for_runs(), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        most = 0
        descendants: set[psutil.Process] = set()
        while rerun.poll() is None:
            most = max(most, len(_trainers(workdir)))
            try:
                descendants.update(psutil.Process(rerun.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    text = (workdir / "test-logs" / "kill-rerun.log").read_text()
    assert rerun.returncode == 0, text[-4000:]
    assert most == 1
    time.sleep(2)
    assert not _alive(list(descendants)), [" ".join(p.cmdline()) for p in _alive(list(descendants))]
    got = json.loads((workdir / target).read_text())
    assert got["resumed_from_step"] is not None and got["resumed_from_step"] >= 10
    for key in ("valid_loss", "final_train_loss", "last_step_loss", "steps", "tokens_seen"):
        assert got[key] == reference[key], key
    curve = pq.read_table(workdir / "results" / "train" / arch / "curve.parquet").to_pandas()
    assert curve["loss"].tolist() == ref_curve["loss"].tolist()
    assert curve["step"].tolist() == ref_curve["step"].tolist()
