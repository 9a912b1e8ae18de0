"""Plan the science: simulate a study's fits before training it.

:func:`simulate_study` draws K simulated studies on the grid the plan resolves
(``Study(config).plan``): the loss of every architecture is a prior law's prediction
(:func:`archscale.law.load_law`: a named law or a fit file) plus Gaussian seed noise. Each study is
fitted as the fit stage fits it (same r range filter, same reference, same guards; the batched
fits of :mod:`archscale.science.fits`) on every scale set the fit uses: the progressive
validation's training sets (the k smallest scales, and each scale alone for the ``next`` tasks)
and the full set. Reported per set and form: the probability that an interior optimum is found
for each knob, the median interval width of the optima and their spread across studies; per
progressive task the expected Spearman; per search target the probability that the search's
Panda is the prior law's Panda; per one-knob sweep the probability that the effects stage's
paired rule (:mod:`archscale.analysis.paired`) resolves it. Every planned run (architecture x
seed) is drawn: the per-run seed noise is split into a part shared by all runs of one seed at a
scale (same data order; ``shared``, measured by :func:`archscale.analysis.noise.seed_decomposition`)
and an independent rest, so matched-seed differences are as correlated as the measured runs.

The prior's reference loss ``L_opt(N, D)``: the law's own (its Chinchilla part or its table of
runs), else Epoch AI's Chinchilla replication (Besiroglu et al. 2024), named in the output. With
``fit.reference: empirical`` the simulated fit uses each study's lowest simulated loss per
(N, D), as the fit stage does; with ``chinchilla`` it uses the prior's reference (the fit stage
fits a Chinchilla law per study, which is not simulated: the output says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..law.chinchilla import EPOCH_CHINCHILLA, FitError
from ..law.chinchilla import predict_loss as chinchilla_predict
from ..law.laws import Law, LawError
from .fits import KNOBS, BatchFit, fit_batch, predict, spearman_rows
from .picks import panda_agreement

PLAN_FIELDS = ["arch_id", "scale", "n_target", "tokens", "d_over_sqrt_n", "mlp_attn_ratio", "est_device_hours", "gqa",
               "sweeps", "seeds"]


def plan_frame(study) -> pd.DataFrame:
    """The plan's architectures (one row each) with the columns the simulation needs."""
    return pd.DataFrame(study.plan.rows())[PLAN_FIELDS]


def reference_losses(law: Law, df: pd.DataFrame) -> tuple[np.ndarray, str]:
    """True ``L_opt`` of every row (its scale's nominal N and tokens) and where it comes from."""
    keys = sorted(set(zip(df["n_target"], df["tokens"])))
    try:
        table = {k: law.l_opt(*k) for k in keys}
        source = f"law '{law.name}'"
    except LawError:
        table = {k: float(chinchilla_predict(EPOCH_CHINCHILLA, *k)) for k in keys}
        source = "Epoch AI's Chinchilla fit (Besiroglu et al. 2024): the prior law has no reference loss"
    return np.array([table[k] for k in zip(df["n_target"], df["tokens"])]), source


def scale_sets(df: pd.DataFrame) -> tuple[list[tuple[str, list[str]]], list[tuple[str, int, str]]]:
    """(sets, tasks): sets the fit uses (k smallest scales; each later scale alone; the full set)
    as (label, scales); progressive tasks as (task label, index of its training set, test scale)."""
    order = df.groupby("scale")["n_target"].first().sort_values().index.tolist()
    sets, tasks = [], []
    for k in range(1, len(order) + 1):
        sets.append(("+".join(order[:k]), order[:k]))
        if k < len(order):
            tasks.append((f"{'+'.join(order[:k])}->{order[k]}", len(sets) - 1, order[k]))
    for name in order[1:-1]:
        sets.append((name, [name]))
    return sets, tasks


