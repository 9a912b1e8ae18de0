"""The final checkpoint of a trained model: the one format training writes and the later stages read.

``results/train/{arch}/final/`` is a megatron-core ``dist_checkpointing`` directory holding the
model only, under the key ``model`` (the layout of Megatron-LM checkpoints), plus
``archscale.json`` (:func:`describe`: the architecture, sequence length, RoPE base, step,
tokens seen, precision). Training writes it with :func:`save_final` (``archscale.train.loop``);
throughput measurement of trained weights (``archscale.throughput.job``) and the Hugging Face
export (``archscale.export``) read it with :func:`load_final`, which builds the model the
description names and loads the weights. The export, not this checkpoint, is what evaluation reads.

:func:`collective_save` (all ranks write, rank 0 renames the complete directory into place) is
also the writer of the resumable checkpoints of :mod:`archscale.train.checkpointing`.

This module sits below the stages (docs/architecture.md, layer 1): it imports ``io``, ``arch``
and ``model`` only; torch and megatron-core are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .arch import Architecture
from .io import read_json, write_json

#: The file of a final checkpoint describing the model it holds.
DESCRIPTION = "archscale.json"
#: The ``format`` entry of :data:`DESCRIPTION`.
FORMAT = "megatron-core dist_checkpointing, key 'model'"


def describe(arch: Architecture, seq_length: int, step: int, tokens_seen: int, precision: str) -> dict[str, Any]:
    """The contents of :data:`DESCRIPTION`: what :func:`load_final` needs to rebuild the model
    (the spec: ``arch`` and its network settings beside it, ``seq_length``) and what the run
    reached."""
    return {"arch": arch.to_dict(), "arch_id": arch.arch_id, "seq_length": int(seq_length), **arch.network(),
            "step": int(step), "tokens_seen": int(tokens_seen), "precision": precision, "format": FORMAT}


def rank() -> int:
    """This process's rank (0 outside torch.distributed)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank (nothing outside torch.distributed or with one rank)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _in_process_writer_queue() -> None:
    """Give dist_checkpointing's writer an in-process results queue (idempotent).

    The torch_dist save strategy collects its write results in a queue that by default lives in
    a ``multiprocessing`` Manager server, spawned on the first save for the async path, where
    the write runs in another process. archscale saves synchronously: the write runs in this
    process (its forked workers report through their own queue) and the results are put and
    read here, so a ``queue.Queue`` does, and no server process is started. That server was a
    hazard and a cost: SLURM delivers SIGTERM to every process of the job step, so it died with
    the trainer's stop signal and the checkpoint written *because of* the signal failed with
    BrokenPipeError; and to hold the write results it imported torch (1-3 s of CPU and about
    250 MB per training job, on top of the spawn's latency before the first checkpoint).
    """
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if not isinstance(getattr(filesystem_async, "_results_queue", None), queue.Queue):
        filesystem_async._results_queue = queue.Queue()


def collective_save(sharded_state_dict: dict, target: str | Path) -> None:
    """All ranks save into ``target`` + ``.tmp``; rank 0 renames it onto ``target`` when complete."""
    from megatron.core import dist_checkpointing

    _in_process_writer_queue()
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    if rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    dist_checkpointing.save(sharded_state_dict, str(tmp))
    barrier()
    if rank() == 0:
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    barrier()


def save_final(path: str | Path, ddp, description: dict) -> None:
    """Model weights (key ``model``) plus :data:`DESCRIPTION` (:func:`describe`), appearing atomically
    at ``path``. Every rank calls it (the save is collective)."""
    path = Path(path)
    collective_save({"model": ddp.module.sharded_state_dict()}, path.with_name("." + path.name + ".partial"))
    if rank() == 0:
        staged = path.with_name("." + path.name + ".partial")
        write_json(staged / DESCRIPTION, description)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staged, path)
    barrier()


def load_final(path: str | Path, runtime=None):
    """Build the architecture described in ``path/archscale.json`` and load the trained weights.

    Call :func:`archscale.model.setup_runtime` first. Returns ``(model, description)``.
    """
    from megatron.core import dist_checkpointing

    from .model import build_model, resolve_runtime

    path = Path(path)
    desc = read_json(path / DESCRIPTION)
    runtime = runtime or resolve_runtime()
    arch = Architecture.from_record(desc)
    try:
        arch.network()
    except ValueError as exc:
        raise ValueError(f"{path / DESCRIPTION}: {exc}; re-run the train rule to rewrite the checkpoint") from None
    model = build_model(arch, runtime, int(desc["seq_length"]))
    loaded = dist_checkpointing.load({"model": model.sharded_state_dict()}, str(path))
    model.load_state_dict(loaded["model"])
    return model, desc
