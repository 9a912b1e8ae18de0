"""What the science plan predicted next to what the fit found.

:func:`plan_vs_fit` pairs each fitted optimum (``results/fit/conditional.json``) with the
plan's prediction for the same form on the full scale set (``results/plan/science.json``): the
probability of an interior optimum, the median interval width and the range of the optimum
over 95% of the simulated studies. :func:`plan_vs_fit_sentences` words it for the findings.
Both return nothing when the science plan was off (no science.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..law.result import Optimum

if TYPE_CHECKING:
    from ..law.laws import Law

KNOB_LABELS = {"d_over_sqrt_n": "d/sqrt(N)*", "r": "r*"}


def load_science(path) -> dict | None:
    """The science plan's JSON, or None when the file does not exist (the plan was off)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc}); re-run the plan_science rule") from exc


def plan_vs_fit(science: dict | None, law: Law | None) -> list[dict[str, Any]]:
    """One row per (form, knob) fitted and planned."""
    if not science or law is None:
        return []
    planned = science["scale_sets"][science["full_set"]]["forms"]
    rows = []
    for form, fit in law.forms.items():
        plan = planned.get(form)
        if not plan or plan.get("status") != "ok":
            continue
        for key in KNOB_LABELS:
            p = plan[key]
            opt = (fit.optimum or Optimum()).knob(key)
            val, ci = opt.value, None if opt.interval is None else list(opt.interval)
            spread = p.get("spread_2.5_50_97.5")
            inside = None if val is None or not spread else bool(spread[0] <= val <= spread[2])
            rows.append({
                "form": form, "knob": key, "fitted": val, "fitted_ci": ci,
                "fitted_width": None if not ci or None in ci else ci[1] - ci[0],
                "fitted_reason": opt.reason, "planned_p_interior": p["p_interior"],
                "planned_median_width": p["median_interval_width"], "planned_range_95": None if not spread else [spread[0], spread[2]],
                "prior": p["truth"], "within_planned_range": inside,
            })
    return rows


def plan_vs_fit_sentences(science: dict | None, law: Law | None) -> list[str]:
    """Plain sentences for the findings: the plan's prediction beside each fitted optimum."""
    out = []
    for r in plan_vs_fit(science, law):
        label = KNOB_LABELS[r["knob"]]
        planned = (f"the plan (prior '{science['law']}', seed noise {science['seed_noise']:.3g}) predicted an interior "
                   f"optimum in {r['planned_p_interior']:.0%} of simulated studies")
        if r["planned_range_95"]:
            lo, hi = r["planned_range_95"]
            planned += f", {label} in {lo:.3g}-{hi:.3g}, interval width about {r['planned_median_width']:.2g}"
        if r["fitted"] is None:
            found = f"the fit reports none ({r['fitted_reason']})"
        else:
            width = f", interval width {r['fitted_width']:.2g}" if r["fitted_width"] is not None else ""
            where = {True: "inside", False: "outside", None: "not comparable to"}[r["within_planned_range"]]
            found = f"the fit found {label} = {r['fitted']:.3g}{width}, {where} the planned range"
        out.append(f"{r['form']} {label}: {planned}; {found}.")
    return out
