"""The Chinchilla fit's numerical core: the start grid, ``log L`` and the batched objectives.

Split from :mod:`archscale.law.chinchilla` (which fits, bootstraps and guards): the Hoffmann et
al. grid of starts, the log-space prediction ``LSE(a - alpha ln N, b - beta ln D, e)``, the
batched Huber / squared / smoothed-LAD objective with its gradient (for
:func:`archscale.law.optim.batched_lbfgs`), the residual Jacobian for the Levenberg-Marquardt
polish and the exact LAD polish (sequential linear programming, scipy's HiGHS).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

# Smoothing of |r| in the batched LAD stage (the exact polish needs none).
_LAD_SMOOTH = 1e-6


def start_grid() -> np.ndarray:
    """The Hoffmann et al. / Epoch grid of starts as rows ``(a, b, e, alpha, beta)``."""
    alpha = np.arange(0.0, 2.01, 0.5)
    beta = np.arange(0.0, 2.01, 0.5)
    e = np.arange(-1.0, 1.01, 0.5)
    a = np.arange(0.0, 25.01, 5.0)
    b = np.arange(0.0, 25.01, 5.0)
    return np.array([(ai, bi, ei, al, be) for al, be, ei, ai, bi in itertools.product(alpha, beta, e, a, b)])


def predict_log_loss(theta: np.ndarray, n, d) -> np.ndarray:
    """``log L`` for internal parameters ``theta = (a, b, e, alpha, beta)`` (numpy-broadcasting)."""
    a, b, e, alpha, beta = theta
    ln_n, ln_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    t1, t2 = np.broadcast_arrays(a - alpha * ln_n, b - beta * ln_d)
    return logsumexp(np.stack([t1, t2, np.full_like(t1, e)]), axis=0)


class _Objective:
    """Batched objective over starts / bootstrap rows: ``sum_i w_i rho(r_i) / scale``."""

    def __init__(self, ln_n, ln_d, ln_l, kind: str, delta: float, weights: np.ndarray | None = None):
        self.ln_n, self.ln_d, self.ln_l = ln_n, ln_d, ln_l
        self.kind, self.delta = kind, delta
        self.weights = weights  # [K, n] or None
        self.block = max(16, 50_000 // max(1, ln_n.size))
        if kind == "squared":
            self.scale = max(float(np.var(ln_l)), 1e-12)
        else:
            self.scale = delta

    def __call__(self, theta: np.ndarray, rows: np.ndarray):
        # Blocks of rows keep the temporaries in cache (large temporaries cost page faults).
        k = theta.shape[0]
        if k <= self.block:
            return self._eval(theta, rows)
        f = np.empty(k)
        g = np.empty((k, 5))
        for s in range(0, k, self.block):
            f[s : s + self.block], g[s : s + self.block] = self._eval(theta[s : s + self.block], rows[s : s + self.block])
        return f, g

    def _eval(self, theta: np.ndarray, rows: np.ndarray):
        a, b, e, alpha, beta = (theta[:, i, None] for i in range(5))
        t1 = a - alpha * self.ln_n
        t2 = b - beta * self.ln_d
        m = np.maximum(np.maximum(t1, t2), e)
        t1 -= m
        t2 -= m
        w1, w2 = np.exp(t1, out=t1), np.exp(t2, out=t2)
        w3 = np.exp(e - m)
        s = w1 + w2
        s += w3
        r = np.log(s)
        r += m
        r -= self.ln_l
        if self.kind == "squared":
            rho, psi = r * r, 2.0 * r
        else:
            ar = np.abs(r)
            rho = np.where(ar <= self.delta, 0.5 * r * r, self.delta * (ar - 0.5 * self.delta))
            psi = np.clip(r, -self.delta, self.delta, out=r)
        if self.weights is not None:
            wts = self.weights[rows]
            rho *= wts
            psi *= wts
        psi /= s
        f = rho.sum(axis=1) / self.scale
        pw1 = psi * w1
        pw2 = psi * w2
        g = np.empty((theta.shape[0], 5))
        g[:, 0] = pw1.sum(axis=1)
        g[:, 1] = pw2.sum(axis=1)
        g[:, 2] = (psi * w3).sum(axis=1)
        g[:, 3] = -np.einsum("ij,j->i", pw1, self.ln_n)
        g[:, 4] = -np.einsum("ij,j->i", pw2, self.ln_d)
        return f, g / self.scale


def _residuals_and_jacobian(theta, ln_n, ln_d, ln_l):
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    pred = logsumexp(t, axis=0)
    w = np.exp(t - pred)
    jac = np.stack([w[0], w[1], w[2], -w[0] * ln_n, -w[1] * ln_d], axis=1)
    return pred - ln_l, jac


def _lad_polish(theta0, ln_n, ln_d, ln_l, max_iter: int = 200) -> np.ndarray:
    """Exact least absolute deviations: sequential LPs (HiGHS) inside a box trust region."""
    x = np.array(theta0, float)
    r, jac = _residuals_and_jacobian(x, ln_n, ln_d, ln_l)
    cur = np.abs(r).sum()
    n, p = jac.shape
    radius = 0.1
    c = np.concatenate([np.zeros(p), np.ones(2 * n)])
    eye = np.eye(n)
    for _ in range(max_iter):
        res = optimize.linprog(
            c,
            A_eq=np.hstack([jac, -eye, eye]),
            b_eq=-r,
            bounds=[(-radius, radius)] * p + [(0, None)] * (2 * n),
            method="highs",
        )
        if res.status != 0:
            break
        step = res.x[:p]
        predicted = cur - res.fun
        if predicted <= 1e-15 * max(1.0, cur):
            break
        r_new, jac_new = _residuals_and_jacobian(x + step, ln_n, ln_d, ln_l)
        new = np.abs(r_new).sum()
        ratio = (cur - new) / predicted
        if ratio > 0.1:
            x, r, jac, cur = x + step, r_new, jac_new, new
        if ratio > 0.75 and np.max(np.abs(step)) > 0.99 * radius:
            radius *= 2.0
        elif ratio < 0.25:
            radius *= 0.25
        if radius < 1e-12:
            break
    return x
