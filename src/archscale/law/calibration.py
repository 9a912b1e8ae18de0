"""Fitting one calibration form of the conditional law on arrays, with the identifiability guards.

The forms and their normalisation are described in :mod:`archscale.law.conditional`. Here:

* each factor (``d_over_sqrt_n``, ``r``) is fitted only when its knob has at least three
  distinct values among the fitted points; otherwise its coefficients are fixed (``c1 = c2 = 0``:
  the factor is a constant absorbed by ``a0``), ``factors[knob]`` says why and no optimum of that
  knob is reported (:mod:`archscale.law.guards`);
* the design matrix (additive) or the Jacobian at the solution (multiplicative) must have full
  rank; a rank-deficient fit is a :class:`FitError`;
* statsmodels/scipy/numpy warnings raised during the fit land in ``warnings`` and ``status``;
* the multiplicative form is fitted from several starts; its bootstrap resamples *runs*
  (``groups``: one id per point, e.g. the run id when a run gives several checkpoints) and
  refits each resample from the best few starts of the original fit;
* the additive form's intervals use a cluster-robust covariance when runs repeat;
* an optimum is kept only when it is interior and its interval lies in the sampled range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from ..ranks import spearman
from .chinchilla import FitError
from .guards import capture_warnings, knob_support, optimum_in_range, rank_check

FORMS = ("multiplicative", "additive")
N_COEF = 5  # free coefficients in either form (a0, a1, a2, b1, b2)
COEF_NAMES = ["a0", "a1", "a2", "b1", "b2"]


# ---- the law ------------------------------------------------------------------------
def u_factor(c, x):
    """``c0 + c1 ln(x) + c2 / x`` (numpy-broadcasting)."""
    x = np.asarray(x, dtype=float)
    return c[0] + c[1] * np.log(x) + c[2] / x


def predict_loss(form_fit: dict, d_over_sqrt_n, r, l_opt):
    """Predicted loss of one fitted form (``conditional_json["forms"][form]``); broadcasts."""
    form = form_fit.get("form", "multiplicative")
    a = np.asarray(form_fit["a"], dtype=float)
    b = np.asarray(form_fit["b"], dtype=float)
    l_opt = np.asarray(l_opt, dtype=float)
    if form == "multiplicative":
        return u_factor(a, d_over_sqrt_n) * u_factor(b, r) * l_opt
    if form == "additive":
        return l_opt + u_factor(a, d_over_sqrt_n) + u_factor(b, r)
    raise ValueError(f"unknown conditional form '{form}'; expected one of {FORMS}")


def normalise_multiplicative(a, b) -> tuple[list[float], list[float]]:
    """Rescale (a, b) so that the r-factor is 1 at r = 1; predictions and optima are unchanged."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    k = b[0] + b[2]
    if k == 0:
        raise ValueError("b0 + b2 = 0: the r-factor vanishes at r = 1 and cannot be normalised")
    return (a * k).tolist(), (b / k).tolist()


def optimum(c1: float, c2: float, name: str = "x") -> tuple[float | None, str | None]:
    """Minimiser of ``c0 + c1 ln(v) + c2/v`` over v > 0: ``c2/c1`` or ``None`` with the reason."""
    if c1 > 0 and c2 > 0:
        return c2 / c1, None
    if c1 <= 0 and c2 > 0:
        return None, f"no interior optimum: loss still falling at the largest {name} (c1 = {c1:.3g} <= 0)"
    if c1 > 0 and c2 <= 0:
        return None, f"no interior optimum: loss still falling toward the smallest {name} (c2 = {c2:.3g} <= 0)"
    return None, f"no interior optimum: the stationary point of {name} is a maximum (c1 = {c1:.3g}, c2 = {c2:.3g})"


