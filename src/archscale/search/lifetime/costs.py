"""Costs of a set of candidate architectures: tokens to train, training, serving and energy cost
(each with its interval), one choice described with its sources, and the cheapest at a demand."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterable

import numpy as np

from ...arch import Architecture, Scale
from ...cost import training_flops_per_token
from ..algorithm import enumerate_candidates
from .inputs import ARCH_FIELDS, ASSUMPTION, J_PER_KWH, MEASURED, LifetimeError, Prices, ends, estimate
from .loss import LossModel
from .serving import Serving


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
    rlo, rhi = (np.array(v) for v in zip(*(ends(e) for e in rates)))
    energy = [serving.energy_j_per_token(a) for a in archs]
    e_lo, e_hi = (np.array(v) for v in zip(*(ends(e) for e in energy)))
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


def total(cols: dict, i: int, demand: float) -> dict[str, Any]:
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
        "total": total(cols, i, demand),
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
