"""Resumable checkpoints (megatron-core ``dist_checkpointing``) of a training run.

Layout of a run's checkpoint directory (outside the rule's declared outputs, so Snakemake never
deletes it)::

    results/checkpoints/{arch}/
        job.json            the job the checkpoints belong to (written by the launcher)
        fingerprint.json    identity (architecture, budget, recipe) of the checkpoints
        result/             copy of the finished run's metrics.json, curve.parquet, final/
        iter_0000100/       dist_checkpointing dir: model, optimizer, scheduler, trainer state
        iter_0000200/
        latest              text: name of the newest complete iter_* directory

Next to it, ``results/checkpoints/{arch}.lock`` is held by the running trainer
(:mod:`archscale.train.lock`); checkpoints of a superseded identity are moved to
``results/superseded/{arch}/`` (:mod:`archscale.train.supersede`).

A checkpoint is written to ``iter_XXXXXXX.tmp`` and renamed when complete; ``latest`` is then
replaced atomically; older checkpoints beyond ``keep`` are removed. A kill at any moment leaves
either the previous state or the new one, never a half-written directory under a final name.

The final checkpoint, the one later stages read, has its own module: :mod:`archscale.checkpoint`
(its collective save, with the rank and barrier helpers, is used here too).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from ..checkpoint import barrier as _barrier
from ..checkpoint import collective_save
from ..checkpoint import rank as _rank
from ..io import atomic_path, read_json, write_json

ITER_RE = re.compile(r"^iter_(\d{7})$")
LATEST = "latest"
FINGERPRINT = "fingerprint.json"


def iter_name(step: int) -> str:
    return f"iter_{step:07d}"


def complete_steps(root: str | Path) -> list[int]:
    """Steps of the complete checkpoints under ``root`` (a dist_checkpointing metadata file present)."""
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        m = ITER_RE.match(p.name)
        if m and p.is_dir() and (p / "metadata.json").exists():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(root: str | Path) -> int | None:
    """The step ``latest`` points to, or (pointer missing or stale) the newest complete one."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.exists():
        name = pointer.read_text().strip()
        m = ITER_RE.match(name)
        if m and (root / name / "metadata.json").exists():
            return int(m.group(1))
    steps = complete_steps(root)
    return steps[-1] if steps else None


def _broadcast(obj):
    """``obj`` of rank 0 on every rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def check_fingerprint(root: str | Path, fingerprint: dict[str, Any], log=print,
                      superseded: str | Path | None = None) -> str | None:
    """Make ``root`` hold checkpoints of this job only.

    Checkpoints written for another identity (the recipe or budget changed, so Snakemake re-runs
    the job) cannot be resumed: the directory is moved aside whole to
    ``results/superseded/{arch}/{old digest}/`` (:mod:`archscale.train.supersede`) and the job
    starts from step 0 -- or from the checkpoints of this identity, if they were moved aside
    earlier: they are moved back. Returns (on every rank) the directory restored from, or None.
    """
    from . import supersede

    root = Path(root)
    path = root / FINGERPRINT
    restored = None
    if _rank() == 0:
        want = json.loads(json.dumps(fingerprint, sort_keys=True))
        if path.exists() and read_json(path) != want:
            supersede.move_aside(root, read_json(path), bool(complete_steps(root)), log, superseded)
        if not path.exists() and not complete_steps(root):
            src = supersede.restore(root, want, log, superseded, latest_step=latest_step)
            restored = None if src is None else str(src)
        for p in root.iterdir() if root.is_dir() else ():
            if p.is_dir() and p.name.endswith(".tmp") and ITER_RE.match(p.name[:-4]):
                shutil.rmtree(p, ignore_errors=True)  # half-written checkpoints of a killed run
        root.mkdir(parents=True, exist_ok=True)
        write_json(path, fingerprint)
    restored = _broadcast(restored)
    _barrier()
    return restored


def prepare(root: str | Path, job, log=print) -> dict[str, Any] | None:
    """:func:`check_fingerprint` for ``job``; if that restored a finished run of this identity,
    put its kept outputs back (byte for byte) and return its metrics record, else None."""
    from . import supersede

    if check_fingerprint(root, job.fingerprint(), log=log) is None:
        return None
    record = None
    if _rank() == 0:
        record = supersede.restore_result(root, job.metrics, job.curve, job.final)
        if record is not None:
            log(f"[archscale] {job.arch_id}: finished result restored to {job.metrics}, {job.curve}, {job.final}")
    record = _broadcast(record)
    _barrier()
    return record


def keep_result(root: str | Path, job) -> None:
    """Rank 0: keep a copy of the finished job's outputs in ``root/result/`` (see
    :mod:`archscale.train.supersede`: moving ``root`` aside then keeps the full result)."""
    from . import supersede

    if _rank() == 0:
        supersede.keep_result(root, job.metrics, job.curve, job.final)


def training_state_dict(ddp, optimizer, scheduler, trainer: dict, is_loading: bool = False) -> dict:
    """The sharded state of a run: model, optimizer (Adam moments included), scheduler, trainer."""
    model_sd = ddp.module.sharded_state_dict()
    return {
        "model": model_sd,
        # is_loading=True matters: without it Adam moments are silently dropped on load.
        "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=is_loading),
        "scheduler": scheduler.state_dict(),
        "trainer": trainer,
    }


def save_checkpoint(root: str | Path, step: int, ddp, optimizer, scheduler, trainer: dict, keep: int = 2) -> Path:
    root = Path(root)
    target = root / iter_name(step)
    collective_save(training_state_dict(ddp, optimizer, scheduler, trainer), target)
    if _rank() == 0:
        with atomic_path(root / LATEST) as tmp:
            tmp.write_text(iter_name(step) + "\n")
        for old in complete_steps(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(root / iter_name(old), ignore_errors=True)
    _barrier()
    return target


def load_checkpoint(root: str | Path, step: int, ddp, optimizer, scheduler) -> dict:
    """Restore model, optimizer and scheduler in place; return the trainer state."""
    from megatron.core import dist_checkpointing

    path = Path(root) / iter_name(step)
    sd = training_state_dict(ddp, optimizer, scheduler, trainer={}, is_loading=True)
    loaded = dist_checkpointing.load(sd, str(path))
    ddp.module.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    return loaded["trainer"]
