"""Lifetime cost: which (N, D, shape) reaches a loss target most cheaply over training plus serving.

For a loss target and a lifetime serving demand ``T`` (output tokens served over the model's life)
:func:`lifetime_search` minimises

    total(T) = training cost + T * (serving cost per token + energy cost per token)

over N (the target N times each of ``n_factors``, the scale's layers, head dim and vocabulary
kept), the shape (every candidate of :func:`~archscale.search.algorithm.enumerate_candidates` at
that N) and D (the fewest training tokens whose predicted loss meets the target).

* **Loss.** ``L = law(d/sqrt(N), r) applied to L_opt(N, D)``; ``L_opt`` is the law's Chinchilla
  part, else Epoch AI's published Chinchilla fit (an assumption, named in the output). Both law
  forms are affine in ``L_opt`` (multiplicative ``a*L_opt``, additive ``L_opt + b``), so the
  tokens needed have a closed form. With bootstrap samples of the law's coefficients the
  constraint is the upper end of the predicted loss's interval (``level``): a candidate trains the
  tokens that meet the target even there; the interval of tokens needed runs from the lower end's
  to the upper end's. Without samples (the paper's published coefficients) it is the point.
* **Training** (the plan's arithmetic, :mod:`archscale.cost`): FLOPs ``6ND`` plus attention and
  logits at the training sequence length, GPU-hours at ``peak_flops * mfu``, times the price.
* **Serving**: ``T / (output tokens/s)`` seconds at the deployment workload (batch, input and
  output lengths, context), times the price. Output tokens/s is *measured* where a throughput
  record of that architecture at that workload exists (its median and 95% interval), else the
  calibrated *cost model*'s prediction with the interval of its measured/predicted ratios on its
  calibration points.
* **Energy**: kWh from the record's NVML joules per output token where measured, times the
  energy price; not counted where not measured (the output says so per choice).

Every number carries its source ("measured", "cost model", "assumption") and, where one exists, an
interval. The crossover (:func:`crossovers`) gives the demand at which one choice (the baseline,
Panda, Surefire at the target (N, D), or the lifetime optimum) overtakes another; its interval is
the range over the ends of the training-cost (law) and per-token (throughput) intervals.

A latency bound (``max_latency_ms``: batch-1 time per output token at the deployment context) keeps
only the candidates an interactive deployment can use; the objective stays the lifetime cost.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..arch import Architecture, Scale
from ..cost import training_flops_per_token
from ..law.calibration import u_factor
from ..law.chinchilla import predict_loss as chinchilla_predict
from ..law.laws import Law
from .algorithm import enumerate_candidates
from .anyscale import LossTarget, search_at_scale
from .targets import SearchError

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


def _ends(e: Mapping[str, Any] | None) -> tuple[float, float]:
    """(low, high) of an estimate, the value where the interval is unknown; (0, 0) for None."""
    if e is None or e.get("value") is None:
        return 0.0, 0.0
    lo, hi = e.get("low"), e.get("high")
    return (e["value"] if lo is None else lo), (e["value"] if hi is None else hi)


# ---- inputs ----------------------------------------------------------------------------
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


# ---- the loss model: tokens needed to meet the target ----------------------------------
def chinchilla_not_identified(chinchilla: dict | None) -> str | None:
    """Why a fitted Chinchilla part cannot price D (its fit's own warning: N and D collinear, a
    coefficient without effect), or None. Such a fit reproduces the runs' one N-D line and says
    nothing about other budgets: a lifetime optimum read from it would be an artefact."""
    for text in (chinchilla or {}).get("warnings") or []:
        if "collinear" in text or "not identifiable" in text:
            return text.split(":")[0]
    return None


class LossModel:
    """Predicted loss of a shape at (N, D), and the tokens it needs to meet a target."""

    def __init__(self, law: Law, form: str | None = None, level: float = 0.95):
        from ..science.simulate import EPOCH_CHINCHILLA

        if not 0 < level < 1:
            raise LifetimeError(f"interval level: {level} must lie in (0, 1)")
        self.law, self.form, self.level = law, form or law.default_form, float(level)
        law._form(self.form)  # an unknown form is a LawError naming the law's forms
        unidentified = chinchilla_not_identified(law.chinchilla)
        if law.chinchilla and "params" in law.chinchilla and not unidentified:
            self.params, self.l_opt_source = dict(law.chinchilla["params"]), f"law '{law.name}' (its Chinchilla part)"
        else:
            self.params = dict(EPOCH_CHINCHILLA)
            why = (f"the Chinchilla part of law '{law.name}' is not identified ({unidentified})" if unidentified
                   else f"law '{law.name}' has no Chinchilla part")
            self.l_opt_source = (f"{ASSUMPTION}: Epoch AI's Chinchilla fit (Besiroglu et al. 2024); {why}, so "
                                 "L_opt(N, D) away from its runs needs one")
        self.samples = law.samples(self.form)
        self.interval_reason = None if self.samples is not None else (
            f"law '{law.name}' carries no bootstrap samples: the point prediction is the constraint")

    def l_opt(self, n, d):
        return chinchilla_predict(self.params, np.asarray(n, float), np.asarray(d, float))

    def affine(self, x, r) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per end (point, low, high): ``(a, b)`` with predicted loss ``a * L_opt + b``."""
        x, r = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(r, float))
        b = np.asarray(self.law.predict(x, r, 0.0, self.form), float)
        a = np.asarray(self.law.predict(x, r, 1.0, self.form), float) - b
        out = {"point": (a, b)}
        if self.samples is None:
            out["low"] = out["high"] = (a, b)
            return out
        s = self.samples
        fa = u_factor(s[:, :3].T[:, :, None], x[None, :])
        fb = u_factor(s[:, 3:].T[:, :, None], r[None, :])
        q = ((1 - self.level) / 2, 1 - (1 - self.level) / 2)
        if self.form == "multiplicative":
            lo, hi = np.nanquantile(fa * fb, q, axis=0)
            out["low"], out["high"] = (lo, np.zeros_like(lo)), (hi, np.zeros_like(hi))
        else:
            lo, hi = np.nanquantile(fa + fb, q, axis=0)
            out["low"], out["high"] = (np.ones_like(lo), lo), (np.ones_like(hi), hi)
        return out

    def tokens_needed(self, n, a, b, target: float) -> np.ndarray:
        """Fewest tokens D with ``a * L_opt(N, D) + b <= target`` (inf where no D reaches it)."""
        p = self.params
        n, a, b = (np.asarray(v, float) for v in (n, a, b))
        with np.errstate(divide="ignore", invalid="ignore"):
            rem = (target - b) / a - p["E"] - p["A"] / n ** p["alpha"]
            d = np.where((a > 0) & (rem > 0), (p["B"] / rem) ** (1.0 / p["beta"]), np.inf)
        return np.maximum(d, 1.0)

    def loss(self, ab: tuple[np.ndarray, np.ndarray], n, d) -> np.ndarray:
        return ab[0] * self.l_opt(n, d) + ab[1]


