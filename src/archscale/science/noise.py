"""Seed noise estimated from repeated seeds in a runs table (``--seed-noise-from``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_CANDIDATES = ("arch_id", "arch", "run_id")
LOSS_CANDIDATES = ("valid_loss", "loss")


def seed_noise_from_runs(runs: pd.DataFrame, where: str = "runs table", loss: str | None = None,
                         group: str | None = None) -> dict:
    """Pooled within-architecture standard deviation of the loss over repeated seeds.

    Rows sharing ``group`` (default the first of arch_id, arch, run_id) are seeds of one
    architecture; the estimate pools their variances (``ddof=1``) and carries a chi-square 95%
    interval. Raises ValueError naming the table when no architecture was trained twice.
    """
    from scipy import stats

    group = group or next((c for c in GROUP_CANDIDATES if c in runs.columns), None)
    loss = loss or next((c for c in LOSS_CANDIDATES if c in runs.columns), None)
    if group is None or loss is None:
        raise ValueError(f"{where}: needs an architecture column ({', '.join(GROUP_CANDIDATES)}) and a loss column "
                         f"({', '.join(LOSS_CANDIDATES)}); it has {sorted(map(str, runs.columns))}")
    vals = pd.to_numeric(runs[loss], errors="coerce")
    df = pd.DataFrame({"g": runs[group].astype(str), "y": vals}).dropna()
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
