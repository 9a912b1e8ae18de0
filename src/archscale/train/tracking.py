"""Live training curves and measurements in TensorBoard and Weights & Biases.

Training writes TensorBoard event files to ``results/train/{arch}/tb/`` (on by default,
``training.tensorboard``) and, when ``training.wandb`` is set, logs to a W&B run of the study's
group. Scalars per optimizer step: ``train/loss``, ``train/lr``, ``train/grad_norm``,
``train/tokens_per_s`` (this step), ``train/tokens``, ``valid/loss`` (at ``eval_interval`` and at
the end); the architecture and recipe are the run's hparams (W&B: its config). Throughput and
energy records (:func:`log_throughput`) go to ``results/train/{arch}/tb/throughput/`` (x axis:
batch size) and to a W&B run of ``job_type`` throughput.

None of this is part of a job's identity: the settings travel as hardware knobs (not in the
rule's params, not in the checkpoint fingerprint), and the log directories are not declared
outputs. A resumed job appends (TensorBoard hides the events past the resumed step; W&B resumes
the same run, its id derived from the study and the job's fingerprint); a job that starts afresh
removes the event files of the run it replaces. Only rank 0 logs.

This module imports neither torch nor wandb at import time (the launcher imports it).
"""

from __future__ import annotations

import atexit
import hashlib
import math
from pathlib import Path
from typing import Any, Mapping

TB_DIRNAME = "tb"
THROUGHPUT_DIRNAME = "throughput"
WANDB_MODES = ("online", "offline", "disabled")
#: Seconds between flushes of the TensorBoard event file (a running study is watched live).
TB_FLUSH_SECS = 15


