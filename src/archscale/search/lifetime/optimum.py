"""The lifetime search: the (N, D, shape) of least total cost at a demand, beside the baseline,
Panda and Surefire at the target (N, D), with the crossovers, the cost curve and notes."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ...arch import Architecture, Scale
from ...law.laws import Law
from ..anyscale import LossTarget, search_at_scale
from .costs import candidates_over_n, describe, evaluate, optimum_index
from .crossovers import cost_curve, crossovers, demand_grid
from .inputs import DEFAULT_N_FACTORS, LifetimeError, check_demand
from .loss import LossModel
from .serving import Serving


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
