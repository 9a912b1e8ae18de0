"""Rank agreement, the one Spearman correlation of archscale (law validation, roofline ranking,
benchmarks): ``None`` where it is undefined rather than NaN or a number from too few points."""

from __future__ import annotations

import math
from typing import Sequence


def spearman(a: Sequence[float], b: Sequence[float], min_points: int = 3) -> float | None:
    """Spearman's rho of ``a`` against ``b`` (scipy); ``None`` with fewer than ``min_points``
    pairs, when either side is constant, or when scipy returns NaN."""
    from scipy.stats import spearmanr

    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"spearman: {len(a)} values against {len(b)}")
    if len(a) < min_points or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    rho = spearmanr(a, b).statistic
    return None if math.isnan(rho) else float(rho)
