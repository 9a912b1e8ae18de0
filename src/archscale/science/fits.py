"""The fit stage's conditional-law fits, batched over K simulated studies that share one design.

Every simulated study has the same architectures (the grid), so the same knob values ``x``
(d/sqrt(N)) and ``r``; only the losses (and, with the empirical reference, ``L_opt``) differ.

additive
    ``L - L_opt = a0 + a1 ln x + a2/x + b1 ln r + b2/r`` is linear with one design matrix: the K
    studies are one ``numpy.linalg.lstsq`` with K right-hand sides. Intervals of the optima: the
    delta method on the OLS covariance, as :func:`archscale.law.calibration.fit_form` does.
multiplicative
    ``L = (a0 + a1 ln x + a2/x)(1 - b2 + b1 ln r + b2/r) L_opt`` is fitted by Levenberg-Marquardt,
    the fit stage's method, advanced for all K studies (and the fit stage's four starts) at once
    with batched 5x5 normal equations. The fit stage's intervals are bootstrap percentiles; a
    bootstrap of every simulated study would cost K x B fits, so here each study's interval is the
    delta method on its Gauss-Newton covariance (the bootstrap's large-sample limit); the spread
    of the optima across the simulated studies is reported beside it.

The start grid, the knob guard and the design check are the fit stage's own functions
(:func:`~archscale.law.calibration.multiplicative_starts`, :func:`~archscale.law.calibration.knob_factors`,
:func:`~archscale.law.calibration.check_design`). The guards are the fit stage's (:mod:`archscale.law.guards`): a knob with fewer than three
distinct values is not fitted, a rank-deficient design is an error, and an optimum counts only
when it is a minimum (``c1, c2 > 0``) whose point and interval lie in the knob's sampled range.
Agreement with :func:`~archscale.law.calibration.fit_form` is tested in tests/unit/test_science.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..law.calibration import COEF_NAMES, COEF_PAIRS, N_COEF, _design, check_design, knob_factors, multiplicative_starts
from ..law.chinchilla import FitError

COEF = COEF_NAMES
KNOBS = COEF_PAIRS  # (c1, c2) indices of each knob's factor


@dataclass
class BatchFit:
    """K fits of one form on one design: coefficients ``[K, 5]`` (a0 a1 a2 b1 b2), per-study
    optima ``[K]`` (nan when not interior or not in range) and their interval bounds."""

    form: str
    params: np.ndarray
    sigma2: np.ndarray
    optimum: dict[str, np.ndarray]
    ci: dict[str, np.ndarray]  # [K, 2]
    interior_point: dict[str, np.ndarray]  # point estimate is a minimum inside the range
    interior: dict[str, np.ndarray]  # ... and its interval lies inside the range (the fit's guard)
    factors: dict[str, str | None]  # None when fitted, else why not
    ranges: dict[str, tuple[float, float]]
    interval_note: str | None = None  # why intervals are undefined (then no optimum passes the guard)


def free_mask(x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, dict[str, str | None]]:
    """The fit stage's knob guard (:func:`~archscale.law.calibration.knob_factors`): free
    coefficients and, per knob, None when fitted or why not."""
    free, factors = knob_factors(x, r)
    return free, {key: f["reason"] for key, f in factors.items()}


def _mult_parts(P: np.ndarray, x, r, lopt):
    """Prediction ``[K, n]`` and Jacobian ``[K, n, 5]`` of the multiplicative form."""
    lx, ix, lr, ir = np.log(x), 1.0 / x, np.log(r), 1.0 / r
    fa = P[:, :1] + P[:, 1:2] * lx + P[:, 2:3] * ix
    fb = 1.0 - P[:, 4:5] + P[:, 3:4] * lr + P[:, 4:5] * ir
    J = np.stack([fb, lx * fb, ix * fb, fa * lr, fa * (ir - 1.0)], axis=2) * lopt[:, :, None]
    return fa * fb * lopt, J


def batched_lm(P0, x, r, loss, lopt, free, max_iter: int = 200, tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt from every row of ``P0`` (rows of ``loss``/``lopt``); returns (P, SSE)."""
    P = np.where(free, P0, 0.0).copy()
    k = P.shape[0]
    idx = np.flatnonzero(free)
    lam = np.full(k, 1e-3)
    pred, J = _mult_parts(P, x, r, lopt)
    res = loss - pred
    sse = np.einsum("ij,ij->i", res, res)
    active = np.isfinite(sse)
    eye = np.eye(idx.size)
    for _ in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        Jf = J[rows][:, :, idx]
        A = np.einsum("kni,knj->kij", Jf, Jf)
        g = np.einsum("kni,kn->ki", Jf, res[rows])
        diag = np.einsum("kii->ki", A)
        step = np.linalg.solve(A + lam[rows, None, None] * eye * np.maximum(diag, 1e-30)[:, :, None], g[:, :, None])[..., 0]
        Pn = P[rows].copy()
        Pn[:, idx] += step
        with np.errstate(all="ignore"):
            pn, Jn = _mult_parts(Pn, x, r, lopt[rows])
            rn = loss[rows] - pn
            sn = np.einsum("ij,ij->i", rn, rn)
        better = np.isfinite(sn) & (sn <= sse[rows])
        ok, bad = rows[better], rows[~better]
        rel = (sse[ok] - sn[better]) / np.maximum(sse[ok], 1e-300)
        P[ok], J[ok], res[ok], sse[ok] = Pn[better], Jn[better], rn[better], sn[better]
        lam[ok] = np.maximum(lam[ok] / 3.0, 1e-12)
        lam[bad] *= 4.0
        small = np.max(np.abs(step[better]) / (np.abs(P[ok][:, idx]) + 1e-12), axis=1) if ok.size else np.zeros(0)
        active[ok[(rel < tol) & (small < 1e-9)]] = False
        active[bad[lam[bad] > 1e12]] = False
    return P, sse


