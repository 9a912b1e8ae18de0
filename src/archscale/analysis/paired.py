"""Differences of mean loss between architectures, with intervals, and the verdict of a sweep.

Seeds share the data order across the architectures of a scale, so two architectures trained
at the same seeds give *paired* draws: the difference at each matched seed removes the part of
the seed noise the architectures share. The interval of a difference of mean losses is

paired t
    both architectures trained at the same seeds (two or more): the mean of the per-seed
    differences, its standard error ``sd(d) / sqrt(n)`` and a t interval on ``n - 1`` degrees
    of freedom;
Welch t
    the seed sets differ (each architecture two or more runs): Welch's unequal-variance t;
bootstrap over seeds
    from :data:`BOOTSTRAP_MIN_SEEDS` runs per architecture on: a percentile interval of the
    mean difference over resampled seeds (matched seeds resampled together); the p-value is
    twice the smaller tail of that distribution at 0;
none
    one seed for either architecture: there is no interval and nothing is resolved.

A sweep's verdict (:func:`sweep_tests`, vectorised over simulated studies) reads the best
point (lowest mean) and the two ends. Its claims are either an *interior optimum* at an
interior point ``i`` (both ends' losses exceed point ``i``'s: an intersection-union test, so
both differences must be resolved) or a *monotone* effect (the ends differ). A sweep of ``P``
points can make ``P - 1`` such claims (``P - 2`` interior candidates and the ends), so the
claim it makes is Bonferroni-corrected by ``P - 1``: under no effect at all the sweep is called
resolved with probability at most the level, whichever point happens to be best. Several
sweeps read at once are then corrected together by Holm's step-down method (:func:`holm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

#: Two-sided level of every interval and the family-wise level of the verdicts.
LEVEL = 0.95
#: Runs per architecture from which the automatic method is the bootstrap over seeds.
BOOTSTRAP_MIN_SEEDS = 20
BOOTSTRAP_RESAMPLES = 4999
METHODS = ("auto", "paired", "welch", "bootstrap")


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its interval (``ci``, at ``level``) and two-sided p-value."""

    estimate: float
    se: float | None
    dof: float | None
    ci: tuple[float, float] | None
    p: float | None
    method: str  # "paired t", "Welch t", "bootstrap over seeds", "none"
    n: int  # matched seeds (paired) or the smaller run count
    level: float = LEVEL
    samples: tuple[float, ...] | None = field(default=None, repr=False, compare=False)  # bootstrap only

    def to_dict(self) -> dict:
        """JSON-ready (without the bootstrap samples)."""
        return {"estimate": self.estimate, "se": self.se, "dof": self.dof, "ci": self.ci, "p": self.p,
                "method": self.method, "n": self.n, "level": self.level}

    def interval(self, level: float) -> tuple[float, float] | None:
        """The interval at another two-sided level (e.g. a corrected one); None when there is none."""
        if self.p is None:
            return None
        if self.samples is not None:
            lo, hi = np.percentile(self.samples, [50 * (1 - level), 50 * (1 + level)])
            return float(lo), float(hi)
        half = stats.t.ppf(0.5 + level / 2, self.dof) * self.se
        return float(self.estimate - half), float(self.estimate + half)

    def text(self, level: float | None = None) -> str:
        """``+0.080 [0.048, 0.113]``, or ``+0.080 (no interval: one seed)``."""
        ci = self.ci if level is None else self.interval(level)
        if ci is None:
            return f"{self.estimate:+.3f} (no interval: one seed)"
        return f"{self.estimate:+.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    def describe(self) -> str:
        """The method in words: "paired t over 5 matched seeds"."""
        if self.method == "paired t":
            return f"paired t over {self.n} matched seeds"
        if self.method == "bootstrap over seeds":
            return f"bootstrap over seeds ({self.n}+ each)"
        if self.method == "Welch t":
            return f"Welch t ({self.n}+ seeds each, not matched)"
        return "no interval (one seed)"


# ---- vectorised t statistics ------------------------------------------------------------------
def paired_arrays(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, se, dof) of ``mean(a - b)`` over the last axis (matched seeds), any leading axes."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = d.shape[-1]
    return d.mean(axis=-1), d.std(axis=-1, ddof=1) / np.sqrt(n), np.full(d.shape[:-1], n - 1.0)


def welch_arrays(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, se, Welch-Satterthwaite dof) of ``mean(a) - mean(b)`` over the last axis."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(axis=-1, ddof=1) / a.shape[-1], b.var(axis=-1, ddof=1) / b.shape[-1]
    se2 = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = se2**2 / (va**2 / (a.shape[-1] - 1) + vb**2 / (b.shape[-1] - 1))
    return a.mean(axis=-1) - b.mean(axis=-1), np.sqrt(se2), dof