def run_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per planned run (architecture x seed), with a ``seed`` column."""
    seeds = df["seeds"].map(lambda v: [int(s) for s in str(v).split(",") if s.strip()] or [0])
    return df.assign(seed=seeds).explode("seed").astype({"seed": int}).reset_index(drop=True)


def draw(mean: np.ndarray, noise: float, k: int, seed: int, shared: float = 0.0,
         groups: np.ndarray | None = None) -> np.ndarray:
    """K simulated studies: ``[K, n]`` losses with per-run sd ``noise``, of which the fraction
    ``shared`` of the variance is common to the runs of one seed group (``groups``: scale and seed)."""
    rng = np.random.default_rng(seed)
    if not shared:
        return mean[None, :] + rng.normal(0.0, noise, (k, mean.size))
    codes = np.unique(groups, return_inverse=True)[1]
    u = rng.normal(0.0, noise * np.sqrt(shared), (k, codes.max() + 1))[:, codes]
    return mean[None, :] + u + rng.normal(0.0, noise * np.sqrt(1.0 - shared), (k, mean.size))


def sweep_verdicts(runs: pd.DataFrame, losses: np.ndarray, mean: np.ndarray) -> list[dict[str, Any]]:
    """Per one-knob sweep of the plan: how often the effects stage's paired rule
    (:func:`archscale.analysis.paired.sweep_tests`, Holm across the sweeps) resolves it in the
    simulated studies, beside the prior's true shape along the sweep."""
    from ..analysis.effects import KNOB_COLUMNS, _sweep_groups
    from ..analysis.paired import holm, sweep_tests

    out, p_claims = [], []
    for knob, col in KNOB_COLUMNS.items():
        for (scale, sweep), archs in sorted(_sweep_groups(runs, knob).items()):
            sub = runs[runs["arch_id"].isin(archs)]
            if len(archs) < 3:
                continue
            order = sub.groupby("arch_id")[col].first().sort_values().index.tolist()
            common = sorted(set.intersection(*(set(sub.loc[sub["arch_id"] == a, "seed"]) for a in order)))
            truth = [float(mean[sub.index[sub["arch_id"] == a]].mean()) for a in order]
            best = int(np.argmin(truth))
            rec = {"scale": scale, "knob": knob, "sweep": sweep, "architectures": len(order), "seeds": len(common),
                   "true_shape": "interior minimum" if 0 < best < len(order) - 1 else "monotone"}
            if len(common) < 2:
                rec.update(p_resolved=0.0, p_interior_resolved=0.0,
                           note="fewer than two seeds shared by the sweep's architectures: no interval, never resolved")
                out.append(rec)
                continue
            idx = np.array([[sub.index[(sub["arch_id"] == a) & (sub["seed"] == s)][0] for s in common] for a in order])
            t = sweep_tests(losses[:, idx])
            p_claims.append(t["p_claim"])
            rec["_interior"] = t["interior"]
            out.append(rec)
    if p_claims:
        resolved = holm(np.column_stack(p_claims)) <= 0.05
        for j, rec in enumerate(r for r in out if "_interior" in r):
            interior = rec.pop("_interior")
            rec.update(p_resolved=float(resolved[:, j].mean()),
                       p_interior_resolved=float((resolved[:, j] & interior).mean()))
    return out


def fit_reference(losses: np.ndarray, df: pd.DataFrame, true_lopt: np.ndarray, reference: str) -> np.ndarray:
    """``L_opt`` per study and row as the fit stage takes it (empirical: lowest loss per (N, D))."""
    if reference == "chinchilla":
        return np.broadcast_to(true_lopt, losses.shape)
    codes = df.groupby(["n_target", "tokens"]).ngroup().to_numpy()
    out = np.empty_like(losses)
    for g in np.unique(codes):
        m = codes == g
        out[:, m] = losses[:, m].min(axis=1, keepdims=True)
    return out


def true_optima(law: Law) -> dict[str, float | None]:
    f = law.forms[law.default_form]
    a, b = f.a, f.b
    return {"d_over_sqrt_n": a[2] / a[1] if a[1] > 0 and a[2] > 0 else None,
            "r": b[2] / b[1] if b[1] > 0 and b[2] > 0 else None}


def _q(v: np.ndarray, q) -> list[float] | None:
    v = v[np.isfinite(v)]
    return None if v.size == 0 else [float(np.percentile(v, p)) for p in q]


def knob_summary(fit: BatchFit, key: str, truth: float | None) -> dict[str, Any]:
    """What K simulated fits say about one knob's optimum."""
    opt, ci, inside = fit.optimum[key], fit.ci[key], fit.interior[key]
    width = ci[:, 1] - ci[:, 0]
    out = {
        "fitted": fit.factors[key] is None, "reason": fit.factors[key], "range": list(fit.ranges[key]),
        "p_interior": float(inside.mean()), "p_interior_point": float(fit.interior_point[key].mean()),
        "median_interval_width": float(np.median(width[inside])) if inside.any() else None,
        "spread_2.5_50_97.5": _q(opt[inside], (2.5, 50, 97.5)),
        "truth": truth, "truth_in_range": truth is not None and fit.ranges[key][0] <= truth <= fit.ranges[key][1],
        "coverage": None, "interval_note": fit.interval_note,
    }
    if truth is not None and inside.any():
        out["coverage"] = float(np.mean((ci[inside, 0] <= truth) & (truth <= ci[inside, 1])))
    return out


def verdict(summary: dict[str, Any], key: str) -> str:
    """One plain sentence: can this grid find this knob's optimum?"""
    s = summary[key]
    if not s["fitted"]:
        return f"cannot find an optimum of {key}: {s['reason']}"
    if s["p_interior"] < 0.05:
        why = ""
        if s["interval_note"]:
            why = f" ({s['interval_note']})"
        elif s["truth"] is not None and not s["truth_in_range"]:
            why = f" (the prior's optimum {s['truth']:.4g} lies outside the sampled range {s['range'][0]:.4g}-{s['range'][1]:.4g})"
        return f"cannot find an interior optimum of {key}{why}: {s['p_interior']:.0%} of simulated studies do"
    return f"finds an interior optimum of {key} in {s['p_interior']:.0%} of simulated studies"


