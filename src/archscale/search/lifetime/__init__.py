"""Lifetime cost: which (N, D, shape) reaches a loss target most cheaply over training plus serving.

For a loss target and a lifetime serving demand ``T`` (output tokens served over the model's life)
:func:`lifetime_search` minimises

    total(T) = training cost + T * (serving cost per token + energy cost per token)

over N (the target N times each of ``n_factors``, the scale's layers, head dim and vocabulary
kept), the shape (every candidate of :func:`~archscale.search.algorithm.enumerate_candidates` at
that N) and D (the fewest training tokens whose predicted loss meets the target).

* **Loss.** ``L = law(d/sqrt(N), r) applied to L_opt(N, D)``; ``L_opt`` is the law's Chinchilla
  part, else Epoch AI's published Chinchilla fit (an assumption, named in the output). Both law
  forms are affine in ``L_opt`` (multiplicative ``a*L_opt``, additive ``L_opt + b``), so the
  tokens needed have a closed form. With bootstrap samples of the law's coefficients the
  constraint is the upper end of the predicted loss's interval (``level``): a candidate trains the
  tokens that meet the target even there; the interval of tokens needed runs from the lower end's
  to the upper end's. Without samples (the paper's published coefficients) it is the point.
* **Training** (the plan's arithmetic, :mod:`archscale.cost`): FLOPs ``6ND`` plus attention and
  logits at the training sequence length, GPU-hours at ``peak_flops * mfu``, times the price.
* **Serving**: ``T / (output tokens/s)`` seconds at the deployment workload (batch, input and
  output lengths, context), times the price. Output tokens/s is *measured* where a throughput
  record of that architecture at that workload exists (its median and 95% interval), else the
  calibrated *cost model*'s prediction with the interval of its measured/predicted ratios on its
  calibration points.
* **Energy**: kWh from the record's NVML joules per output token where measured, times the
  energy price; not counted where not measured (the output says so per choice).

Every number carries its source ("measured", "cost model", "assumption") and, where one exists, an
interval. The crossover (:func:`crossovers`) gives the demand at which one choice (the baseline,
Panda, Surefire at the target (N, D), or the lifetime optimum) overtakes another; its interval is
the range over the ends of the training-cost (law) and per-token (throughput) intervals.

A latency bound (``max_latency_ms``: batch-1 time per output token at the deployment context) keeps
only the candidates an interactive deployment can use; the objective stays the lifetime cost.

The package, by concept: :mod:`.inputs` (deployment, prices, demand, estimates), :mod:`.loss`
(the loss model and tokens needed), :mod:`.serving` (throughput, latency, energy at the
deployment), :mod:`.costs` (the cost columns of candidates and one choice described),
:mod:`.crossovers` (crossovers and the cost curve), :mod:`.optimum` (the search) and
:mod:`.entry` (settings from the config; the CLI's and the workflow's entry points).
"""

from .costs import candidates_over_n, describe, evaluate, optimum_index
from .crossovers import cost_curve, crossover, crossover_text, crossovers, demand_grid
from .entry import (
    LifetimeSettings,
    lifetime_for_target,
    lifetime_from_files,
    picks_of_result,
    read_records,
    settings_from_config,
)
from .inputs import (
    ARCH_FIELDS,
    ASSUMPTION,
    COST_MODEL,
    DEFAULT_N_FACTORS,
    J_PER_KWH,
    MEASURED,
    ROLES,
    Deployment,
    LifetimeError,
    Prices,
    check_demand,
    estimate,
)
from .loss import LossModel, chinchilla_not_identified
from .optimum import lifetime_search
from .serving import Serving

__all__ = [
    "ARCH_FIELDS", "ASSUMPTION", "COST_MODEL", "DEFAULT_N_FACTORS", "J_PER_KWH", "MEASURED", "ROLES",
    "Deployment", "LifetimeError", "LifetimeSettings", "LossModel", "Prices", "Serving",
    "candidates_over_n", "check_demand", "chinchilla_not_identified", "cost_curve", "crossover", "crossover_text",
    "crossovers", "demand_grid", "describe", "estimate", "evaluate", "lifetime_for_target", "lifetime_from_files",
    "lifetime_search", "optimum_index", "picks_of_result", "read_records", "settings_from_config",
]
