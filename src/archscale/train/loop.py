"""The training loop: megatron-core model, data, optimizer, scheduler and schedule.

The setup is :class:`archscale.train.trainer.Trainer`; the loop keeps one session from resume to
the final records (:class:`_Session`) and the metrics record; the pieces with their own concept
live beside it (checkpointing, lock, supersede, tracking, metrics, signals).

One function, :func:`train`, runs a :class:`~archscale.train.job.TrainJob` in the current
process (one rank of a ``torchrun`` job on GPUs, the only process on CPU):

* model: :func:`archscale.model.build_model` wrapped in megatron-core's
  ``DistributedDataParallel`` (``Float16Module`` first in bf16);
* optimizer: ``get_megatron_optimizer`` (AdamW: decoupled weight decay, no decay on norms,
  gradient clipping; distributed optimizer optional);
* schedule: ``OptimizerParamScheduler`` (linear warm-up, cosine decay to ``min_lr_ratio``);
* forward/backward: ``get_forward_backward_func`` with gradient accumulation over micro-batches;
* data: megatron-core GPT datasets (:mod:`archscale.data.dataset`), read by sample index, so
  resuming at step ``s`` reads exactly the samples an uninterrupted run would;
* checkpoints every ``checkpoint_interval`` steps, at the end of training and on SIGTERM/SIGUSR1
  (:mod:`archscale.train.checkpointing`, :mod:`archscale.train.signals`).

Outputs (final checkpoint, curve, metrics) are written only after training and validation
completed, each atomically, metrics last.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from .. import checkpoint as final_ckpt
from . import checkpointing as ckpt
from . import metrics as M
from . import tracking
from .job import TrainJob
from .lock import TrainerLock
from .signals import Preempted, Preemption
from .trainer import Trainer, log_rank0 as _log

#: Under a run's stable-phase directory: the kept state at each branch point (never rotated).
POINTS = "points"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class ArchitectureDoesNotFit(RuntimeError):
    """The architecture ran out of device memory."""


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


def _preempt_requested(pre: Preemption, world: int) -> int | None:
    """The signal to act on, agreed across ranks (a rank may have seen it one step later)."""
    if world == 1:
        return pre.signum
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    flag = torch.tensor([pre.signum or 0], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def train(job: TrainJob, runtime, preemption: Preemption | None = None, log=_log) -> dict[str, Any]:
    """Run (or resume) ``job`` to completion; return the metrics record (also written to disk).

    Rank 0 holds the lock of the checkpoint directory throughout (:mod:`archscale.train.lock`):
    a second trainer of the same directory fails at once, naming the first one."""
    with contextlib.ExitStack() as locks:
        locks.enter_context(TrainerLock(job.checkpoint_dir, log=log, enabled=runtime.rank == 0))
        if job.trunk_dir is not None:  # the stable phase another branch of this run may continue
            locks.enter_context(TrainerLock(job.trunk_dir, log=log, enabled=runtime.rank == 0))
        return _train(job, runtime, preemption, log)


def _resume_point(job: TrainJob, root: Path, log) -> tuple[Path, int | None]:
    """(directory, step) to resume from: the branch's own newest checkpoint; else, for a branch
    of a multi-horizon run, the newest state of the shared stable phase at or before its branch
    point (a kept branch point of a shorter branch, or a periodic one); else (root, None)."""
    step = ckpt.latest_step(root)
    if step is not None or job.trunk_dir is None:
        return root, step
    trunk = job.trunk_dir
    ckpt.check_fingerprint(trunk, job.trunk_fingerprint(), log=log)
    found = [(s, d) for d in (trunk, trunk / POINTS) for s in ckpt.complete_steps(d) if s <= job.branch_step]
    if not found:
        return root, None
    step, where = max(found)
    return where, step


@contextlib.contextmanager
def _fits(job: TrainJob, runtime):
    """Running out of device memory inside becomes :class:`ArchitectureDoesNotFit`."""
    try:
        yield
    except Exception as exc:
        if _is_oom(exc):
            raise ArchitectureDoesNotFit(_oom_message(job, runtime, exc)) from exc
        raise


class _Session:
    """One process's run of a job, from its resume point to the end or a stop signal.

    Holds what checkpoints carry (step, curve, training time, wall time of earlier sessions) and
    what this session adds (tracker, progress lines, the training time the newest checkpoint
    covers)."""

    def __init__(self, job: TrainJob, runtime, log, root: Path, t_session: float):
        import torch

        self.job, self.runtime, self.log, self.root, self.t_session = job, runtime, log, root, t_session
        self.tr = tr = Trainer(job, runtime, log=log)
        with _fits(job, runtime):
            tr.build()
        arch, steps = job.architecture, job.steps
        log(
            f"[archscale] {arch.arch_id}: {tr.params_built:,} parameters (N={arch.params_non_embedding:,} non-embedding), "
            f"{steps} steps x {job.tokens_per_step:,} tokens = {steps * job.tokens_per_step:,} tokens "
            f"(budget {int(job.budget['tokens']):,}); device {runtime.device}, {runtime.precision}, "
            f"{runtime.transformer_impl} spec, world {runtime.world_size}, micro-batch {tr.schedule.micro_batch} "
            f"x {tr.schedule.microbatches}, threads {torch.get_num_threads()}"
        )
        self.start_step, self.curve, self.train_time, self.wall_before = 0, [], 0.0, 0.0
        self.resumed_from = self._resume()
        if job.branch_step is not None:
            log(f"[archscale] warmup-stable-decay: warm-up {job.warmup_steps} steps, stable phase to step {job.branch_step} "
                f"(shared with the run's other horizons, kept in {job.trunk_dir}), decay {job.decay_steps} steps")
        self.tracker = tracking.Tracker.open(job, runtime, self.start_step, self.train_time, log=log)  # TensorBoard / W&B
        self.saved_at = self.train_time  # training time covered by the newest checkpoint (or the start)

    def _resume(self) -> int | None:
        """Load the resume point's state, if any; return its step."""
        import torch

        source, resumed_from = _resume_point(self.job, self.root, self.log)
        if resumed_from is not None:
            tr = self.tr
            state = ckpt.load_checkpoint(source, resumed_from, tr.ddp, tr.optimizer, tr.scheduler)
            self.start_step, self.curve = int(state["step"]), list(state["curve"])
            self.train_time, self.wall_before = float(state["train_time_s"]), float(state["wall_time_s"])
            torch.set_rng_state(state["rng_cpu"])
            self.log(f"[archscale] resumed from {source / ckpt.iter_name(resumed_from)} "
                     f"(step {self.start_step}/{self.job.steps})")
        return resumed_from

    def wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t_session)

    def save(self, step: int, where: Path | None = None, keep: int | None = None) -> None:
        """A resumable checkpoint: in the stable phase of a multi-horizon run it belongs to the
        run's trunk (any branch may continue it), after the branch point to this branch."""
        job, tr, branch = self.job, self.tr, self.job.branch_step
        if where is None:
            where = job.trunk_dir if branch is not None and step <= branch else self.root
        self.saved_at = self.train_time
        t = time.perf_counter()
        path = ckpt.save_checkpoint(
            where, step, tr.ddp, tr.optimizer, tr.scheduler,
            tr.trainer_state(step, self.curve, self.train_time, self.wall()),
            keep=int(job.hardware["keep_checkpoints"]) if keep is None else keep,
        )
        self.log(f"[archscale] checkpoint {path} ({time.perf_counter() - t:.1f} s)")

    def run_steps(self, pre: Preemption) -> None:
        """Train from the resume point to the last step, checkpointing as the job says; on a
        stop signal save and raise :class:`Preempted`."""
        job, hw, steps, branch = self.job, self.job.hardware, self.job.steps, self.job.branch_step
        # A resumable checkpoint protects the training time since the last one; when that is shorter
        # than checkpoint_min_s (a run of seconds) re-training is cheaper than writing it, so only a
        # stop signal saves (and the final checkpoint, an output, is always written).
        min_s = float(hw["checkpoint_min_s"])
        ckpt_every = int(hw["checkpoint_interval"])
        self._recent: list[tuple[float, int]] = []  # (seconds, steps) since the last progress line
        self._t_log, self._n_log = time.perf_counter(), 0
        with pre:
            for step in range(self.start_step, steps):
                done = self._step(step)
                if done == branch and done not in ckpt.complete_steps(job.trunk_dir / POINTS):
                    self.save(done, job.trunk_dir / POINTS, keep=0)  # kept: the next horizon continues from here
                signum = _preempt_requested(pre, self.runtime.world_size)
                if signum is not None:
                    self.save(done)
                    raise Preempted(signum, done)
                if (done % ckpt_every == 0 or done == steps) and self.train_time - self.saved_at >= min_s:
                    self.save(done)

    def _step(self, step: int) -> int:
        """One optimizer step, its curve row (with validation loss at ``eval_interval``) and
        progress line; returns the number of steps done."""
        job, steps = self.job, self.job.steps
        t0 = time.perf_counter()
        with _fits(job, self.runtime):
            loss_t, lr, grad_norm = self.tr.train_step(step)
            loss = float(loss_t.item())  # the one host sync per step (the curve records every step)
        self.train_time += time.perf_counter() - t0
        done = step + 1
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            last = ckpt.latest_step(self.root)
            kept = f"the last good checkpoint is {self.root / ckpt.iter_name(last)}" if last is not None else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"{job.architecture.arch_id}: loss {loss} / grad norm {grad_norm} at step {done} is not finite; stopping. "
                f"{kept} (kept). Lower training.lr, raise warmup_fraction or tighten clip_grad."
            )
        row = {"step": done, "tokens": done * job.tokens_per_step, "loss": loss, "lr": lr,
               "grad_norm": None if grad_norm is None else float(grad_norm), "valid_loss": None,
               "elapsed_s": self.train_time}
        eval_every = int(job.recipe["eval_interval"])
        if eval_every > 0 and done % eval_every == 0 and done < steps:
            row["valid_loss"] = self.tr.evaluate()
        self.curve.append(row)
        self.tracker.step(row)
        self._progress(row)
        return done

    def _progress(self, row: dict) -> None:
        """A progress line every ``log_interval`` steps, at the first and the last step; the time
        left from the mean step time over the last five lines."""
        done, steps = row["step"], self.job.steps
        self._n_log += 1
        if done % int(self.job.hardware["log_interval"]) == 0 or done == steps or done == self.start_step + 1:
            dt = time.perf_counter() - self._t_log
            self._recent = (self._recent + [(dt, self._n_log)])[-5:]
            sec_per_step = sum(r[0] for r in self._recent) / max(1, sum(r[1] for r in self._recent))
            self.log(M.progress_line(done, steps, row["loss"], row["lr"], row["grad_norm"],
                                     self._n_log * self.job.tokens_per_step / max(dt, 1e-9),
                                     self.wall(), (steps - done) * sec_per_step)
                     + ("" if row["valid_loss"] is None else f" | valid {row['valid_loss']:.4f}"))
            self._t_log, self._n_log = time.perf_counter(), 0

    def finish(self) -> dict[str, Any]:
        """After training: validation, the final checkpoint, curve and metrics (each atomic,
        metrics last); returns the metrics record."""
        from ..data.dataset import unigram_entropy

        job, runtime, tr, curve, log = self.job, self.runtime, self.tr, self.curve, self.log
        t_eval = time.perf_counter()
        valid_loss = tr.evaluate()
        log(f"[archscale] validation loss {valid_loss:.4f} on {tr.eval_samples * job.seq_length:,} held-out tokens "
            f"({time.perf_counter() - t_eval:.1f} s)")
        if not math.isfinite(valid_loss):
            raise TrainingDiverged(f"{job.architecture.arch_id}: validation loss is {valid_loss}; "
                                   f"the checkpoints are kept in {self.root}")
        if curve:
            curve[-1]["valid_loss"] = valid_loss

        record = _metrics_record(job, runtime, tr, curve, self.train_time, valid_loss, self.resumed_from,
                                 unigram_entropy(tr.manifest))
        description = final_ckpt.describe(job.arch, job.seq_length, job.steps,
                                          record["tokens_seen"], runtime.precision)
        final_ckpt.save_final(job.final, tr.ddp, description)
        record["wall_time_s"] = self.wall()
        if runtime.rank == 0:
            from ..io import write_json, write_parquet

            write_parquet(job.curve, M.curve_table(curve))
            write_json(job.metrics, record)  # last: its presence means the run finished
        ckpt.keep_result(self.root, job)  # a copy that survives Snakemake deleting the outputs
        self.tracker.finish(record, job.steps)
        log(f"[archscale] done: train loss {record['final_train_loss']:.4f}, valid loss {valid_loss:.4f} "
            f"(unigram entropy {record['unigram_entropy']:.4f}), {record['tokens_per_s']:,.0f} tokens/s, "
            f"wall {M.format_seconds(record['wall_time_s'])}")
        return record


