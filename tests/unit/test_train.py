"""Training stage: job, sample schedule, launcher, checkpoints, metrics; real runs on CPU.

The end-to-end tests run ``python -m archscale.train`` (the process the rule launches) on a small
Markov-chain corpus written as Megatron indexed datasets.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from archscale.arch import Architecture
from archscale.data.dataset import Manifest, SampleSchedule, unigram_entropy, write_synthetic_manifest
from archscale.train import checkpointing as ckpt
from archscale.train import launcher
from archscale.study import Study, identity_keys
from archscale.train.job import TrainJob
from archscale.train.metrics import CURVE_COLUMNS, curve_table, progress_line, throughput
from archscale.train.signals import Preempted, Preemption

ARCH = Architecture(d_model=32, ffn=64, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=256, scale="t")
RECIPE = {
    "seq_length": 64, "global_batch": 8, "lr": 0.01, "min_lr_ratio": 0.1, "warmup_fraction": 0.05,
    "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95, "clip_grad": 1.0, "init_std": 0.02,
    "seed": 7, "eval_tokens": 2048, "eval_interval": 0,
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_synthetic_manifest(tmp_path_factory.mktemp("data"), vocab_size=256, train_tokens=60_000,
                                    valid_tokens=8_000, seed=3)


def make_job(root: Path, manifest: Path, tokens: int, arch: Architecture = ARCH, **changes) -> TrainJob:
    recipe = {**RECIPE, **changes.pop("recipe", {})}
    hardware = {"micro_batch": 4, "threads": 1, "log_interval": 10, "checkpoint_interval": 25,
                "checkpoint_min_s": 0, "peak_flops": 5e10, **changes.pop("hardware", {})}
    spec = arch.with_network(rope_base=changes.pop("rope_base", 500000.0))
    return TrainJob(
        arch=spec, budget={"tokens": tokens, "scale": "t", "n_target": arch.params_non_embedding},
        recipe=recipe, manifest=str(manifest), checkpoint_dir=str(root / "ckpt"), metrics=str(root / "out/metrics.json"),
        curve=str(root / "out/curve.parquet"), final=str(root / "out/final"), hardware=hardware, **changes,
    )


def start(job: TrainJob, **popen) -> subprocess.Popen:
    path = launcher.write_job(job)
    env = launcher.environment(threads=1, gpus=0)
    return subprocess.Popen(launcher.command(path, 1), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def run_job(job: TrainJob, **popen) -> tuple[int, str]:
    proc = start(job, **popen)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


# ---- pure parts ------------------------------------------------------------------------

def test_job_steps_warmup_and_identity(tmp_path, manifest):
    job = make_job(tmp_path, manifest, tokens=5000)
    assert job.tokens_per_step == 512 and job.steps == 10  # ceil(5000 / 512)
    assert job.warmup_steps == 0  # round(0.05 * 10)
    other_hw = make_job(tmp_path, manifest, tokens=5000, hardware={"micro_batch": 8, "threads": 2})
    assert other_hw.fingerprint() == job.fingerprint()  # hardware knobs are not identity
    assert make_job(tmp_path, manifest, tokens=5000, recipe={"lr": 0.02}).fingerprint() != job.fingerprint()
    assert TrainJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    with pytest.raises(ValueError, match="recipe lacks"):
        TrainJob(arch=ARCH.to_dict(), budget={"tokens": 1}, recipe={}, manifest="m", checkpoint_dir="c",
                 metrics="m", curve="c", final="f")
    assert set(RECIPE) == set(identity_keys("training"))
    assert isinstance(job.arch, Architecture) and job.to_dict()["arch"] == {**ARCH.to_dict(), "rope_base": 500000.0}


def test_sample_schedule_partitions_each_step():
    s = SampleSchedule(global_batch=16, micro_batch=2, dp_size=2, dp_rank=1)
    assert s.microbatches == 4
    got = [i for m in range(4) for i in s.indices(step=3, micro=m)]
    assert got == list(range(3 * 16 + 8, 3 * 16 + 16))
    ranks = [SampleSchedule(16, 2, 2, r) for r in range(2)]
    every = sorted(i for r in ranks for m in range(4) for i in r.indices(5, m))
    assert every == list(range(80, 96))
    with pytest.raises(ValueError, match="micro_batch"):
        SampleSchedule(global_batch=12, micro_batch=5)


def test_launcher_commands_and_environment():
    cpu = launcher.command("j.json", launcher.processes(0), python="py")
    assert cpu == ["py", "-m", "archscale.train", "j.json"]
    assert launcher.command("j.json", launcher.processes(1), python="py") == cpu
    gpu = launcher.command("j.json", launcher.processes(8), python="py")
    assert gpu[:3] == ["py", "-m", "torch.distributed.run"]
    assert gpu[gpu.index("--nproc-per-node") + 1] == "8"
    assert "SIGUSR1" in gpu[gpu.index("--signals-to-handle") + 1].split(",")
    assert int(gpu[gpu.index("--shutdown-timeout") + 1]) >= 300
    assert gpu[-3:] == ["-m", "archscale.train", "j.json"]
    env = launcher.environment(threads=3, gpus=0, base={"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_CBWR"] == "AUTO,STRICT"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["PATH"] == "/bin"
    assert "CUDA_VISIBLE_DEVICES" not in launcher.environment(threads=1, gpus=4, base={})


def test_hardware_knobs_come_from_config_not_identity():
    config = {"training": {**RECIPE, "micro_batch": 2, "threads": 2, "precision": "auto", "checkpoint_interval": 9},
              "compute": {"gpu_model": "h100"}, "scales": [{"name": "t", "n_target": 30000, "layers": 2, "head_dim": 8}]}
    hw = Study.from_config(config).training_hardware()
    assert hw["micro_batch"] == 2 and hw["threads"] == 2 and hw["checkpoint_interval"] == 9
    assert hw["peak_flops"] == 989e12
    assert not set(hw) & set(identity_keys("training"))


def test_launcher_module_does_not_import_torch():
    code = "import sys, archscale.train.launcher; assert 'torch' not in sys.modules; print('OK')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "OK", out.stderr


def test_latest_step_ignores_incomplete_checkpoints(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        d = tmp_path / ckpt.iter_name(step)
        d.mkdir()
        if complete:
            (d / "metadata.json").write_text("{}")
    (tmp_path / "iter_0000040.tmp").mkdir()
    assert ckpt.complete_steps(tmp_path) == [10, 20]
    assert ckpt.latest_step(tmp_path) == 20
    (tmp_path / ckpt.LATEST).write_text("iter_0000010\n")
    assert ckpt.latest_step(tmp_path) == 10
    (tmp_path / ckpt.LATEST).write_text("iter_0000030\n")  # stale pointer: fall back to the newest complete
    assert ckpt.latest_step(tmp_path) == 20
    assert ckpt.latest_step(tmp_path / "missing") is None


def test_fingerprint_mismatch_sets_checkpoints_aside(tmp_path):
    root = tmp_path / "checkpoints" / "a1"  # the workflow's layout: results/checkpoints/{arch}
    (root / "iter_0000010").mkdir(parents=True)
    (root / "iter_0000010" / "metadata.json").write_text("{}")
    ckpt.check_fingerprint(root, {"digest": "a"})
    assert ckpt.latest_step(root) == 10  # first fingerprint: adopted, nothing removed
    ckpt.check_fingerprint(root, {"digest": "a"})
    assert ckpt.latest_step(root) == 10
    messages = []
    ckpt.check_fingerprint(root, {"digest": "b"}, log=messages.append)
    assert ckpt.latest_step(root) is None and "different recipe" in messages[0]
    # not removed: moved aside whole (tests/unit/test_train_supersede.py has the details)
    assert ckpt.latest_step(tmp_path / "superseded" / "a1" / "a") == 10


def test_metrics_helpers():
    t = throughput(ARCH, 64, tokens=10_000, seconds=2.0, peak_flops=1e9, devices=2)
    assert t["tokens_per_s"] == 5000
    from archscale.cost import training_flops_per_token

    assert t["achieved_flops_per_s"] == pytest.approx(5000 * training_flops_per_token(ARCH, 64))
    assert t["mfu"] == pytest.approx(t["achieved_flops_per_s"] / 2e9)
    line = progress_line(10, 100, 2.5, 1e-3, 0.5, 12345.0, 61, 3700)
    for part in ("step 10/100", "loss 2.5000", "lr 1.000e-03", "12,345 tokens/s", "eta 1:01:40"):
        assert part in line
    table = curve_table([{"step": 1, "tokens": 8, "loss": 3.0, "lr": 0.1, "grad_norm": None, "valid_loss": None,
                          "elapsed_s": 0.5}])
    assert table.column_names == CURVE_COLUMNS and math.isnan(table["valid_loss"][0].as_py())


def test_preemption_records_first_signal():
    with Preemption() as pre:
        assert not pre.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert pre.signum == signal.SIGUSR1
    assert Preempted(signal.SIGTERM, 5).exit_code == 143


def test_unigram_entropy_matches_token_counts(manifest):
    m = Manifest.load(manifest)
    tokens = np.fromfile(m.train[0][0] + ".bin", dtype=np.uint16)
    p = np.bincount(tokens, minlength=256) / tokens.size
    p = p[p > 0]
    assert unigram_entropy(m) == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-12)


def test_manifest_errors_name_the_file(tmp_path, manifest):
    bad = json.loads(Path(manifest).read_text())
    bad["train"]["prefixes"] = [str(tmp_path / "nope")]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(FileNotFoundError, match=r"manifest.json: train dataset .*nope.bin"):
        Manifest.load(path)
    del bad["valid"]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="lacks key 'valid'"):
        Manifest.load(path)


# ---- real training runs (python -m archscale.train) ----------------------------------------

@pytest.mark.slow
def test_training_learns_and_writes_outputs(tmp_path, manifest):
    job = make_job(tmp_path, manifest, tokens=150 * 512, recipe={"eval_interval": 50})
    code, out = run_job(job)
    assert code == 0, out[-4000:]
    metrics = json.loads(Path(job.metrics).read_text())
    assert metrics["arch_id"] == ARCH.arch_id and metrics["steps"] == 150
    assert metrics["tokens_seen"] == 150 * 512 and metrics["tokens_budget"] == 150 * 512
    # the chain has 4 successors per token: a trained model beats the unigram entropy by far
    assert metrics["valid_loss"] < metrics["unigram_entropy"] - 1.5, metrics
    assert metrics["final_train_loss"] < metrics["unigram_entropy"] - 1.5
    assert metrics["tokens_per_s"] > 0 and metrics["achieved_flops_per_s"] > 0 and 0 < metrics["mfu"] < 1
    assert metrics["precision"] == "fp32" and metrics["world_size"] == 1 and metrics["resumed_from_step"] is None
    assert set(metrics["versions"]) >= {"torch", "megatron_core", "archscale"}
    assert metrics["recipe"] == job.recipe
    curve = pq.read_table(job.curve).to_pandas()
    assert list(curve.columns) == CURVE_COLUMNS and list(curve["step"]) == list(range(1, 151))
    assert curve["loss"].iloc[-10:].mean() < curve["loss"].iloc[:10].mean() - 1.5
    assert curve["lr"].max() == pytest.approx(0.01, rel=1e-3) and curve["lr"].iloc[-1] < 0.002  # warm-up + cosine
    evaluated = curve.dropna(subset=["valid_loss"])
    assert list(evaluated["step"]) == [50, 100, 150]
    assert evaluated["valid_loss"].iloc[-1] == pytest.approx(metrics["valid_loss"])
    assert (Path(job.final) / "metadata.json").exists() and (Path(job.final) / "archscale.json").exists()
    assert "step 150/150" in out and "tokens/s" in out and "eta" in out
    # checkpoints: last two kept, pointer on the final step
    assert ckpt.complete_steps(job.checkpoint_dir) == [125, 150] and ckpt.latest_step(job.checkpoint_dir) == 150
    # the dataset indices in the run's private cache, none beside the shared data (concurrent
    # jobs building the same indices there read each other's half-written files)
    assert any(Path(job.dataset_cache_dir).rglob("*.npy")) and not any(manifest.parent.rglob("*.npy"))
    assert job.dataset_cache_dir != make_job(tmp_path / "other", manifest, tokens=150 * 512).dataset_cache_dir

    # the final checkpoint loads into a fresh model that reproduces the validation loss
    code = f"""
