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

from ..law.calibration import _design, normalise_multiplicative
from ..law.laws import Law
from ..plan import PlannedRun
from ..search.algorithm import enumerate_space
from .fits import KNOBS, N_COEF, _mult_parts
from .simulate import plan_frame, reference_losses, true_optima


def prior_params(law: Law) -> tuple[str, np.ndarray]:
    form = law.default_form
    f = law.forms[form]
    a, b = (normalise_multiplicative(f["a"], f["b"]) if form == "multiplicative" else (f["a"], f["b"]))
    return form, np.array([a[0], a[1], a[2], b[1], b[2]], float)


def jacobian(form: str, P: np.ndarray, x, r, lopt) -> np.ndarray:
    x, r, lopt = (np.atleast_1d(np.asarray(v, float)) for v in (x, r, lopt))
    if form == "additive":
        return _design(x, r)
    return _mult_parts(P[None, :], x, r, lopt[None, :])[1][0]


def _grads(P: np.ndarray) -> dict[str, np.ndarray]:
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
    grads = _grads(P)
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


# ---- sequential design: from a finished run to the runs that resolve its optima --------------
#: Columns of runs.parquet the sequential design reads.
RESULTS_COLUMNS = ("run_id", "arch_id", "seed", "scale", "sweeps", "tokens", "n_target", "d_over_sqrt_n",
                   "mlp_attn_ratio", "valid_loss")
#: Factors by which a sweep is extended beyond an end (geometric steps past the end value).
EXTEND_FACTORS = (1.5, 2.0)


def load_results(results) -> tuple[Law, dict, "pd.DataFrame", dict]:
    """(the fitted law, conditional.json, runs.parquet, the paired seed noise) of a results
    directory; ValueError naming the file and what is missing."""
    import json
    from pathlib import Path

    import pandas as pd

    from ..law.laws import LawError, load_law
    from ..analysis.noise import seed_decomposition

    results = Path(results)
    cpath, rpath = results / "fit" / "conditional.json", results / "runs.parquet"
    for path, what in ((cpath, "the fitted law (the workflow's fit stage writes it)"),
                       (rpath, "the runs table (the workflow's aggregate stage writes it)")):
        if not path.is_file():
            raise ValueError(f"--from-results {results}: {path} does not exist; it holds {what}. Point "
                             "--from-results at the results directory of a finished run")
    try:
        law = load_law(cpath)
        conditional = json.loads(cpath.read_text())
    except (LawError, ValueError) as exc:
        raise ValueError(f"{cpath}: {exc}") from None
    runs = pd.read_parquet(rpath)
    missing = [c for c in RESULTS_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"{rpath}: missing column(s) {missing}; the sequential design needs {list(RESULTS_COLUMNS)}")
    if runs["seed"].isna().all():
        raise ValueError(f"{rpath}: the 'seed' column is empty: runs without seeds give no paired noise and no "
                         "interval; train each sweep at two or more seeds (scales[].seeds)")
    noise = seed_decomposition(runs, where=str(rpath))
    return law, conditional, runs, noise


