"""Training setup: data, model and optimizer of one :class:`~archscale.train.job.TrainJob` in
the current process (:class:`Trainer`); :mod:`archscale.train.loop` runs it."""

from __future__ import annotations

import math
from functools import partial

from .job import TrainJob


def log_rank0(msg: str) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(msg, flush=True)


class Trainer:
    def __init__(self, job: TrainJob, runtime, log=log_rank0):
        import torch

        self.job, self.runtime, self.log = job, runtime, log
        self.arch = job.architecture
        self.device = torch.device("cuda", runtime.local_rank) if runtime.on_gpu else torch.device("cpu")
        hw = job.hardware
        self.dp_size = runtime.world_size // runtime.tensor_parallel
        from megatron.core import parallel_state

        self.dp_rank = parallel_state.get_data_parallel_rank() if self.dp_size > 1 else 0

    # ---- construction -----------------------------------------------------------------
    def build(self) -> None:
        """Data, model, optimizer and schedule, in this order: the seed is set after the data
        (whose indices are built from it separately) and right before the model's weights."""
        self._build_data()
        self._build_model()
        self._build_optimizer()
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from ..model import causal_mask

        self.mask = causal_mask(self.job.seq_length, device=str(self.device))
        self.fwd_bwd = get_forward_backward_func()

    def _build_data(self) -> None:
        """The manifest, this rank's sample schedule and the train/valid datasets."""
        from ..data.dataset import Manifest, SampleSchedule, build_datasets, build_stream

        job, rec, hw = self.job, self.job.recipe, self.job.hardware
        self.manifest = Manifest.load(job.manifest)
        if self.manifest.vocab_size > self.arch.vocab:
            raise ValueError(
                f"{job.manifest}: vocab_size {self.manifest.vocab_size} exceeds the architecture's vocabulary "
                f"{self.arch.vocab} ({self.arch.arch_id}); set tokenizer.vocab_size to at least {self.manifest.vocab_size}"
            )
        self.schedule = SampleSchedule(job.global_batch, int(hw["micro_batch"]), self.dp_size, self.dp_rank)
        seq = job.seq_length
        chunk = self.schedule.micro_batch * self.dp_size
        self.eval_samples = max(1, math.ceil(int(rec["eval_tokens"]) / seq / chunk)) * chunk
        build = build_stream if job.schedule is not None else build_datasets  # branches share their samples
        self.train_ds, self.valid_ds = build(
            self.manifest, seq, job.steps * job.global_batch, self.eval_samples, seed=int(rec["seed"]),
            cache_dir=job.dataset_cache_dir,
        )

    def _build_model(self) -> None:
        """The seeded model (``Float16Module`` in bf16) wrapped in megatron-core's DDP."""
        import torch
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads

        from ..model import build_model, count_parameters

        job, rt, rec, hw = self.job, self.runtime, self.job.recipe, self.job.hardware
        torch.manual_seed(int(rec["seed"]))
        model = build_model(self.arch, rt, job.seq_length, init_std=float(rec["init_std"]))
        self.params_built = count_parameters(model) * rt.tensor_parallel  # approximate under TP
        config = model.config
        if rt.precision == "bf16":
            from megatron.core.transformer.module import Float16Module

            model = Float16Module(config, model)
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=bool(hw["distributed_optimizer"]),
        )
        self.ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
        config.finalize_model_grads_func = finalize_model_grads

    def _build_optimizer(self) -> None:
        """AdamW (megatron-core's optimizer over the DDP buffers) and its LR/WD schedule."""
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        job, rt, rec, hw = self.job, self.runtime, self.job.recipe, self.job.hardware
        lr = float(rec["lr"])
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=lr,
                min_lr=lr * float(rec["min_lr_ratio"]),
                weight_decay=float(rec["weight_decay"]),
                adam_beta1=float(rec["adam_beta1"]),
                adam_beta2=float(rec["adam_beta2"]),
                adam_eps=1e-8,
                clip_grad=float(rec["clip_grad"]),
                bf16=rt.precision == "bf16",
                params_dtype=rt.params_dtype,
                use_distributed_optimizer=bool(hw["distributed_optimizer"]),
            ),
            [self.ddp],
        )
        steps = job.steps
        # cosine: warm-up then decay over the whole run; a branch of a multi-horizon run:
        # warm-up, the stable phase at the peak, and its own decay (megatron-core's WSD). Its
        # schedule is the job's own even when it continues a checkpoint of the stable phase
        # written by another branch (override: the checkpoint's total steps are the other's).
        wsd = {} if job.schedule is None else dict(
            lr_decay_style="WSD", wsd_decay_steps=job.decay_steps, lr_wsd_decay_style=job.schedule["decay_style"],
            use_checkpoint_opt_param_scheduler=False, override_opt_param_scheduler=True,
        )
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0,
            max_lr=lr,
            min_lr=lr * float(rec["min_lr_ratio"]),
            lr_warmup_steps=job.warmup_steps,
            lr_decay_steps=steps,
            start_wd=float(rec["weight_decay"]),
            end_wd=float(rec["weight_decay"]),
            wd_incr_steps=steps,
            wd_incr_style="constant",
            **({"lr_decay_style": "cosine"} | wsd),
        )

    # ---- one step ---------------------------------------------------------------------
    def _batches(self, dataset, index_ranges):
        from ..data.dataset import collate

        for idx in index_ranges:
            batch = collate(dataset, idx)
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], self.mask, labels=batch["labels"])
        return output, partial(self._loss, batch["loss_mask"])

    @staticmethod
    def _loss(loss_mask, output):
        losses = output.float()
        mask = loss_mask.float()
        loss = (losses * mask).sum() / mask.sum()
        # The schedule divides the returned loss in place: report a copy.
        return loss, {"lm loss": loss.detach().clone()}

    def _mean_loss(self, records) -> "torch.Tensor":
        import torch
        import torch.distributed as dist
        from megatron.core import parallel_state

        loss = torch.stack([r["lm loss"] for r in records]).mean()
        if self.dp_size > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG, group=parallel_state.get_data_parallel_group())
        return loss

    def train_step(self, step: int):
        s = self.schedule
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        records = self.fwd_bwd(
            forward_step_func=self._forward_step,
            data_iterator=self._batches(self.train_ds, (s.indices(step, m) for m in range(s.microbatches))),
            model=[self.ddp],
            num_microbatches=s.microbatches,
            seq_length=self.job.seq_length,
            micro_batch_size=s.micro_batch,
            forward_only=False,
        )
        lr = self.optimizer.param_groups[0]["lr"]
        _, grad_norm, _ = self.optimizer.step()
        self.scheduler.step(increment=1)
        return self._mean_loss(records), lr, grad_norm

    def evaluate(self) -> float:
        import torch

        s = self.schedule
        per_rank = self.eval_samples // self.dp_size
        start = self.dp_rank * per_rank
        ranges = [range(start + i, start + i + s.micro_batch) for i in range(0, per_rank, s.micro_batch)]
        self.ddp.eval()
        with torch.no_grad():
            records = self.fwd_bwd(
                forward_step_func=self._forward_step,
                data_iterator=self._batches(self.valid_ds, ranges),
                model=[self.ddp],
                num_microbatches=len(ranges),
                seq_length=self.job.seq_length,
                micro_batch_size=s.micro_batch,
                forward_only=True,
            )
        self.ddp.train()
        return float(self._mean_loss(records).item())

    # ---- checkpoints ------------------------------------------------------------------
    def trainer_state(self, step: int, curve: list[dict], train_time: float, wall_time: float) -> dict:
        import torch

        return {
            "step": step,
            "curve": curve,
            "train_time_s": train_time,
            "wall_time_s": wall_time,
            "rng_cpu": torch.get_rng_state(),
            "arch_id": self.arch.arch_id,
        }