import json, torch
from archscale.model import resolve_runtime, setup_runtime, causal_mask
from archscale.checkpoint import load_final
from archscale.data.dataset import Manifest, build_datasets, collate
rt = resolve_runtime(); setup_runtime(rt, 0)
model, desc = load_final({job.final!r})
_, valid = build_datasets(Manifest.load({str(manifest)!r}), 64, 8, 32, seed=7)
model.eval()
with torch.no_grad():
    losses = [model(b["tokens"], b["position_ids"], causal_mask(64), labels=b["labels"]).mean().item()
              for b in (collate(valid, range(i, i + 4)) for i in range(0, 32, 4))]
print(json.dumps(sum(losses) / len(losses)))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=launcher.environment(1, 0))
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.strip().splitlines()[-1]) == pytest.approx(metrics["valid_loss"], rel=1e-5)

    # a restarted finished job (outputs deleted, as Snakemake would) rebuilds them from the last checkpoint
    for p in (job.metrics, job.curve):
        os.unlink(p)
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    again = json.loads(Path(job.metrics).read_text())
    assert again["valid_loss"] == metrics["valid_loss"] and again["resumed_from_step"] == 150


@pytest.mark.slow
def test_short_run_skips_resumable_checkpoints(tmp_path, manifest):
    """A run shorter than checkpoint_min_s writes no resumable checkpoint, only its final one."""
    job = make_job(tmp_path, manifest, tokens=30 * 512, hardware={"checkpoint_interval": 10, "checkpoint_min_s": 3600})
    code, out = run_job(job)
    assert code == 0, out[-4000:]
    assert ckpt.complete_steps(job.checkpoint_dir) == [] and "checkpoint " + str(job.checkpoint_dir) not in out
    assert (Path(job.final) / "metadata.json").exists() and json.loads(Path(job.metrics).read_text())["steps"] == 30


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identically(tmp_path, manifest):
    steps = 120
    ref = make_job(tmp_path / "ref", manifest, tokens=steps * 512)
    code, out = run_job(ref)
    assert code == 0, out[-3000:]

    job = make_job(tmp_path / "int", manifest, tokens=steps * 512)
    proc = start(job)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 40/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    log = "".join(seen) + rest
    assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert "received SIGTERM" in log and "checkpoint saved at step" in log
    stopped = ckpt.latest_step(job.checkpoint_dir)
    assert 40 <= stopped < steps
    # nothing that looks finished
    for p in (job.metrics, job.curve, job.final):
        assert not Path(p).exists(), p
    # only the live TensorBoard log (archscale.train.tracking), never an output
    assert [p.name for p in Path(job.metrics).parent.glob("*")] == ["tb"]

    code, out = run_job(job)
    assert code == 0, out[-3000:]
    assert f"resumed from" in out and f"(step {stopped}/{steps})" in out
    a = json.loads(Path(ref.metrics).read_text())
    b = json.loads(Path(job.metrics).read_text())
    assert b["resumed_from_step"] == stopped
    assert b["final_train_loss"] == a["final_train_loss"]  # bit-identical on CPU with fixed threads
    assert b["last_step_loss"] == a["last_step_loss"] and b["valid_loss"] == a["valid_loss"]
    ca, cb = pq.read_table(ref.curve).to_pandas(), pq.read_table(job.curve).to_pandas()
    for col in ("step", "tokens", "loss", "lr", "grad_norm"):
        assert ca[col].tolist() == cb[col].tolist(), col


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, manifest):
    # warm-up 0 and an absurd learning rate: the weights overflow within a few steps
    job = make_job(tmp_path, manifest, tokens=40 * 512, recipe={"lr": 1e25, "warmup_fraction": 0.0},
                   hardware={"checkpoint_interval": 1})
    code, out = run_job(job)
    assert code == 3, out[-3000:]
    assert "training diverged" in out and "is not finite" in out and ARCH.arch_id in out
    last = ckpt.latest_step(job.checkpoint_dir)
    assert last is not None
    # the failing step is the one after the last checkpoint: nothing was saved after the bad loss
    bad_step = int(out.split("at step ")[1].split()[0])
    assert last == bad_step - 1
    assert f"{ckpt.iter_name(last)} (kept)" in out
    for p in (job.metrics, job.curve, job.final):
        assert not Path(p).exists()


