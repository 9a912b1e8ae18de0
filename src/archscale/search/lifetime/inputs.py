"""The lifetime search's inputs and its numbers: a deployment workload, prices, a demand, and
every number as an estimate with its interval and source."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..targets import SearchError


MEASURED, COST_MODEL, ASSUMPTION = "measured", "cost model", "assumption"
#: N of the candidates: the target N times these (2^-2 .. 2^2 in quarter octaves).
DEFAULT_N_FACTORS = tuple(float(2.0**e) for e in np.linspace(-2, 2, 17))
J_PER_KWH = 3.6e6
ROLES = ("baseline", "panda", "surefire", "lifetime")
ARCH_FIELDS = ("arch_id", "name", "params_non_embedding", "layers", "d_model", "ffn", "heads", "kv_heads", "gqa",
               "d_over_sqrt_n", "mlp_attn_ratio")


class LifetimeError(SearchError):
    """A lifetime search that cannot run; the message names the input and its value."""


def estimate(value: float | None, low: float | None = None, high: float | None = None, source: str = ASSUMPTION,
             detail: str | None = None) -> dict[str, Any]:
    """A number with its interval (None when unknown) and where it came from."""
    def f(v):
        return None if v is None else float(v)
    return {"value": f(value), "low": f(low), "high": f(high), "source": source, "detail": detail}


def ends(e: Mapping[str, Any] | None) -> tuple[float, float]:
    """(low, high) of an estimate, the value where the interval is unknown; (0, 0) for None."""
    if e is None or e.get("value") is None:
        return 0.0, 0.0
    lo, hi = e.get("low"), e.get("high")
    return (e["value"] if lo is None else lo), (e["value"] if hi is None else hi)


@dataclass(frozen=True)
class Deployment:
    """The serving workload: batch size, prompt and output lengths, and the KV context of
    ``decode_at_context`` (None: prefill of ``input_len`` then decode)."""

    batch_size: int
    input_len: int
    output_len: int
    context: int | None = None

    def __post_init__(self) -> None:
        for key in ("batch_size", "output_len"):
            if int(getattr(self, key)) < 1:
                raise LifetimeError(f"deployment {key}: {getattr(self, key)} must be >= 1")
        if int(self.input_len) < (0 if self.context else 1):
            raise LifetimeError(f"deployment input_len: {self.input_len} must be >= 1 (0 only with a context)")
        if self.context is not None and int(self.context) < 1:
            raise LifetimeError(f"deployment context: {self.context} must be >= 1")

    @property
    def mode(self) -> str:
        return "decode_at_context" if self.context else "prefill+decode"

    @property
    def latency_context(self) -> int:
        """KV length of the batch-1 latency: the context, else the prompt length."""
        return int(self.context or self.input_len)

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "input_len": self.input_len, "output_len": self.output_len,
                "context": self.context, "mode": self.mode}


@dataclass(frozen=True)
class Prices:
    """Price per GPU-hour (training and serving; each can be overridden), training MFU and peak
    FLOP/s, the training sequence length (attention FLOPs) and the energy price per kWh."""

    price_per_gpu_hour: float = 1.0
    mfu: float = 0.35
    peak_flops: float = 989e12
    seq_length: int = 2048
    energy_price_per_kwh: float | None = None
    train_price_per_gpu_hour: float | None = None
    serve_price_per_gpu_hour: float | None = None
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for key in ("price_per_gpu_hour", "train_price_per_gpu_hour", "serve_price_per_gpu_hour",
                    "energy_price_per_kwh"):
            v = getattr(self, key)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise LifetimeError(f"{key}: {v} must be a finite number >= 0")
        if not (math.isfinite(self.mfu) and 0 < self.mfu <= 1):
            raise LifetimeError(f"mfu: {self.mfu} must lie in (0, 1]")
        if not (math.isfinite(self.peak_flops) and self.peak_flops > 0):
            raise LifetimeError(f"peak_flops: {self.peak_flops} must be > 0")
        if int(self.seq_length) < 1:
            raise LifetimeError(f"seq_length: {self.seq_length} must be >= 1")

    @property
    def train_price(self) -> float:
        return self.price_per_gpu_hour if self.train_price_per_gpu_hour is None else self.train_price_per_gpu_hour

    @property
    def serve_price(self) -> float:
        return self.price_per_gpu_hour if self.serve_price_per_gpu_hour is None else self.serve_price_per_gpu_hour

    def source(self, key: str) -> str:
        return dict(self.sources).get(key, ASSUMPTION)

    def to_dict(self) -> dict[str, Any]:
        return {"train_price_per_gpu_hour": self.train_price, "serve_price_per_gpu_hour": self.serve_price,
                "mfu": self.mfu, "peak_flops": self.peak_flops, "seq_length": self.seq_length,
                "energy_price_per_kwh": self.energy_price_per_kwh,
                "sources": {k: self.source(k) for k in ("price_per_gpu_hour", "mfu", "peak_flops", "seq_length",
                                                        "energy_price_per_kwh")}}


def check_demand(demand: float, what: str = "lifetime tokens") -> float:
    try:
        t = float(demand)
    except (TypeError, ValueError):
        raise LifetimeError(f"{what}: '{demand}' is not a number") from None
    if not math.isfinite(t) or t < 0:
        raise LifetimeError(f"{what}: {demand} must be a finite number of output tokens >= 0")
    return t
