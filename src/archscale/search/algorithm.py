"""The search's pure algorithm: law and cost adapters, enumeration, scoring, the Pareto front,
the picks and the GQA walk. No file IO, no torch or megatron-core (the law and the roofline
model are imported lazily through their library APIs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..arch import Architecture, GridPoint, InfeasiblePoint, Scale, resolve
from .targets import SearchError, SearchSettings, SearchTarget

if TYPE_CHECKING:
    from ..law.laws import Law

#: Broad grid used to tell whether a scale admits any architecture at all (plan time).
BROAD_D_OVER_SQRT_N = (0.01, 3.0)
BROAD_R = (0.2, 10.0)

Efficiency = Callable[[Architecture], float]


# ---- the law and the efficiency measure ----------------------------------------------------
def law_from_fit(conditional: dict, name: str = "fit") -> Law:
    """The fitted conditional law (``results/fit/conditional.json``) as the search reads it."""
    from ..law.laws import law_from_conditional

    try:
        return law_from_conditional(conditional, name)
    except ValueError as exc:  # LawError (e.g. no fitted form, a form missing a key), or an old l_opt table
        raise SearchError(str(exc)) from None


def reference_l_opt(law: Law, n: int, tokens: int) -> float:
    """``L_opt(N, D)`` as the fit used it (its stored table, or its Chinchilla fit)."""
    try:
        return law.fit_reference_loss(n, tokens)
    except ValueError as exc:
        raise SearchError(f"reference loss at N={n:,}, D={tokens:,}: {exc}") from None


def cost_model_efficiency(cost_model: dict, input_len: int, output_len: int, batch_size: int) -> Efficiency:
    """Predicted output tokens/s from the calibrated roofline model (the search's IN(P))."""
    from ..throughput.roofline import predict_output_tokens_per_s

    def efficiency(arch: Architecture) -> float:
        return float(predict_output_tokens_per_s(cost_model, arch, input_len, output_len, batch_size))

    return efficiency


# ---- grid and enumeration ------------------------------------------------------------------
def fitted_ranges(conditional: dict, runs: pd.DataFrame | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """The (d/sqrt(N), r) box the law was fitted on: runs with r inside the fit's r_range (columns: the fit's mapping)."""
    mapping = conditional.get("columns") or {}  # a fit's mapping; a bare r_range has none
    xc, rc, lc = (mapping.get(k) or _default_column(k) for k in ("x", "r", "loss"))
    r_lo, r_hi = (float(v) for v in conditional.get("r_range") or BROAD_R)
    if runs is None or len(runs) == 0 or xc not in runs or rc not in runs:
        raise SearchError(
            "the default search grid spans the fitted range, which needs the runs table "
            f"({xc}, {rc}); give the runs, or set search.d_over_sqrt_n and search.r"
        )
    used = runs[(runs[rc] >= r_lo) & (runs[rc] <= r_hi)]
    if lc in used:
        used = used[np.isfinite(used[lc].astype(float))]
    if used.empty:
        raise SearchError(f"no run has r inside the fit's r_range [{r_lo}, {r_hi}]; set search.d_over_sqrt_n and search.r")
    x = (float(used[xc].min()), float(used[xc].max()))
    r = (max(r_lo, float(used[rc].min())), min(r_hi, float(used[rc].max())))
    return x, r


def _default_column(key: str) -> str:
    from ..law.conditional import DEFAULT_COLUMNS

    return DEFAULT_COLUMNS[key]


def grid_axes(
    settings: SearchSettings, conditional: dict | None = None, runs: pd.DataFrame | None = None
) -> tuple[list[float], list[float], str]:
    """The d/sqrt(N) and r axes: the configured lists, else a log-spaced grid over the fitted box."""
    xs, rs = list(settings.d_over_sqrt_n), list(settings.r)
    source = "config"
    if not xs or not rs:
        (x_lo, x_hi), (r_lo, r_hi) = fitted_ranges(conditional or {}, runs)
        n = settings.grid_points
        if not xs:
            xs = sorted(set(np.geomspace(x_lo, x_hi, n).round(6).tolist()))
        if not rs:
            rs = sorted(set(np.geomspace(r_lo, r_hi, n).round(6).tolist()))
        source = "fitted range"
    return xs, rs, source


@dataclass
class Space:
    """The valid architectures found on a grid (merged by id) and what could not be resolved."""

    archs: dict[str, Architecture] = field(default_factory=dict)
    requested: dict[str, tuple[float, float]] = field(default_factory=dict)
    points: int = 0
    infeasible: int = 0
    examples: list[str] = field(default_factory=list)


def enumerate_space(scale: Scale, xs: Iterable[float], rs: Iterable[float], gqa: int, keep_examples: int = 3) -> Space:
    """Resolve every (d/sqrt(N), r) pair at ``gqa``; infeasible points are counted, not raised."""
    space = Space()
    rs = list(rs)
    for x in xs:
        for r in rs:
            space.points += 1
            try:
                arch = resolve(scale, GridPoint(r=float(r), gqa=int(gqa), d_over_sqrt_n=float(x), origin="search"))
            except InfeasiblePoint as exc:
                space.infeasible += 1
                if len(space.examples) < keep_examples:
                    space.examples.append(str(exc))
                continue
            if arch.arch_id not in space.archs:
                space.archs[arch.arch_id] = arch
                space.requested[arch.arch_id] = (float(x), float(r))
    return space


def enumerate_candidates(
    scale: Scale,
    *,
    gqa: Iterable[int] | None = None,
    gqa_range: tuple[int, int] = (1, 16),
    x_range: tuple[float, float] = (0.02, 0.3),
    r_range: tuple[float, float] | None = None,
) -> list[Architecture]:
    """Every architecture at ``scale`` within its N tolerance (exhaustive; the search at any scale).

    Hidden sizes ``d`` in multiples of ``scale.d_multiple`` within ``x_range`` of ``d/sqrt(N)``,
    GQA values from ``gqa`` (else ``gqa_range``, inclusive), kv-head counts ``g`` (``heads =
    gqa * g``: every GQA candidate divides the head count), MLP widths in multiples of
    ``scale.ffn_multiple``; kept when the non-embedding N lies within ``scale.n_tolerance`` of
    the target (and r inside ``r_range`` when given). Counting follows
    :class:`archscale.arch.Architecture` (method.md section 2).
    """
    if scale.n_target <= 0 or scale.layers < 1 or scale.head_dim < 1:
        raise SearchError(f"scale '{scale.name}': n_target, layers and head_dim must be positive")
    gqas = sorted(set(int(g) for g in gqa)) if gqa is not None else list(range(gqa_range[0], gqa_range[1] + 1))
    if not gqas or min(gqas) < 1:
        raise SearchError(f"scale '{scale.name}': GQA candidates must be positive integers, got {gqas}")
    L, dh, n_t, tol = scale.layers, scale.head_dim, scale.n_target, scale.n_tolerance
    sq = math.sqrt(n_t)
    dm, fm = scale.d_multiple, scale.ffn_multiple
    d_lo = max(dm, math.ceil(x_range[0] * sq / dm) * dm)
    d_hi = math.floor(x_range[1] * sq / dm) * dm
    out: list[Architecture] = []
    for d in range(d_lo, d_hi + 1, dm):
        lo_layer = (n_t * (1 - tol) - d) / L - 2 * d  # per-layer attention + MLP budget bounds
        hi_layer = (n_t * (1 + tol) - d) / L - 2 * d
        if hi_layer <= 0:
            continue
        for G in gqas:
            pair = 2 * d * dh * (G + 1)  # attention parameters per kv group
            for g in range(1, int(hi_layer // pair) + 1):
                attn = pair * g
                f_lo = max(fm, math.ceil((lo_layer - attn) / (3 * d) / fm) * fm)
                f_hi = math.floor((hi_layer - attn) / (3 * d) / fm) * fm
                for f in range(f_lo, f_hi + 1, fm):
                    r = 3 * d * f / attn
                    if r_range is not None and not r_range[0] <= r <= r_range[1]:
                        continue
                    out.append(Architecture(d_model=d, ffn=f, layers=L, heads=G * g, kv_heads=g, head_dim=dh,
                                            vocab=scale.vocab, tied=scale.tied, scale=scale.name))
    return out


def require_feasible(target: SearchTarget, space: Space, xs: Sequence[float], rs: Sequence[float]) -> None:
    if space.archs:
        return
    s = target.scale
    examples = "\n    ".join(space.examples) or "(no grid points)"
    raise SearchError(
        f"search target '{target.name}': no valid architecture at scale '{s.name}' "
        f"(N={s.n_target:,}, {s.layers} layers, head_dim {s.head_dim}, vocab {s.vocab}) on the grid "
        f"d/sqrt(N) in [{min(xs, default=float('nan')):.4g}, {max(xs, default=float('nan')):.4g}] x "
        f"r in [{min(rs, default=float('nan')):.4g}, {max(rs, default=float('nan')):.4g}] at GQA "
        f"{target.walk_base_gqa}: all {space.points} points are infeasible, for example:\n    {examples}\n"
        "  change the scale (n_target, head_dim, layers, d_multiple/ffn_multiple, n_tolerance/r_tolerance), "
        "the search grid (search.d_over_sqrt_n, search.r) or the target's gqa_candidates/base_gqa"
    )


def check_target_feasible(target: SearchTarget, settings: SearchSettings, points: int = 25) -> int:
    """Plan-time check: raise :class:`SearchError` when the scale admits no architecture at all.

    Uses the configured axes when both are given, else a broad log grid (d/sqrt(N) in
    0.01-3, r in 0.2-10). Returns the number of distinct valid architectures found.
    """
    xs = list(settings.d_over_sqrt_n) or np.geomspace(*BROAD_D_OVER_SQRT_N, points).tolist()
    rs = list(settings.r) or np.geomspace(*BROAD_R, points).tolist()
    space = enumerate_space(target.scale, xs, rs, target.walk_base_gqa)
    require_feasible(target, space, xs, rs)
    return len(space.archs)


# ---- scoring, Pareto front and picks -------------------------------------------------------
ARCH_COLUMNS = [
    "arch_id", "scale", "layers", "d_model", "heads", "kv_heads", "head_dim", "ffn", "gqa", "vocab", "tied",
    "params_non_embedding", "params_total", "d_over_sqrt_n", "mlp_attn_ratio",
]


def arch_record(arch: Architecture) -> dict[str, Any]:
    d = arch.to_dict()
    out = {k: d[k] for k in ARCH_COLUMNS}
    out["name"] = arch.name
    out["kv_cache_bytes_per_token"] = arch.kv_cache_bytes_per_token("bf16")
    return out


def score(
    archs: Iterable[Architecture], law: Law, l_opt: float, efficiency: Efficiency, form: str
) -> pd.DataFrame:
    """One row per architecture: predicted loss (every fitted form) and predicted efficiency."""
    if form not in law.fitted_forms:
        raise SearchError(
            f"search.form '{form}' was not fitted (fitted forms: {law.fitted_forms}); change search.form or fit.forms")
    rows = []
    for arch in archs:
        row = arch_record(arch)
        losses = law.predict_forms(arch.d_over_sqrt_n, arch.mlp_attn_ratio, l_opt)
        for f, v in losses.items():
            row[f"loss_{f}"] = v
        row["loss"] = losses[form]
        row["pred_output_tokens_per_s"] = float(efficiency(arch))
        rows.append(row)
    df = pd.DataFrame(rows)
    bad = df[~np.isfinite(df["loss"]) | ~np.isfinite(df["pred_output_tokens_per_s"])] if len(df) else df
    if len(bad):
        raise SearchError(
            f"non-finite predicted loss or efficiency for {len(bad)} architecture(s), e.g. {bad['arch_id'].iloc[0]}; "
            "check the fit coefficients and the cost model"
        )
    return df


def pareto_mask(loss: Sequence[float], efficiency: Sequence[float]) -> np.ndarray:
    """True where no other point has lower-or-equal loss and higher-or-equal efficiency (one strictly)."""
    loss, eff = np.asarray(loss, float), np.asarray(efficiency, float)
    order = np.lexsort((-eff, loss))  # by loss, then by efficiency descending
    mask = np.zeros(len(loss), bool)
    best = -np.inf
    for i in order:
        if eff[i] > best:
            mask[i] = True
            best = eff[i]
    return mask


def pick_panda(df: pd.DataFrame) -> pd.Series:
    """Lowest predicted loss (ties: higher efficiency)."""
    return df.sort_values(["loss", "pred_output_tokens_per_s"], ascending=[True, False], kind="mergesort").iloc[0]


def within_target(df: pd.DataFrame, loss_target: float | None) -> pd.Series:
    if loss_target is None:
        return pd.Series(True, index=df.index)
    return df["loss"] <= float(loss_target) + 1e-12


def rank_within_target(df: pd.DataFrame) -> pd.DataFrame:
    """Architectures within the target, most efficient first (ties: lower loss)."""
    ok = df[df["within_target"]]
    return ok.sort_values(["pred_output_tokens_per_s", "loss"], ascending=[False, True], kind="mergesort")


# ---- the GQA walk --------------------------------------------------------------------------
def gqa_walk(steps: Sequence[dict], throughput: Callable[[str], float]) -> dict[str, Any]:
    """Walk GQA upward from the first step; stop at the first measured throughput below it.

    ``steps``: dicts with ``gqa``, ``arch_id`` and ``within_target``, sorted by GQA, the
    first being the base (the paper's GQA = 4). ``throughput(arch_id)`` is called lazily,
    so a live measurement stops early for real. The best step is the fastest one within
    the loss target (the base included); it is ``None`` when none is within the target.
    """
    if not steps:
        raise SearchError("GQA walk: no steps")
    gqas = [s["gqa"] for s in steps]
    if gqas != sorted(gqas) or len(set(gqas)) != len(gqas):
        raise SearchError(f"GQA walk: steps must have increasing GQA, got {gqas}")
    base = steps[0]
    t_base = float(throughput(base["arch_id"]))
    visited = [dict(base, throughput=t_base, status="base")]
    stopped_at = None
    for step in steps[1:]:
        t = float(throughput(step["arch_id"]))
        if t < t_base:
            visited.append(dict(step, throughput=t, status="below base: stop"))
            stopped_at = step["gqa"]
            break
        visited.append(dict(step, throughput=t, status="kept" if step.get("within_target", True) else "above loss target"))
    eligible = [v for v in visited if v["status"] != "below base: stop" and v.get("within_target", True)]
    best = max(eligible, key=lambda v: v["throughput"]) if eligible else None
    return {
        "base_gqa": base["gqa"],
        "base_throughput": t_base,
        "steps": visited,
        "stopped_at_gqa": stopped_at,
        "best": best,
    }


