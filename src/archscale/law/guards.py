"""Identifiability guards shared by every fit (Chinchilla, the conditional forms, validation).

A fit may only report what its data can support:

* a factor of a law is fitted only when its knob takes at least :data:`MIN_DISTINCT` distinct
  values inside the fit range (:func:`knob_support`); two values fix a line, not a U-shape;
* the design matrix (linear fits) or the Jacobian at the solution (nonlinear fits) must have
  full column rank and a sane condition number (:func:`rank_check`);
* warnings raised by the libraries during a fit (statsmodels, scipy, numpy) are captured and
  returned, never left on stderr only (:func:`capture_warnings`);
* an optimum is reported only when the fitted curve has an interior minimum whose point and
  interval lie inside the sampled range of the knob (:func:`optimum_in_range`).
"""

from __future__ import annotations

import contextlib
import math
import warnings as _warnings
from typing import Iterator

import numpy as np

MIN_DISTINCT = 3
# Condition number (columns scaled to unit norm) above which estimates are flagged as unstable.
COND_WARN = 1e8


def distinct(values, rel_tol: float = 1e-9) -> int:
    """Number of distinct values (relative tolerance ``rel_tol``; values are positive knobs)."""
    v = np.sort(np.asarray(values, dtype=float).ravel())
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0
    gaps = np.diff(v) > rel_tol * np.maximum(np.abs(v[1:]), 1e-300)
    return int(1 + np.count_nonzero(gaps))


def knob_support(values, name: str, where: str = "") -> str | None:
    """None when the knob can carry a fitted factor, else the reason it is left out."""
    k = distinct(values)
    if k >= MIN_DISTINCT:
        return None
    vals = sorted({float(f"{v:.4g}") for v in np.asarray(values, float).ravel()})
    shown = ", ".join(f"{v:g}" for v in vals[:4])
    at = f" {where}" if where else ""
    return (
        f"{name} not fitted: it takes {k} distinct value(s){at} ({shown}); a U-shaped factor needs at "
        f"least {MIN_DISTINCT}, so the factor is left out and no optimum of {name} is reported"
    )


def rank_check(matrix: np.ndarray, names: list[str], what: str) -> tuple[str | None, list[str]]:
    """(error, warnings) for a design matrix / Jacobian ``[points, coefficients]``.

    The error is set when the columns are rank deficient (a coefficient is not identifiable);
    a warning when the scaled condition number exceeds :data:`COND_WARN`.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[1] == 0:
        return None, []
    if not np.all(np.isfinite(m)):
        return f"{what}: the Jacobian has non-finite entries at the solution", []
    norms = np.linalg.norm(m, axis=0)
    dead = [names[i] for i in np.flatnonzero(norms == 0)]
    if dead:
        return f"{what}: coefficient(s) {dead} do not affect the fit (zero column); not identifiable", []
    scaled = m / norms
    sv = np.linalg.svd(scaled, compute_uv=False)
    rank = int(np.sum(sv > sv[0] * max(m.shape) * np.finfo(float).eps))
    if rank < m.shape[1]:
        return (
            f"{what}: the design has rank {rank} < {m.shape[1]} coefficients {names}; they are not "
            "separately identifiable from these runs (vary the knobs more)"
        ), []
    cond = float(sv[0] / sv[-1])
    if cond > COND_WARN:
        return None, [f"{what}: ill-conditioned design (scaled condition number {cond:.3g}); intervals are wide"]
    return None, []


@contextlib.contextmanager
def capture_warnings(sink: list[str], prefix: str = "") -> Iterator[None]:
    """Record every warning raised inside the block into ``sink`` (deduplicated, with its category)."""
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        yield
    for w in caught:
        msg = f"{prefix}{w.category.__name__}: {str(w.message).strip().splitlines()[0]}"
        if msg not in sink:
            sink.append(msg)


def optimum_in_range(
    value: float | None, ci: list | None, lo: float, hi: float, name: str, interval_expected: bool
) -> tuple[float | None, list | None, str | None]:
    """Keep an optimum only when its point and interval lie inside the sampled range [lo, hi]."""
    if value is None:
        return None, None, None
    rng = f"[{lo:.4g}, {hi:.4g}]"
    if not (lo <= value <= hi):
        return None, None, (
            f"no interior optimum: the fitted minimum {name} = {value:.4g} lies outside the sampled range {rng}"
        )
    if interval_expected:
        if ci is None or ci[0] is None or ci[1] is None or not all(math.isfinite(c) for c in ci):
            return None, None, (
                f"no interior optimum: the interval of {name} is unbounded (the bootstrap refits do not all "
                f"have a minimum); point estimate {value:.4g}"
            )
        if ci[0] < lo or ci[1] > hi:
            return None, None, (
                f"no interior optimum: the interval of {name} [{ci[0]:.4g}, {ci[1]:.4g}] leaves the sampled "
                f"range {rng}; point estimate {value:.4g}"
            )
    return value, ci, None
