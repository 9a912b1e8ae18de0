"""Which grid points would narrow the optima's intervals most per GPU-hour.

The full-set fit is linearised at the prior law (its coefficients, the true ``L_opt``): with seed
noise sigma the coefficients' covariance is ``sigma^2 (J^T J)^-1`` (``J``: the Jacobian of the
law's form at the grid's points; the design itself for the additive form), and the variance of
an optimum ``c2/c1`` follows by the delta method. A candidate point adds one row to ``J``; the
variance after adding it is a rank-one update (Sherman-Morrison). Candidates are the feasible
architectures of each scale (:func:`archscale.search.algorithm.enumerate_space` over a log grid
spanning the scale's sampled box and the prior's optima, at the scale's most common GQA) not
already planned; each is costed with the compute plan's estimate (``est_device_hours``).
Picks are greedy: the best relative reduction of the optima's standard deviations per
device-hour, then the covariance is updated and the next is chosen. The simulation
(:func:`archscale.science.simulate.simulate_study` on the config with the points added,
:func:`with_suggestions`) checks what the linearisation promises.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ...law.calibration import _design
from ...law.form import normalise_multiplicative
from ...law.laws import Law
from ...plan import PlannedRun
from ...search.algorithm import enumerate_space
from ..fits import KNOBS, N_COEF, _mult_parts
from ..simulate import plan_frame, reference_losses, true_optima


def prior_params(law: Law) -> tuple[str, np.ndarray]:
    form = law.default_form
    f = law.forms[form]
    a, b = (normalise_multiplicative(f.a, f.b) if form == "multiplicative" else (f.a, f.b))
    return form, np.array([a[0], a[1], a[2], b[1], b[2]], float)


def jacobian(form: str, P: np.ndarray, x, r, lopt) -> np.ndarray:
    x, r, lopt = (np.atleast_1d(np.asarray(v, float)) for v in (x, r, lopt))
    if form == "additive":
        return _design(x, r)
    return _mult_parts(P[None, :], x, r, lopt[None, :])[1][0]


def optimum_gradients(P: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient of each interior optimum ``c2/c1`` in the coefficients (the delta method's); a knob
    without an interior minimum (a coefficient not positive) has none."""
    out = {}
    for key, (i1, i2) in KNOBS.items():
        c1, c2 = P[i1], P[i2]
        if c1 > 0 and c2 > 0:
            g = np.zeros(N_COEF)
            g[i1], g[i2] = -c2 / c1**2, 1.0 / c1
            out[key] = g
    return out


def _round(v: np.ndarray) -> list[float]:
    return sorted({float(f"{x:.3g}") for x in v})


def candidates(study, law: Law, per_axis: int = 9) -> list[dict[str, Any]]:
    """Feasible architectures not in the plan, per scale, with their cost and Jacobian inputs."""
    df = plan_frame(study)
    truth = true_optima(law)
    planned = set(df["arch_id"])
    runs_by_scale = {}
    for run in study.plan.runs.values():
        runs_by_scale.setdefault(run.scale.name, run)
    out = []
    for i, entry in enumerate(study.config["scales"]):
        name = entry["name"]
        sub = df[df["scale"] == name]
        if sub.empty or name not in runs_by_scale:
            continue
        ref = runs_by_scale[name]
        x_lo, x_hi = sub["d_over_sqrt_n"].min(), sub["d_over_sqrt_n"].max()
        r_lo, r_hi = float(study.fit["r_min"]), float(study.fit["r_max"])
        if truth["d_over_sqrt_n"]:
            x_lo, x_hi = min(x_lo, truth["d_over_sqrt_n"] / 1.5), max(x_hi, truth["d_over_sqrt_n"] * 1.5)
        gqa = int(sub["gqa"].mode().iloc[0])
        xs = _round(np.geomspace(x_lo, x_hi, per_axis))
        rs = [v for v in _round(np.geomspace(r_lo, r_hi, per_axis)) if r_lo <= v <= r_hi]
        space = enumerate_space(ref.scale, xs, rs, gqa)
        for aid, arch in space.archs.items():
            if aid in planned or not r_lo <= arch.mlp_attn_ratio <= r_hi:
                continue
            run = PlannedRun(arch, ref.scale, ref.tokens, ref.seq_length, ref.global_batch, [], ref.gpus,
                             seeds=[ref.base_seed], base_seed=ref.base_seed)
            row = run.row(study.config["compute"])
            req = space.requested[aid]
            out.append({"scale": name, "scale_index": i, "arch_id": aid, "d_over_sqrt_n": arch.d_over_sqrt_n,
                        "r": arch.mlp_attn_ratio, "requested": {"d_over_sqrt_n": req[0], "r": req[1], "gqa": gqa},
                        "n_target": ref.scale.n_target, "tokens": ref.tokens,
                        "est_device_hours": float(row["est_device_hours"])})
    return out