def t_pvalue(est, se, dof) -> np.ndarray:
    """Two-sided p-value of ``est / se`` on ``dof`` degrees of freedom (1 where ``se`` is 0 and est 0)."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, est / np.where(se > 0, se, 1.0), np.where(est == 0, 0.0, np.inf) * np.sign(est))
    return 2 * stats.t.sf(np.abs(t), dof)


def t_interval(est, se, dof, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    half = stats.t.ppf(0.5 + level / 2, dof) * np.asarray(se, float)
    return est - half, est + half


# ---- one difference ----------------------------------------------------------------------------
def _bootstrap(a: np.ndarray, b: np.ndarray, paired: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, (BOOTSTRAP_RESAMPLES, a.size))
    ib = ia if paired else rng.integers(0, b.size, (BOOTSTRAP_RESAMPLES, b.size))
    return a[ia].mean(axis=1) - b[ib].mean(axis=1)


def difference(a: pd.Series, b: pd.Series, level: float = LEVEL, method: str = "auto",
               seed: int = 0) -> Difference:
    """``mean(a) - mean(b)`` of two architectures' losses, each a Series indexed by seed.

    ``auto``: paired when both were trained at the same seeds, else Welch; the bootstrap over
    seeds from :data:`BOOTSTRAP_MIN_SEEDS` runs each. One run for either: no interval.
    """
    if method not in METHODS:
        raise ValueError(f"difference method '{method}': use one of {', '.join(METHODS)}")
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    est = float(a.mean() - b.mean())
    paired = a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index)
    n = len(a) if paired else min(len(a), len(b))
    if n < 2:
        return Difference(est, None, None, None, None, "none", n, level)
    if method == "paired" and not paired:
        raise ValueError(f"paired difference: the seeds differ ({sorted(a.index)} vs {sorted(b.index)})")
    use_boot = method == "bootstrap" or (method == "auto" and n >= BOOTSTRAP_MIN_SEEDS)
    if paired and method != "welch":
        b = b.loc[a.index]
    xa, xb = a.to_numpy(), b.to_numpy()
    if use_boot:
        samples = _bootstrap(xa, xb, paired and method != "welch", seed)
        p = float(min(1.0, 2 * min(np.mean(samples <= 0), np.mean(samples >= 0))))
        se = float(samples.std(ddof=1))
        diff = Difference(est, se, None, None, p, "bootstrap over seeds", n, level, tuple(samples))
        return Difference(est, se, None, diff.interval(level), p, diff.method, n, level, diff.samples)
    e, se, dof = (paired_arrays if paired and method != "welch" else welch_arrays)(xa, xb)
    lo, hi = t_interval(e, se, dof, level)
    return Difference(float(e), float(se), float(dof), (float(lo), float(hi)), float(t_pvalue(e, se, dof)),
                      "paired t" if paired and method != "welch" else "Welch t", n, level)


# ---- multiple comparisons ----------------------------------------------------------------------
def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (vectorised over leading axes; nan stays nan)."""
    p = np.asarray(p, float)
    filled = np.where(np.isnan(p), np.inf, p)
    order = np.argsort(filled, axis=-1)
    m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
    sorted_p = np.take_along_axis(filled, order, axis=-1)
    ranked = np.where(np.isfinite(sorted_p), sorted_p * np.maximum(m - np.arange(p.shape[-1]), 1), -np.inf)
    ranked = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return np.where(np.isnan(p), np.nan, out)


def holm_levels(p: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """The per-claim level Holm tests each p at (``1 - alpha / (m - rank)``), same shape as ``p``."""
    p = np.asarray(p, float)
    m = int(np.sum(~np.isnan(p)))
    ranks = np.argsort(np.argsort(np.where(np.isnan(p), np.inf, p)))
    return np.where(np.isnan(p), np.nan, 1 - (1 - level) / np.maximum(m - ranks, 1))


# ---- a sweep's verdict, vectorised -------------------------------------------------------------
def sweep_tests(y: np.ndarray) -> dict[str, np.ndarray]:
    """Verdict statistics of sweeps from losses ``y[..., P, n]`` (P points in knob order, n matched seeds).

    Returns arrays over the leading axes: ``best`` (index of the lowest mean), the paired rises
    ``low``/``high`` (end minus best; nan where the best is that end) and ``ends`` (last minus
    first) as ``*_est``, ``*_se``, ``*_p``; ``interior`` (best not an end); and ``p_claim``, the
    p-value of the claim the sweep makes, Bonferroni-corrected over its ``P - 1`` possible claims.
    """
    y = np.asarray(y, float)
    P, n = y.shape[-2], y.shape[-1]
    if P < 3 or n < 2:
        raise ValueError(f"sweep_tests: needs at least 3 points and 2 matched seeds, got {P} points, {n} seeds")
    best = y.mean(axis=-1).argmin(axis=-1)
    yb = np.take_along_axis(y, best[..., None, None], axis=-2)[..., 0, :]
    out = {"best": best, "interior": (best > 0) & (best < P - 1), "dof": np.full(best.shape, n - 1.0)}
    for key, end in (("low", y[..., 0, :]), ("high", y[..., -1, :]), ("ends", None)):
        e, se, dof = paired_arrays(end, yb) if end is not None else paired_arrays(y[..., -1, :], y[..., 0, :])
        p = t_pvalue(e, se, dof)
        if key == "low":
            e, se, p = (np.where(best == 0, np.nan, v) for v in (e, se, p))
        elif key == "high":
            e, se, p = (np.where(best == P - 1, np.nan, v) for v in (e, se, p))
        out[f"{key}_est"], out[f"{key}_se"], out[f"{key}_p"] = e, se, p
    raw = np.where(out["interior"], np.fmax(out["low_p"], out["high_p"]), out["ends_p"])
    out["p_claim"] = np.minimum(1.0, (P - 1) * raw)
    return out
