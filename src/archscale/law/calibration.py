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

:func:`fit_form` is a sequence of steps, each a function: :func:`prepare_points` (validated
arrays, run ids), :func:`knob_factors` (which knobs carry a factor), :func:`check_design` (rank
of the linear design), then per form the start grid (:func:`multiplicative_starts`, shared with
the science planner's batched fits in :mod:`archscale.science.fits`), the optimisation
(:func:`optimise_multiplicative` / :func:`fit_additive`), the bootstrap
(:func:`bootstrap_multiplicative`, :func:`bootstrap_intervals`) and the range guard of the
optima (:func:`guard_optima`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, stats

from ..io import finite_or_none, json_clean
from ..ranks import spearman
from .chinchilla import FitError
from .guards import capture_warnings, knob_support, optimum_in_range, rank_check
from .form import FORMS, extended_ratio, form_loss, optimum, u_factor

N_COEF = 5  # free coefficients in either form (a0, a1, a2, b1, b2)
COEF_NAMES = ["a0", "a1", "a2", "b1", "b2"]
COEF_PAIRS = {"d_over_sqrt_n": (1, 2), "r": (3, 4)}  # (c1, c2) indices of each knob's factor


def _ci_list(lo, hi):
    return [finite_or_none(lo), finite_or_none(hi)]


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


# ---- the steps of a fit: points, knobs, starts, optimise, bootstrap, guard ---------------
class FormData(NamedTuple):
    """The points one form is fitted on; ``groups`` holds a run id per point, or None when
    every point is its own run (the bootstrap then resamples points)."""

    x: np.ndarray
    r: np.ndarray
    loss: np.ndarray
    l_opt: np.ndarray
    groups: np.ndarray | None = None


@dataclass(frozen=True)
class FitOptions:
    """How a form is fitted beyond its points: bootstrap size and seed, interval level, and
    whether the bootstrap coefficient samples are kept (for pick probabilities)."""

    bootstrap: int = 200
    seed: int = 0
    ci_level: float = 0.95
    keep_samples: bool = False

    @property
    def z(self) -> float:
        """The normal quantile of the two-sided interval."""
        return stats.norm.ppf(0.5 + self.ci_level / 2)

    @property
    def percentiles(self) -> tuple[float, float]:
        """The lower and upper percentiles of a bootstrap interval."""
        return 50 * (1 - self.ci_level), 100 - 50 * (1 - self.ci_level)


def prepare_points(form: str, x, r, loss, l_opt, groups=None) -> FormData:
    """Validated flat arrays; ``groups`` is dropped (None) when no run gives two points."""
    if form not in FORMS:
        raise FitError(f"conditional fit: unknown form '{form}'; use one of {FORMS}")
    x, r, loss, l_opt = (np.asarray(v, dtype=float).ravel() for v in (x, r, loss, l_opt))
    if not (x.size == r.size == loss.size == l_opt.size):
        raise FitError("conditional fit: x, r, loss and L_opt have different lengths")
    for name, arr in (("d_over_sqrt_n", x), ("r", r), ("loss", loss), ("L_opt", l_opt)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise FitError(
                f"conditional fit: {name} must be finite and positive; point {int(bad[0])} has {arr[bad[0]]!r}"
            )
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.size != x.size:
            raise FitError("conditional fit: groups (run ids) and points have different lengths")
        if np.unique(groups).size == groups.size:
            groups = None
    return FormData(x, r, loss, l_opt, groups)


def knob_factors(x, r) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """(free coefficients, ``factors``): a knob with fewer than three distinct values is not
    fitted; its two coefficients are fixed at 0 and ``factors[knob]["reason"]`` says why."""
    free = np.ones(N_COEF, dtype=bool)
    factors = {}
    for key, vals in (("d_over_sqrt_n", x), ("r", r)):
        why = knob_support(vals, key, "among the fitted runs")
        factors[key] = {"fitted": why is None, "reason": why, "range": [float(vals.min()), float(vals.max())]}
        if why:
            free[list(COEF_PAIRS[key])] = False
    return free, factors


def check_design(x, r, free: np.ndarray, form: str) -> list[str]:
    """Rank check of the linear design (the additive form; the multiplicative one linearised
    around 1): confounded knobs (e.g. r tied to d/sqrt(N)) are a :class:`FitError`; returns
    the conditioning warnings."""
    names = [COEF_NAMES[i] for i in np.flatnonzero(free)]
    err, w = rank_check(_design(x, r)[:, free], names, f"conditional fit ({form})")
    if err:
        raise FitError(err)
    return w


def multiplicative_starts(x, r, loss, l_opt, free) -> list[np.ndarray]:
    """The multiplicative fit's starts for K studies at once (``loss``, ``l_opt``: ``[K, n]``;
    each start ``[K, 5]``): the linearisation around 1 (``L/L_opt ~ a(x) + b(r) - 1``), the
    constant law and the linearisation's coefficients doubled and halved."""
    loss, l_opt = np.atleast_2d(loss), np.atleast_2d(l_opt)
    X = _design(x, r)[:, free]
    beta = np.zeros((loss.shape[0], N_COEF))
    beta[:, free] = np.linalg.lstsq(X, (loss / l_opt).T, rcond=None)[0].T
    a0 = np.maximum(beta[:, 0], 1e-3)
    lin = np.column_stack([beta[:, 0], beta[:, 1], beta[:, 2], beta[:, 3] / a0, beta[:, 4] / a0])
    one = np.tile([1.0, 0.0, 0.0, 0.0, 0.0], (loss.shape[0], 1))
    starts = [lin, one, lin * np.array([1, 2, 2, 2, 2]), lin * np.array([1, 0.5, 0.5, 0.5, 0.5])]
    return [np.where(free, s, 0.0) for s in starts]


def _best_distinct(sols, keep: int) -> list[np.ndarray]:
    """The best ``keep`` distinct solutions of ``(cost, p, ok)`` sorted by cost."""
    best: list[np.ndarray] = []
    for _, p, _ in sols:
        if all(np.max(np.abs(p - q)) > 1e-8 for q in best):
            best.append(p)
        if len(best) >= keep:
            break
    return best


def optimise_multiplicative(data: FormData, free: np.ndarray, warns: list[str], keep: int = 3):
    """(coefficients, best distinct solutions): Levenberg-Marquardt from every start, the
    Jacobian at the best one rank-checked; the best ``keep`` solutions start the bootstrap."""
    masked = _Masked(free, *data[:4])
    starts = [s[0] for s in multiplicative_starts(data.x, data.r, data.loss, data.l_opt, free)]
    with capture_warnings(warns, "multiplicative fit: "):
        sols = []
        for s in starts:
            p, cost, ok = masked.solve(s)
            if np.all(np.isfinite(p)) and math.isfinite(cost):
                sols.append((cost, p, ok))
        if not sols:
            raise FitError("conditional fit (multiplicative): no start converged to finite coefficients")
        sols.sort(key=lambda t: t[0])
    p, success = sols[0][1], sols[0][2]
    if not success:
        warns.append("multiplicative fit: Levenberg-Marquardt did not report convergence")
    names = [COEF_NAMES[i] for i in np.flatnonzero(free)]
    err, w = rank_check(masked.jac(p[free]), names, "conditional fit (multiplicative, Jacobian)")
    if err:
        raise FitError(err)
    warns += [m for m in w if m not in warns]
    return p, _best_distinct(sols, keep)


def resample_index(rng, groups: np.ndarray | None, n: int) -> np.ndarray:
    """One bootstrap resample: point indices, or every point of resampled runs when ``groups``."""
    if groups is None:
        return rng.integers(0, n, size=n)
    ids, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(ids.size)]
    pick = rng.integers(0, ids.size, size=ids.size)
    return np.concatenate([members[k] for k in pick])


def bootstrap_multiplicative(data: FormData, free, starts, opts: FitOptions, warns: list[str]) -> list[np.ndarray]:
    """Refit every resample from ``starts`` (the best few solutions of the original fit); the
    converged refits' coefficient vectors, failed ones dropped."""
    rng = np.random.default_rng(opts.seed)
    rows = []
    with capture_warnings(warns, "multiplicative bootstrap: "):
        for _ in range(opts.bootstrap):
            idx = resample_index(rng, data.groups, data.x.size)
            mb = _Masked(free, data.x[idx], data.r[idx], data.loss[idx], data.l_opt[idx])
            fits = [mb.solve(s) for s in starts]
            fits = [f for f in fits if f[2] and np.all(np.isfinite(f[0]))]
            if fits:
                rows.append(min(fits, key=lambda f: f[1])[0])
    return rows


def bootstrap_intervals(samples: np.ndarray | None, opts: FitOptions) -> dict[str, list]:
    """Standard errors and percentile intervals of ``a``, ``b`` from samples ``a0 a1 a2 b0 b1 b2``."""
    if samples is None:
        return dict(a_se=[None] * 3, b_se=[None] * 3, a_ci=[None] * 3, b_ci=[None] * 3)
    lo_q, hi_q = opts.percentiles
    se = samples.std(axis=0, ddof=1)
    lo, hi = np.percentile(samples, lo_q, axis=0), np.percentile(samples, hi_q, axis=0)
    return dict(
        a_se=[float(v) for v in se[:3]], b_se=[float(v) for v in se[3:]],
        a_ci=[[float(lo[i]), float(hi[i])] for i in range(3)],
        b_ci=[[float(lo[i]), float(hi[i])] for i in range(3, 6)],
    )


def _knob_optima(factors: dict, coefs: dict, interval, method: str) -> dict[str, Any]:
    """Each fitted knob's optimum ``c2/c1`` (``coefs``: knob -> (c1, c2)) with ``interval(knob,
    value, opt)`` (its interval, or None; it may add fields to ``opt``), else the reason it was not
    fitted. Unguarded: :func:`guard_optima` checks the range."""
    opt: dict[str, Any] = {}
    for key, (c1, c2) in coefs.items():
        val, ci_v = None, None
        if factors[key]["fitted"]:
            val, why = optimum(c1, c2, key)
            if val is not None:
                ci_v = interval(key, val, opt)
        else:
            why = factors[key]["reason"]
        opt[key], opt[f"{key}_ci"], opt[f"{key}_reason"] = val, ci_v, why
    opt["interval_method"] = method
    return opt


def multiplicative_optima(a, b, factors: dict, samples: np.ndarray | None, opts: FitOptions) -> dict[str, Any]:
    """Each fitted knob's optimum ``c2/c1`` with its bootstrap percentile interval (unguarded)."""
    lo_q, hi_q = opts.percentiles
    cols = {"d_over_sqrt_n": (1, 2), "r": (4, 5)}

    def interval(key, val, opt):
        if samples is None:
            return None
        c1, c2 = samples[:, cols[key][0]], samples[:, cols[key][1]]
        ext = extended_ratio(c1, c2)
        ext = ext[~np.isnan(ext)]
        opt[f"{key}_interior_fraction"] = float(np.mean((c1 > 0) & (c2 > 0)))
        return _ci_list(np.percentile(ext, lo_q), np.percentile(ext, hi_q)) if ext.size >= 2 else None

    return _knob_optima(factors, {"d_over_sqrt_n": (a[1], a[2]), "r": (b[1], b[2])}, interval,
                        "bootstrap percentiles (null bound: the optimum leaves the positive axis)")


def fit_multiplicative(data: FormData, free, factors, opts: FitOptions, warns: list[str]):
    """(fields of ``forms.multiplicative``, unguarded optima, bootstrap samples or None)."""
    p, best_starts = optimise_multiplicative(data, free, warns)
    a, b = _mult_unpack(p)
    unit = "runs" if data.groups is not None else "points"
    out: dict[str, Any] = dict(
        method=f"levenberg-marquardt (scipy least_squares 'lm'), {len(best_starts)} best starts, "
        f"bootstrap {opts.bootstrap} over {unit}",
        normalisation="b0 + b2 = 1: the r-factor is 1 at r = 1",
        a=a.tolist(), b=b.tolist(),
    )
    samples = None
    if opts.bootstrap > 0:
        rows = bootstrap_multiplicative(data, free, best_starts, opts, warns)
        out.update(bootstrap=opts.bootstrap, bootstrap_unit=unit[:-1], bootstrap_converged=int(len(rows)))
        if len(rows) < opts.bootstrap:
            warns.append(f"{opts.bootstrap - len(rows)} of {opts.bootstrap} bootstrap refits failed and were dropped")
        if len(rows) >= 2:
            samples = np.array([np.concatenate(_mult_unpack(q)) for q in rows])
    out.update(bootstrap_intervals(samples, opts))
    return out, multiplicative_optima(a, b, factors, samples, opts), samples


def additive_optima(params, cov, factors: dict, z: float) -> dict[str, Any]:
    """Each fitted knob's optimum ``c2/c1`` with its delta-method interval (unguarded)."""
    def interval(key, val, opt):
        i1, i2 = COEF_PAIRS[key]
        c1, c2 = params[i1], params[i2]
        grad = np.array([-c2 / c1**2, 1.0 / c1])
        with np.errstate(invalid="ignore"):
            var = float(np.einsum("i,ij,j->", grad, cov[np.ix_([i1, i2], [i1, i2])], grad))
        se = math.sqrt(var) if math.isfinite(var) and var >= 0 else float("nan")
        return _ci_list(val - z * se, val + z * se)

    return _knob_optima(factors, {k: (params[i1], params[i2]) for k, (i1, i2) in COEF_PAIRS.items()}, interval,
                        "delta method on the OLS covariance")


def fit_additive(data: FormData, free, factors, opts: FitOptions, warns: list[str]):
    """(fields of ``forms.additive``, unguarded optima): OLS of ``L - L_opt`` on the design,
    cluster-robust by run when runs repeat."""
    import statsmodels.api as sm

    z = opts.z
    X = _design(data.x, data.r)[:, free]
    with capture_warnings(warns, "additive fit: "):
        ols = sm.OLS(data.loss - data.l_opt, X)
        clustered = data.groups is not None
        res = ols.fit(cov_type="cluster", cov_kwds={"groups": np.unique(data.groups, return_inverse=True)[1]}) \
            if clustered else ols.fit()
        params = np.zeros(N_COEF)
        params[free] = np.asarray(res.params)
        cov = np.zeros((N_COEF, N_COEF))
        cov[np.ix_(free, free)] = np.asarray(res.cov_params())
        bse = np.sqrt(np.clip(np.diag(cov), 0, None))
        ci = np.column_stack([params - z * bse, params + z * bse])
    out = dict(
        method="ols (statsmodels)" + (", cluster-robust by run" if clustered else ""),
        normalisation="b0 = 0: the two constants merge into a0",
        a=params[:3].tolist(), b=[0.0, float(params[3]), float(params[4])],
        a_se=[finite_or_none(v) for v in bse[:3]],
        b_se=[0.0, finite_or_none(bse[3]), finite_or_none(bse[4])],
        a_ci=[_ci_list(*ci[i]) for i in range(3)],
        b_ci=[[0.0, 0.0], _ci_list(*ci[3]), _ci_list(*ci[4])],
    )
    return out, additive_optima(params, cov, factors, z)


def guard_optima(opt: dict[str, Any], factors: dict, interval_expected: bool) -> dict[str, Any]:
    """Keep an optimum only when its point and interval lie in the knob's sampled range (in place)."""
    for key in COEF_PAIRS:
        if opt[key] is not None:
            rng_k = factors[key]["range"]
            v, c, why = optimum_in_range(opt[key], opt[f"{key}_ci"], rng_k[0], rng_k[1], key, interval_expected)
            opt[key], opt[f"{key}_ci"] = v, c
            if why:
                opt[f"{key}_reason"] = why
            elif not interval_expected:
                opt[f"{key}_reason"] = "point estimate only: no interval computed (bootstrap 0)"
    return opt


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
    """Fit one calibration form on arrays; returns the ``forms[form]`` dict of conditional.json
    (:meth:`FormFit.from_dict <archscale.law.result.FormFit.from_dict>` reads it).

    ``groups``: one run id per point; the bootstrap resamples runs and the additive intervals
    are cluster-robust when a run gives several points. ``keep_samples`` stores the bootstrap
    coefficient samples (``samples``: rows ``a0 a1 a2 b0 b1 b2``) for pick probabilities.
    """
    data = prepare_points(form, x, r, loss, l_opt, groups)
    opts = FitOptions(bootstrap=bootstrap, seed=seed, ci_level=ci_level, keep_samples=keep_samples)
    return fit_points(form, data, opts)


def fit_points(form: str, data: FormData, opts: FitOptions) -> dict[str, Any]:
    """The steps of :func:`fit_form` on prepared points: knobs, design check, the form's fit
    (starts, optimisation, bootstrap), the range guard of the optima, metrics and status."""
    free, factors = knob_factors(data.x, data.r)
    if data.x.size < N_COEF:
        raise FitError(
            f"conditional fit ({form}): {data.x.size} points in the r range are fewer than the {N_COEF} "
            "coefficients; add runs or widen fit.r_min / fit.r_max"
        )
    out: dict[str, Any] = {"form": form, "n_points": int(data.x.size), "ci_level": opts.ci_level, "factors": factors}
    warns = list(check_design(data.x, data.r, free, form))
    samples = None
    if form == "additive":
        fields, opt = fit_additive(data, free, factors, opts, warns)
        interval_expected = True
    else:
        fields, opt, samples = fit_multiplicative(data, free, factors, opts, warns)
        interval_expected = opts.bootstrap > 0
    out.update(fields)
    out["optimum"] = guard_optima(opt, factors, interval_expected)
    out["mse"], out["spearman"] = _metrics(form_loss(form, out["a"], out["b"], data.x, data.r, data.l_opt), data.loss)
    if data.x.size <= int(free.sum()):
        warns.append("as many points as coefficients: the law interpolates them, intervals are undefined")
    flags = [f["reason"] for f in factors.values() if f["reason"]] + warns
    out["warnings"] = warns
    out["status"] = "ok" if not flags else "flagged: " + "; ".join(flags)
    if opts.keep_samples and samples is not None:
        out["samples"] = samples.tolist()
    return json_clean(out)


def _metrics(pred, loss) -> tuple[float | None, float | None]:
    return float(np.mean((pred - loss) ** 2)), spearman(pred, loss, min_points=2)