def _extended_ratio(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """c2/c1 where it is a minimum; +inf where loss falls forever; 0 where it rises; nan for a maximum."""
    out = np.full(c1.shape, np.nan)
    ok = (c1 > 0) & (c2 > 0)
    out[ok] = c2[ok] / c1[ok]
    out[(c1 <= 0) & (c2 > 0)] = np.inf
    out[(c1 > 0) & (c2 <= 0)] = 0.0
    return out


def _finite_or_none(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def json_clean(obj):
    """Plain JSON values: numpy scalars to Python, non-finite floats to None (recursively)."""
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    return obj


def _ci_list(lo, hi):
    return [_finite_or_none(lo), _finite_or_none(hi)]


# ---- fitting ------------------------------------------------------------------------
def _design(x, r):
    return np.column_stack([np.ones_like(x), np.log(x), 1.0 / x, np.log(r), 1.0 / r])


def _mult_unpack(p):
    a = p[:3]
    b = np.array([1.0 - p[4], p[3], p[4]])
    return a, b


def _mult_residuals(p, x, r, loss, l_opt):
    a, b = _mult_unpack(p)
    return u_factor(a, x) * u_factor(b, r) * l_opt - loss


def _mult_jacobian(p, x, r, loss, l_opt):
    a, b = _mult_unpack(p)
    fa, fb = u_factor(a, x), u_factor(b, r)
    lx, ix, lr, ir = np.log(x), 1.0 / x, np.log(r), 1.0 / r
    return np.column_stack(
        [fb * l_opt, lx * fb * l_opt, ix * fb * l_opt, fa * lr * l_opt, fa * (ir - 1.0) * l_opt]
    )


class _Masked:
    """Residuals/Jacobian in the free coefficients only (the others fixed at 0)."""

    def __init__(self, free: np.ndarray, x, r, loss, l_opt):
        self.free, self.args = free, (x, r, loss, l_opt)

    def full(self, q):
        p = np.zeros(N_COEF)
        p[self.free] = q
        return p

    def res(self, q):
        return _mult_residuals(self.full(q), *self.args)

    def jac(self, q):
        return _mult_jacobian(self.full(q), *self.args)[:, self.free]

    def solve(self, start_full):
        out = optimize.least_squares(
            self.res, np.asarray(start_full, float)[self.free], jac=self.jac, method="lm",
            xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=20000,
        )
        return self.full(out.x), float(np.sum(out.fun**2)), bool(out.success)


def _mult_starts(x, r, loss, l_opt, free) -> list[np.ndarray]:
    """Starts: the linearisation around 1 (L/L_opt ~ a(x) + b(r) - 1) and spread-out variants."""
    cols = np.flatnonzero(free)
    X = _design(x, r)[:, cols]
    beta = np.zeros(N_COEF)
    beta[cols], *_ = np.linalg.lstsq(X, loss / l_opt, rcond=None)
    a0 = max(beta[0], 1e-3)
    lin = np.array([beta[0], beta[1], beta[2], beta[3] / a0, beta[4] / a0])
    starts = [lin, np.array([1.0, 0.0, 0.0, 0.0, 0.0]), lin * np.array([1, 2, 2, 2, 2]), lin * np.array([1, 0.5, 0.5, 0.5, 0.5])]
    return [np.where(free, s, 0.0) for s in starts]


def _fit_multiplicative(masked: _Masked, starts, keep: int = 3):
    """Best fit from every start and the best ``keep`` distinct solutions (starts for the bootstrap)."""
    sols = []
    for s in starts:
        p, cost, ok = masked.solve(s)
        if np.all(np.isfinite(p)) and math.isfinite(cost):
            sols.append((cost, p, ok))
    if not sols:
        raise FitError("conditional fit (multiplicative): no start converged to finite coefficients")
    sols.sort(key=lambda t: t[0])
    best: list[np.ndarray] = []
    for _, p, _ in sols:
        if all(np.max(np.abs(p - q)) > 1e-8 for q in best):
            best.append(p)
        if len(best) >= keep:
            break
    return sols[0][1], sols[0][2], best


def _resample_index(rng, groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return rng.integers(0, n, size=n)
    ids, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(ids.size)]
    pick = rng.integers(0, ids.size, size=ids.size)
    return np.concatenate([members[k] for k in pick])


def _metrics(pred, loss) -> tuple[float | None, float | None]:
    return float(np.mean((pred - loss) ** 2)), spearman(pred, loss, min_points=2)


def _check_arrays(form, x, r, loss, l_opt):
    if not (x.size == r.size == loss.size == l_opt.size):
        raise FitError("conditional fit: x, r, loss and L_opt have different lengths")
    for name, arr in (("d_over_sqrt_n", x), ("r", r), ("loss", loss), ("L_opt", l_opt)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise FitError(
                f"conditional fit: {name} must be finite and positive; point {int(bad[0])} has {arr[bad[0]]!r}"
            )


def fit_form(
    form: str,
    x,
    r,
    loss,
    l_opt,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    groups=None,
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Fit one calibration form on arrays; returns the ``forms[form]`` dict of conditional.json.

    ``groups``: one run id per point; the bootstrap resamples runs and the additive intervals
    are cluster-robust when a run gives several points. ``keep_samples`` stores the bootstrap
    coefficient samples (``samples``: rows ``a0 a1 a2 b0 b1 b2``) for pick probabilities.
    """
    if form not in FORMS:
        raise FitError(f"conditional fit: unknown form '{form}'; use one of {FORMS}")
    x, r, loss, l_opt = (np.asarray(v, dtype=float).ravel() for v in (x, r, loss, l_opt))
    _check_arrays(form, x, r, loss, l_opt)
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.size != x.size:
            raise FitError("conditional fit: groups (run ids) and points have different lengths")
        if np.unique(groups).size == groups.size:
            groups = None
    warns: list[str] = []
    factors = {}
    free = np.ones(N_COEF, dtype=bool)
    for key, vals, idx in (("d_over_sqrt_n", x, [1, 2]), ("r", r, [3, 4])):
        why = knob_support(vals, key, "among the fitted runs")
        factors[key] = {"fitted": why is None, "reason": why, "range": [float(vals.min()), float(vals.max())]}
        if why:
            free[idx] = False
    n_free = int(free.sum())
    if x.size < N_COEF:
        raise FitError(
            f"conditional fit ({form}): {x.size} points in the r range are fewer than the {N_COEF} "
            "coefficients; add runs or widen fit.r_min / fit.r_max"
        )
    z = stats.norm.ppf(0.5 + ci_level / 2)
    lo_q, hi_q = 50 * (1 - ci_level), 100 - 50 * (1 - ci_level)
    out: dict[str, Any] = {"form": form, "n_points": int(x.size), "ci_level": ci_level, "factors": factors}
    names = [COEF_NAMES[i] for i in np.flatnonzero(free)]
    coef_pairs = {"d_over_sqrt_n": (1, 2), "r": (3, 4)}
    opt: dict[str, Any] = {}
    samples = None
    # The linear design (the additive form, and the multiplicative form linearised around 1)
    # must separate the coefficients: confounded knobs (e.g. r tied to d/sqrt(N)) fail here.
    X = _design(x, r)[:, free]
    err, w = rank_check(X, names, f"conditional fit ({form})")
    if err:
        raise FitError(err)
    warns += w
    if form == "additive":
        import statsmodels.api as sm

        with capture_warnings(warns, "additive fit: "):
            ols = sm.OLS(loss - l_opt, X)
            res = ols.fit(cov_type="cluster", cov_kwds={"groups": np.unique(groups, return_inverse=True)[1]}) if groups is not None else ols.fit()
            params = np.zeros(N_COEF)
            params[free] = np.asarray(res.params)
            cov = np.zeros((N_COEF, N_COEF))
            cov[np.ix_(free, free)] = np.asarray(res.cov_params())
            bse = np.sqrt(np.clip(np.diag(cov), 0, None))
            ci = np.column_stack([params - z * bse, params + z * bse])
        out.update(
            method="ols (statsmodels)" + (", cluster-robust by run" if groups is not None else ""),
            normalisation="b0 = 0: the two constants merge into a0",
            a=params[:3].tolist(), b=[0.0, float(params[3]), float(params[4])],
            a_se=[_finite_or_none(v) for v in bse[:3]],
            b_se=[0.0, _finite_or_none(bse[3]), _finite_or_none(bse[4])],
            a_ci=[_ci_list(*ci[i]) for i in range(3)],
            b_ci=[[0.0, 0.0], _ci_list(*ci[3]), _ci_list(*ci[4])],
        )
        for key, (i1, i2) in coef_pairs.items():
            val, ci_v = None, None
            if factors[key]["fitted"]:
                val, why = optimum(params[i1], params[i2], key)
                if val is not None:
                    c1, c2 = params[i1], params[i2]
                    grad = np.array([-c2 / c1**2, 1.0 / c1])
                    with np.errstate(invalid="ignore"):
                        var = float(np.einsum("i,ij,j->", grad, cov[np.ix_([i1, i2], [i1, i2])], grad))
                    se = math.sqrt(var) if math.isfinite(var) and var >= 0 else float("nan")
                    ci_v = _ci_list(val - z * se, val + z * se)
            else:
                why = factors[key]["reason"]
            opt[key], opt[f"{key}_ci"], opt[f"{key}_reason"] = val, ci_v, why
        opt["interval_method"] = "delta method on the OLS covariance"
        interval_expected = True
    else:
        masked = _Masked(free, x, r, loss, l_opt)
        with capture_warnings(warns, "multiplicative fit: "):
            p, success, best_starts = _fit_multiplicative(masked, _mult_starts(x, r, loss, l_opt, free))
        if not success:
            warns.append("multiplicative fit: Levenberg-Marquardt did not report convergence")
        err, w = rank_check(masked.jac(p[free]), names, "conditional fit (multiplicative, Jacobian)")
        if err:
            raise FitError(err)
        warns += [m for m in w if m not in warns]
        a, b = _mult_unpack(p)
        out.update(
            method=f"levenberg-marquardt (scipy least_squares 'lm'), {len(best_starts)} best starts, "
            f"bootstrap {bootstrap} over {'runs' if groups is not None else 'points'}",
            normalisation="b0 + b2 = 1: the r-factor is 1 at r = 1",
            a=a.tolist(), b=b.tolist(),
        )
        if bootstrap > 0:
            rng = np.random.default_rng(seed)
            rows = []
            with capture_warnings(warns, "multiplicative bootstrap: "):
                for _ in range(bootstrap):
                    idx = _resample_index(rng, groups, x.size)
                    mb = _Masked(free, x[idx], r[idx], loss[idx], l_opt[idx])
                    fits = [mb.solve(s) for s in best_starts]
                    fits = [f for f in fits if f[2] and np.all(np.isfinite(f[0]))]
                    if fits:
                        rows.append(min(fits, key=lambda f: f[1])[0])
            out["bootstrap"] = bootstrap
            out["bootstrap_unit"] = "run" if groups is not None else "point"
            out["bootstrap_converged"] = int(len(rows))
            if len(rows) < bootstrap:
                warns.append(f"{bootstrap - len(rows)} of {bootstrap} bootstrap refits failed and were dropped")
            if len(rows) >= 2:
                samples = np.array([np.concatenate(_mult_unpack(q)) for q in rows])
        if samples is not None:
            se = samples.std(axis=0, ddof=1)
            lo, hi = np.percentile(samples, lo_q, axis=0), np.percentile(samples, hi_q, axis=0)
            out.update(
                a_se=[float(v) for v in se[:3]], b_se=[float(v) for v in se[3:]],
                a_ci=[[float(lo[i]), float(hi[i])] for i in range(3)],
                b_ci=[[float(lo[i]), float(hi[i])] for i in range(3, 6)],
            )
        else:
            out.update(a_se=[None] * 3, b_se=[None] * 3, a_ci=[None] * 3, b_ci=[None] * 3)
        for key, cvec, bcols in (("d_over_sqrt_n", a, (1, 2)), ("r", b, (4, 5))):
            val, ci_v = None, None
            if factors[key]["fitted"]:
                val, why = optimum(cvec[1], cvec[2], key)
                if val is not None and samples is not None:
                    ext = _extended_ratio(samples[:, bcols[0]], samples[:, bcols[1]])
                    ext = ext[~np.isnan(ext)]
                    if ext.size >= 2:
                        ci_v = _ci_list(np.percentile(ext, lo_q), np.percentile(ext, hi_q))
                    opt[f"{key}_interior_fraction"] = float(
                        np.mean((samples[:, bcols[0]] > 0) & (samples[:, bcols[1]] > 0))
                    )
            else:
                why = factors[key]["reason"]
            opt[key], opt[f"{key}_ci"], opt[f"{key}_reason"] = val, ci_v, why
        opt["interval_method"] = "bootstrap percentiles (null bound: the optimum leaves the positive axis)"
        interval_expected = bootstrap > 0
    for key in coef_pairs:
        if opt[key] is not None:
            rng_k = factors[key]["range"]
            v, c, why = optimum_in_range(opt[key], opt[f"{key}_ci"], rng_k[0], rng_k[1], key, interval_expected)
            opt[key], opt[f"{key}_ci"] = v, c
            if why:
                opt[f"{key}_reason"] = why
            elif not interval_expected:
                opt[f"{key}_reason"] = "point estimate only: no interval computed (bootstrap 0)"
    out["optimum"] = opt
    out["mse"], out["spearman"] = _metrics(predict_loss(out, x, r, l_opt), loss)
    if x.size <= n_free:
        warns.append("as many points as coefficients: the law interpolates them, intervals are undefined")
    flags = [f["reason"] for f in factors.values() if f["reason"]] + warns
    out["warnings"] = warns
    out["status"] = "ok" if not flags else "flagged: " + "; ".join(flags)
    if keep_samples and samples is not None:
        out["samples"] = samples.tolist()
    return json_clean(out)