# ---- serving: throughput, latency and energy of an architecture at the deployment -----------
class Serving:
    """Output tokens/s, batch-1 latency and energy per output token at a :class:`Deployment`.

    ``records``: measured throughput records (docs/pipeline.md ``throughput/{arch}.json``) by arch
    id, each as ``(where, record)``; ``cost_model``: the calibrated roofline
    (``throughput/cost_model.json``); ``rate_fn``: any other output tokens/s function (labelled
    ``rate_source``). A measured record at the deployment's workload wins; otherwise the cost
    model; an architecture with neither is an error.
    """

    def __init__(self, deployment: Deployment, cost_model: dict | None = None,
                 records: Mapping[str, tuple[str, dict]] | None = None, level: float = 0.95,
                 rate_fn: Callable[[Architecture], float] | None = None, rate_source: str = ASSUMPTION):
        self.deployment, self.cost_model, self.records = deployment, cost_model, dict(records or {})
        self.level, self.rate_fn, self.rate_source = level, rate_fn, rate_source
        self._cache: dict[tuple[str, str], Any] = {}
        self._ratio = self._cost_model_ratio() if cost_model else None
        self._check_batch()

    def _device(self) -> dict:
        key = self.cost_model.get("default_device")
        try:
            return self.cost_model["devices"][key]
        except (KeyError, TypeError):
            raise LifetimeError(f"cost model: no calibration for its default device '{key}'") from None

    def _cost_model_ratio(self) -> tuple[float, float, str]:
        """Interval of measured/predicted output tokens/s over the cost model's calibration points."""
        dev = self._device()
        pts = [p for p in dev.get("points") or [] if p.get("predicted_output_tokens_per_s")]
        ratio = np.array([p["output_tokens_per_s"] / p["predicted_output_tokens_per_s"] for p in pts], float)
        q = ((1 - self.level) / 2, 1 - (1 - self.level) / 2)
        if ratio.size >= 3:
            lo, hi = np.quantile(ratio, q)
            return float(lo), float(hi), f"{ratio.size} calibration points, measured/predicted {lo:.3g}-{hi:.3g}"
        err = dev.get("mean_abs_rel_error")
        if err is None:
            return 1.0, 1.0, "no calibration error recorded: interval unknown"
        return 1.0 - float(err), 1.0 + float(err), f"+-{err:.3g} (mean absolute relative error, {ratio.size} points)"

    def _check_batch(self) -> None:
        """The deployment's batch size must be measured, or calibrated in the cost model."""
        if self.rate_fn is not None:
            return
        b = int(self.deployment.batch_size)
        measured = sorted({int(r["batch_size"]) for _, rec in self.records.values() for r in rec.get("records", [])})
        calibrated = []
        if self.cost_model:
            calibrated = sorted(int(k) for k in (self._device().get("spearman") or {}).get("by_batch_size", {}))
        if not self.records and not self.cost_model:
            raise LifetimeError("missing throughput: give a cost model (--cost-model) or measured throughput "
                                "records (--throughput-dir) for the serving cost")
        if b not in measured and b not in calibrated:
            raise LifetimeError(
                f"deployment batch size {b} is unknown: measured at {measured or 'none'}, cost model calibrated at "
                f"{calibrated or 'none'}; deploy at one of them (--deploy-batch-size / search.lifetime.batch_size)")

    def _record(self, arch: Architecture, batch: int, mode: str, context: int | None) -> tuple[str, dict] | None:
        hit = self.records.get(arch.arch_id)
        if hit is None:
            return None
        where, rec = hit
        d = self.deployment
        for r in rec.get("records", []):
            if (int(r.get("batch_size", -1)) == batch and r.get("mode", "prefill+decode") == mode
                    and (mode != "decode_at_context" or int(r.get("context") or r["input_len"]) == context)
                    and int(r.get("output_len", -1)) == d.output_len
                    and (mode == "decode_at_context" or int(r.get("input_len", -1)) == d.input_len)):
                return where, r
        return None

    def _measured(self, where: str, r: dict) -> dict[str, Any]:
        med = (r.get("median") or {}).get("output_tokens_per_s") or {}
        if med.get("value") is not None:
            why = med.get("withheld_reason")
            return estimate(med["value"], med.get("low"), med.get("high"), MEASURED,
                            f"{where}: median of {med.get('n')} repeats" + (f" (interval withheld: {why})" if why else ""))
        return estimate(r["output_tokens_per_s"], source=MEASURED, detail=f"{where}: mean (no median recorded)")

    def _predicted(self, arch: Architecture, batch: int, mode: str, context: int | None) -> dict[str, Any]:
        from ..throughput.roofline import predict_output_tokens_per_s

        d = self.deployment
        try:
            v = predict_output_tokens_per_s(self.cost_model, arch, d.input_len, d.output_len, batch, mode=mode,
                                            context=context)
        except (ValueError, KeyError) as exc:
            raise LifetimeError(f"cost model cannot predict {arch.arch_id} at the deployment: {exc}") from None
        lo, hi, why = self._ratio
        return estimate(v, v * lo, v * hi, COST_MODEL, why)

    def rate(self, arch: Architecture) -> dict[str, Any]:
        """Output tokens/s at the deployment (an :func:`estimate`)."""
        key = ("rate", arch.arch_id)
        if key not in self._cache:
            d = self.deployment
            hit = self._record(arch, d.batch_size, d.mode, d.context)
            if hit is not None:
                self._cache[key] = self._measured(*hit)
            elif self.cost_model:
                self._cache[key] = self._predicted(arch, d.batch_size, d.mode, d.context)
            elif self.rate_fn is not None:
                self._cache[key] = estimate(self.rate_fn(arch), source=self.rate_source)
            else:
                raise LifetimeError(
                    f"missing throughput for {arch.arch_id}: no measured record at batch {d.batch_size}, "
                    f"{d.input_len} in / {d.output_len} out ({d.mode}) and no cost model (--cost-model)")
            if not self._cache[key]["value"] or self._cache[key]["value"] <= 0:
                raise LifetimeError(f"throughput of {arch.arch_id}: {self._cache[key]['value']} is not positive")
        return self._cache[key]

    def latency_ms(self, arch: Architecture) -> dict[str, Any] | None:
        """Batch-1 milliseconds per output token, decoding at the deployment context (None: unknown)."""
        key = ("latency", arch.arch_id)
        if key not in self._cache:
            ctx = self.deployment.latency_context
            hit = self._record(arch, 1, "decode_at_context", ctx)
            if hit is not None:
                e = self._measured(*hit)
            elif self.cost_model:
                e = self._predicted(arch, 1, "decode_at_context", ctx)
            else:
                e = None
            self._cache[key] = None if e is None else estimate(
                1e3 / e["value"], None if e["high"] is None else 1e3 / e["high"],
                None if e["low"] is None else 1e3 / e["low"], e["source"], e["detail"])
        return self._cache[key]

    def energy_j_per_token(self, arch: Architecture) -> dict[str, Any] | None:
        """NVML joules per output token of the measured record at the deployment (None: not measured)."""
        d = self.deployment
        hit = self._record(arch, d.batch_size, d.mode, d.context)
        if hit is None or hit[1].get("energy_j_per_output_token") is None:
            return None
        return estimate(hit[1]["energy_j_per_output_token"], source=MEASURED, detail=f"{hit[0]}: NVML")


