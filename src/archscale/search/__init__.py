"""Architecture search: Algorithm 1 of the paper (method.md section 6).

For one *target* (a scale with its layers, head dim and N, a token budget D and a loss
target) the search

1. enumerates the valid architectures at the scale: a fine grid of ``d/sqrt(N)`` and ``r``
   at the walk's base GQA is resolved with :func:`archscale.arch.resolve` (infeasible points
   are skipped and counted; points that land on the same architecture are merged);
2. predicts each architecture's loss with the fitted conditional law (both forms; the
   configured ``form`` drives the picks) and its inference efficiency (output tokens/s)
   with the calibrated roofline cost model;
3. picks **Panda** (lowest predicted loss) and a predicted **Surefire** (highest predicted
   efficiency among the architectures whose predicted loss is within the target);
4. plans the GQA local search: the ``measure_top_k`` most efficient architectures within
   the target are re-resolved at every GQA of ``gqa_candidates`` from the base GQA upward
   (same d_model and r, heads re-resolved so that GQA divides them), and together with
   Panda and the baseline they are *measured*;
5. walks GQA upward from the base for each of them and stops at the first GQA whose measured
   throughput falls below the base's (the paper's early stop); the measured-fastest
   architecture within the loss target over all walks is Surefire.

In the workflow a step of a walk, and Surefire against the baseline, count as faster only
when the lower bound of the bootstrap ratio of interleaved measurements is above 1
(:func:`.selection.resolved_gqa_walk`, :func:`.selection.surefire_verdict`); otherwise the
walk stops and the result says "not resolved" and keeps the baseline.

The split into :func:`prepare` (steps 1-4) and :func:`select` (step 5) mirrors the
workflow, where a rule writes the measurement plan and one throughput job per target
measures every listed architecture interleaved before the selection. :func:`run_search` runs both in one
process with any measurement function (the CLI uses the cost model or live runs).

The search at any scale from any law, without runs at that scale (Panda and Surefire over
every candidate of :func:`enumerate_candidates`), is :mod:`.anyscale`.

The package: :mod:`.targets` (what the config asks for), :mod:`.algorithm` (law and cost
adapters, enumeration, scoring, Pareto front, GQA walk), :mod:`.anyscale` (search at any scale), :mod:`.selection` (prepare / select /
run_search), all pure; :mod:`.files` (the rules' entry points: read the inputs, call them).
The law and the cost model are consumed through their library APIs
(:mod:`archscale.law.conditional`, :mod:`archscale.throughput.roofline`), imported lazily;
nothing here imports torch or megatron-core (tests/unit/test_import_rules.py).
"""

from .algorithm import (
    ARCH_COLUMNS,
    BROAD_D_OVER_SQRT_N,
    BROAD_R,
    Efficiency,
    Space,
    arch_record,
    check_target_feasible,
    cost_model_efficiency,
    enumerate_candidates,
    enumerate_space,
    fitted_ranges,
    gqa_walk,
    grid_axes,
    law_from_fit,
    pareto_mask,
    pick_panda,
    rank_within_target,
    reference_l_opt,
    require_feasible,
    score,
    within_target,
)
from .anyscale import LossTarget, attach_probabilities, predicted_loss_of, search_at_scale
from .files import (
    measure_candidates_interleaved,
    prepare_from_files,
    select_interleaved_from_files,
)
from .selection import (
    loss_target_value,
    measure_arch,
    measure_entry,
    measure_ids,
    prepare,
    run_search,
    select,
    throughput_at,
)
from .targets import (
    FORMS,
    SearchError,
    SearchSettings,
    SearchTarget,
    settings_from_study,
    targets_from_study,
)

__all__ = [
    "ARCH_COLUMNS", "BROAD_D_OVER_SQRT_N", "BROAD_R", "Efficiency", "FORMS", "SearchError",
    "SearchSettings", "SearchTarget", "Space", "arch_record", "check_target_feasible", "cost_model_efficiency",
    "enumerate_candidates", "enumerate_space", "LossTarget", "attach_probabilities", "predicted_loss_of",
    "search_at_scale", "fitted_ranges", "law_from_fit", "reference_l_opt", "gqa_walk", "grid_axes", "loss_target_value", "measure_arch",
    "measure_candidates_interleaved", "measure_entry", "measure_ids", "pareto_mask", "pick_panda", "prepare",
    "prepare_from_files", "rank_within_target", "require_feasible", "run_search", "score", "select",
    "select_interleaved_from_files", "settings_from_study",
    "targets_from_study", "throughput_at", "within_target",
]
