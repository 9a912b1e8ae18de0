"""Statistics of throughput measurements: medians with intervals, interleaved comparisons, verdicts.

* :func:`median_interval`: the median of ``>= 5`` timed repeats with a distribution-free 95%
  interval from order statistics (the binomial interval of the median, as
  ``scipy.special.bdtr``, the binomial CDF, gives it: scipy.stats would cost every throughput
  job a second of import); with fewer repeats the interval is withheld with the reason.
* :func:`interleave`: run callables A B A B ... after warm-up, so drift and background load hit
  every arm alike; the clock is injectable (tests).
* :func:`ratio_interval`: ratio of medians ``median(a) / median(b)`` with a percentile
  bootstrap interval (``scipy.stats.bootstrap``, paired resampling of the rounds is not
  assumed: the two samples are resampled independently).
* :func:`verdict`: ``"faster"`` only when the lower bound of the ratio is above 1, ``"slower"``
  when the upper bound is below 1, otherwise ``"not resolved"``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

MIN_REPEATS = 5
LEVEL = 0.95
FASTER, SLOWER, NOT_RESOLVED = "faster", "slower", "not resolved"


@dataclass(frozen=True)
class Estimate:
    """A median (or ratio of medians) with its interval; ``low``/``high`` are None when withheld."""

    value: float
    low: float | None
    high: float | None
    n: int
    method: str
    level: float = LEVEL
    withheld_reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, fmt: str = ".3g") -> str:
        if self.low is None:
            return f"{self.value:{fmt}} (no interval: {self.withheld_reason})"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def _clean(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        raise ValueError(f"{what}: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: non-finite values {x.tolist()}")
    return x


def median_interval(values: Sequence[float], level: float = LEVEL, what: str = "values") -> Estimate:
    """Median with the order-statistic interval ``[x_(k), x_(n-k+1)]`` of coverage >= ``level``.

    Distribution-free: ``P(x_(k) <= median <= x_(n-k+1)) = 1 - 2 * P(Binom(n, 1/2) <= k-1)``.
    With ``n < 5`` no interval reaches 95% (n = 5 gives 93.75% with the extremes): withheld.
    """
    from scipy.special import bdtr  # binomial CDF P(Binom(n, p) <= k)

    x = np.sort(_clean(values, what))
    n = x.size
    med = float(np.median(x))
    if n < MIN_REPEATS:
        return Estimate(med, None, None, n, "order statistics", level,
                        f"{n} repeats; at least {MIN_REPEATS} are needed for an interval")
    # the largest k whose interval still covers `level` (k = 1 is the range)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * bdtr(k, n, 0.5) >= level:
        k += 1
    coverage = 1 - 2 * bdtr(k - 1, n, 0.5)
    return Estimate(med, float(x[k - 1]), float(x[n - k]), n, f"order statistics (coverage {coverage:.4f})", level)


def ratio_interval(
    a: Sequence[float], b: Sequence[float], level: float = LEVEL, n_resamples: int = 4999, seed: int = 0
) -> Estimate:
    """``median(a) / median(b)`` with a percentile bootstrap interval (each sample resampled)."""
    from scipy.stats import bootstrap

    xa, xb = _clean(a, "ratio numerator"), _clean(b, "ratio denominator")
    if np.any(xb <= 0) or np.any(xa <= 0):
        raise ValueError("ratio of medians needs positive values (rates or times)")
    value = float(np.median(xa) / np.median(xb))
    n = min(xa.size, xb.size)
    if n < MIN_REPEATS:
        return Estimate(value, None, None, n, "bootstrap (percentile)", level,
                        f"{n} repeats per arm; at least {MIN_REPEATS} are needed for an interval")
    res = bootstrap(
        (xa, xb), lambda u, v, axis=-1: np.median(u, axis=axis) / np.median(v, axis=axis),
        n_resamples=n_resamples, confidence_level=level, method="percentile", vectorized=True,
        paired=False, random_state=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Estimate(value, float(ci.low), float(ci.high), n, f"bootstrap (percentile, {n_resamples} resamples)",
                    level)


def verdict(ratio: Estimate) -> str:
    """``faster`` when the ratio's lower bound is above 1, ``slower`` when its upper bound is below 1."""
    if ratio.low is None or ratio.high is None or math.isnan(ratio.low):
        return NOT_RESOLVED
    if ratio.low > 1:
        return FASTER
    if ratio.high < 1:
        return SLOWER
    return NOT_RESOLVED


def interleave(
    arms: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[dict]]:
    """Run every arm ``warmup`` times, then ``repeats`` rounds A B A B ... (order fixed per round).

    Each call's wall time on ``clock`` is recorded with what the callable returned:
    ``{name: [{"round": i, "wall_s": t, "result": r}, ...]}``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"interleave: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if not arms:
        raise ValueError("interleave: no arms to run")
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    out: dict[str, list[dict]] = {name: [] for name in arms}
    for i in range(repeats):
        for name, fn in arms.items():
            t0 = clock()
            result = fn()
            out[name].append({"round": i, "wall_s": clock() - t0, "result": result})
    return out


def compare_rates(candidate: Sequence[float], baseline: Sequence[float], **kw) -> dict:
    """Rates (tokens/s, larger is faster) of a candidate against a baseline: ratio, interval, verdict."""
    r = ratio_interval(candidate, baseline, **kw)
    return {"ratio": r.to_dict(), "verdict": verdict(r)}


def gqa_walk(candidates: Sequence[object], measure_ratio: Callable[[object, object], Estimate]) -> dict:
    """Walk GQA settings in order, keeping a step only when it is resolved faster.

    ``candidates[0]`` is the starting point; ``measure_ratio(candidate, current)`` returns the
    ratio of the candidate's throughput to the current choice's (interleaved measurement). The
    walk stops at the first step that is not resolved faster and keeps the current choice.
    """
    if not candidates:
        raise ValueError("gqa_walk: no candidates")
    current, steps = candidates[0], []
    for cand in candidates[1:]:
        r = measure_ratio(cand, current)
        v = verdict(r)
        steps.append({"candidate": cand, "against": current, "ratio": r.to_dict(), "verdict": v})
        if v != FASTER:
            break
        current = cand
    return {"chosen": current, "steps": steps}
