"""Start a training job as a child process: ``python -m archscale.train`` on CPU or one GPU,
``torchrun --nproc-per-node G -m archscale.train`` for G > 1 GPUs.

This is the side the Snakemake script runs; it imports neither torch nor megatron (fast, and the
rule's process never touches CUDA). The child is the ``__main__`` of its own interpreter, which
megatron's ``dist_checkpointing`` (it spawns a writer process) needs whatever way Snakemake runs
the script. SIGTERM/SIGUSR1/SIGINT received here are forwarded to the child, which checkpoints and
exits non-zero; no declared output is written then.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from ..arch import Architecture
from ..io import write_json
from .job import TrainJob

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
#: Seconds torchrun waits for ranks to checkpoint and exit after a signal before SIGKILL.
TORCHRUN_SHUTDOWN_TIMEOUT_S = 900


def processes(gpus: int) -> int:
    """Processes per job: one per GPU (the rule's ``gpu`` resource), one on CPU."""
    return max(1, int(gpus))


def command(job_path: str | Path, nproc: int, python: str | None = None) -> list[str]:
    python = python or sys.executable
    if nproc > 1:
        # torchrun (= python -m torch.distributed.run); --standalone picks a free local rendezvous.
        # torchrun forwards these signals to every rank (SIGUSR1 would otherwise kill torchrun
        # itself) and gives the ranks time to write their checkpoint before it sends SIGKILL.
        return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                "--nproc-per-node", str(nproc), "--signals-to-handle", TORCHRUN_SIGNALS,
                "--shutdown-timeout", str(TORCHRUN_SHUTDOWN_TIMEOUT_S), "-m", "archscale.train", str(job_path)]
    return [python, "-m", "archscale.train", str(job_path)]


def environment(threads: int, gpus: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["MKL_CBWR"] = "AUTO,STRICT"  # reproducible MKL reductions
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # compute.gpus_per_job = 0 means CPU even on a GPU node
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_job(job: TrainJob) -> Path:
    path = Path(job.checkpoint_dir) / "job.json"
    write_json(path, job.to_dict())
    return path


def run(cmd: list[str], env: Mapping[str, str], stdout=None) -> int:
    """Run ``cmd``, forwarding preemption signals to it; return its exit code."""
    stdout = stdout if stdout is not None else sys.stdout
    proc = subprocess.Popen(cmd, env=dict(env), stdout=stdout, stderr=subprocess.STDOUT)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        return proc.wait()
    finally:
        for s, prev in previous.items():
            signal.signal(s, prev)


def launch(job: TrainJob, gpus: int, stdout=None) -> int:
    """Write ``job`` next to its checkpoints and run it on ``gpus`` GPUs (0 = CPU); return the exit code."""
    job_path = write_job(job)
    cmd = command(job_path, processes(gpus))
    threads = int(job.hardware.get("threads", 1))
    out = stdout if stdout is not None else sys.stdout
    print(f"[archscale] launching: {' '.join(cmd)}", file=out, flush=True)
    return run(cmd, environment(threads, gpus=int(gpus)), stdout=out)


def job_from_snakemake(snakemake) -> TrainJob:
    """The job of a ``train`` rule invocation: identity from params, hardware from the study."""
    from ..study import Study

    p = snakemake.params
    return TrainJob(
        arch=Architecture.from_dict(p.arch),
        budget=dict(p.budget),
        recipe=dict(p.recipe),
        rope_base=float(p.rope_base),
        manifest=str(snakemake.input.manifest),
        tokenizer_meta=str(snakemake.input.tokenizer_meta),
        checkpoint_dir=str(p.checkpoint_dir),
        metrics=str(snakemake.output.metrics),
        curve=str(snakemake.output.curve),
        final=str(snakemake.output.final),
        hardware=Study.from_config(snakemake.config).training_hardware(),
    )
