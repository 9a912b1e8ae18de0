"""Seed noise estimated from repeated seeds in a runs table (``--seed-noise-from``): the per-run sd
and the part of it shared by every architecture at a seed (the data order)."""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_CANDIDATES = ("arch_id", "arch", "run_id")
LOSS_CANDIDATES = ("valid_loss", "loss")


def seed_noise_from_runs(runs: pd.DataFrame, where: str = "runs table", loss: str | None = None,
                         group: str | None = None) -> dict:
    """Pooled within-architecture standard deviation of the loss over repeated seeds.

    Rows sharing ``group`` (default the first of arch_id, arch, run_id), and the token budget
    where a run has several (``tokens``), are seeds of one architecture; the estimate pools their variances (``ddof=1``) and carries a chi-square 95%
    interval. Raises ValueError naming the table when no architecture was trained twice.
    """
    from scipy import stats

    group = group or next((c for c in GROUP_CANDIDATES if c in runs.columns), None)
    loss = loss or next((c for c in LOSS_CANDIDATES if c in runs.columns), None)
    if group is None or loss is None:
        raise ValueError(f"{where}: needs an architecture column ({', '.join(GROUP_CANDIDATES)}) and a loss column "
                         f"({', '.join(LOSS_CANDIDATES)}); it has {sorted(map(str, runs.columns))}")
    vals = pd.to_numeric(runs[loss], errors="coerce")
    keys = runs[group].astype(str)
    if "tokens" in runs.columns and runs.groupby(group)["tokens"].nunique().max() > 1:
        keys = keys + "@" + runs["tokens"].astype(str)  # several budgets per run: seeds repeat within a budget
    df = pd.DataFrame({"g": keys, "y": vals}).dropna()
    sizes = df.groupby("g")["y"].size()
    rep = sizes[sizes >= 2]
    if rep.empty:
        raise ValueError(f"{where}: no architecture ({group}) has two or more runs with a finite '{loss}'; "
                         "seed noise needs repeated seeds (train an architecture with several training.seed values)")
    sub = df[df["g"].isin(rep.index)]
    ss = float(sub.groupby("g")["y"].apply(lambda v: np.sum((v - v.mean()) ** 2)).sum())
    dof = int(rep.sum() - rep.size)
    sd = float(np.sqrt(ss / dof))
    ci = [float(np.sqrt(ss / stats.chi2.ppf(0.975, dof))), float(np.sqrt(ss / stats.chi2.ppf(0.025, dof)))]
    return {"seed_noise": sd, "ci95": ci, "architectures": int(rep.size), "runs": int(rep.sum()), "dof": dof,
            "column": loss, "group": group}


def _block_anova(wide: pd.DataFrame) -> tuple[float, float, int, int, int]:
    """(SS_seed, SS_error, seeds, architectures, error dof) of one complete arch x seed block."""
    y = wide.to_numpy(float)  # [seeds, architectures]
    n, a = y.shape
    grand = y.mean()
    ss_seed = a * float(np.sum((y.mean(axis=1) - grand) ** 2))
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand
    return ss_seed, float(np.sum(resid**2)), n, a, (n - 1) * (a - 1)


def seed_decomposition(runs: pd.DataFrame, where: str = "runs table", loss: str | None = None,
                       group: str | None = None, seed: str = "seed",
                       blocks: tuple[str, ...] = ("scale", "tokens")) -> dict:
    """The per-run seed noise split into a part shared by all architectures at a seed and the rest.

    Model: ``loss[a, s] = mu[a] + u[s] + e[a, s]`` within each block (scale, and token budget
    where the table has several), ``u ~ N(0, sigma_u^2)`` shared by every architecture at seed
    ``s`` (same data order), ``e ~ N(0, sigma_e^2)``. Method of moments on the two-way ANOVA
    (no interaction) of each block's complete part (the architectures trained at every seed
    that all its repeated architectures share), pooled over blocks: ``sigma_e^2`` is the
    residual mean square (chi-square interval); ``sigma_u^2 = (SS_seed - df_seed MS_E) /
    sum(df_seed A)`` (truncated at 0); the shared fraction ``rho = sigma_u^2 / (sigma_u^2 +
    sigma_e^2)`` carries the ICC(3,1) F interval (Shrout and Fleiss 1979; exact for one block,
    with the mean block width otherwise). A paired difference has sd ``sqrt(2) sigma_e``; an
    unpaired one ``sqrt(2 (sigma_u^2 + sigma_e^2))``.

    Also returns the pooled within-architecture estimate (:func:`seed_noise_from_runs`) as
    ``seed_noise``. ``shared`` is None (and ``rho`` 0, stated in ``shared_note``) when no block
    has two architectures at two common seeds.
    """
    from scipy import stats

    out = seed_noise_from_runs(runs, where, loss, group)
    loss, group = out["column"], out["group"]
    out.update({"shared": None, "rho": 0.0, "rho_ci95": None, "sigma_e": None, "sigma_e_ci95": None})
    if seed not in runs.columns:
        out["shared_note"] = f"{where}: no '{seed}' column, so the seed-shared part is not measured (taken as 0)"
        return out
    keys = [c for c in blocks if c in runs.columns]
    df = runs.assign(_y=pd.to_numeric(runs[loss], errors="coerce")).dropna(subset=["_y"])
    parts = []
    for _, sub in (df.groupby(keys, sort=True) if keys else [(None, df)]):
        counts = sub.groupby(group)[seed].nunique()
        reps = counts[counts >= 2].index
        shared = set.intersection(*(set(sub.loc[sub[group] == g, seed]) for g in reps)) if len(reps) else set()
        if len(reps) < 2 or len(shared) < 2:
            continue
        cell = sub[sub[group].isin(reps) & sub[seed].isin(shared)]
        parts.append(_block_anova(cell.pivot_table(index=seed, columns=group, values="_y", aggfunc="mean")))
    if not parts:
        out["shared_note"] = (f"{where}: no block has two architectures trained at two common seeds, so the "
                              "seed-shared part is not measured (taken as 0)")
        return out
    ss_seed, ss_e = sum(p[0] for p in parts), sum(p[1] for p in parts)
    df_seed, df_e = sum(p[2] - 1 for p in parts), sum(p[4] for p in parts)
    a_eff = sum((p[2] - 1) * p[3] for p in parts) / df_seed
    ms_e, ms_seed = ss_e / df_e, ss_seed / df_seed
    var_u = max(0.0, (ss_seed - df_seed * ms_e) / sum((p[2] - 1) * p[3] for p in parts))
    f = ms_seed / ms_e if ms_e > 0 else np.inf
    fl, fu = f / stats.f.ppf(0.975, df_seed, df_e), f * stats.f.ppf(0.975, df_e, df_seed)
    icc = [max(0.0, (v - 1) / (v + a_eff - 1)) for v in (fl, fu)]
    out.update({
        "shared": float(np.sqrt(var_u)), "rho": float(var_u / (var_u + ms_e)) if var_u + ms_e > 0 else 0.0,
        "rho_ci95": [float(icc[0]), float(min(icc[1], 1.0))],
        "sigma_e": float(np.sqrt(ms_e)),
        "sigma_e_ci95": [float(np.sqrt(ss_e / stats.chi2.ppf(0.975, df_e))),
                         float(np.sqrt(ss_e / stats.chi2.ppf(0.025, df_e)))],
        "blocks": len(parts), "anova_dof": [int(df_seed), int(df_e)],
        "shared_note": (f"seed-shared part from {len(parts)} complete architecture x seed block(s) "
                        f"(two-way ANOVA, {df_seed} and {df_e} degrees of freedom)"),
    })
    return out
