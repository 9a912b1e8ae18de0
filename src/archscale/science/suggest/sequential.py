"""Sequential design: from a finished study to the runs that most narrow its unresolved optima per
device-hour (a new seed on a sweep, a sweep extended past an end, a new grid point), chosen
greedily, and the config overlay that trains them."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ...law.laws import Law
from .design import LawDesign, design_rows, lopt_lookup
from .refine import candidates
from .targets import SweepTarget, law_interval, law_targets, relative_gain, sweep_targets

#: Factors by which a sweep is extended beyond an end (geometric steps past the end value).
EXTEND_FACTORS = (1.5, 2.0)


def _actions(ctx: dict) -> list:
    """Candidate additions in the current state: a new seed for each sweep holding an unresolved
    optimum, that sweep extended past each end, and new grid points (for the fitted optima)."""
    from ..overlay import Action, next_seed

    cfg, out, seen = ctx["config"], [], set()
    sweeps = {(t.scale_index, t.grid_index) for t in ctx["sweeps"]}
    if ctx["laws"]:  # every run narrows a fitted optimum: a seed on any sweep adds paired draws
        sweeps |= {(i, k) for i, sc in enumerate(cfg["scales"]) for k in range(len(sc.get("grid") or []))}
    for i, k in sorted(sweeps):
        s = next_seed(cfg, i, k)
        out.append(Action("seed", i, k, value=s, label=f"seed {s} on scales[{i}].grid[{k}]"))
    for t in ctx["sweeps"]:
        i, k = t.scale_index, t.grid_index
        vals = sorted(float(v) for v in cfg["scales"][i]["grid"][k][t.key])
        for side in ("low", "high"):
            if side in t.extended:
                continue
            for f in EXTEND_FACTORS:
                v = vals[0] / f if side == "low" else vals[-1] * f
                v = int(round(v)) if t.key == "d_model" else float(f"{v:.3g}")
                if ("extend", i, k, v) not in seen and v not in vals and v > 0:
                    seen.add(("extend", i, k, v))
                    out.append(Action("extend", i, k, t.key, v, label=f"{t.key} {v:g} appended to scales[{i}].grid[{k}]"))
    return out + ctx["points"]


def _point_actions(raw: dict, law: Law) -> list:
    """New one-point sweeps near the fitted optima (the feasible architectures of
    :func:`candidates`), each trained at its scale's seeds."""
    from ...study import Study
    from ..overlay import Action

    study = Study.from_config(copy.deepcopy(raw))
    out = []
    for c in candidates(study, law):
        q = c["requested"]
        point = {"d_over_sqrt_n": [q["d_over_sqrt_n"]], "r": [q["r"]], "gqa": [q["gqa"]]}
        out.append(Action("point", c["scale_index"], point=point,
                          label=f"grid point d/sqrt(N) {q['d_over_sqrt_n']:g}, r {q['r']:g} at {c['scale']}"))
    return out


def _sweep_after(ctx: dict, t: SweepTarget, action, new_plan) -> tuple[int, int, dict, dict] | None:
    """(n, P, rises, ends) of sweep ``t`` after ``action``; None when it does not touch ``t``."""
    if (action.scale_index, action.grid_index) != (t.scale_index, t.grid_index):
        return None
    if action.kind == "seed":
        return t.n + 1, t.P, t.est, t.end
    if action.kind != "extend" or action.key != t.key:
        return None
    side = "low" if action.value < min(float(v) for v in ctx["config"]["scales"][t.scale_index]["grid"]
                                       [t.grid_index][t.key]) else "high"
    new = [p for a, p in new_plan.runs.items() if a not in ctx["plan"].runs and t.membership in p.sweeps]
    if not new:
        return None
    x, r, lo = new[0].arch.d_over_sqrt_n, new[0].arch.mlp_attn_ratio, t.end[side][2]
    law = ctx["law"]
    extra = float(law.predict(x, r, lo)) - float(law.predict(t.end[side][0], t.end[side][1], lo))
    return t.n, t.P + 1, dict(t.est, **{side: t.est[side] + extra}), dict(t.end, **{side: (x, r, lo)})


