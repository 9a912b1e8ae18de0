"""The description of one training job, as the launcher hands it to the training process.

``identity`` fields (the architecture spec, budget, recipe) decide the result and come from
the rule's ``params``; ``hardware`` fields (micro-batch, threads, precision, layer spec,
parallelism, intervals) do not, and come from the config at run time. Which training keys are
which is marked in the schema (``x-identity``; :mod:`archscale.study`), and so are the defaults.
The job holds an :class:`~archscale.arch.Architecture`; it becomes a dict in ``job.json`` only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..arch import Architecture
from ..config import schema_default
from ..study import hardware_keys, identity_keys


def _fingerprint(arch_id: str, ident: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return {"arch_id": arch_id, "digest": digest, **ident}


def hardware_defaults() -> dict[str, Any]:
    """The training hardware knobs' schema defaults, plus the device peak (None: no MFU)."""
    return {**{k: schema_default(f"training.{k}") for k in hardware_keys("training")}, "peak_flops": None}


@dataclass
class TrainJob:
    arch: Architecture
    budget: dict[str, Any]
    recipe: dict[str, Any]
    manifest: str
    checkpoint_dir: str
    metrics: str
    curve: str
    final: str
    hardware: dict[str, Any] = field(default_factory=dict)
    tokenizer_meta: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.arch, Architecture):
            self.arch = Architecture.from_dict(self.arch)
        missing = [k for k in identity_keys("training") if k not in self.recipe]
        if missing:
            raise ValueError(f"training recipe lacks {missing}")
        defaults = hardware_defaults()
        self.hardware = {**defaults, **(self.hardware or {})}
        unknown = set(self.hardware) - set(defaults)
        if unknown:
            raise ValueError(f"unknown hardware knobs {sorted(unknown)}")

    # ---- derived ------------------------------------------------------------------
    @property
    def architecture(self) -> Architecture:
        return self.arch

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
    def schedule(self) -> dict[str, Any] | None:
        """The warmup-stable-decay schedule of a branch of a multi-horizon run (None: cosine)."""
        return self.budget.get("schedule")

    @property
    def warmup_steps(self) -> int:
        if self.schedule is not None:
            return int(self.schedule["warmup_steps"])  # the same for every branch of the run
        return int(round(float(self.recipe["warmup_fraction"]) * self.steps))

    @property
    def decay_steps(self) -> int:
        """Steps of the final decay: the whole run after warm-up (cosine) or the branch's decay."""
        if self.schedule is None:
            return self.steps - self.warmup_steps
        return max(1, int(round(float(self.schedule["decay_fraction"]) * self.steps)))

    @property
    def branch_step(self) -> int | None:
        """The step where this branch leaves the shared stable phase (None: a cosine run)."""
        return None if self.schedule is None else self.steps - self.decay_steps

    @property
    def trunk_dir(self) -> Path | None:
        """Checkpoints of the shared stable phase (``results/checkpoints/<trunk>-stable``, beside
        the branches' own directories): the periodic ones, and under ``points/`` the kept state at
        each branch point."""
        if self.schedule is None:
            return None
        return Path(self.checkpoint_dir).parent / f"{self.schedule['trunk']}-stable"

    @property
    def dataset_cache_dir(self) -> Path:
        """The dataset index cache of this job (megatron-core writes its shuffle indices there).

        Private to the run (the branches of a multi-horizon run share it: they run one after the
        other): megatron-core's default cache beside the data is shared by every job, and two
        jobs building the same indices at once read each other's half-written files."""
        name = str(self.schedule["trunk"]) if self.schedule is not None else Path(self.checkpoint_dir).name
        # beside the checkpoint directories, like their locks: never part of what is moved aside
        return Path(self.checkpoint_dir).parent / f"{name}.dataset-cache"

    def fingerprint(self) -> dict[str, Any]:
        """What a resumable checkpoint must match to be resumed."""
        ident = {"arch": self.arch.to_dict(), "budget": self.budget, "recipe": self.recipe, **self.arch.network()}
        return _fingerprint(self.arch_id, ident)

    def trunk_fingerprint(self) -> dict[str, Any]:
        """What the stable phase's checkpoints must match to be continued: everything but the
        branch's own budget and decay (every branch of a run shares it)."""
        sched = {k: v for k, v in (self.schedule or {}).items() if k not in ("decay_fraction", "decay_style")}
        ident = {"arch": self.arch.to_dict(), "stable": sched, "recipe": self.recipe, **self.arch.network(),
                 "scale": self.budget.get("scale")}
        return _fingerprint(self.arch_id, ident)

    # ---- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arch": self.arch.spec_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainJob":
        """A job of :meth:`to_dict` (older job files keep the network settings beside ``arch``)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "arch": Architecture.from_record(data)})

    @classmethod
    def load(cls, path: str | Path) -> "TrainJob":
        from ..io import read_json

        return cls.from_dict(read_json(path))
