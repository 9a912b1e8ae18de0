"""TensorBoard and W&B logging of training and throughput (archscale.train.tracking), read back."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from archscale.train import launcher, tracking
from archscale.train.job import TrainJob
from test_train import ARCH, make_job, manifest, run_job, start  # noqa: F401 - manifest is a fixture

TRAIN_TAGS = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/tokens", "valid/loss"}


def events(directory: Path) -> EventAccumulator:
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_settings_from_config_are_hardware_knobs_not_identity(tmp_path, manifest):
    from archscale.config import load_config
    from archscale.train.launcher import training_hardware

    default = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    overrides = {"run_name": "study-a", "training": {"tensorboard": False,
                                                     "wandb": {"project": "p", "tags": ["x"], "mode": "offline"}}}
    hw = training_hardware(load_config(default, overrides=overrides))
    assert hw["tensorboard"] is False
    assert hw["wandb"] == {"project": "p", "entity": None, "group": "study-a", "tags": ["x"], "mode": "offline"}
    assert training_hardware(load_config(default))["tensorboard"] is True
    job = make_job(tmp_path, manifest, tokens=5000)
    logged = make_job(tmp_path, manifest, tokens=5000, hardware={"tensorboard": False, "wandb": hw["wandb"]})
    assert logged.fingerprint() == job.fingerprint()
    with pytest.raises(ValueError, match="training.wandb.mode"):
        tracking.settings_from_config({"training": {"wandb": {"project": "p", "mode": "sometimes"}}})
    with pytest.raises(ValueError, match="project"):
        tracking.settings_from_config({"training": {"wandb": {"entity": "e"}}})
    tags = tracking.arch_tags(ARCH.to_dict(), "t")
    assert tags[0] == "scale:t" and "gqa:2" in tags and "d_model:32" in tags


@pytest.mark.slow
def test_tensorboard_events_of_a_tiny_job_hold_the_curve_and_hparams(tmp_path, manifest):
    job = make_job(tmp_path, manifest, tokens=20 * 512, recipe={"eval_interval": 10})
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    tb_dir = Path(job.metrics).parent / "tb"
    acc = events(tb_dir)
    assert TRAIN_TAGS <= set(acc.Tags()["scalars"])
    curve = pq.read_table(job.curve).to_pandas()
    for tag, col in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm")):
        got = scalars(acc, tag)
        assert [s for s, _ in got] == list(range(1, 21)), tag
        assert [v for _, v in got] == pytest.approx(curve[col].tolist(), rel=1e-6), tag
    assert all(v > 0 for _, v in scalars(acc, "train/tokens_per_s"))
    valid = scalars(acc, "valid/loss")
    assert [s for s, _ in valid] == [10, 20]
    assert valid[-1][1] == pytest.approx(curve["valid_loss"].iloc[-1], rel=1e-6)
    # architecture and recipe as hparams
    meta = acc.SummaryMetadata("_hparams_/session_start_info")
    hp = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content).session_start_info.hparams
    assert hp["arch_id"].string_value == ARCH.arch_id and hp["arch.d_model"].number_value == 32
    assert hp["recipe.lr"].number_value == pytest.approx(0.01) and hp["arch.gqa"].number_value == 2
    # only rank 0 of the run wrote, nothing is a declared output
    assert len(list(tb_dir.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_resumed_job_appends_to_its_tensorboard_curve(tmp_path, manifest):
    steps = 60
    job = make_job(tmp_path, manifest, tokens=steps * 512, hardware={"checkpoint_interval": 20})
    proc = start(job)
    for line in proc.stdout:
        if line.startswith("step 30/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, rest[-3000:]
    tb_dir = Path(job.metrics).parent / "tb"
    before = scalars(events(tb_dir), "train/loss")
    assert before and before[-1][0] >= 30  # the interrupted session logged live
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    curve = pq.read_table(job.curve).to_pandas()
    got = scalars(events(tb_dir), "train/loss")
    # steps past the checkpoint logged by the killed session are hidden: each step once
    assert [s for s, _ in got] == list(range(1, steps + 1))
    assert [v for _, v in got] == pytest.approx(curve["loss"].tolist(), rel=1e-6)
    assert len(list(tb_dir.glob("events.out.tfevents.*"))) == 2

    # a job that starts afresh (its checkpoints gone) replaces the curve of the old run
    import shutil

    shutil.rmtree(job.checkpoint_dir)
    short = make_job(tmp_path, manifest, tokens=10 * 512)
    code, out = run_job(short)
    assert code == 0, out[-3000:]
    assert "removed 2 TensorBoard event file(s)" in out
    assert [s for s, _ in scalars(events(tb_dir), "train/loss")] == list(range(1, 11))


def _wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline run file (LevelDB log framing: 32 KiB blocks, 7-byte headers)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, part, block = 7, [], b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            chunks.append(part)
    records = []
    for chunk in chunks:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(chunk)
        records.append(rec)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.mark.slow
def test_wandb_offline_run_files(tmp_path, manifest, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-default"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    wb = {"project": "archscale-test", "entity": None, "group": "study-t", "tags": ["unit"], "mode": "offline"}
    job = make_job(tmp_path, manifest, tokens=10 * 512, hardware={"tensorboard": False, "wandb": wb})
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    out_dir = Path(job.metrics).parent
    assert not (out_dir / "tb").exists()  # training.tensorboard: false
    runs = list((out_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, out[-3000:]
    run_files = list(runs[0].glob("run-*.wandb"))
    assert len(run_files) == 1
    records = _wandb_records(run_files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "study-t" and run.display_name == ARCH.arch_id
    assert {"unit", "scale:t", "gqa:2"} <= set(run.tags)
    history = [{_key(i): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    curve = pq.read_table(job.curve).to_pandas()
    assert [h["_step"] for h in history if "train/loss" in h] == list(range(1, 11))
    assert [h["train/loss"] for h in history if "train/loss" in h] == pytest.approx(curve["loss"].tolist(), rel=1e-9)
    assert history[-1]["valid/loss"] == pytest.approx(curve["valid_loss"].iloc[-1], rel=1e-9)
    summary = {_key(i): json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert summary["valid_loss"] == pytest.approx(curve["valid_loss"].iloc[-1], rel=1e-9)


def test_log_throughput_writes_tensorboard_events(tmp_path):
    from archscale.throughput import run_job as run_throughput

    arch = ARCH.to_dict()
    workload = {"engine": "megatron", "weights": "random", "input_len": 8, "output_len": 5, "batch_sizes": [1, 2],
                "warmup": 0, "repeats": 2}
    record = run_throughput(arch, workload, {"threads": 1, "require_nvml": False, "nvml_interval_s": 0.05})
    train_dir = tmp_path / "results/train" / ARCH.arch_id
    for _ in range(2):  # a rerun replaces the events
        tracking.log_throughput(record, {"training": {}}, train_dir)
    acc = events(train_dir / "tb" / "throughput")
    got = scalars(acc, "throughput/output_tokens_per_s")
    assert [s for s, _ in got] == [1, 2]
    assert [v for _, v in got] == pytest.approx([r["output_tokens_per_s"] for r in record["records"]], rel=1e-6)
    assert "throughput/prefill_latency_s" in acc.Tags()["scalars"]
    if not record["nvml_available"]:
        assert "energy/j_per_output_token" not in acc.Tags()["scalars"]  # absent, never logged as 0


@pytest.mark.slow
def test_resumed_tracker_hides_steps_logged_after_the_checkpoint(tmp_path, manifest):
    from types import SimpleNamespace

    job = make_job(tmp_path, manifest, tokens=5000)
    rank0 = SimpleNamespace(rank=0)

    def session(start: int, stop: int, offset: float) -> None:
        tr = tracking.Tracker.open(job, rank0, start, train_time=float(start), log=lambda m: None)
        for s in range(start + 1, stop + 1):
            tr.step({"step": s, "tokens": 512 * s, "loss": offset + s, "lr": 0.1, "grad_norm": 1.0,
                     "valid_loss": None, "elapsed_s": float(s)})
        tr.close()

    session(0, 5, 0.0)  # killed after step 5, last checkpoint at step 3
    session(3, 6, 100.0)
    got = scalars(events(Path(job.metrics).parent / "tb"), "train/loss")
    assert got == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0), (5, 105.0), (6, 106.0)]
    assert [v for _, v in scalars(events(Path(job.metrics).parent / "tb"), "train/tokens_per_s")] == [512.0] * 6
    rank1 = tracking.Tracker.open(job, SimpleNamespace(rank=1), 0, 0.0)
    assert rank1.tb is None and rank1.wandb_run is None


@pytest.mark.slow
def test_a_job_without_wandb_does_not_import_it():
    """block_unused_wandb: megatron's optional `import wandb` fails (it falls back) unless the job
    logs to W&B; a job with training.wandb set imports wandb as usual."""
    import subprocess
    import sys

    code = """
import sys
from archscale.train.__main__ import block_unused_wandb
block_unused_wandb({"wandb": %s})
import megatron.core
print("wandb" in sys.modules and sys.modules["wandb"] is None,
      getattr(sys.modules.get("wandb"), "__name__", None))
"""
    off = subprocess.run([sys.executable, "-W", "ignore", "-c", code % "None"], capture_output=True, text=True, timeout=120)
    assert off.returncode == 0, off.stderr[-3000:]
    assert off.stdout.split() == ["True", "None"]
    pytest.importorskip("wandb")
    on = subprocess.run([sys.executable, "-W", "ignore", "-c", code % "{'project': 'p'}"], capture_output=True,
                        text=True, timeout=120)
    assert on.returncode == 0, on.stderr[-3000:]
    assert on.stdout.split() == ["False", "wandb"]
