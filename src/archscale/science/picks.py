"""Does the search pick the prior law's Panda when it runs on a simulated study's fit?

The search enumerates its space (:func:`archscale.search.algorithm.grid_axes` and
:func:`~archscale.search.algorithm.enumerate_space`, the same calls as the search stage; the
default axes span the fitted box, which depends only on the grid) and picks the lowest
predicted loss (:func:`~archscale.search.algorithm.pick_panda`). At a fixed (N, D) the ranking does
not depend on ``L_opt`` (a positive factor in the multiplicative form, a constant in the
additive), so each simulated fit's Panda is the argmin of its predicted loss ratio/excess.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ..law.laws import Law
from ..search.algorithm import enumerate_space, grid_axes, pick_panda, score
from ..search.targets import SearchError
from .fits import predict


def prior_panda(law: Law, archs, form: str) -> str:
    """The search's Panda under the prior law (search.algorithm.score + pick_panda)."""
    df = score(archs, law, 1.0, lambda a: 0.0, form if form in law.fitted_forms else law.default_form)
    return str(pick_panda(df)["arch_id"])


def panda_agreement(study, law: Law, df: pd.DataFrame, fits: dict, full: int, r_range) -> list[dict[str, Any]]:
    """Per search target: probability that the simulated search's Panda is the prior's."""
    out = []
    try:
        targets = study.search_targets
    except SearchError as exc:
        return [{"target": None, "status": f"search targets not resolved: {exc}"}]
    settings = study.search_settings
    runs = df.rename(columns={})
    for name, target in targets.items():
        rec: dict[str, Any] = {"target": name, "scale": target.scale.name, "form": settings.form}
        try:
            xs, rs, _ = grid_axes(settings, {"r_range": list(r_range)}, runs)
        except SearchError as exc:
            rec["status"] = f"no search space: {exc}"
            out.append(rec)
            continue
        space = enumerate_space(target.scale, xs, rs, target.walk_base_gqa)
        if not space.archs:
            rec["status"] = f"no valid architecture on the search grid at scale '{target.scale.name}'"
            out.append(rec)
            continue
        archs = list(space.archs.values())
        rec["prior_panda"] = prior_panda(law, archs, settings.form)
        fit = fits.get((full, settings.form))
        if fit is None:
            rec["status"] = f"the full-set {settings.form} fit fails on this grid: the search has no law"
            rec["p_prior_panda"] = 0.0
            out.append(rec)
            continue
        ids = np.array([a.arch_id for a in archs])
        xc = np.array([a.d_over_sqrt_n for a in archs])
        rc = np.array([a.mlp_attn_ratio for a in archs])
        pred = predict(settings.form, fit.params, xc, rc, np.ones((fit.params.shape[0], xc.size)))
        picks = ids[np.argmin(np.where(np.isfinite(pred), pred, np.inf), axis=1)]
        common = Counter(picks.tolist()).most_common(3)
        rec.update(status="ok", candidates=len(archs), p_prior_panda=float(np.mean(picks == rec["prior_panda"])),
                   most_picked=[{"arch_id": a, "share": c / picks.size} for a, c in common])
        out.append(rec)
    return out
