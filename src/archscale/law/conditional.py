"""The architecture-conditional scaling law (Bian et al. 2025, Eq. 3 and its additive variant).

With ``x = d_model / sqrt(N)`` and ``r`` the MLP-to-attention parameter ratio, each knob
enters through the U-shaped factor ``c0 + c1 ln(x) + c2 / x``:

multiplicative
    ``L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D)``.
    The product is unchanged by ``(a, b) -> (k a, b / k)``; archscale fixes the scale by
    normalising the r-factor to 1 at r = 1 (``b0 + b2 = 1``) and fits the five free
    coefficients ``a0, a1, a2, b1, b2`` by Levenberg-Marquardt
    (``scipy.optimize.least_squares(method="lm")``), with a nonparametric bootstrap for
    intervals. Any (a, b) pair, the paper's included, predicts the same after
    :func:`normalise_multiplicative`, and the optima ``a2/a1``, ``b2/b1`` do not move.
additive
    ``L = L_opt + (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r)``; the constants merge, so
    ``b0`` is stored as 0 and ``a0`` holds their sum. Linear in the coefficients: fitted by
    ordinary least squares (statsmodels), with OLS standard errors and intervals.

The optimum of one factor is ``x* = c2 / c1``, a minimum only when ``c1 > 0`` and
``c2 > 0``; otherwise the optimum is reported as ``None`` with the reason (never invented).
Intervals of the optima: bootstrap percentiles (multiplicative) or the delta method on the
OLS covariance (additive).

The JSON written by the workflow (``results/fit/conditional.json``) is documented in
docs/pipeline.md; :func:`predict_loss` and :func:`reference_loss` are the functions the
search stage uses on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .chinchilla import ChinchillaFit, FitError, fit_chinchilla
from .chinchilla import predict_loss as chinchilla_predict

FORMS = ("multiplicative", "additive")
N_COEF = 5  # free coefficients in either form (a0, a1, a2, b1, b2)

DEFAULT_COLUMNS = {
    "n": "N",  # non-embedding parameters of the run
    "d": "D",  # training tokens of the run
    "loss": "loss",  # the loss the law models (validation loss)
    "x": "d_over_sqrt_n",  # d_model / sqrt(N)
    "r": "mlp_attn_ratio",  # MLP-to-attention parameter ratio r
    "group_n": "n_target",  # nominal N of the run's scale: L_opt is per (group_n, group_d)
    "group_d": "tokens",  # planned training tokens of the run's scale
}


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


def _fit_multiplicative_point(x, r, loss, l_opt, start=None):
    if start is None:
        # Linearise around 1: L/L_opt ~ a(x) + b(r) - 1 gives a good LM start.
        beta, *_ = np.linalg.lstsq(_design(x, r), loss / l_opt, rcond=None)
        start = np.array([beta[0], beta[1], beta[2], beta[3] / max(beta[0], 1e-3), beta[4] / max(beta[0], 1e-3)])
    out = optimize.least_squares(
        _mult_residuals, start, jac=_mult_jacobian, args=(x, r, loss, l_opt), method="lm",
        xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=20000,
    )
    return out.x, out


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


def _metrics(pred, loss) -> tuple[float | None, float | None]:
    mse = float(np.mean((pred - loss) ** 2))
    if loss.size < 2 or np.ptp(pred) == 0 or np.ptp(loss) == 0:
        return mse, None
    rho = stats.spearmanr(pred, loss).statistic
    return mse, _finite_or_none(rho)


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
) -> dict[str, Any]:
    """Fit one calibration form on arrays; returns the ``forms[form]`` dict of conditional.json."""
    x, r, loss, l_opt = (np.asarray(v, dtype=float).ravel() for v in (x, r, loss, l_opt))
    if not (x.size == r.size == loss.size == l_opt.size):
        raise FitError("conditional fit: x, r, loss and L_opt have different lengths")
    for name, arr in (("d_over_sqrt_n", x), ("r", r), ("loss", loss), ("L_opt", l_opt)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise FitError(
                f"conditional fit: {name} must be finite and positive; point {int(bad[0])} has {arr[bad[0]]!r}"
            )
    if x.size < N_COEF:
        raise FitError(
            f"conditional fit ({form}): {x.size} points in the r range are fewer than the {N_COEF} "
            "coefficients; add runs or widen fit.r_min / fit.r_max"
        )
    z = stats.norm.ppf(0.5 + ci_level / 2)
    out: dict[str, Any] = {"form": form, "n_points": int(x.size), "ci_level": ci_level}
    if form == "additive":
        import statsmodels.api as sm

        X = _design(x, r)
        with np.errstate(divide="ignore", invalid="ignore"):
            ols = sm.OLS(loss - l_opt, X).fit()
        params, cov = np.asarray(ols.params), np.asarray(ols.cov_params())
        bse = np.asarray(ols.bse)
        ci = np.asarray(ols.conf_int(alpha=1 - ci_level))
        a, b = params[:3].tolist(), [0.0, float(params[3]), float(params[4])]
        out.update(
            method="ols (statsmodels)",
            normalisation="b0 = 0: the two constants merge into a0",
            a=a, b=b,
            a_se=[_finite_or_none(v) for v in bse[:3]],
            b_se=[0.0, _finite_or_none(bse[3]), _finite_or_none(bse[4])],
            a_ci=[_ci_list(*ci[i]) for i in range(3)],
            b_ci=[[0.0, 0.0], _ci_list(*ci[3]), _ci_list(*ci[4])],
        )
        opt = {}
        for key, (i1, i2) in (("d_over_sqrt_n", (1, 2)), ("r", (3, 4))):
            val, why = optimum(params[i1], params[i2], key)
            ci_v = None
            if val is not None:
                c1, c2 = params[i1], params[i2]
                grad = np.array([-c2 / c1**2, 1.0 / c1])
                sub = cov[np.ix_([i1, i2], [i1, i2])]
                with np.errstate(invalid="ignore"):
                    var = float(np.einsum("i,ij,j->", grad, sub, grad))
                se = math.sqrt(var) if math.isfinite(var) and var >= 0 else float("nan")
                ci_v = _ci_list(val - z * se, val + z * se)
            opt[key], opt[f"{key}_ci"], opt[f"{key}_reason"] = val, ci_v, why
        opt["interval_method"] = "delta method on the OLS covariance"
        out["optimum"] = opt
        pred = predict_loss(out, x, r, l_opt)
    elif form == "multiplicative":
        p, res = _fit_multiplicative_point(x, r, loss, l_opt)
        a, b = _mult_unpack(p)
        out.update(
            method=f"levenberg-marquardt (scipy least_squares 'lm'), bootstrap {bootstrap}",
            normalisation="b0 + b2 = 1: the r-factor is 1 at r = 1",
            a=a.tolist(), b=b.tolist(),
        )
        opt: dict[str, Any] = {}
        boots = None
        if bootstrap > 0:
            rng = np.random.default_rng(seed)
            rows = []
            for _ in range(bootstrap):
                idx = rng.integers(0, x.size, size=x.size)
                pb, rb = _fit_multiplicative_point(x[idx], r[idx], loss[idx], l_opt[idx], start=p)
                if rb.success and np.all(np.isfinite(pb)):
                    rows.append(pb)
            boots = np.array(rows)
            out["bootstrap"] = bootstrap
            out["bootstrap_converged"] = int(len(rows))
        if boots is not None and len(boots) >= 2:
            ab = np.array([np.concatenate(_mult_unpack(q)) for q in boots])
            lo_q, hi_q = 50 * (1 - ci_level), 100 - 50 * (1 - ci_level)
            se = ab.std(axis=0, ddof=1)
            lo, hi = np.percentile(ab, lo_q, axis=0), np.percentile(ab, hi_q, axis=0)
            out.update(
                a_se=[float(v) for v in se[:3]],
                b_se=[float(v) for v in se[3:]],
                a_ci=[[float(lo[i]), float(hi[i])] for i in range(3)],
                b_ci=[[float(lo[i]), float(hi[i])] for i in range(3, 6)],
            )
        else:
            out.update(a_se=[None] * 3, b_se=[None] * 3, a_ci=[None] * 3, b_ci=[None] * 3)
        for key, cvec, bcols in (("d_over_sqrt_n", a, (1, 2)), ("r", b, (4, 5))):
            val, why = optimum(cvec[1], cvec[2], key)
            ci_v = None
            if val is not None and boots is not None and len(boots) >= 2:
                ext = _extended_ratio(ab[:, bcols[0]], ab[:, bcols[1]])
                ext = ext[~np.isnan(ext)]
                if ext.size >= 2:
                    ci_v = _ci_list(np.percentile(ext, lo_q), np.percentile(ext, hi_q))
                opt[f"{key}_interior_fraction"] = float(np.mean((ab[:, bcols[0]] > 0) & (ab[:, bcols[1]] > 0)))
            opt[key], opt[f"{key}_ci"], opt[f"{key}_reason"] = val, ci_v, why
        opt["interval_method"] = "bootstrap percentiles (null bound: the optimum leaves the positive axis)"
        out["optimum"] = opt
        pred = predict_loss(out, x, r, l_opt)
    else:
        raise FitError(f"conditional fit: unknown form '{form}'; use one of {FORMS}")
    out["mse"], out["spearman"] = _metrics(pred, loss)
    if x.size == N_COEF:
        out["warning"] = "as many points as coefficients: the law interpolates them, intervals are undefined"
    return json_clean(out)


# ---- runs tables, reference loss ------------------------------------------------------
def _key(n: float, d: float) -> str:
    return f"{int(round(float(n)))}|{int(round(float(d)))}"


def _parse_key(key: str) -> tuple[float, float]:
    n, d = key.split("|")
    return float(n), float(d)


def resolve_columns(runs: pd.DataFrame, columns: dict | None = None) -> dict[str, str]:
    """Column names to use, checking that each exists; group columns fall back to N and D."""
    cols = dict(DEFAULT_COLUMNS)
    cols.update({k: v for k, v in (columns or {}).items() if v})
    if cols["group_n"] not in runs.columns and not (columns or {}).get("group_n"):
        cols["group_n"] = cols["n"]
    if cols["group_d"] not in runs.columns and not (columns or {}).get("group_d"):
        cols["group_d"] = cols["d"]
    missing = sorted({c for c in cols.values() if c not in runs.columns})
    if missing:
        raise FitError(
            f"runs table is missing column(s) {missing}; it has {sorted(map(str, runs.columns))}. "
            "Name the columns to use (e.g. --loss valid_loss)"
        )
    return cols


def _show(v) -> str:
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return repr(v)


def check_runs(runs: pd.DataFrame, cols: dict[str, str], where: str = "runs table") -> None:
    label = "arch_id" if "arch_id" in runs.columns else None
    for key in ("n", "d", "loss", "x", "r", "group_n", "group_d"):
        col = cols[key]
        vals = pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(vals) | (vals <= 0))
        if bad.size:
            i = int(bad[0])
            who = f"run '{runs[label].iloc[i]}'" if label else f"row {i}"
            raise FitError(
                f"{where}: column '{col}' must be finite and positive, but {who} has {_show(runs[col].iloc[i])} "
                f"({bad.size} bad rows); drop or re-run those runs"
            )


def empirical_l_opt(runs: pd.DataFrame, cols: dict[str, str]) -> dict[str, float]:
    """Lowest observed loss at each (N, D) group (all runs, whatever their r)."""
    grouped = runs.groupby([cols["group_n"], cols["group_d"]])[cols["loss"]].min()
    return {_key(n, d): float(v) for (n, d), v in grouped.items()}


def _chinchilla_params(chin) -> dict:
    if isinstance(chin, ChinchillaFit):
        return chin.params
    if isinstance(chin, dict) and "params" in chin:
        return chin["params"]
    raise FitError("chinchilla reference: no fitted Chinchilla law is available (fit it first)")


def _lookup(l_opt: dict[str, float], n: float, d: float, n_rel_tol: float = 0.10) -> float:
    best, best_dist = None, None
    for key, val in l_opt.items():
        kn, kd = _parse_key(key)
        if abs(math.log(kd / d)) > 0.01:
            continue
        dist = abs(math.log(kn / n))
        if dist <= math.log1p(n_rel_tol) and (best_dist is None or dist < best_dist):
            best, best_dist = val, dist
    if best is None:
        raise ValueError(
            f"empirical reference loss: no observed runs at N = {n:.4g}, D = {d:.4g} (observed (N|D): "
            f"{sorted(l_opt)}); train variants at that budget or use fit.reference: chinchilla"
        )
    return best


def reference_loss(conditional_json: dict, n: float, d: float, runs: pd.DataFrame | None = None) -> float:
    """``L_opt(N, D)`` as the fit used it: empirical (lowest observed) or the stored Chinchilla fit.

    Empirical: with ``runs``, the lowest loss among its runs at that (N, D) (N matched to the
    group column within 10%, D within 1%); without, the stored ``l_opt`` table. Raises
    ValueError when nothing was observed there.
    """
    ref = conditional_json.get("reference", "empirical")
    if ref == "chinchilla":
        chin = conditional_json.get("chinchilla")
        if not chin:
            raise ValueError("conditional.json: reference is 'chinchilla' but no Chinchilla fit is stored")
        return float(chinchilla_predict(_chinchilla_params(chin), n, d))
    if ref != "empirical":
        raise ValueError(f"conditional.json: unknown reference '{ref}'")
    if runs is not None:
        cols = resolve_columns(runs, conditional_json.get("columns"))
        return _lookup(empirical_l_opt(runs, cols), n, d)
    return _lookup(conditional_json["l_opt"], n, d)


def fit_conditional(
    runs: pd.DataFrame,
    *,
    reference: str = "empirical",
    chinchilla: ChinchillaFit | dict | None = None,
    r_range: tuple[float, float] = (0.5, 5.0),
    forms: tuple[str, ...] | list[str] = FORMS,
    bootstrap: int = 200,
    seed: int = 0,
    columns: dict | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Fit the conditional law on a runs table; returns the conditional.json object.

    ``reference="chinchilla"`` uses ``chinchilla`` (a fit or its dict) or, when None, fits
    one (Huber, grid of starts) on every run of the table.
    """
    if reference not in ("empirical", "chinchilla"):
        raise FitError(f"fit.reference: unknown reference '{reference}'; use empirical or chinchilla")
    lo, hi = float(r_range[0]), float(r_range[1])
    if not lo < hi:
        raise FitError(f"fit.r_min ({lo}) must be below fit.r_max ({hi})")
    for f in forms:
        if f not in FORMS:
            raise FitError(f"fit.forms: unknown form '{f}'; use {FORMS}")
    cols = resolve_columns(runs, columns)
    check_runs(runs, cols)
    l_opt_table = empirical_l_opt(runs, cols)
    chin_dict = None
    if reference == "chinchilla":
        if chinchilla is None:
            chinchilla = fit_chinchilla(runs[cols["n"]], runs[cols["d"]], runs[cols["loss"]], bootstrap=bootstrap, seed=seed)
        chin_dict = chinchilla.to_dict() if isinstance(chinchilla, ChinchillaFit) else dict(chinchilla)
        params = _chinchilla_params(chin_dict)
        l_opt_table = {
            k: float(chinchilla_predict(params, *_parse_key(k))) for k in l_opt_table
        }
    sel = runs[(runs[cols["r"]] >= lo) & (runs[cols["r"]] <= hi)]
    if len(sel) < N_COEF:
        raise FitError(
            f"conditional fit: {len(sel)} runs have r in [{lo}, {hi}] (of {len(runs)}), fewer than the "
            f"{N_COEF} coefficients; add runs or widen fit.r_min / fit.r_max"
        )
    l_opt = np.array([l_opt_table[_key(n, d)] for n, d in zip(sel[cols["group_n"]], sel[cols["group_d"]])])
    x = sel[cols["x"]].to_numpy(float)
    r = sel[cols["r"]].to_numpy(float)
    loss = sel[cols["loss"]].to_numpy(float)
    out_forms = {
        f: fit_form(f, x, r, loss, l_opt, bootstrap=bootstrap, seed=seed, ci_level=ci_level) for f in forms
    }
    return json_clean({
        "reference": reference,
        "r_range": [lo, hi],
        "n_points": int(len(sel)),
        "n_runs": int(len(runs)),
        "columns": cols,
        "forms": out_forms,
        "l_opt": l_opt_table,
        "chinchilla": chin_dict,
    })