# ---- costs of a set of architectures -----------------------------------------------------
def evaluate(archs: list[Architecture], lm: LossModel, serving: Serving, prices: Prices, target: float,
             tokens: float | None = None, max_latency_ms: float | None = None) -> dict[str, Any]:
    """Columns (numpy arrays, one entry per architecture) of tokens, losses and costs.

    ``tokens`` None: each trains the fewest tokens whose predicted loss (the upper end of its
    interval) meets ``target`` (``d``), with the tokens needed at the point (``d_point``) and at
    the interval's lower end (``d_low``); a number: every one trains that many (the paper's
    fixed (N, D)). Costs: training at ``d`` (value and high) and ``d_low`` (low); per output
    token, serving plus energy, low and high from the throughput's interval.
    """
    n = np.array([a.params_non_embedding for a in archs], float)
    x = np.array([a.d_over_sqrt_n for a in archs], float)
    r = np.array([a.mlp_attn_ratio for a in archs], float)
    ab = lm.affine(x, r)
    if tokens is None:
        d = lm.tokens_needed(n, *ab["high"], target)
        d_point, d_low = lm.tokens_needed(n, *ab["point"], target), lm.tokens_needed(n, *ab["low"], target)
    else:
        d = d_point = d_low = np.full(n.shape, float(tokens))
    hours_per_token = np.array([training_flops_per_token(a, prices.seq_length) for a in archs]) / (
        prices.peak_flops * prices.mfu) / 3600.0
    rates = [serving.rate(a) for a in archs]
    rv = np.array([e["value"] for e in rates])
    rlo, rhi = (np.array(v) for v in zip(*(_ends(e) for e in rates)))
    energy = [serving.energy_j_per_token(a) for a in archs]
    e_lo, e_hi = (np.array(v) for v in zip(*(_ends(e) for e in energy)))
    e_v = np.array([0.0 if e is None else e["value"] for e in energy])
    kwh_price = prices.energy_price_per_kwh or 0.0
    sp = prices.serve_price / 3600.0
    cols = {
        "n": n, "d": d, "d_point": d_point, "d_low": d_low, "hours_per_token": hours_per_token,
        "train": _cost(hours_per_token, d, prices.train_price), "train_low": _cost(hours_per_token, d_low, prices.train_price),
        "serve": sp / rv, "serve_low": sp / rhi, "serve_high": sp / rlo,
        "energy": e_v / J_PER_KWH * kwh_price, "energy_low": e_lo / J_PER_KWH * kwh_price,
        "energy_high": e_hi / J_PER_KWH * kwh_price,
        "loss": [lm.loss(ab[k], n, d) for k in ("point", "low", "high")],
        "rates": rates, "energy_est": energy, "latency": [None] * len(archs),
    }
    with np.errstate(invalid="ignore"):
        feasible = np.isfinite(d) & (cols["loss"][2] <= target + 1e-12)
    if max_latency_ms is not None:
        cols["latency"] = [serving.latency_ms(a) for a in archs]
        unknown = [a.arch_id for a, e in zip(archs, cols["latency"]) if e is None]
        if unknown:
            raise LifetimeError(f"--max-latency-ms: the batch-1 latency of {unknown[:3]} is unknown (no record at "
                                "batch 1 and no cost model)")
        feasible &= np.array([e["value"] <= max_latency_ms for e in cols["latency"]])
    cols["feasible"] = feasible
    cols["per_token"] = cols["serve"] + cols["energy"]
    cols["per_token_low"] = cols["serve_low"] + cols["energy_low"]
    cols["per_token_high"] = cols["serve_high"] + cols["energy_high"]
    return cols