def _t_half(n: int, level: float) -> float:
    """Half-width of a t interval of a mean of ``n`` paired differences, per unit sd."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) / np.sqrt(n)) if n >= 2 else np.inf


class SweepTarget:
    """An interior minimum of a one-knob sweep that the effects stage does not resolve, and what
    added seeds and points would do to its rises (end minus best; the claim needs both)."""

    def __init__(self, effect, scale_index: int, grid_index: int, key: str, family: int, paired_sd: float, ends):
        self.effect, self.scale_index, self.grid_index, self.key = effect, scale_index, grid_index, key
        self.membership = f"{effect.knob}@{effect.sweep}"  # the plan's sweep membership of its points
        rises = {"low": effect.rise_low, "high": effect.rise_high}
        self.n0 = max(d.n for d in rises.values())
        self.P0 = self.P = len(effect.points)
        self.measured = effect.measured
        # the sweep's share of the family-wise 5% (Holm's level times its P - 1 claims)
        self.alpha = (1 - effect.corrected_level) * (self.P0 - 1) if self.measured else (1 - 0.95) / family
        self.paired_sd = paired_sd
        self.est = {s: d.estimate for s, d in rises.items()}
        self.h0 = {s: (d.interval(effect.corrected_level)[1] - d.interval(effect.corrected_level)[0]) / 2
                   if self.measured else np.inf for s, d in rises.items()}
        self.end = dict(ends)  # side -> (x, r, l_opt) of the sweep's end architecture
        self.n, self.extended = self.n0, set()
        self.product = False  # the sweep entry varies another knob too (the label then names the held values)

    @property
    def label(self) -> str:
        from ..analysis.effects import KNOB_LABELS

        origin, held = self.effect.sweep.split("|", 1)
        return f"{self.effect.scale} {KNOB_LABELS[self.effect.knob]} sweep {origin}" + (f" at {held}" if self.product else "")

    def level(self, P: int | None = None) -> float:
        return 1 - self.alpha / ((P or self.P) - 1)

    def half(self, side: str, n: int | None = None, P: int | None = None) -> float:
        n, lv = n or self.n, self.level(P)
        if self.measured:
            return self.h0[side] * _t_half(n, lv) / _t_half(self.n0, self.level(self.P0))
        return _t_half(n, lv) * self.paired_sd

    def width(self, n=None, P=None, est=None) -> float:
        """The rises' interval half-width relative to the rise (max over the two; < 1: resolved)."""
        est = est or self.est
        return max((self.half(s, n, P) / est[s]) if est[s] > 0 else np.inf for s in est)

    def interval(self, n=None, P=None, est=None) -> dict:
        """The limiting rise with its interval (at the sweep's corrected level)."""
        est = est or self.est
        side = max(est, key=lambda s: (self.half(s, n, P) / est[s]) if est[s] > 0 else np.inf)
        h = self.half(side, n, P)
        return {"rise": side, "estimate": est[side], "ci": None if not np.isfinite(h) else
                [est[side] - h, est[side] + h], "level": self.level(P)}


def _gain(before: float, after: float) -> float:
    if not np.isfinite(after):
        return 0.0
    return 1.0 if not np.isfinite(before) else 1.0 - after / before


def sweep_targets(effects, config: dict, runs, law: Law, lopt, paired_sd: float) -> list[SweepTarget]:
    """Interior minima the effects table does not resolve, each mapped to its grid sweep."""
    import re

    out = []
    for e in effects:
        if e.shape != "interior minimum" or e.resolved:
            continue
        m = re.match(r"^scales\[(\d+)\]\.grid\[(\d+)\]\|", e.sweep)
        i, k = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        if m is None or i >= len(config["scales"]) or config["scales"][i]["name"] != e.scale \
                or k >= len(config["scales"][i].get("grid") or []):
            raise ValueError(f"runs.parquet: sweep '{e.sweep}' at scale '{e.scale}' is not a grid sweep of the "
                             "config; pass the config the results were trained with")
        sweep = config["scales"][i]["grid"][k]
        key = "r" if e.knob == "r" else ("d_model" if "d_model" in sweep else "d_over_sqrt_n")
        ends = {}
        for side, pt in (("low", e.points[0]), ("high", e.points[-1])):
            row = runs[runs["arch_id"] == pt["arch_id"]].iloc[0]
            ends[side] = (float(row["d_over_sqrt_n"]), float(row["mlp_attn_ratio"]),
                          lopt(row["n_target"], e.tokens if e.tokens is not None else row["tokens"]))
        t = SweepTarget(e, i, k, key, len(effects), paired_sd, ends)
        t.product = sum(len(sweep.get(c) or []) > 1 for c in ("d_model", "d_over_sqrt_n", "r", "gqa")) > 1
        out.append(t)
    return out