def _evaluate(ctx: dict, action) -> dict | None:
    """Cost, new runs and effect on every target of one action in the current state."""
    from ...config import ConfigError
    from ..overlay import apply, plan_diff, plan_of, runs_cost

    cfg = apply(ctx["config"], action)
    try:
        plan = plan_of(cfg)
    except ConfigError:
        return None  # infeasible (e.g. a hidden size the scale's layers cannot hold)
    added = plan_diff(ctx["plan"], plan)
    if not added:
        return None
    hours = runs_cost(plan, added)
    design = ctx["design"].add(design_rows(plan, added, ctx["lopt"]))
    sd = design.sd()
    effects, gain = {}, 0.0
    for j, t in enumerate(ctx["sweeps"]):
        after = _sweep_after(ctx, t, action, plan)
        if after is not None:
            g = relative_gain(t.width(), t.width(after[0], after[1], after[2]))
            effects[("sweep", j)] = (g, after)
            gain += g
    for j, t in enumerate(ctx["laws"]):
        g = relative_gain(ctx["sd"][t["knob"]], sd[t["knob"]])
        effects[("law", j)] = (g, sd[t["knob"]])
        gain += g
    return {"action": action, "config": cfg, "plan": plan, "added": added, "hours": hours, "design": design,
            "sd": sd, "effects": effects, "gain": gain}


def _target_interval(ctx: dict, kind: str, j: int, state=None) -> dict:
    """A target's interval now (``state`` None) or in ``state`` (the tuple ``_sweep_after`` gives,
    or a law optimum's linearised sd)."""
    if kind == "sweep":
        t = ctx["sweeps"][j]
        n, P, est = (state[0], state[1], state[2]) if state is not None else (t.n, t.P, t.est)
        iv = t.interval(n, P, est)
        return {"target": t.label, "interval": iv["ci"], "estimate": iv["estimate"], "what": f"{iv['rise']} rise",
                "level": iv["level"], "relative_width": t.width(n, P, est)}
    t = ctx["laws"][j]
    sd = ctx["sd"][t["knob"]] if state is None else state
    iv = law_interval(t, ctx["sd0"][t["knob"]], sd)
    return {"target": t["label"], "interval": iv, "estimate": t["point"], "what": "optimum", "level": 0.95,
            "relative_width": None if iv is None else (iv[1] - iv[0]) / t["point"]}


def _commit(ctx: dict, ev: dict) -> dict:
    """Apply a chosen action to the state; returns its description (the table's row)."""
    (kind, j), (g, state) = max(ev["effects"].items(), key=lambda kv: kv[1][0])
    before, after = _target_interval(ctx, kind, j), _target_interval(ctx, kind, j, state)
    for (k2, j2), (_, st) in ev["effects"].items():
        if k2 == "sweep":
            t = ctx["sweeps"][j2]
            if st[1] > t.P:
                t.extended.add("low" if st[3]["low"] != t.end["low"] else "high")
            t.n, t.P, t.est, t.end = st
    ctx.update(config=ev["config"], plan=ev["plan"], design=ev["design"], sd=ev["sd"])
    a = ev["action"]
    return {"what": a.label, "kind": a.kind, "where": a.where(), "why": before["target"], "reads": before["what"],
            "before": before, "after": after, "gain": ev["gain"], "device_hours": ev["hours"],
            "runs": [r.run_id for r in ev["added"]]}


def _greedy(ctx: dict, top: int, budget: float | None) -> list[dict]:
    """Greedy picks: the largest summed relative narrowing of the unresolved targets per device-hour."""
    picks, spent = [], 0.0
    while len(picks) < top:
        best = None
        for action in _actions(ctx):
            ev = _evaluate(ctx, action)
            if ev is None or ev["gain"] <= 1e-9 or (budget is not None and spent + ev["hours"] > budget):
                continue
            ev["score"] = ev["gain"] / max(ev["hours"], 1e-12)
            if best is None or ev["score"] > best["score"]:
                best = ev
        if best is None:
            break
        picks.append(_commit(ctx, best))
        spent += best["hours"]
    return picks


