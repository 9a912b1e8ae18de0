"""The fitted law linearised on the runs it is fitted on, with the measured paired noise: the
optima's standard deviations now and after added runs."""

from __future__ import annotations

import copy

import numpy as np

from ...law.laws import Law
from ..fits import N_COEF
from .refine import jacobian, optimum_gradients, prior_params


class LawDesign:
    """The fitted law linearised at its coefficients on the runs it is fitted on (one row per run
    and token budget in the fit's r range), with the measured paired noise: per-run sd ``sigma``,
    the fraction ``rho`` of its variance shared by the runs of one (scale, seed, budget). The
    coefficients' covariance is the sandwich ``A^-1 J^T S J A^-1`` (``A = J^T J``: the fit is
    unweighted least squares; ``S`` the noise covariance), and an optimum ``c2/c1`` gets its sd
    by the delta method."""

    def __init__(self, law: Law, r_range, sigma: float, rho: float):
        self.form, self.P = prior_params(law)
        self.grads = optimum_gradients(self.P)
        self.r_range = (float(r_range[0]), float(r_range[1]))
        self.var_e, self.var_u = sigma**2 * (1 - rho), sigma**2 * rho
        self.A = np.zeros((N_COEF, N_COEF))
        self.sums: dict[tuple, np.ndarray] = {}

    def add(self, rows) -> "LawDesign":
        """A copy with ``rows`` (dicts: x, r, l_opt, group) added; rows outside the r range are not fitted."""
        out = copy.copy(self)
        out.A, out.sums = self.A.copy(), dict(self.sums)
        for row in rows:
            if not self.r_range[0] <= row["r"] <= self.r_range[1]:
                continue
            j = jacobian(self.form, self.P, row["x"], row["r"], row["l_opt"])[0]
            out.A += np.outer(j, j)
            out.sums[row["group"]] = out.sums.get(row["group"], np.zeros(N_COEF)) + j
        return out

    def sd(self) -> dict[str, float]:
        """Linearised sd of each interior optimum (inf where the design does not identify it)."""
        if np.linalg.matrix_rank(self.A) < N_COEF:
            return {k: np.inf for k in self.grads}
        inv = np.linalg.inv(self.A)
        S = self.var_e * self.A + self.var_u * sum((np.outer(s, s) for s in self.sums.values()), np.zeros_like(self.A))
        cov = inv @ S @ inv
        return {k: float(np.sqrt(max(g @ cov @ g, 0.0))) for k, g in self.grads.items()}


def lopt_lookup(law: Law, runs):
    """``L_opt(N, D)`` of the law (its Chinchilla part or its table), else the lowest loss of the
    runs at that (n_target, tokens), as the empirical reference takes it."""
    from ...law.laws import LawError

    cache: dict[tuple[int, int], float] = {}

    def lopt(n, d) -> float:
        key = (int(n), int(d))
        if key not in cache:
            try:
                cache[key] = float(law.l_opt(*key))
            except LawError:
                sub = runs.loc[(runs["n_target"] == key[0]) & (runs["tokens"] == key[1]), "valid_loss"]
                if sub.empty:
                    raise ValueError(f"no reference loss at N {key[0]}, D {key[1]}: neither the law nor the runs "
                                     "have one") from None
                cache[key] = float(sub.min())
        return cache[key]

    return lopt


def design_rows(plan, runs, lopt) -> list[dict]:
    """Design rows (x, r, l_opt, noise group) of planned training runs."""
    out = []
    for tr in runs:
        planned = plan.runs[tr.arch_id]
        out.append({"x": planned.arch.d_over_sqrt_n, "r": planned.arch.mlp_attn_ratio,
                    "l_opt": lopt(planned.scale.n_target, tr.tokens), "group": (planned.scale.name, tr.seed, tr.tokens)})
    return out