class LawDesign:
    """The fitted law linearised at its coefficients on the runs it is fitted on (one row per run
    and token budget in the fit's r range), with the measured paired noise: per-run sd ``sigma``,
    the fraction ``rho`` of its variance shared by the runs of one (scale, seed, budget). The
    coefficients' covariance is the sandwich ``A^-1 J^T S J A^-1`` (``A = J^T J``: the fit is
    unweighted least squares; ``S`` the noise covariance), and an optimum ``c2/c1`` gets its sd
    by the delta method."""

    def __init__(self, law: Law, r_range, sigma: float, rho: float):
        self.form, self.P = prior_params(law)
        self.grads = _grads(self.P)
        self.r_range = (float(r_range[0]), float(r_range[1]))
        self.var_e, self.var_u = sigma**2 * (1 - rho), sigma**2 * rho
        self.A = np.zeros((N_COEF, N_COEF))
        self.sums: dict[tuple, np.ndarray] = {}

    def add(self, rows) -> "LawDesign":
        """A copy with ``rows`` (dicts: x, r, l_opt, group) added; rows outside the r range are not fitted."""
        out = copy.copy(self)
        out.A, out.sums = self.A.copy(), dict(self.sums)
        for row in rows:
            if not self.r_range[0] <= row["r"] <= self.r_range[1]:
                continue
            j = jacobian(self.form, self.P, row["x"], row["r"], row["l_opt"])[0]
            out.A += np.outer(j, j)
            out.sums[row["group"]] = out.sums.get(row["group"], np.zeros(N_COEF)) + j
        return out

    def sd(self) -> dict[str, float]:
        """Linearised sd of each interior optimum (inf where the design does not identify it)."""
        if np.linalg.matrix_rank(self.A) < N_COEF:
            return {k: np.inf for k in self.grads}
        inv = np.linalg.inv(self.A)
        S = self.var_e * self.A + self.var_u * sum((np.outer(s, s) for s in self.sums.values()), np.zeros_like(self.A))
        cov = inv @ S @ inv
        return {k: float(np.sqrt(max(g @ cov @ g, 0.0))) for k, g in self.grads.items()}


def law_targets(law: Law, design: LawDesign, width: float) -> tuple[list[dict], list[str]]:
    """The fitted optima that are unresolved: withheld (no interval, or one leaving the range) or
    wider than ``width`` times the optimum; and a note for each knob that is not a target."""
    from ..analysis.effects import KNOB_LABELS

    opt = law.forms[design.form].get("optimum") or {}
    targets, notes = [], []
    for knob, (i1, i2) in KNOBS.items():
        label = KNOB_LABELS[knob]
        if knob not in design.grads:
            notes.append(f"fitted {label}*: the law has no interior minimum of {label} (c1 = {design.P[i1]:.3g}, "
                         f"c2 = {design.P[i2]:.3g}); there is no optimum interval to narrow")
            continue
        val, ci, why = opt.get(knob), opt.get(f"{knob}_ci"), opt.get(f"{knob}_reason")
        point = float(design.P[i2] / design.P[i1])
        ci = list(ci) if ci and None not in ci else None
        if val is not None and ci is not None and ci[1] - ci[0] <= width * val:
            notes.append(f"fitted {label}* = {val:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]: resolved (interval within "
                         f"{width:.0%} of the optimum)")
            continue
        targets.append({"knob": knob, "label": f"fitted {label}*", "point": point, "ci": ci,
                        "reason": why or f"95% interval wider than {width:.0%} of the optimum"})
    return targets, notes


def law_interval(target: dict, sd_now: float, sd_after: float) -> list[float] | None:
    """The fit's interval narrowed by the linearised ratio of sds (asymmetric bounds kept); where
    the fit withheld it, the linearised 95% interval."""
    v = target["point"]
    if not np.isfinite(sd_after):
        return None
    if target["ci"] is None or not np.isfinite(sd_now):
        return [v - 1.96 * sd_after, v + 1.96 * sd_after]
    f = sd_after / sd_now
    return [v - (v - target["ci"][0]) * f, v + (target["ci"][1] - v) * f]