def _cost(hours_per_token: np.ndarray, tokens: np.ndarray, price: float) -> np.ndarray:
    """Training cost; infinite where no number of tokens reaches the target (also at price 0)."""
    return np.where(np.isfinite(tokens), hours_per_token * np.where(np.isfinite(tokens), tokens, 0.0) * price, np.inf)


def _total(cols: dict, i: int, demand: float) -> dict[str, Any]:
    return estimate(cols["train"][i] + demand * cols["per_token"][i],
                    cols["train_low"][i] + demand * cols["per_token_low"][i],
                    cols["train"][i] + demand * cols["per_token_high"][i], "sum of the parts")


def describe(arch: Architecture, cols: dict, i: int, demand: float, role: str, prices: Prices,
             target: float) -> dict[str, Any]:
    """One choice: its knobs, tokens, predicted loss, and each cost with its source and interval."""
    rate, energy = cols["rates"][i], cols["energy_est"][i]
    d, d_low, hpt = cols["d"][i], cols["d_low"][i], cols["hours_per_token"][i]
    train_src = f"{ASSUMPTION}: plan FLOPs at MFU {prices.mfu:g} ({prices.source('mfu')}) of {prices.peak_flops:.3g} FLOP/s"
    serve_hours = demand / rate["value"] / 3600.0
    kwh = None if energy is None else demand * energy["value"] / J_PER_KWH
    loss = [float(v[i]) for v in cols["loss"]]
    return {
        "role": role, **{k: getattr(arch, k) for k in ARCH_FIELDS},
        "tokens": estimate(d, d_low, d, "law", "tokens trained (the interval: tokens needed across the law's "
                           "interval)" if role == "lifetime" else "tokens of the target (N, D)"),
        "tokens_point": float(cols["d_point"][i]),
        "tokens_per_param": float(d / arch.params_non_embedding),
        "predicted_loss": estimate(loss[0], loss[1], loss[2], "law"),
        "meets_target": bool(loss[2] <= target + 1e-12),
        "training": {"flops": float(hpt * d * prices.peak_flops * prices.mfu * 3600.0), "gpu_hours": float(hpt * d),
                     "cost": estimate(cols["train"][i], cols["train_low"][i], cols["train"][i], train_src)},
        "serving": {"output_tokens_per_s": rate, "gpu_hours": float(serve_hours),
                    "cost": estimate(demand * cols["serve"][i], demand * cols["serve_low"][i],
                                     demand * cols["serve_high"][i], rate["source"], rate["detail"])},
        "energy": {"kwh": kwh, "j_per_output_token": energy,
                   "cost": estimate(demand * cols["energy"][i], demand * cols["energy_low"][i],
                                    demand * cols["energy_high"][i], MEASURED if energy else "not measured",
                                    None if energy else "no NVML record at the deployment: energy not counted")},
        "latency_ms": cols["latency"][i],
        "per_token_cost": estimate(cols["per_token"][i], cols["per_token_low"][i], cols["per_token_high"][i],
                                   rate["source"]),
        "total": _total(cols, i, demand),
    }