def settings_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``tensorboard`` and ``wandb`` knobs of a job from the workflow config (never identity).

    W&B's group defaults to ``run_name`` (the study); tags to the config's ``training.wandb.tags``.
    """
    training = config.get("training", {}) or {}
    wb = training.get("wandb")
    if wb is not None:
        if not isinstance(wb, Mapping) or not wb.get("project"):
            raise ValueError(f"training.wandb must be a mapping with a 'project', got {wb!r}")
        mode = wb.get("mode")
        if mode is not None and mode not in WANDB_MODES:
            raise ValueError(f"training.wandb.mode: {mode!r} is not one of {', '.join(WANDB_MODES)} (or null)")
        wb = {
            "project": str(wb["project"]),
            "entity": wb.get("entity"),
            "group": wb.get("group") or config.get("run_name") or None,
            "tags": [str(t) for t in (wb.get("tags") or [])],
            "mode": mode,
        }
    return {"tensorboard": bool(training.get("tensorboard", True)), "wandb": wb}


def arch_tags(arch, scale: str | None) -> list[str]:
    """W&B tags of a run: its scale and the architecture knobs of the study (shape, GQA, ratio).
    ``arch`` is an :class:`~archscale.arch.Architecture` or its dict."""
    from ..arch import Architecture

    a = arch if isinstance(arch, Architecture) else Architecture.from_dict(dict(arch))
    tags = [f"scale:{scale or a.scale}"] if (scale or a.scale) else []
    return tags + [f"layers:{a.layers}", f"d_model:{a.d_model}", f"gqa:{a.gqa}",
                   f"mlp_attn:{a.mlp_attn_ratio:.2f}", f"ffn:{a.ffn}"]


def hparams(job) -> dict[str, Any]:
    """The architecture and recipe of ``job`` as flat scalar hparams (TensorBoard's HParams tab)."""
    a = job.architecture
    out: dict[str, Any] = {"arch_id": a.arch_id, "scale": str(job.budget.get("scale", a.scale)),
                           "tokens_budget": int(job.budget["tokens"]), **job.architecture.network()}
    for key, value in a.to_dict().items():
        if isinstance(value, (bool, int, float, str)) and key not in ("arch_id", "scale"):
            out[f"arch.{key}"] = value
    for key, value in job.recipe.items():
        if isinstance(value, (bool, int, float, str)):
            out[f"recipe.{key}"] = value
    return out


def _run_id(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def _remove_events(directory: Path, log) -> None:
    old = sorted(directory.glob("events.out.tfevents.*"))
    for path in old:
        path.unlink()
    if old:
        log(f"[archscale] removed {len(old)} TensorBoard event file(s) of a previous run from {directory}")


def _scalar(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _init_wandb(settings: Mapping[str, Any], directory: Path, log, **kwargs):
    """A W&B run, or None with a warning when it cannot start (training goes on without it)."""
    try:
        import wandb
    except ImportError as exc:
        raise RuntimeError(
            "training.wandb is set but the wandb package is not installed: pip install 'archscale[wandb]' "
            "(or remove training.wandb)"
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(project=settings["project"], entity=settings.get("entity"), group=settings.get("group"),
                          mode=settings.get("mode"), dir=str(directory), reinit="create_new", **kwargs)
    except Exception as exc:  # noqa: BLE001 - no network, bad key: the run goes on, logged to TensorBoard
        log(f"[archscale] WARNING: Weights & Biases did not start ({type(exc).__name__}: {exc}); this job logs to "
            "TensorBoard only. Without network set training.wandb.mode: offline and upload later with "
            f"`wandb sync {directory}/wandb/offline-run-*`.")
        return None


class Tracker:
    """Rank 0's TensorBoard writer and W&B run for one training job (both optional)."""

    def __init__(self, tb=None, wandb_run=None, train_time: float = 0.0):
        self.tb, self.wandb_run = tb, wandb_run
        self._elapsed = train_time
        self._closed = False
        atexit.register(self.close)  # preemption and errors leave through the interpreter's exit

    @classmethod
    def open(cls, job, runtime, start_step: int, train_time: float, log=print) -> "Tracker":
        """Start logging ``job`` at ``start_step`` (0: a fresh run; else resumed after ``train_time`` s)."""
        settings = {"tensorboard": job.hardware.get("tensorboard", True), "wandb": job.hardware.get("wandb")}
        if runtime.rank != 0 or not (settings["tensorboard"] or settings["wandb"]):
            return cls(train_time=train_time)
        out_dir = Path(job.metrics).parent
        tb = None
        if settings["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            tb_dir = out_dir / TB_DIRNAME
            fresh = start_step == 0 or not any(tb_dir.glob("events.out.tfevents.*"))
            if start_step == 0 and tb_dir.is_dir():
                _remove_events(tb_dir, log)
            # purge_step: TensorBoard hides the events an interrupted session logged after its last checkpoint.
            tb = SummaryWriter(str(tb_dir), purge_step=start_step + 1 if start_step else None, flush_secs=TB_FLUSH_SECS)
            if fresh:
                for summary in hparams_summary(hparams(job), {"valid/loss": None, "train/loss": None}):
                    tb.file_writer.add_summary(summary)
        run = None
        wb = settings["wandb"]
        if wb:
            fp = job.fingerprint()
            run = _init_wandb(
                wb, out_dir, log, name=job.arch_id, job_type="train",
                id=_run_id(wb.get("group"), fp["digest"], "train"), resume="allow",
                tags=sorted(set(wb.get("tags", []) + arch_tags(job.arch, job.budget.get("scale")))),
                config={"arch": job.architecture.to_dict(), "budget": job.budget, "recipe": job.recipe,
                        **job.architecture.network(), "hardware": {k: v for k, v in job.hardware.items() if k != "wandb"}},
            )
        return cls(tb, run, train_time)

    def step(self, row: Mapping[str, Any]) -> None:
        """Log one row of the curve (:data:`archscale.train.metrics.CURVE_COLUMNS`)."""
        if self.tb is None and self.wandb_run is None:
            return
        step = int(row["step"])
        dt = float(row["elapsed_s"]) - self._elapsed
        self._elapsed = float(row["elapsed_s"])
        tokens = int(row["tokens"])
        tokens_per_step = tokens / step
        values = {
            "train/loss": _scalar(row["loss"]), "train/lr": _scalar(row["lr"]),
            "train/grad_norm": _scalar(row.get("grad_norm")), "train/tokens": float(tokens),
            "train/tokens_per_s": tokens_per_step / dt if dt > 0 else None,
            "valid/loss": _scalar(row.get("valid_loss")),
        }
        self._log({k: v for k, v in values.items() if v is not None}, step)

    def finish(self, record: Mapping[str, Any], step: int) -> None:
        """Log the final validation loss and the run's summary (the metrics record), then close."""
        self._log({"valid/loss": record["valid_loss"]}, step)
        if self.wandb_run is not None:
            keys = ("valid_loss", "final_train_loss", "unigram_entropy", "tokens_seen", "tokens_per_s", "mfu",
                    "train_time_s", "wall_time_s", "params_total", "params_non_embedding")
            self.wandb_run.summary.update({k: record[k] for k in keys if record.get(k) is not None})
        self.close()

    def _log(self, values: Mapping[str, float], step: int) -> None:
        if self.tb is not None:
            for tag, value in values.items():
                self.tb.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(dict(values), step=step)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


#: Per batch size: record key -> scalar tag of :func:`log_throughput`.
THROUGHPUT_SCALARS = {
    "prefill_latency_s": "throughput/prefill_latency_s",
    "decode_tokens_per_s": "throughput/decode_tokens_per_s",
    "output_tokens_per_s": "throughput/output_tokens_per_s",
    "total_tokens_per_s": "throughput/total_tokens_per_s",
    "cv_output_tokens_per_s": "throughput/cv_output_tokens_per_s",
    "peak_memory_bytes": "throughput/peak_memory_bytes",
    "energy_j_per_output_token": "energy/j_per_output_token",
    "power_mean_w": "energy/power_mean_w",
}


def log_throughput(record: Mapping[str, Any], config: Mapping[str, Any], train_dir: str | Path, log=print) -> None:
    """Log a throughput job's record (:func:`archscale.throughput.run_job`) next to its training curves.

    ``train_dir`` is ``results/train/{arch}``; TensorBoard events go to its ``tb/throughput/``
    (step = batch size; a rerun replaces them), W&B (when ``training.wandb`` is set) gets a new
    run of ``job_type`` throughput in the study's group. Missing values (no NVML: no energy) are
    not logged.
    """
    settings = settings_from_config(config)
    rows = []
    for rec in record["records"]:
        values = {tag: _scalar(rec.get(key)) for key, tag in THROUGHPUT_SCALARS.items()}
        rows.append((int(rec["batch_size"]), {k: v for k, v in values.items() if v is not None}))
    train_dir = Path(train_dir)
    if settings["tensorboard"]:
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = train_dir / TB_DIRNAME / THROUGHPUT_DIRNAME
        if tb_dir.is_dir():
            _remove_events(tb_dir, log)
        with SummaryWriter(str(tb_dir)) as tb:
            for batch, values in rows:
                for tag, value in values.items():
                    tb.add_scalar(tag, value, batch)
            tb.add_text("throughput/device", f"{record.get('device_name')} ({record.get('engine')}, "
                        f"{record.get('precision')}, weights {record.get('weights')})")
    wb = settings["wandb"]
    if wb:
        arch = record["arch"]
        run = _init_wandb(
            wb, train_dir, log, name=f"{record['arch_id']} throughput", job_type="throughput",
            tags=sorted(set(wb["tags"] + arch_tags(arch, arch.get("scale")))),
            config={"arch": dict(arch), "workload": record.get("workload"), "device_name": record.get("device_name"),
                    "engine": record.get("engine"), "precision": record.get("precision")},
        )
        if run is not None:
            run.define_metric("batch_size")
            run.define_metric("throughput/*", step_metric="batch_size")
            run.define_metric("energy/*", step_metric="batch_size")
            for batch, values in rows:
                run.log({"batch_size": batch, **values})
            run.finish()