def _lopt_lookup(law: Law, runs):
    """``L_opt(N, D)`` of the law (its Chinchilla part or its table), else the lowest loss of the
    runs at that (n_target, tokens), as the empirical reference takes it."""
    from ..law.laws import LawError

    cache: dict[tuple[int, int], float] = {}

    def lopt(n, d) -> float:
        key = (int(n), int(d))
        if key not in cache:
            try:
                cache[key] = float(law.l_opt(*key))
            except LawError:
                sub = runs.loc[(runs["n_target"] == key[0]) & (runs["tokens"] == key[1]), "valid_loss"]
                if sub.empty:
                    raise ValueError(f"no reference loss at N {key[0]}, D {key[1]}: neither the law nor the runs "
                                     "have one") from None
                cache[key] = float(sub.min())
        return cache[key]

    return lopt


def _rows_of(plan, runs, lopt) -> list[dict]:
    """Design rows (x, r, l_opt, noise group) of planned training runs."""
    out = []
    for tr in runs:
        planned = plan.runs[tr.arch_id]
        out.append({"x": planned.arch.d_over_sqrt_n, "r": planned.arch.mlp_attn_ratio,
                    "l_opt": lopt(planned.scale.n_target, tr.tokens), "group": (planned.scale.name, tr.seed, tr.tokens)})
    return out


def _actions(ctx: dict) -> list:
    """Candidate additions in the current state: a new seed for each sweep holding an unresolved
    optimum, that sweep extended past each end, and new grid points (for the fitted optima)."""
    from .overlay import Action, next_seed

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
    from ..study import Study
    from .overlay import Action

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
    from ..config import ConfigError
    from .overlay import apply, plan_diff, plan_of, runs_cost

    cfg = apply(ctx["config"], action)
    try:
        plan = plan_of(cfg)
    except ConfigError:
        return None  # infeasible (e.g. a hidden size the scale's layers cannot hold)
    added = plan_diff(ctx["plan"], plan)
    if not added:
        return None
    hours = runs_cost(plan, added)
    design = ctx["design"].add(_rows_of(plan, added, ctx["lopt"]))
    sd = design.sd()
    effects, gain = {}, 0.0
    for j, t in enumerate(ctx["sweeps"]):
        after = _sweep_after(ctx, t, action, plan)
        if after is not None:
            g = _gain(t.width(), t.width(after[0], after[1], after[2]))
            effects[("sweep", j)] = (g, after)
            gain += g
    for j, t in enumerate(ctx["laws"]):
        g = _gain(ctx["sd"][t["knob"]], sd[t["knob"]])
        effects[("law", j)] = (g, sd[t["knob"]])
        gain += g
    return {"action": action, "config": cfg, "plan": plan, "added": added, "hours": hours, "design": design,
            "sd": sd, "effects": effects, "gain": gain}