def simulate_study(study, law: Law, noise: float, simulations: int, seed: int = 0,
                   shared: float = 0.0) -> dict[str, Any]:
    """The plan-the-science report (a JSON-ready dict); see the module docstring. ``noise`` is the
    per-run seed sd; ``shared`` the fraction of its variance common to every run of one seed at a
    scale (the data order), as :func:`archscale.analysis.noise.seed_decomposition` measures it."""
    if noise < 0 or not np.isfinite(noise):
        raise ValueError(f"seed noise must be a finite non-negative loss, got {noise!r}")
    if not 0.0 <= shared < 1.0:
        raise ValueError(f"seed-shared fraction of the noise must be in [0, 1), got {shared!r}")
    if simulations < 2:
        raise ValueError(f"simulations must be at least 2, got {simulations}")
    fit_cfg = study.fit
    lo, hi = float(fit_cfg["r_min"]), float(fit_cfg["r_max"])
    archs = plan_frame(study)
    df = run_frame(archs)  # one row per run: the fit stage fits every run
    true_lopt, ref_source = reference_losses(law, df)
    x, r = df["d_over_sqrt_n"].to_numpy(float), df["mlp_attn_ratio"].to_numpy(float)
    mean = np.asarray(law.predict(x, r, true_lopt), float)
    groups = (df["scale"].astype(str) + "|" + df["seed"].astype(str)).to_numpy()
    losses = draw(mean, noise, simulations, seed, shared, groups)
    lopt = fit_reference(losses, df, true_lopt, fit_cfg["reference"])
    in_r = (r >= lo) & (r <= hi)
    truth = true_optima(law)
    sets, tasks = scale_sets(df)
    notes = [f"reference loss of the prior: {ref_source}"]
    if fit_cfg["reference"] == "chinchilla":
        notes.append("fit.reference chinchilla: the simulated fits use the prior's L_opt; the fit stage's own "
                     "Chinchilla fit per study is not simulated, so intervals here are optimistic")
    fits: dict[tuple[int, str], BatchFit] = {}
    set_out = []
    for i, (label, names) in enumerate(sets):
        m = df["scale"].isin(names).to_numpy() & in_r
        entry: dict[str, Any] = {"scales": label, "n_points": int(m.sum()), "forms": {}}
        for form in fit_cfg["forms"]:
            try:
                fit = fits[(i, form)] = fit_batch(form, x[m], r[m], losses[:, m], lopt[:, m])
            except FitError as exc:
                entry["forms"][form] = {"status": f"cannot fit: {exc}"}
                continue
            summ = {k: knob_summary(fit, k, truth[k]) for k in KNOBS}
            summ["verdict"] = [verdict(summ, k) for k in KNOBS]
            summ["status"] = "ok"
            entry["forms"][form] = summ
        set_out.append(entry)
    task_out = []
    for label, i, test in tasks:
        m = (df["scale"] == test).to_numpy() & in_r
        row: dict[str, Any] = {"task": label, "forms": {}}
        for form in fit_cfg["forms"]:
            if (i, form) not in fits or m.sum() < 2:
                row["forms"][form] = None
                continue
            pred = predict(form, fits[(i, form)].params, x[m], r[m], lopt[:, m])
            rho = spearman_rows(pred, losses[:, m])
            row["forms"][form] = {"mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else None,
                                  "2.5_97.5": _q(rho, (2.5, 97.5))}
        task_out.append(row)
    full = df["scale"].nunique() - 1  # sets[full]: every scale
    pandas_ = panda_agreement(study, law, df, fits, full, (lo, hi))
    return {
        "law": law.name, "law_source": law.source, "seed_noise": float(noise), "simulations": int(simulations),
        "seed": int(seed), "reference": fit_cfg["reference"], "r_range": [lo, hi], "architectures": int(len(archs)),
        "runs": int(len(df)), "seed_shared_fraction": float(shared), "sweeps": sweep_verdicts(df, losses, mean),
        "sweep_rule": ("the effects stage's: differences of mean loss paired at matched seeds (t intervals), "
                       "Bonferroni over each sweep's P - 1 claims, Holm across the sweeps, family-wise 5%"),
        "prior_optimum": truth, "scale_sets": set_out, "full_set": full, "validation": task_out, "panda": pandas_,
        "interval_method": "per study: delta method (additive: on the OLS covariance, as the fit stage; "
                           "multiplicative: on the Gauss-Newton covariance, the bootstrap's large-sample limit)",
        "notes": notes,
    }