def _delta_ci(P, cov, z):
    """Point optimum and delta-method interval of each knob: dict key -> (val [K], ci [K, 2])."""
    out = {}
    for key, (i1, i2) in KNOBS.items():
        c1, c2 = P[:, i1], P[:, i2]
        with np.errstate(all="ignore"):
            val = np.where((c1 > 0) & (c2 > 0), c2 / c1, np.nan)
            grad = np.zeros((P.shape[0], N_COEF))
            grad[:, i1], grad[:, i2] = -c2 / c1**2, 1.0 / c1
            var = np.einsum("ki,kij,kj->k", grad, cov, grad)
            se = np.sqrt(np.where(var >= 0, var, np.nan))
        out[key] = (val, np.column_stack([val - z * se, val + z * se]))
    return out


def optimise_additive(X: np.ndarray, free, loss, lopt, dof: int):
    """(P [K, 5], SSE [K], covariance of the free coefficients [K, p, p]): one least-squares
    solve with K right-hand sides and the OLS covariance."""
    P = np.zeros((loss.shape[0], N_COEF))
    beta, *_ = np.linalg.lstsq(X, (loss - lopt).T, rcond=None)
    P[:, free] = beta.T
    res = (loss - lopt) - beta.T @ X.T
    sse = np.einsum("ij,ij->i", res, res)
    XtX_inv = np.linalg.inv(X.T @ X)
    return P, sse, (sse / dof)[:, None, None] * XtX_inv[None]


def optimise_multiplicative(x, r, loss, lopt, free, dof: int):
    """(P, SSE, covariance of the free coefficients): batched Levenberg-Marquardt from the fit
    stage's starts, the best start per study, its Gauss-Newton covariance."""
    K = loss.shape[0]
    fits = [batched_lm(s, x, r, loss, lopt, free) for s in multiplicative_starts(x, r, loss, lopt, free)]
    sses = np.column_stack([f[1] for f in fits])
    sses = np.where(np.isfinite(sses), sses, np.inf)
    best = np.argmin(sses, axis=1)
    P = np.stack([f[0] for f in fits], axis=1)[np.arange(K), best]
    sse = sses[np.arange(K), best]
    _, J = _mult_parts(P, x, r, lopt)
    Jf = J[:, :, free]
    with np.errstate(all="ignore"):
        A = np.einsum("kni,knj->kij", Jf, Jf)
        covf = np.linalg.pinv(A) * (sse / dof)[:, None, None]
    return P, sse, covf