def _interval_text(iv: list[float] | None, est: float | None = None) -> str:
    """A loss difference (``est`` given) as ``+0.049 [-0.105, 0.203]``; an optimum's interval as ``[2.34, 5.19]``."""
    if est is not None:
        return f"{est:+.3f} " + ("(no interval)" if iv is None else f"[{iv[0]:.3f}, {iv[1]:.3f}]")
    return "no interval" if iv is None else f"[{iv[0]:.3g}, {iv[1]:.3g}]"


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
    from ..analysis.effects import KNOB_LABELS, knob_effects
    from .overlay import check_overlay, overlay_of, plan_of

    plan = plan_of(raw)
    unknown = sorted(set(runs["run_id"].astype(str)) - set(plan.train_runs))
    if unknown:
        raise ValueError(f"runs.parquet has {len(unknown)} run(s) the config does not plan (e.g. {unknown[:3]}); "
                         "pass the config the results were trained with")
    lopt = _lopt_lookup(law, runs)
    sigma, rho = float(noise["seed_noise"]), float(noise.get("rho") or 0.0)
    paired_sd = float(np.sqrt(2) * (noise.get("sigma_e") or sigma))
    effects = knob_effects(runs)
    ctx: dict[str, Any] = {"config": copy.deepcopy(raw), "plan": plan, "law": law, "lopt": lopt,
                           "sweeps": sweep_targets(effects, raw, runs, law, lopt, paired_sd)}
    have = [tr for rid, tr in plan.train_runs.items() if rid in set(runs["run_id"].astype(str))]
    design = LawDesign(law, conditional.get("r_range") or law.range.get("r") or (0.0, np.inf), sigma, rho)
    ctx["design"] = design.add(_rows_of(plan, have, lopt))
    ctx["sd"] = ctx["sd0"] = ctx["design"].sd()
    ctx["laws"], notes = law_targets(law, ctx["design"], width)
    notes += [f"{e.scale} {KNOB_LABELS[e.knob]} sweep {e.sweep}: {e.verdict()}" for e in effects
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


def _iv(d: dict) -> str:
    if d["what"] == "optimum":
        return f"{d['estimate']:.3g} " + _interval_text(d["interval"])
    return _interval_text(d["interval"], d["estimate"])


def _columns(rows: list[list[str]], right: int = 2) -> list[str]:
    """Rows padded to aligned columns (the last ``right`` columns, numbers, right-aligned)."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    cut = len(widths) - right
    return ["  ".join(v.ljust(w) if c < cut else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def format_sequential(res: dict[str, Any], source: str = "results") -> str:
    """The sequential design as text: the unresolved optima, the proposals (what, why, interval
    before -> after, cost) and the overlay's use."""
    nz = res["noise"]
    shared = ("" if nz["shared_fraction_ci95"] is None else
              f", {nz['shared_fraction']:.2f} [{nz['shared_fraction_ci95'][0]:.2f}, {nz['shared_fraction_ci95'][1]:.2f}] "
              "of its variance shared at a seed")
    lines = [f"Sequential design from {source}: fitted law {res['law']} ({res['form']}); per-run seed sd "
             f"{nz['per_run_sd']:.3g} [{nz['per_run_sd_ci95'][0]:.3g}, {nz['per_run_sd_ci95'][1]:.3g}]{shared}; "
             f"sd of a paired difference {nz['paired_difference_sd']:.3g}", ""]
    if not res["targets"]:
        lines.append(res.get("reason", "nothing to propose"))
    else:
        lines.append("Unresolved optima: interval now -> expected after the proposals (sweeps: the limiting rise "
                     "at the verdict's corrected level; fitted optima: 95%)")
        for t in res["targets"]:
            lv = f" ({100 * t['after']['level']:.3g}% level)" if t["what"] != "optimum" else " (95%)"
            lines.append(f"  {t['target']}, {t['what']}: {_iv(t)} -> {_iv(t['after'])}{lv}")
    if res["proposals"]:
        rows = [["#", "proposal", "why (narrows most)", "interval before -> after", "device-h", "runs"]]
        for k, p in enumerate(res["proposals"], 1):
            rows.append([str(k), p["what"], f"{p['why']}, {p['reads']}", f"{_iv(p['before'])} -> {_iv(p['after'])}",
                         f"{p['device_hours']:.3g}", str(len(p["runs"]))])
        lines += [""] + ["  " + ln for ln in _columns(rows)]
        lines.append(f"total: {len(res['new_runs'])} new training runs, {res['device_hours']:.3g} device-hours "
                     "(the plan's estimate, compute.*)")
    elif res["targets"]:
        lines += ["", res.get("reason", "no proposal")]
    lines += [f"note: {n}" for n in res["notes"]]
    lines.append("note: expected intervals assume the measured rises and seed noise hold; an extension's rise is the "
                 "fitted law's; a fitted optimum's interval shrinks by its linearised sd (delta method, paired noise)")
    return "\n".join(lines)