def sequential_design(raw: dict, law: Law, conditional: dict, runs, noise: dict, top: int = 5,
                      budget: float | None = None, width: float = 0.5) -> dict[str, Any]:
    """The runs that most narrow a finished study's unresolved optima per device-hour, and the
    config overlay that trains them (see docs/sequential-design.md).

    ``raw``: the layered config the results were trained with, as written; ``law``/``conditional``:
    its fitted law; ``runs``: runs.parquet; ``noise``: :func:`archscale.analysis.noise.seed_decomposition`
    of the runs. Targets: each one-knob sweep whose interior minimum the effects stage does not
    resolve (:func:`archscale.analysis.effects.knob_effects`), and each fitted optimum withheld or
    wider than ``width`` times its value. ``top`` proposals at most, within ``budget`` device-hours.
    """
    from ...analysis.effects import knob_effects
    from ..overlay import check_overlay, overlay_of, plan_of

    plan = plan_of(raw)
    unknown = sorted(set(runs["run_id"].astype(str)) - set(plan.train_runs))
    if unknown:
        raise ValueError(f"runs.parquet has {len(unknown)} run(s) the config does not plan (e.g. {unknown[:3]}); "
                         "pass the config the results were trained with")
    lopt = lopt_lookup(law, runs)
    sigma, rho = float(noise["seed_noise"]), float(noise.get("rho") or 0.0)
    paired_sd = float(np.sqrt(2) * (noise.get("sigma_e") or sigma))
    effects = knob_effects(runs)
    ctx: dict[str, Any] = {"config": copy.deepcopy(raw), "plan": plan, "law": law, "lopt": lopt,
                           "sweeps": sweep_targets(effects, raw, runs, law, lopt, paired_sd)}
    have = [tr for rid, tr in plan.train_runs.items() if rid in set(runs["run_id"].astype(str))]
    design = LawDesign(law, conditional.get("r_range") or law.range.get("r") or (0.0, np.inf), sigma, rho)
    ctx["design"] = design.add(design_rows(plan, have, lopt))
    ctx["sd"] = ctx["sd0"] = ctx["design"].sd()
    ctx["laws"], notes = law_targets(law, ctx["design"], width)
    notes += [f"{e.sweep_name()}: {e.verdict()}" for e in effects
              if e.shape == "interior minimum" and e.resolved]
    targets0 = [_target_interval(ctx, k, j) for k, j in _target_keys(ctx)]
    ctx["points"] = _point_actions(raw, law) if ctx["laws"] else []
    picks = _greedy(ctx, top, budget) if targets0 else []
    out = {"law": law.name, "form": ctx["design"].form, "noise": _noise_summary(noise, paired_sd),
           "proposals": picks, "notes": notes, "budget": budget, "width": width,
           "targets": [dict(t0, after=_target_interval(ctx, k, j)) for t0, (k, j) in zip(targets0, _target_keys(ctx))],
           "device_hours": float(sum(p["device_hours"] for p in picks)), "overlay": None, "new_runs": []}
    if picks:
        out["overlay"] = overlay_of(ctx["config"])
        out["new_runs"] = [r.run_id for r in check_overlay(raw, out["overlay"], {i for p in picks for i in p["runs"]})]
    elif not targets0:
        out["reason"] = "no unresolved optimum: every interior sweep minimum is resolved and every fitted optimum is narrow"
    else:
        out["reason"] = "no feasible addition narrows an unresolved optimum" + (" within the budget" if budget else "")
    return out


def _target_keys(ctx: dict) -> list[tuple[str, int]]:
    return [("sweep", j) for j in range(len(ctx["sweeps"]))] + [("law", j) for j in range(len(ctx["laws"]))]


def _noise_summary(noise: dict, paired_sd: float) -> dict:
    return {"per_run_sd": noise["seed_noise"], "per_run_sd_ci95": noise["ci95"], "shared_fraction": noise.get("rho"),
            "shared_fraction_ci95": noise.get("rho_ci95"), "paired_difference_sd": paired_sd,
            "note": noise.get("shared_note")}
