"""Multi-horizon runs: warmup-stable-decay branches that share their stable phase.

Real training runs of the tiny test model (``python -m archscale.train``, as the rule launches
it). A branch continued from the stable phase another branch kept must end bit for bit where
the same branch trained alone ends; a branch resumes inside its decay; the learning rate holds
its peak until the branch point and decays to the floor at the end.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archscale.plan import Schedule
from archscale.train import checkpointing as ckpt
from archscale.train.loop import POINTS
from test_train import make_job, manifest, run_job, start  # noqa: F401 - manifest is a fixture

pytestmark = pytest.mark.slow

TOKENS_PER_STEP = 512  # seq 64 x global batch 8 (test_train.RECIPE)
SCHEDULE = Schedule(warmup_steps=3, decay_fraction=0.25, decay_style="minus_sqrt")


def branch(root: Path, manifest: Path, steps: int, trunk: str = "trunk", **changes):
    """A branch of ``steps`` steps of the run whose stable phase is results/checkpoints/<trunk>."""
    job = make_job(root / "out" / f"D{steps}", manifest, tokens=steps * TOKENS_PER_STEP, **changes)
    job.checkpoint_dir = str(root / "checkpoints" / f"{trunk}-D{steps}")
    job.budget["schedule"] = {"style": "wsd", "trunk": trunk, "warmup_steps": SCHEDULE.warmup_steps,
                              "decay_fraction": SCHEDULE.decay_fraction, "decay_style": SCHEDULE.decay_style}
    return job


def metrics(job) -> dict:
    return json.loads(Path(job.metrics).read_text())


def test_a_longer_branch_continues_the_kept_stable_phase_bit_for_bit(tmp_path, manifest):
    short, long_ = branch(tmp_path / "shared", manifest, 24), branch(tmp_path / "shared", manifest, 48)
    assert (short.branch_step, long_.branch_step) == (SCHEDULE.branch_step(24), SCHEDULE.branch_step(48)) == (18, 36)
    code, out = run_job(short)
    assert code == 0, out[-3000:]
    assert ckpt.complete_steps(short.trunk_dir / POINTS) == [18]  # kept for the next horizon
    code, out = run_job(long_)
    assert code == 0, out[-3000:]
    assert f"resumed from {short.trunk_dir / POINTS / ckpt.iter_name(18)} (step 18/48)" in out, out[-3000:]
    assert ckpt.complete_steps(long_.trunk_dir / POINTS) == [18, 36]

    alone = branch(tmp_path / "alone", manifest, 48)
    code, out = run_job(alone)
    assert code == 0, out[-3000:]
    assert "resumed" not in out
    a, b = metrics(alone), metrics(long_)
    assert b["valid_loss"] == a["valid_loss"] and b["last_step_loss"] == a["last_step_loss"]
    assert b["schedule"] == "wsd" and (b["branch_step"], b["decay_steps"], b["warmup_steps"]) == (36, 12, 3)
    assert b["tokens_budget"] == 48 * TOKENS_PER_STEP and b["steps"] == 48
    ca, cb = pq.read_table(alone.curve).to_pandas(), pq.read_table(long_.curve).to_pandas()
    assert ca["loss"].tolist() == cb["loss"].tolist() and ca["lr"].tolist() == cb["lr"].tolist()
    # the shorter branch decays from its own branch point: same stable phase, earlier decay
    cs = pq.read_table(short.curve).to_pandas()
    assert cs["loss"].iloc[:18].tolist() == cb["loss"].iloc[:18].tolist()
    assert cs["lr"].iloc[19] < cb["lr"].iloc[19] == pytest.approx(0.01)  # lr of step 20
    assert metrics(short)["valid_loss"] > b["valid_loss"]  # more tokens, lower loss


def test_learning_rate_warms_up_holds_and_decays_to_the_floor(tmp_path, manifest):
    job = branch(tmp_path, manifest, 24)
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    lr = pq.read_table(job.curve).to_pandas()["lr"].tolist()  # lr applied at each step
    peak, floor = 0.01, 0.01 * 0.1
    assert lr[0] == pytest.approx(0.0) and lr[2] < peak  # linear warm-up over 3 steps
    assert all(x == pytest.approx(peak) for x in lr[3:19])  # stable phase through the branch point
    assert all(a > b for a, b in zip(lr[18:], lr[19:]))  # then decays
    assert lr[-1] == pytest.approx(floor + (peak - floor) * (1 - (23 - 18) ** 0.5 / 6 ** 0.5))


def test_a_branch_resumes_inside_its_decay(tmp_path, manifest):
    ref = branch(tmp_path / "ref", manifest, 40)
    code, out = run_job(ref)
    assert code == 0, out[-3000:]
    job = branch(tmp_path / "int", manifest, 40, hardware={"checkpoint_interval": 5, "log_interval": 1})
    proc = start(job)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 34/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, ("".join(seen) + rest)[-3000:]
    stopped = ckpt.latest_step(job.checkpoint_dir)
    assert stopped is not None and 30 < stopped < 40  # in the branch's own directory, after its branch point
    assert ckpt.complete_steps(job.trunk_dir) and max(ckpt.complete_steps(job.trunk_dir)) <= 30
    code, out = run_job(job)
    assert code == 0, out[-3000:]
    assert f"resumed from {Path(job.checkpoint_dir) / ckpt.iter_name(stopped)}" in out
    assert metrics(job)["valid_loss"] == metrics(ref)["valid_loss"]
    assert pq.read_table(job.curve).to_pandas()["loss"].tolist() == pq.read_table(ref.curve).to_pandas()["loss"].tolist()