def guard_batch(P, cov, why: dict, ranges: dict, z: float):
    """The fit stage's optimum guard per study: (optimum, ci, interior point, interior with
    its interval), an optimum kept only when it is a minimum inside the knob's sampled range."""
    optimum, ci, ip, inn = {}, {}, {}, {}
    for key, (val, cik) in _delta_ci(P, cov, z).items():
        lo, hi = ranges[key]
        if why[key]:
            val = np.full(P.shape[0], np.nan)
        point = np.isfinite(val) & (val >= lo) & (val <= hi)
        inside = point & np.all(np.isfinite(cik), axis=1) & (cik[:, 0] >= lo) & (cik[:, 1] <= hi)
        optimum[key], ci[key], ip[key], inn[key] = np.where(point, val, np.nan), cik, point, inside
    return optimum, ci, ip, inn


def fit_batch(form: str, x, r, loss, lopt, ci_level: float = 0.95) -> BatchFit:
    """Fit ``form`` to K studies (rows of ``loss``, ``lopt``: ``[K, n]``) at the points ``x``, ``r``.

    Steps: the fit stage's knob guard and design check, the form's optimisation (its start
    grid shared with the fit stage), the delta-method intervals and the range guard."""
    x, r = np.asarray(x, float), np.asarray(r, float)
    loss, lopt = np.atleast_2d(loss), np.atleast_2d(lopt)
    n = x.size
    if n < N_COEF:
        raise FitError(f"conditional fit ({form}): {n} points in the r range are fewer than the {N_COEF} coefficients")
    free, why = free_mask(x, r)
    check_design(x, r, free, form)
    K, p = loss.shape[0], int(free.sum())
    dof = max(n - p, 1)
    if form == "additive":
        P, sse, covf = optimise_additive(_design(x, r)[:, free], free, loss, lopt, dof)
    elif form == "multiplicative":
        P, sse, covf = optimise_multiplicative(x, r, loss, lopt, free, dof)
    else:
        raise FitError(f"unknown conditional form '{form}'")
    cov = np.zeros((K, N_COEF, N_COEF))
    cov[np.ix_(np.arange(K), free, free)] = covf
    note = None
    if n <= p:
        note = "as many points as coefficients: the law interpolates them, intervals are undefined"
        cov[:] = np.nan
    ranges = {"d_over_sqrt_n": (float(x.min()), float(x.max())), "r": (float(r.min()), float(r.max()))}
    optimum, ci, ip, inn = guard_batch(P, cov, why, ranges, stats.norm.ppf(0.5 + ci_level / 2))
    return BatchFit(form, P, sse / dof, optimum, ci, ip, inn, why, ranges, note)


def predict(form: str, P: np.ndarray, x, r, lopt) -> np.ndarray:
    """Predicted losses ``[K, m]`` of K coefficient rows at points (x, r) with ``lopt`` ``[K, m]``."""
    x, r = np.asarray(x, float), np.asarray(r, float)
    fa = P[:, :1] + P[:, 1:2] * np.log(x) + P[:, 2:3] / x
    if form == "multiplicative":
        fb = 1.0 - P[:, 4:5] + P[:, 3:4] * np.log(r) + P[:, 4:5] / r
        return fa * fb * lopt
    return lopt + fa + P[:, 3:4] * np.log(r) + P[:, 4:5] / r


def spearman_rows(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair (nan where either row is constant)."""
    rp, ry = stats.rankdata(pred, axis=1), stats.rankdata(y, axis=1)
    rp -= rp.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(rp**2, axis=1) * np.sum(ry**2, axis=1))
    with np.errstate(all="ignore"):
        return np.where(den > 0, np.sum(rp * ry, axis=1) / den, np.nan)