def _limit_memory(limit_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def _import_address_space() -> int:
    """Peak address space (bytes) of a process that imports torch and megatron-core: a CUDA build
    of torch maps several GB of libraries at import, the CPU build well under 2 GiB."""
    code = ("import torch, megatron.core\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return int(out.stdout.strip()) * 1024


@pytest.mark.slow
def test_architecture_that_does_not_fit_names_itself(tmp_path, manifest):
    big = Architecture(d_model=4096, ffn=16384, layers=24, heads=32, kv_heads=8, head_dim=128, vocab=256, scale="t")
    job = make_job(tmp_path, manifest, tokens=512, arch=big)
    # The imports' address space plus 1.5 GiB: the job starts, the model (about 23 GB) does not fit.
    code, out = run_job(job, preexec_fn=_limit_memory(_import_address_space() + 3 * 2**29))
    assert code == 4, out[-3000:]
    assert f"architecture {big.arch_id} does not fit in memory" in out
    assert "training.micro_batch" in out
    assert not Path(job.metrics).exists()


@pytest.mark.slow
@pytest.mark.serial  # two ranks, one core each
def test_data_parallel_torchrun_matches_single_process(tmp_path, manifest):
    """torchrun with 2 ranks (megatron DDP over gloo on CPU) trains like one process on the same batches."""
    single = make_job(tmp_path / "one", manifest, tokens=30 * 512)
    code, out = run_job(single)
    assert code == 0, out[-3000:]
    dp = make_job(tmp_path / "dp", manifest, tokens=30 * 512)
    path = launcher.write_job(dp)
    cmd = launcher.command(path, 2)
    assert "--nproc-per-node" in cmd
    res = subprocess.run(cmd, env=launcher.environment(threads=1, gpus=0), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    a = json.loads(Path(single.metrics).read_text())
    b = json.loads(Path(dp.metrics).read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    ca, cb = pq.read_table(single.curve).to_pandas(), pq.read_table(dp.curve).to_pandas()
    # same samples per step, gradients averaged across ranks: equal up to reduction order
    np.testing.assert_allclose(cb["loss"], ca["loss"], rtol=2e-4)
    assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=2e-4)
    assert ckpt.latest_step(dp.checkpoint_dir) == 30


def test_checkpoint_writer_results_stay_in_process():
    """The write results of a (synchronous) save go through an in-process queue: no Manager server
    process to die with SLURM's stop signals (which signal every process of a step), none to
    import torch beside the trainer, none left behind."""
    import queue

    import psutil
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from archscale import checkpoint

    saved = filesystem_async._results_queue
    filesystem_async._results_queue = None
    try:
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        checkpoint._in_process_writer_queue()
        q = filesystem_async._results_queue
        assert isinstance(q, queue.Queue)
        checkpoint._in_process_writer_queue()
        assert filesystem_async._results_queue is q  # idempotent: one queue per process
        assert {p.pid for p in psutil.Process().children(recursive=True)} == before  # nothing started
    finally:
        filesystem_async._results_queue = saved