def candidates_over_n(scale: Scale, n_factors: Iterable[float], **enumerate_kwargs) -> list[Architecture]:
    """Every candidate at the target N times each factor (the scale's layers, head dim, vocab kept)."""
    out: dict[str, Architecture] = {}
    for f in n_factors:
        if not (math.isfinite(f) and f > 0):
            raise LifetimeError(f"N factor {f}: must be a positive number")
        at = replace(scale, name=scale.name, n_target=int(round(scale.n_target * f)))
        for a in enumerate_candidates(at, **enumerate_kwargs):
            out.setdefault(a.arch_id, replace(a, scale=scale.name))
    if not out:
        raise LifetimeError(f"scale '{scale.name}': no candidate architecture at any N factor; widen the "
                            "N tolerance, the d/sqrt(N) window or the GQA range")
    return list(out.values())


def optimum_index(cols: dict, demand: float) -> int | None:
    """Index of the cheapest feasible candidate at ``demand`` (ties: fewer training FLOPs), None if none."""
    ok = np.flatnonzero(cols["feasible"])
    if ok.size == 0:
        return None
    total = cols["train"][ok] + demand * cols["per_token"][ok]
    order = np.lexsort((cols["train"][ok], total))
    return int(ok[order[0]])


# ---- crossovers and the cost curve ------------------------------------------------------------
def crossover(a: dict, b: dict) -> dict[str, Any]:
    """The lifetime demand above which ``b`` is cheaper than ``a`` (choices of :func:`describe`).

    Total cost is ``train + T * per_token``, so they cross at ``(train_b - train_a) / (per_token_a -
    per_token_b)``. The interval is the range of that demand over the ends of both training-cost
    intervals (the law's) and both per-token intervals (the throughput's); an end at which ``b``
    never gets cheaper makes the upper end unbounded (None).
    """
    def parts(c):
        return c["training"]["cost"], c["per_token_cost"]

    (ta, sa), (tb, sb) = parts(a), parts(b)
    dt, ds = tb["value"] - ta["value"], sa["value"] - sb["value"]
    if dt <= 0 and ds >= 0:
        status, value = ("same cost" if dt == 0 and ds == 0 else "always cheaper"), 0.0
    elif dt > 0 and ds > 0:
        status, value = "overtakes", dt / ds
    else:
        status, value = "never cheaper", None
    corners = []
    for t_a, t_b, s_a, s_b in itertools.product(_ends(ta), _ends(tb), _ends(sa), _ends(sb)):
        if t_b - t_a <= 0 and s_a - s_b >= 0:
            corners.append(0.0)
        elif s_a - s_b > 0:
            corners.append((t_b - t_a) / (s_a - s_b))
        else:
            corners.append(math.inf)
    lo, hi = min(corners), max(corners)
    return {"from": a["role"], "to": b["role"], "status": status, "demand": value,
            "low": None if math.isinf(lo) else lo, "high": None if math.isinf(hi) else hi,
            "meaning": f"above this lifetime demand {b['role']} costs less than {a['role']}"}


def crossovers(choices: Mapping[str, dict]) -> list[dict[str, Any]]:
    """Every ordered pair where the second is cheaper to serve (the one that can overtake)."""
    out = []
    roles = [r for r in ROLES if choices.get(r) is not None]
    for ra, rb in itertools.combinations(roles, 2):
        a, b = choices[ra], choices[rb]
        if a["arch_id"] == b["arch_id"] and a["tokens"]["value"] == b["tokens"]["value"]:
            continue
        first, second = (a, b) if b["per_token_cost"]["value"] <= a["per_token_cost"]["value"] else (b, a)
        out.append(crossover(first, second))
    return out


def demand_grid(demand: float, points: int = 41, decades: float = 3.0) -> list[float]:
    """Log-spaced demands ``decades`` either side of ``demand`` (from 1e6 tokens when it is 0), plus 0."""
    centre = demand if demand > 0 else 1e9
    return [0.0, *np.geomspace(centre / 10**decades, centre * 10**decades, points).tolist()]


def cost_curve(cols: dict, archs: list[Architecture], fixed: Mapping[str, dict], grid: list[float]) -> dict[str, Any]:
    """Total cost against demand: each fixed choice (a line) and the lifetime optimum re-chosen at
    every demand (its arch id and tokens), with the ends of their intervals."""
    curve: dict[str, Any] = {"demand": list(grid), "choices": {}}
    for role, c in fixed.items():
        t, s = c["training"]["cost"], c["per_token_cost"]
        (tl, th), (sl, sh) = _ends(t), _ends(s)
        curve["choices"][role] = {"total": [t["value"] + g * s["value"] for g in grid],
                                  "low": [tl + g * sl for g in grid], "high": [th + g * sh for g in grid]}
    opt = {"total": [], "low": [], "high": [], "arch_id": [], "tokens": [], "params_non_embedding": [], "training": [],
           "per_token": []}
    for g in grid:
        i = optimum_index(cols, g)
        tot = _total(cols, i, g) if i is not None else estimate(None)
        for k, v in (("total", tot["value"]), ("low", tot["low"]), ("high", tot["high"]),
                     ("arch_id", None if i is None else archs[i].arch_id),
                     ("tokens", None if i is None else float(cols["d"][i])),
                     ("params_non_embedding", None if i is None else archs[i].params_non_embedding),
                     ("training", None if i is None else float(cols["train"][i])),
                     ("per_token", None if i is None else float(cols["per_token"][i]))):
            opt[k].append(v)
    curve["choices"]["lifetime"] = opt
    return curve


