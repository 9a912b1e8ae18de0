"""The description of one training job, as the launcher hands it to the training process.

``identity`` fields (architecture, budget, recipe, rope base) decide the result and come from
the rule's ``params``; ``hardware`` fields (micro-batch, threads, precision, layer spec,
parallelism, intervals) do not, and come from the config at run time.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..arch import Architecture

RECIPE_KEYS = (
    "seq_length", "global_batch", "lr", "min_lr_ratio", "warmup_fraction", "weight_decay",
    "adam_beta1", "adam_beta2", "clip_grad", "init_std", "seed", "eval_tokens", "eval_interval",
)

HARDWARE_DEFAULTS: dict[str, Any] = {
    "micro_batch": 32,
    "threads": 1,
    "precision": "auto",
    "transformer_impl": "auto",
    "tensor_parallel": 1,
    "distributed_optimizer": False,
    "log_interval": 10,
    "checkpoint_interval": 200,
    "keep_checkpoints": 2,
    "peak_flops": None,
    # Live logging (archscale.train.tracking): TensorBoard on by default, W&B settings or None.
    "tensorboard": True,
    "wandb": None,
}


@dataclass
class TrainJob:
    arch: dict[str, Any]
    budget: dict[str, Any]
    recipe: dict[str, Any]
    manifest: str
    checkpoint_dir: str
    metrics: str
    curve: str
    final: str
    rope_base: float = 500000.0
    hardware: dict[str, Any] = field(default_factory=dict)
    tokenizer_meta: str | None = None

    def __post_init__(self) -> None:
        missing = [k for k in RECIPE_KEYS if k not in self.recipe]
        if missing:
            raise ValueError(f"training recipe lacks {missing}")
        self.hardware = {**HARDWARE_DEFAULTS, **(self.hardware or {})}
        unknown = set(self.hardware) - set(HARDWARE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown hardware knobs {sorted(unknown)}")

    # ---- derived ------------------------------------------------------------------
    @property
    def architecture(self) -> Architecture:
        return Architecture.from_dict(self.arch)

    @property
    def arch_id(self) -> str:
        return self.architecture.arch_id

    @property
    def seq_length(self) -> int:
        return int(self.recipe["seq_length"])

    @property
    def global_batch(self) -> int:
        return int(self.recipe["global_batch"])

    @property
    def tokens_per_step(self) -> int:
        return self.seq_length * self.global_batch

    @property
    def steps(self) -> int:
        """Optimizer steps to cover the token budget D (the last step may overshoot by < 1 batch)."""
        return max(1, math.ceil(int(self.budget["tokens"]) / self.tokens_per_step))

    @property
    def warmup_steps(self) -> int:
        return int(round(float(self.recipe["warmup_fraction"]) * self.steps))

    def fingerprint(self) -> dict[str, Any]:
        """What a resumable checkpoint must match to be resumed."""
        ident = {"arch": self.arch, "budget": self.budget, "recipe": self.recipe, "rope_base": self.rope_base}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        return {"arch_id": self.arch_id, "digest": digest, **ident}

    # ---- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainJob":
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainJob":
        from ..io import read_json

        return cls.from_dict(read_json(path))
