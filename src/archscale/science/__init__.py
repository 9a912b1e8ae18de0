"""Plan the science before the compute: will this grid find the optima?

:func:`science_plan` is the one entry point (``archscale plan --science`` and the workflow's
``plan_science`` rule): simulated studies (:mod:`.simulate`, fitted by :mod:`.fits`), the
search's picks (:mod:`.picks`) and suggested grid points (:mod:`.suggest`);
:func:`~archscale.science.text.format_science` renders it as text.
"""

from __future__ import annotations

from typing import Any

from ..analysis.noise import seed_decomposition, seed_noise_from_runs
from .simulate import simulate_study
from .suggest import suggest, with_suggestions, yaml_entries
from .text import format_science

__all__ = ["science_from_config", "science_plan", "settings", "seed_decomposition", "seed_noise_from_runs", "simulate_study", "suggest", "with_suggestions",
           "yaml_entries", "format_science"]


def science_plan(study, law_name: str, noise: float, simulations: int, seed: int = 0, top: int = 5,
                 shared: float = 0.0) -> dict[str, Any]:
    """The plan-the-science result: the simulation (per-run seed sd ``noise``, of which the fraction
    ``shared`` of the variance is common to a seed) and the ranked suggestions (JSON-ready)."""
    from ..io import json_clean
    from ..law.laws import load_law

    law = load_law(law_name)
    out = simulate_study(study, law, noise, simulations, seed, shared)
    sug = suggest(study, law, noise, top)
    sug["yaml"] = yaml_entries(sug)
    out["suggestions"] = sug
    return json_clean(out)


def settings(study) -> dict[str, Any]:
    """``plan.science`` of the study (schema defaults filled); ``law`` None means off."""
    return dict(study.config.get("plan", {}).get("science", {}))


def science_from_config(study) -> dict[str, Any]:
    """The workflow's ``plan_science`` result from ``plan.science`` (law and seed_noise required)."""
    sci = settings(study)
    if not sci.get("law"):
        raise ValueError("plan.science.law is null: the science plan is off (set a prior law to turn it on)")
    if sci.get("seed_noise") is None:
        raise ValueError("plan.science.seed_noise: set the seed noise (standard deviation of the loss between "
                         "seeds, e.g. 0.01-0.05) to plan the science with plan.science.law "
                         f"'{sci['law']}'")
    return science_plan(study, sci["law"], float(sci["seed_noise"]), int(sci["simulations"]), int(sci["seed"]),
                        int(sci["suggest"]))