# ---- the search ---------------------------------------------------------------------------------
def _target_value(lm: LossModel, target: LossTarget | float | None, tokens: float) -> tuple[float, dict]:
    if not isinstance(target, LossTarget):
        target = LossTarget(value=None if target is None else float(target))
    if target.baseline is not None:
        b = target.baseline
        l_opt = float(lm.l_opt(b.params_non_embedding, tokens))
        value = float(lm.law.predict(b.d_over_sqrt_n, b.mlp_attn_ratio, l_opt, lm.form))
        return value, dict(target.describe(), value=value, source=f"predicted loss of baseline at D={tokens:.4g}")
    if target.value is None or not math.isfinite(target.value):
        raise LifetimeError("the lifetime search needs a loss target: a number, or a baseline (--loss-target)")
    return float(target.value), target.describe()


def _fixed_archs(law: Law, scale: Scale, tokens: float, lm: LossModel, target: float, serving: Serving,
                 baseline: Architecture | None, search_kwargs: dict) -> tuple[dict[str, Architecture], list[str]]:
    """Baseline, and Panda and Surefire of the search at the target (N, D) on the deployment's throughput."""
    res = search_at_scale(law, scale, tokens, l_opt=float(lm.l_opt(scale.n_target, tokens)),
                          loss_target=LossTarget(value=target), efficiency=lambda a: serving.rate(a)["value"],
                          efficiency_label="output tokens/s at the deployment", form=lm.form, **search_kwargs)
    out = {"baseline": baseline} if baseline is not None else {}
    for role in ("panda", "surefire"):
        p = res.get(role)
        if p is not None:
            out[role] = Architecture(d_model=p["d_model"], ffn=p["ffn"], layers=scale.layers, heads=p["heads"],
                                     kv_heads=p["kv_heads"], head_dim=scale.head_dim, vocab=scale.vocab,
                                     tied=scale.tied, scale=scale.name, name=f"{role} (search at the target N, D)")
    notes = [] if res.get("surefire") else [f"no Surefire at the target (N, D): {res.get('surefire_reason')}"]
    return out, notes


def lifetime_search(
    law: Law, scale: Scale, tokens: float, demand: float, serving: Serving, prices: Prices, *,
    loss_target: LossTarget | float | None, form: str | None = None,
    n_factors: Iterable[float] = DEFAULT_N_FACTORS, gqa: Iterable[int] | None = None,
    gqa_range: tuple[int, int] = (1, 16), x_range: tuple[float, float] = (0.02, 0.3),
    max_latency_ms: float | None = None, level: float = 0.95,
    choices: Mapping[str, Architecture | None] | None = None, curve_points: int = 41,
) -> dict[str, Any]:
    """The lifetime-optimal (N, D, shape) at ``demand`` and the baseline/Panda/Surefire at (N0, D0).

    ``tokens``: D0 of the target (the baseline's training tokens); ``choices``: the named
    architectures to compare (baseline, panda, surefire), else the baseline of ``loss_target`` and
    the picks of :func:`~archscale.search.anyscale.search_at_scale` at (N0, D0).
    """
    demand = check_demand(demand)
    if max_latency_ms is not None and not (math.isfinite(max_latency_ms) and max_latency_ms > 0):
        raise LifetimeError(f"--max-latency-ms: {max_latency_ms} must be a positive number of milliseconds")
    if not (math.isfinite(float(tokens)) and float(tokens) >= 1):
        raise LifetimeError(f"training tokens D0: {tokens} must be >= 1")
    lm = LossModel(law, form, level)
    target, target_desc = _target_value(lm, loss_target, float(tokens))
    kw = {"gqa": gqa, "gqa_range": gqa_range, "x_range": x_range}
    n_factors = list(n_factors)
    archs = candidates_over_n(scale, n_factors, **kw)
    cols = evaluate(archs, lm, serving, prices, target, None, max_latency_ms)
    i = optimum_index(cols, demand)
    if i is None:
        why = " and the latency bound" if max_latency_ms is not None else ""
        raise LifetimeError(
            f"no candidate meets the loss target {target:.4g}{why} at any N factor {min(n_factors):g}-"
            f"{max(n_factors):g} of {scale.n_target:,}: raise the largest N factor or relax the target")
    notes: list[str] = []
    if choices is None:
        baseline = loss_target.baseline if isinstance(loss_target, LossTarget) else None
        named, notes = _fixed_archs(law, scale, tokens, lm, target, serving, baseline, kw)
    else:
        named = {k: v for k, v in choices.items() if v is not None}
    out_choices: dict[str, dict] = {}
    if named:
        roles, fixed_archs = zip(*named.items())
        fixed_cols = evaluate(list(fixed_archs), lm, serving, prices, target, float(tokens), max_latency_ms)
        for j, (role, arch) in enumerate(named.items()):
            out_choices[role] = describe(arch, fixed_cols, j, demand, role, prices, target)
    out_choices["lifetime"] = describe(archs[i], cols, i, demand, "lifetime", prices, target)
    fixed = {k: v for k, v in out_choices.items() if k != "lifetime"}
    notes += _notes(law, lm, scale, archs, cols, i, n_factors, out_choices)
    return {
        "demand_tokens": demand, "scale": scale.name, "n_target": scale.n_target, "tokens": float(tokens),
        "law": law.name, "form": lm.form, "l_opt_source": lm.l_opt_source,
        "loss_target": dict(target_desc, threshold=target),
        "interval": {"level": lm.level, "law": lm.interval_reason or f"bootstrap samples of law '{law.name}'",
                     "crossover": "range over the ends of the training-cost and per-token intervals"},
        "deployment": serving.deployment.to_dict(), "prices": prices.to_dict(), "max_latency_ms": max_latency_ms,
        "n_factors": n_factors, "n_candidates": len(archs), "n_feasible": int(cols["feasible"].sum()),
        "optimum": out_choices["lifetime"], "choices": out_choices, "crossovers": crossovers(out_choices),
        "curve": cost_curve(cols, archs, fixed, demand_grid(demand, curve_points)), "notes": notes,
    }