def _train(job: TrainJob, runtime, preemption: Preemption | None, log) -> dict[str, Any]:
    t_session = time.perf_counter()
    root = Path(job.checkpoint_dir)
    kept = ckpt.prepare(root, job, log=log)  # superseded checkpoints moved aside / back
    if kept is not None:
        return kept  # a finished run of this identity was restored from results/superseded/
    session = _Session(job, runtime, log, root, t_session)
    session.run_steps(preemption or Preemption())
    # A job resumed after training had finished lands here directly (start_step == steps).
    return session.finish()


def _oom_message(job: TrainJob, runtime, exc: BaseException) -> str:
    return (
        f"architecture {job.arch_id} does not fit in memory on {runtime.device} "
        f"(precision {runtime.precision}, micro-batch {job.hardware['micro_batch']} x seq {job.seq_length}, "
        f"tensor-parallel {runtime.tensor_parallel}): {str(exc).splitlines()[0]}. Lower training.micro_batch, "
        "raise training.tensor_parallel / enable training.distributed_optimizer, or give the job more memory "
        "(compute.mem_mb_per_job / a larger GPU)."
    )


def _metrics_record(job, runtime, tr, curve, train_time, valid_loss, resumed_from, entropy) -> dict[str, Any]:
    import torch

    arch = job.architecture
    steps = job.steps
    tokens_seen = steps * job.tokens_per_step
    tail = max(1, min(10, steps // 20))
    losses = [r["loss"] for r in curve[-tail:]]
    # train_time covers every step (it is carried through checkpoints), so it matches tokens_seen.
    speed = M.throughput(arch, job.seq_length, tokens_seen, train_time, job.hardware.get("peak_flops"),
                         runtime.world_size)
    return {
        "arch_id": arch.arch_id,
        "scale": job.budget.get("scale", arch.scale),
        "arch": job.arch,
        "params_total": arch.params_total,
        "params_non_embedding": arch.params_non_embedding,
        "tokens_budget": int(job.budget["tokens"]),
        "tokens_seen": tokens_seen,
        "steps": steps,
        "final_train_loss": sum(losses) / len(losses),
        "final_train_loss_steps": tail,
        "last_step_loss": curve[-1]["loss"] if curve else None,
        "valid_loss": valid_loss,
        "eval_tokens": tr.eval_samples * job.seq_length,
        "unigram_entropy": entropy,
        "train_time_s": train_time,
        "wall_time_s": None,  # filled in after the final checkpoint is written
        **speed,
        "flops_per_token": M.flops_per_token(arch, job.seq_length),
        "peak_flops": job.hardware.get("peak_flops"),
        "device": M.device_name(runtime.on_gpu),
        "precision": runtime.precision,
        "transformer_impl": runtime.transformer_impl,
        "world_size": runtime.world_size,
        "tensor_parallel": runtime.tensor_parallel,
        "micro_batch": tr.schedule.micro_batch,
        "threads": None if runtime.on_gpu else torch.get_num_threads(),
        "versions": M.versions(),
        "resumed_from_step": resumed_from,
        "recipe": job.recipe,
        **job.arch.network(),
        "schedule": "cosine" if job.schedule is None else "wsd",
        "warmup_steps": job.warmup_steps,
        "decay_steps": job.decay_steps,
        "branch_step": job.branch_step,
    }
