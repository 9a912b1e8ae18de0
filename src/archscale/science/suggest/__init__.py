"""Where to spend training to narrow the optima's intervals.

Two questions, one package: before training, which grid points would narrow the optima's
intervals most per GPU-hour (:mod:`.refine`: the prior law linearised on the planned grid,
:func:`suggest`); after a finished study, which runs (a seed, a sweep extended, a new point) most
narrow its unresolved optima per device-hour and the config overlay that trains them
(:func:`sequential_design`: :mod:`.targets` what is unresolved, :mod:`.design` the fitted law
linearised with the paired noise, :mod:`.sequential` the greedy choice, :mod:`.text` the table).
"""

from .design import LawDesign, design_rows, lopt_lookup
from .refine import candidates, jacobian, optimum_gradients, prior_params, suggest, with_suggestions, yaml_entries
from .sequential import EXTEND_FACTORS, sequential_design
from .targets import (
    RESULTS_COLUMNS,
    SweepTarget,
    _t_half,  # the t interval's half-width, which tests check the expected intervals against
    law_interval,
    law_targets,
    load_results,
    relative_gain,
    sweep_targets,
)
from .text import format_sequential

__all__ = [
    "EXTEND_FACTORS", "RESULTS_COLUMNS", "LawDesign", "SweepTarget", "candidates", "design_rows", "format_sequential",
    "jacobian", "law_interval", "law_targets", "load_results", "lopt_lookup", "optimum_gradients", "prior_params",
    "relative_gain", "sequential_design", "suggest", "sweep_targets", "with_suggestions", "yaml_entries",
]