def _notes(law: Law, lm: LossModel, scale: Scale, archs, cols, i: int, n_factors, choices) -> list[str]:
    notes = [f"L_opt(N, D): {lm.l_opt_source}"]
    if lm.interval_reason:
        notes.append(lm.interval_reason)
    n_rng = law.range.get("n")
    pick = archs[i]
    if n_rng and not n_rng[0] * 0.9 <= pick.params_non_embedding <= n_rng[1] * 1.1:
        notes.append(f"extrapolation: the optimum's N {pick.params_non_embedding:.4g} is outside the N range "
                     f"{n_rng} the law was fitted on")
    ns = cols["n"][cols["feasible"]]
    if pick.params_non_embedding in (ns.min(), ns.max()) and len(set(ns)) > 1:
        notes.append("the optimum lies at the edge of the N factors searched "
                     f"({min(n_factors):g}-{max(n_factors):g} x {scale.n_target:,}): widen them")
    missing = [r for r, c in choices.items() if c["energy"]["j_per_output_token"] is None]
    if missing:
        notes.append(f"energy not counted for {', '.join(missing)}: no NVML measurement at the deployment")
    for role, c in choices.items():
        if not c["meets_target"]:
            notes.append(f"{role}: the upper end of its predicted loss {c['predicted_loss']['high']:.4g} is above "
                         f"the target at its tokens")
    return notes


