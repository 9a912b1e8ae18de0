"""Picks at any scale from any law, without runs at that scale (issue 12, items 5-7).

:func:`enumerate_candidates` lists every LLaMA-style architecture at a target N: hidden sizes
``d`` in multiples of ``scale.d_multiple`` (within a ``d/sqrt(N)`` window), GQA values from a
range or list, kv-head counts ``g`` (so ``heads = gqa * g``: every GQA candidate divides the
head count), and MLP widths in multiples of ``scale.ffn_multiple``, keeping those whose
non-embedding N lies within ``scale.n_tolerance`` of the target. Counting follows
:class:`archscale.arch.Architecture` (method.md section 2).

:func:`panda` scores them with a :class:`~archscale.law.laws.Law` at the target (N, D) and
returns the lowest predicted loss ("Panda") with its knobs, the predicted loss (when ``L_opt``
is known: a number, or the law's Chinchilla part) and, when the law carries bootstrap samples
of its coefficients, the probability that its predicted loss is within a loss target.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..arch import Architecture, Scale
from .laws import Law, LawError

# A pick whose N is further than this (relative) from the target gets a note (see panda()).
N_DRIFT_NOTE = 0.01
PICK_FIELDS = ("d_model", "ffn", "heads", "kv_heads", "gqa", "d_over_sqrt_n", "mlp_attn_ratio")


def enumerate_candidates(
    scale: Scale,
    *,
    gqa: Iterable[int] | None = None,
    gqa_range: tuple[int, int] = (1, 16),
    x_range: tuple[float, float] = (0.02, 0.3),
    r_range: tuple[float, float] | None = None,
) -> list[Architecture]:
    """Every architecture at ``scale`` within its N tolerance (see the module docstring)."""
    if scale.n_target <= 0 or scale.layers < 1 or scale.head_dim < 1:
        raise ValueError(f"scale '{scale.name}': n_target, layers and head_dim must be positive")
    gqas = sorted(set(int(g) for g in gqa)) if gqa is not None else list(range(gqa_range[0], gqa_range[1] + 1))
    if not gqas or min(gqas) < 1:
        raise ValueError(f"scale '{scale.name}': GQA candidates must be positive integers, got {gqas}")
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


def score_candidates(archs: list[Architecture], law: Law, l_opt: float | None, form: str | None = None) -> pd.DataFrame:
    """One row per candidate: the knobs, its N, and the predicted loss ratio L/L_opt (and loss when known)."""
    if not archs:
        raise ValueError("no candidate architectures: widen the N tolerance, the d/sqrt(N) window or the GQA range")
    df = pd.DataFrame([
        {"arch_id": a.arch_id, "params_non_embedding": a.params_non_embedding,
         **{k: getattr(a, k) for k in PICK_FIELDS}} for a in archs
    ])
    x, r = df["d_over_sqrt_n"].to_numpy(float), df["mlp_attn_ratio"].to_numpy(float)
    lo = 1.0 if l_opt is None else float(l_opt)
    pred = np.asarray(law.predict(x, r, lo, form), float)
    if (form or law.default_form) == "additive" and l_opt is None:
        df["predicted_loss_ratio"] = np.nan  # additive: L - L_opt is known, the ratio is not
        df["predicted_excess"] = pred - lo
    else:
        df["predicted_loss_ratio"] = pred / lo
    df["predicted_loss"] = pred if l_opt is not None else np.nan
    return df


def _key_col(df: pd.DataFrame) -> str:
    return "predicted_loss" if df["predicted_loss"].notna().all() else (
        "predicted_loss_ratio" if df["predicted_loss_ratio"].notna().all() else "predicted_excess")


def panda(
    law: Law,
    scale: Scale,
    tokens: float,
    *,
    l_opt: float | None = None,
    loss_target: float | None = None,
    form: str | None = None,
    gqa: Iterable[int] | None = None,
    gqa_range: tuple[int, int] = (1, 16),
    x_range: tuple[float, float] = (0.02, 0.3),
) -> dict[str, Any]:
    """Panda (lowest predicted loss) at ``scale.n_target`` and ``tokens``; see the module docstring.

    ``l_opt``: the reference loss at (N, D); when None, the law's own (its Chinchilla part),
    else the predicted loss is withheld and the pick is made on ``L / L_opt`` (the ranking does
    not depend on L_opt at a fixed (N, D)). Returns ``{"panda": {...}, "candidates": DataFrame,
    "l_opt": ..., "l_opt_source": ..., "notes": [...]}``.
    """
    notes: list[str] = []
    source = "given"
    if l_opt is None:
        try:
            l_opt, source = law.l_opt(scale.n_target, tokens), f"law '{law.name}'"
        except LawError as exc:
            source = None
            notes.append(f"predicted loss withheld: {exc}")
    archs = enumerate_candidates(scale, gqa=gqa, gqa_range=gqa_range, x_range=x_range)
    df = score_candidates(archs, law, l_opt, form)
    col = _key_col(df)
    best = df.loc[df[col].idxmin()]
    ties = df[np.isclose(df[col], best[col], rtol=0, atol=1e-12)]
    pick = {k: (best[k].item() if hasattr(best[k], "item") else best[k]) for k in
            ("arch_id", "params_non_embedding", *PICK_FIELDS, "predicted_loss_ratio", "predicted_loss")}
    for k in ("predicted_loss_ratio", "predicted_loss"):
        if pick[k] is not None and not math.isfinite(pick[k]):
            pick[k] = None
    if len(ties) > 1:
        notes.append(f"{len(ties)} candidates tie on the predicted loss: {list(ties['arch_id'])}")
    dev = pick["params_non_embedding"] / scale.n_target - 1.0
    if abs(dev) > N_DRIFT_NOTE:
        notes.append(
            f"Panda's N is {dev:+.1%} off the target {scale.n_target:,}: the law is evaluated at the target "
            "(N, D) and does not see a candidate's N deviation, so a wide n_tolerance favours off-target "
            "architectures whose knobs sit nearer the optimum; tighten n_tolerance"
        )
    x_lo, x_hi = df["d_over_sqrt_n"].min(), df["d_over_sqrt_n"].max()
    if pick["d_over_sqrt_n"] in (x_lo, x_hi):
        notes.append("Panda lies on the edge of the candidate d/sqrt(N) window: widen x_range")
    n_rng = law.range.get("n")
    if n_rng and not n_rng[0] * 0.9 <= scale.n_target <= n_rng[1] * 1.1:
        notes.append(f"extrapolation: target N {scale.n_target:.4g} is outside the N range {n_rng} the law was fitted on")
    for key in ("d_over_sqrt_n", "r"):
        rng = law.range.get(key)
        v = pick["d_over_sqrt_n" if key == "d_over_sqrt_n" else "mlp_attn_ratio"]
        if rng and not rng[0] <= v <= rng[1]:
            notes.append(f"extrapolation: Panda's {key} = {v:.4g} is outside the fitted range {rng}")
    pick["probability_within_target"], pick["probability_reason"] = probability_within(
        law, pick["d_over_sqrt_n"], pick["mlp_attn_ratio"], l_opt, loss_target, form
    )
    pick["loss_target"] = loss_target
    return {"panda": pick, "candidates": df, "l_opt": l_opt, "l_opt_source": source, "law": law.name,
            "form": form or law.default_form, "n_candidates": int(len(df)), "notes": notes}


def probability_within(law: Law, x: float, r: float, l_opt: float | None, target: float | None,
                       form: str | None = None) -> tuple[float | None, str | None]:
    """Bootstrap probability that the predicted loss at (x, r) is <= ``target``, or None with why."""
    if target is None:
        return None, "no loss target given"
    if l_opt is None:
        return None, "no reference loss L_opt at this (N, D): the predicted loss is unknown"
    s = law.predict_samples(x, r, l_opt, form)
    if s is None:
        return None, f"law '{law.name}' carries no bootstrap samples of its coefficients"
    s = s[np.isfinite(s)]
    if s.size < 20:
        return None, f"only {s.size} usable bootstrap samples"
    return float(np.mean(s <= target)), None


def predicted_loss_of(law: Law, arch: Architecture, l_opt: float, form: str | None = None) -> float:
    """The law's predicted loss of one architecture (e.g. a named baseline, as a loss target)."""
    return float(law.predict(arch.d_over_sqrt_n, arch.mlp_attn_ratio, l_opt, form))
