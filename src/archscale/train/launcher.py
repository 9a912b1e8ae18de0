"""Start a training job as a child process: ``python -m archscale.train`` on CPU or one GPU,
``torchrun --nproc-per-node G -m archscale.train`` for G > 1 GPUs.

This is the side the Snakemake script runs; it imports neither torch nor megatron (fast, and the
rule's process never touches CUDA). The child is the ``__main__`` of its own interpreter, which
megatron's ``dist_checkpointing`` (it spawns a writer process) needs whatever way Snakemake runs
the script. SIGTERM/SIGUSR1/SIGINT received here are forwarded to the child, which checkpoints and
exits non-zero; no declared output is written then.

The trainer never outlives its workflow: it gets SIGTERM (checkpoint, exit) when this launcher
dies (``PR_SET_PDEATHSIG``) and when Snakemake dies (a watcher thread here follows the chain of
processes up to the outermost ``snakemake``; SIGKILL of Snakemake leaves its job processes
running, re-parented, so that chain breaking is the sign). ``job.json`` is written only while
the checkpoint directory's lock is free: a second launcher is refused before it touches the
running trainer's files.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from ..io import write_json
from .job import TrainJob
from .lock import TrainerLock, TrainerLockHeld

if TYPE_CHECKING:  # pragma: no cover
    from ..study import Study

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
#: Seconds torchrun waits for ranks to checkpoint and exit after a signal before SIGKILL.
TORCHRUN_SHUTDOWN_TIMEOUT_S = 900
#: Exit code of a launch refused because another trainer holds the checkpoint directory.
EXIT_LOCKED = 5
#: Seconds between two looks at the processes above the launcher.
WATCH_INTERVAL_S = 1.0
PR_SET_PDEATHSIG = 1


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


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(parent PID, state, start time) of ``pid`` from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_snakemake(pid: int) -> bool:
    """Whether ``pid`` runs snakemake (``snakemake ...`` or ``python -m snakemake ...``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().decode(errors="replace").split("\0")[:3]
    except OSError:
        return False
    return any(os.path.basename(a) == "snakemake" for a in argv[:2]) or argv[1:3] == ["-m", "snakemake"]


def supervisors(pid: int | None = None) -> list[tuple[int, int, str]]:
    """The processes above ``pid`` (default: this one) whose death must stop the trainer, as
    (PID, parent PID, start time): the chain up to the outermost process running snakemake,
    or the direct parent alone when no snakemake is above (started by hand). [] without /proc."""
    pid = os.getpid() if pid is None else pid
    chain: list[tuple[int, int, str]] = []
    outermost = 0
    stat = _proc_stat(pid)
    while stat is not None and stat[0] > 1:
        parent = stat[0]
        stat = _proc_stat(parent)
        if stat is None:
            break
        chain.append((parent, stat[0], stat[2]))
        if is_snakemake(parent):
            outermost = len(chain)
    return chain[:outermost] if outermost else chain[:1]


def chain_broken(chain: list[tuple[int, int, str]]) -> str | None:
    """Why the supervising chain is broken (a process died or was re-parented), None if intact."""
    for pid, ppid, started in chain:
        stat = _proc_stat(pid)
        if stat is None or stat[1] in ("Z", "X") or stat[2] != started:
            return f"process {pid} ({_cmdline(pid)[:60] or 'gone'}) above the trainer has exited"
        if stat[0] != ppid:
            return f"process {pid} above the trainer lost its parent {ppid} (killed)"
    return None


def watch_supervisors(proc: subprocess.Popen, chain: list[tuple[int, int, str]], log: Callable[[str], None],
                      interval: float = WATCH_INTERVAL_S) -> threading.Thread:
    """A daemon thread sending SIGTERM to ``proc`` (it checkpoints and exits) once ``chain`` breaks."""

    def watch():
        while proc.poll() is None:
            why = chain_broken(chain)
            if why:
                log(f"[archscale] {why}: stopping the trainer (SIGTERM: it checkpoints and exits)")
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                return
            threading.Event().wait(interval)

    thread = threading.Thread(target=watch, name="archscale-supervisor-watch", daemon=True)
    thread.start()
    return thread


def _die_with_parent(parent: int) -> Callable[[], None]:
    """``preexec_fn`` of the trainer: SIGTERM when this launcher dies (Linux; elsewhere a no-op)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def run(cmd: list[str], env: Mapping[str, str], stdout=None, watch: bool = True) -> int:
    """Run ``cmd``, forwarding preemption signals to it and stopping it when the launcher or the
    Snakemake above it dies; return its exit code."""
    stdout = stdout if stdout is not None else sys.stdout
    chain = supervisors() if watch else []
    proc = subprocess.Popen(cmd, env=dict(env), stdout=stdout, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent(os.getpid()))

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    if chain:
        watch_supervisors(proc, chain, log=lambda msg: print(msg, file=stdout, flush=True))
    try:
        return proc.wait()
    finally:
        for s, prev in previous.items():
            signal.signal(s, prev)


def launch(job: TrainJob, gpus: int, stdout=None) -> int:
    """Write ``job`` next to its checkpoints and run it on ``gpus`` GPUs (0 = CPU); return the exit
    code (:data:`EXIT_LOCKED`, with nothing written, when another trainer holds the directory)."""
    out = stdout if stdout is not None else sys.stdout
    try:
        # job.json only while the lock is free; the trainer takes the lock itself once started
        # (a launcher in the instant between would also be refused by the trainer's lock).
        with TrainerLock(job.checkpoint_dir, log=lambda msg: print(msg, file=out, flush=True)):
            job_path = write_job(job)
    except TrainerLockHeld as exc:
        print(f"ERROR: {exc}", file=out, flush=True)
        return EXIT_LOCKED
    cmd = command(job_path, processes(gpus))
    threads = int(job.hardware.get("threads", 1))
    print(f"[archscale] launching: {' '.join(cmd)}", file=out, flush=True)
    return run(cmd, environment(threads, gpus=int(gpus)), stdout=out)


def training_hardware(config: Mapping | Study) -> dict:
    """The hardware knobs of a training job of the study ``config``: the study's
    (:meth:`archscale.study.Study.training_hardware`) with ``tensorboard`` and ``wandb`` validated
    and completed (:func:`archscale.train.tracking.settings_from_config`: W&B group ``run_name``)."""
    from ..study import study_of
    from .tracking import settings_from_config

    study = study_of(config)
    hardware = study.training_hardware()
    hardware.update(settings_from_config(study.config))
    return hardware


def job_from_snakemake(snakemake) -> TrainJob:
    """The job of a ``train`` rule invocation: identity from params (the shape, budget and recipe;
    the network settings, whose values are params too, complete the spec from the study),
    hardware from the study."""
    from ..study import Study

    p = snakemake.params
    study = Study.from_config(snakemake.config)
    return TrainJob(
        arch=study.spec(p.arch),
        budget=dict(p.budget),
        recipe=dict(p.recipe),
        manifest=str(snakemake.input.manifest),
        tokenizer_meta=str(snakemake.input.tokenizer_meta),
        checkpoint_dir=str(p.checkpoint_dir),
        metrics=str(snakemake.output.metrics),
        curve=str(snakemake.output.curve),
        final=str(snakemake.output.final),
        hardware=training_hardware(study),
    )