# ---- settings from the config and the workflow's entry point --------------------------------------
@dataclass(frozen=True)
class LifetimeSettings:
    """``search.lifetime`` resolved against the study (deployment, prices, the N factors)."""

    tokens: float
    prices: Prices
    deployment: Deployment
    max_latency_ms: float | None = None
    n_factors: tuple[float, ...] = DEFAULT_N_FACTORS
    level: float = 0.95
    x_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        p = self.prices
        return {"tokens": self.tokens, "max_latency_ms": self.max_latency_ms, "n_factors": list(self.n_factors),
                "level": self.level, "x_range": None if self.x_range is None else list(self.x_range),
                "deployment": {k: v for k, v in self.deployment.to_dict().items() if k != "mode"},
                "prices": {"price_per_gpu_hour": p.price_per_gpu_hour, "mfu": p.mfu, "peak_flops": p.peak_flops,
                           "seq_length": p.seq_length, "energy_price_per_kwh": p.energy_price_per_kwh,
                           "sources": [list(s) for s in p.sources]}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LifetimeSettings":
        p = dict(data["prices"])
        p["sources"] = tuple(tuple(s) for s in p.get("sources") or ())
        return cls(tokens=check_demand(data["tokens"], "search.lifetime.tokens"), prices=Prices(**p),
                   deployment=Deployment(**data["deployment"]), max_latency_ms=data.get("max_latency_ms"),
                   n_factors=tuple(data.get("n_factors") or DEFAULT_N_FACTORS), level=float(data.get("level", 0.95)),
                   x_range=None if data.get("x_range") is None else tuple(data["x_range"]))


def settings_from_config(config: Mapping[str, Any]) -> LifetimeSettings | None:
    """``search.lifetime`` of a validated config (None while its ``tokens`` is null): the
    deployment defaults to the search's workload, MFU and the training device to ``compute``."""
    from ..plan import peak_flops

    lt = config["search"]["lifetime"]
    if lt["tokens"] is None:
        return None
    tput, compute = config["throughput"], dict(config["compute"])
    if lt["gpu_model"]:
        compute.update(gpu_model=lt["gpu_model"], peak_flops=None)
    context = lt["context"] if lt["context"] is not None else (
        (tput["context"] or tput["input_len"]) if tput["mode"] == "decode_at_context" else None)
    batch = lt["batch_size"] or config["search"]["batch_size"] or max(tput["batch_sizes"])
    sources = (("price_per_gpu_hour", "config search.lifetime.price_per_gpu_hour"),
               ("mfu", "config search.lifetime.mfu" if lt["mfu"] else "config compute.mfu"),
               ("peak_flops", "config compute (gpu_model / peak_flops)"),
               ("seq_length", "config training.seq_length"),
               ("energy_price_per_kwh", "config search.lifetime.energy_price_per_kwh"))
    prices = Prices(price_per_gpu_hour=float(lt["price_per_gpu_hour"]), mfu=float(lt["mfu"] or compute["mfu"]),
                    peak_flops=peak_flops(compute), seq_length=int(config["training"]["seq_length"]),
                    energy_price_per_kwh=lt["energy_price_per_kwh"], sources=sources)
    deployment = Deployment(batch_size=int(batch), input_len=int(lt["input_len"] or tput["input_len"]),
                            output_len=int(lt["output_len"] or tput["output_len"]), context=context)
    return LifetimeSettings(tokens=check_demand(lt["tokens"], "search.lifetime.tokens"), prices=prices,
                            deployment=deployment, max_latency_ms=lt["max_latency_ms"],
                            n_factors=tuple(float(f) for f in lt["n_factors"]), level=float(lt["level"]),
                            x_range=None if lt["x_range"] is None else tuple(lt["x_range"]))


def read_records(paths: Iterable[str]) -> dict[str, tuple[str, dict]]:
    """Throughput records (``throughput/{arch}.json``) by arch id, each with its path."""
    from ..io import read_json

    out = {}
    for p in paths:
        rec = read_json(p)
        if "records" not in rec:
            raise LifetimeError(f"{p}: not a throughput record (no 'records'); expected results/throughput/{{arch}}.json")
        out[str(rec.get("arch_id") or Architecture.from_dict(rec["arch"]).arch_id)] = (str(p), rec)
    return out


def picks_of_result(result: Mapping[str, Any]) -> dict[str, Architecture | None]:
    """Baseline, Panda and Surefire of an Algorithm-1 result (``results/search/{target}/result.json``)."""
    return {role: None if result.get(role) is None else Architecture.from_dict(dict(result[role], name=result[role].get("name") or role))
            for role in ("baseline", "panda", "surefire")}


def lifetime_for_target(target, settings: LifetimeSettings, law: Law, cost_model: dict | None,
                        records: Mapping[str, tuple[str, dict]], result: Mapping[str, Any] | None = None,
                        x_range: tuple[float, float] | None = None, form: str | None = None) -> dict[str, Any]:
    """The lifetime search of one :class:`~archscale.search.targets.SearchTarget`; with the
    Algorithm-1 ``result`` its baseline, Panda and Surefire are the compared choices."""
    serving = Serving(settings.deployment, cost_model, records, settings.level)
    if isinstance(target.loss_target, str):
        loss_target = LossTarget(baseline=target.baseline, source="predicted")
    else:
        loss_target = target.loss_target
    gqas = sorted(set(target.gqa_candidates))
    out = lifetime_search(
        law, target.scale, target.tokens, settings.tokens, serving, settings.prices, loss_target=loss_target,
        form=form, n_factors=settings.n_factors, gqa=gqas, x_range=settings.x_range or x_range or (0.02, 0.3),
        max_latency_ms=settings.max_latency_ms, level=settings.level,
        choices=None if result is None else picks_of_result(result))
    out["target"] = target.name
    return out


def lifetime_from_files(target: dict, settings: dict, result_path: str, fit_path: str, cost_model_path: str,
                        runs_path: str, record_paths: Iterable[str], form: str | None = None) -> dict[str, Any]:
    """The workflow rule's entry point: read the inputs, run :func:`lifetime_for_target`."""
    import pandas as pd

    from ..io import read_json
    from ..law import load_law
    from .algorithm import fitted_ranges
    from .targets import SearchTarget

    law = load_law(fit_path)
    x_range, _ = fitted_ranges(read_json(fit_path), pd.read_parquet(runs_path))
    out = lifetime_for_target(SearchTarget.from_dict(target), LifetimeSettings.from_dict(settings), law,
                              read_json(cost_model_path), read_records(record_paths), read_json(result_path),
                              x_range=x_range, form=form)
    out["inputs"] = {"result": str(result_path), "fit": str(fit_path), "cost_model": str(cost_model_path)}
    return out


def crossover_text(x: Mapping[str, Any], fmt: Callable[[float], str] = "{:.4g}".format) -> str:
    """One line for a :func:`crossover`: where ``to`` overtakes ``from``, with its interval."""
    if x["status"] == "overtakes":
        hi = "unbounded" if x["high"] is None else fmt(x["high"])
        return f"{x['to']} overtakes {x['from']} above {fmt(x['demand'])} tokens [{fmt(x['low'])}, {hi}]"
    verb = {"always cheaper": "costs less than", "never cheaper": "never costs less than"}.get(x["status"], "costs the same as")
    return f"{x['to']} {verb} {x['from']} at every demand"