def suggest(study, law: Law, noise: float, top: int = 5) -> dict[str, Any]:
    """Greedy ranked suggestions (see the module docstring); ``noise`` is the seed noise sigma."""
    form, P = prior_params(law)
    grads = optimum_gradients(P)
    if not grads:
        return {"suggestions": [], "reason": "the prior law has no interior optimum of either knob: nothing to narrow"}
    df = plan_frame(study)
    lo, hi = float(study.fit["r_min"]), float(study.fit["r_max"])
    m = ((df["mlp_attn_ratio"] >= lo) & (df["mlp_attn_ratio"] <= hi)).to_numpy()
    lopt, _ = reference_losses(law, df)
    J = jacobian(form, P, df["d_over_sqrt_n"][m], df["mlp_attn_ratio"][m], lopt[m])
    info = J.T @ J / noise**2
    if np.linalg.matrix_rank(info) < N_COEF:
        return {"suggestions": [], "reason": "the grid does not identify all five coefficients (a knob takes fewer than "
                                             "three values); add values of that knob before asking for refinements"}
    cov = np.linalg.inv(info)
    cands = candidates(study, law)
    if not cands:
        return {"suggestions": [], "reason": "no feasible architecture outside the plan on the candidate grid"}
    cl = reference_losses(law, _frame(cands))[0]
    rows = np.vstack([jacobian(form, P, c["d_over_sqrt_n"], c["r"], cl[k]) for k, c in enumerate(cands)])
    sd0 = {k: float(np.sqrt(g @ cov @ g)) for k, g in grads.items()}
    picked: list[dict[str, Any]] = []
    avail = np.ones(len(cands), bool)
    for _ in range(min(top, len(cands))):
        cj = rows @ cov  # [c, 5]
        denom = noise**2 + np.einsum("ci,ci->c", cj, rows)
        gain = np.zeros(len(cands))
        for key, g in grads.items():
            var = g @ cov @ g
            new = var - (cj @ g) ** 2 / denom
            gain += 1.0 - np.sqrt(np.clip(new, 0, None) / var)
        hours = np.array([max(c["est_device_hours"], 1e-9) for c in cands])
        score = np.where(avail, gain / hours, -np.inf)
        k = int(np.argmax(score))
        if not np.isfinite(score[k]) or gain[k] <= 0:
            break
        cov = cov - np.outer(cj[k], cj[k]) / denom[k]
        avail[k] = False
        sd = {key: float(np.sqrt(g @ cov @ g)) for key, g in grads.items()}
        picked.append(dict(cands[k], gain=float(gain[k]), gain_per_hour=float(score[k]), sd_after=sd))
    return {"form": form, "sd_before": sd0, "suggestions": picked, "candidates": len(cands),
            "method": "greedy, linearised at the prior (delta method, Sherman-Morrison updates)"}


def _frame(cands):
    import pandas as pd

    return pd.DataFrame({"n_target": [c["n_target"] for c in cands], "tokens": [c["tokens"] for c in cands]})


def yaml_entries(result: dict[str, Any]) -> str:
    """The suggestions as YAML grid entries, grouped by scale, ready to paste under ``scales[i].grid``."""
    if not result["suggestions"]:
        return f"# no suggestions: {result.get('reason', 'none improves the intervals')}\n"
    lines = []
    for s in result["suggestions"]:
        q = s["requested"]
        lines += [f"# scales[{s['scale_index']}] ({s['scale']}) grid: {s['arch_id']}, {s['est_device_hours']:.3g} "
                  f"device-h, optima sd -{s['gain']:.1%} (sum over knobs)",
                  f"- d_over_sqrt_n: [{q['d_over_sqrt_n']:g}]", f"  r: [{q['r']:g}]", f"  gqa: [{q['gqa']}]"]
    return "\n".join(lines) + "\n"


def with_suggestions(config: dict, result: dict[str, Any]) -> dict:
    """A copy of ``config`` with the suggested points added as grid entries of their scales."""
    out = copy.deepcopy(config)
    for s in result["suggestions"]:
        q = s["requested"]
        out["scales"][s["scale_index"]].setdefault("grid", []).append(
            {"d_over_sqrt_n": [q["d_over_sqrt_n"]], "r": [q["r"]], "gqa": [q["gqa"]]})
    return out
