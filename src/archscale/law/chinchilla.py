"""The Chinchilla law ``L = E + A/N^alpha + B/D^beta``, fitted as Hoffmann et al. (App. D.2).

The fit works in log space: ``log L = LSE(a - alpha ln N, b - beta ln D, e)`` with
``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``, and minimises a robust loss of the
residuals of ``log L`` from every start of the Hoffmann et al. grid (alpha, beta in 0..2
step 0.5; e in -1..1 step 0.5; a, b in 0..25 step 5: 4,500 starts). Intervals come from
a nonparametric bootstrap (resampled points, or whole runs when a run gives several points;
each resample refitted from the best few distinct starts). N and D must each take at least
three distinct values (:mod:`archscale.law.guards`), else the law is not identifiable and the
fit is a :class:`FitError`.

Objectives (``objective=``):

``huber``
    Hoffmann et al.'s objective: sum of Huber losses (delta 1e-3) of the log residuals.
``squared``
    Plain least squares on ``log L``, polished with Levenberg-Marquardt
    (``scipy.optimize.least_squares(method="lm")``), the fitting method of Bian et al.
``lad``
    Least absolute deviations on ``log L``. Epoch AI's published replication values
    (Besiroglu et al. 2024: E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658)
    maximise a Huber *likelihood* whose scale sigma is fitted too; at its optimum
    delta * sigma is about 5e-9, far below every residual, so that objective is least
    absolute deviations in all but name. archscale solves it exactly (sequential linear
    programming with a trust region, scipy's HiGHS) and reproduces their values.

The numerical core (start grid, objectives, LAD polish) is :mod:`archscale.law.chinchilla_objective`.

Speed: the grid stage runs one batched L-BFGS over all starts at once
(:func:`archscale.law.optim.batched_lbfgs`); only the best few distinct results are polished
with scipy. The bootstrap is one more batched run (one row per resample).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize

from .chinchilla_objective import (  # noqa: F401  (predict_log_loss, start_grid: part of this module's API)
    _LAD_SMOOTH,
    _lad_polish,
    _Objective,
    _residuals_and_jacobian,
    predict_log_loss,
    start_grid,
)
from .guards import MIN_DISTINCT, capture_warnings, distinct, rank_check
from .optim import batched_lbfgs

PARAMS = ("E", "A", "B", "alpha", "beta")
#: Besiroglu et al. 2024 (Epoch AI's Chinchilla replication): the reference parameters where a
#: law or a prior has none (the science plan's simulations, the lifetime search's loss model).
EPOCH_CHINCHILLA = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
OBJECTIVES = ("huber", "squared", "lad")
HUBER_DELTA = 1e-3
# Smoothing of |r| in the batched stages of the "lad" objective (the exact LAD polish follows).


class FitError(ValueError):
    """Input a law cannot be fitted on; the message says what is wrong and what to change."""


def predict_loss(params: dict, n, d) -> np.ndarray:
    """``E + A/N^alpha + B/D^beta`` from a params dict (keys E, A, B, alpha, beta)."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    with np.errstate(over="ignore", invalid="ignore"):  # a degenerate law gives inf/nan, checked by callers
        return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def to_params(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    if max(a, b, e) > 700 or not all(map(math.isfinite, (a, b, e, alpha, beta))):
        raise FitError(
            f"Chinchilla fit diverged (log A = {a:.3g}, log B = {b:.3g}): the runs do not constrain the law; "
            "they span too few distinct (N, D) budgets"
        )
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def to_theta(params: dict) -> np.ndarray:
    return np.array(
        [math.log(params["A"]), math.log(params["B"]), math.log(params["E"]), params["alpha"], params["beta"]]
    )


def _bootstrap_weights(rng, groups, n: int, bootstrap: int) -> np.ndarray:
    """[bootstrap, n] multiplicities of the points: resampled points, or whole runs when ``groups`` repeat."""
    if groups is not None:
        ids, inv = np.unique(np.asarray(groups).ravel(), return_inverse=True)
        if inv.size != n:
            raise FitError("Chinchilla fit: groups (run ids) and points have different lengths")
        if ids.size < n:
            draws = rng.integers(0, ids.size, size=(bootstrap, ids.size))
            counts = np.stack([np.bincount(row, minlength=ids.size) for row in draws])
            return counts[:, inv].astype(float)
    idx = rng.integers(0, n, size=(bootstrap, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)


@dataclass
class ChinchillaFit:
    """A fitted Chinchilla law with bootstrap intervals."""

    params: dict[str, float]
    objective: str
    delta: float | None
    objective_value: float
    n_points: int
    n_starts: int
    se: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, list[float] | None] = field(default_factory=dict)
    ci_level: float = 0.95
    bootstrap: int = 0
    bootstrap_converged: int = 0
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def predict(self, n, d) -> np.ndarray:
        return predict_loss(self.params, n, d)

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": "E + A/N^alpha + B/D^beta",
            "objective": self.objective,
            "huber_delta": self.delta,
            "params": dict(self.params),
            "se": dict(self.se),
            "ci": dict(self.ci),
            "ci_level": self.ci_level,
            "objective_value": self.objective_value,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "bootstrap": self.bootstrap,
            "bootstrap_converged": self.bootstrap_converged,
            "elapsed_s": self.elapsed_s,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, obj: dict) -> "ChinchillaFit":
        return cls(
            params={k: float(obj["params"][k]) for k in PARAMS},
            objective=obj.get("objective", "huber"),
            delta=obj.get("huber_delta"),
            objective_value=float(obj.get("objective_value", float("nan"))),
            n_points=int(obj.get("n_points", 0)),
            n_starts=int(obj.get("n_starts", 0)),
            se=obj.get("se", {}),
            ci=obj.get("ci", {}),
            ci_level=float(obj.get("ci_level", 0.95)),
            bootstrap=int(obj.get("bootstrap", 0)),
            bootstrap_converged=int(obj.get("bootstrap_converged", 0)),
            elapsed_s=float(obj.get("elapsed_s", 0.0)),
            warnings=list(obj.get("warnings", [])),
        )


def _finite(v) -> float | None:
    """A float for JSON: None where it is not finite (e.g. the spread of a diverged bootstrap)."""
    v = float(v)
    return v if math.isfinite(v) else None


def check_points(n, d, loss, what: str = "Chinchilla fit", n_coef: int = 5):
    """Validate (N, D, L) arrays; raise :class:`FitError` naming the first bad point."""
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    if not (n.size == d.size == loss.size):
        raise FitError(f"{what}: N, D and loss have different lengths ({n.size}, {d.size}, {loss.size})")
    for name, arr in (("N", n), ("D", d), ("loss", loss)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise FitError(
                f"{what}: {name} must be finite and positive; row {int(bad[0])} has {name} = {arr[bad[0]]!r} "
                f"({bad.size} such rows); drop or fix those runs"
            )
    if n.size < n_coef:
        raise FitError(
            f"{what}: {n.size} points are fewer than the {n_coef} coefficients of the law; add runs"
        )
    return n, d, loss


class LogPoints(NamedTuple):
    """The fitted points in log space: ``ln N``, ``ln D``, ``ln L``."""

    ln_n: np.ndarray
    ln_d: np.ndarray
    ln_l: np.ndarray


def identifiability_warnings(n: np.ndarray, d: np.ndarray) -> list[str]:
    """Guard before fitting: N or D with too few distinct values is a :class:`FitError`;
    returns the warnings of a fit that is possible but weak (interpolation, collinear N-D)."""
    warnings: list[str] = []
    if n.size == len(PARAMS):
        warnings.append("as many points as coefficients: the law interpolates them, intervals are meaningless")
    few = [(name, distinct(v)) for name, v in (("N", n), ("D", d)) if distinct(v) < MIN_DISTINCT]
    if few:
        shown = " and ".join(f"{name} takes {k} distinct value(s)" for name, k in few)
        raise FitError(
            f"Chinchilla law not identifiable: {shown} (each of N and D needs at least {MIN_DISTINCT} to fit "
            "its coefficient and exponent; one scale or one token budget cannot separate its term from E). "
            "Add runs at more (N, D) budgets (a scale's horizons: give several from one run per architecture "
            "and seed) or use the empirical reference"
        )
    ln_n, ln_d = np.log(n), np.log(d)
    if np.ptp(ln_d - ln_n) < 1e-6 or abs(np.corrcoef(ln_n, ln_d)[0, 1]) > 0.999:
        warnings.append(
            "N and D are (nearly) collinear (constant tokens per parameter): A, alpha and B, beta are not "
            "separately identifiable; only the loss along the sampled N-D line is constrained"
        )
    return warnings


def grid_search(pts: LogPoints, objective: str, delta: float, grid: np.ndarray, polish: int) -> list[np.ndarray]:
    """The best ``polish`` distinct minima from the start grid, by successive halving.

    1) every start at once, a few iterations; 2) the better fifth further; 3) the best 100 to
    convergence (every start is optimised, the hopeless ones briefly).
    """
    obj = _Objective(*pts, "squared" if objective == "squared" else "huber", delta)
    res = batched_lbfgs(obj, grid, maxiter=10)
    keep = np.argsort(res.fun)[: max(100, grid.shape[0] // 5)]
    res = batched_lbfgs(obj, res.x[keep], maxiter=30)
    keep = np.argsort(res.fun)[:100]
    fine = batched_lbfgs(obj, res.x[keep], maxiter=1000)
    picks: list[np.ndarray] = []
    for i in np.argsort(fine.fun):
        if not np.isfinite(fine.fun[i]):
            continue
        if all(np.max(np.abs(fine.x[i] - q)) > 1e-4 for q in picks):
            picks.append(fine.x[i])
        if len(picks) >= polish:
            break
    if not picks:
        raise FitError("Chinchilla fit: no start produced a finite objective; check that losses are on a sane scale")
    return picks


def _polish_one(theta: np.ndarray, pts: LogPoints, objective: str, delta: float) -> tuple[np.ndarray, float]:
    """One start polished with scipy: Levenberg-Marquardt (squared), L-BFGS-B (huber), then the
    exact LAD polish (lad); returns (theta, objective value)."""
    if objective == "squared":
        out = optimize.least_squares(
            lambda th: _residuals_and_jacobian(th, *pts)[0], theta,
            jac=lambda th: _residuals_and_jacobian(th, *pts)[1], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15,
        )
        return out.x, float(np.sum(out.fun**2))
    o = _Objective(*pts, "huber", delta)
    out = optimize.minimize(
        lambda th: tuple(v[0] for v in o(th[None, :], np.zeros(1, dtype=int))), theta, jac=True,
        method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 1000},
    )
    if objective == "lad":
        th = _lad_polish(out.x, *pts)
        return th, float(np.abs(_residuals_and_jacobian(th, *pts)[0]).sum())
    return out.x, float(out.fun * delta)


def polish_best(picks, pts: LogPoints, objective: str, delta: float, warnings: list[str]) -> tuple[np.ndarray, float]:
    """The best polished minimum over ``picks`` (the exact LAD polish, the costly one, from the two best)."""
    best_theta, best_val = None, np.inf
    polish_warnings: list[str] = []
    for theta in picks[:2] if objective == "lad" else picks:
        with capture_warnings(polish_warnings, "Chinchilla polish: "):
            th, val = _polish_one(theta, pts, objective, delta)
            if np.isfinite(val) and val < best_val:
                best_theta, best_val = th, val
    if best_theta is None:
        raise FitError("Chinchilla fit: the polish stage failed from every start")
    warnings += polish_warnings
    err, w = rank_check(_residuals_and_jacobian(best_theta, *pts)[1], ["a", "b", "e", "alpha", "beta"],
                        "Chinchilla fit")
    warnings += [err] if err else w
    return best_theta, best_val


@dataclass(frozen=True)
class BootstrapSpec:
    """How the Chinchilla bootstrap runs: resamples, seed, run ids (or None), interval level and
    how many distinct polished minima start each refit."""

    bootstrap: int
    seed: int = 0
    groups: Any = None
    ci_level: float = 0.95
    n_starts: int = 3


def bootstrap_refits(pts: LogPoints, objective: str, delta: float, starts0: list[np.ndarray], spec: BootstrapSpec):
    """Every resample refitted (one batched L-BFGS) from ``starts0``; (thetas [B, 5], ok [B])."""
    rng = np.random.default_rng(spec.seed)
    weights = _bootstrap_weights(rng, spec.groups, pts.ln_n.size, spec.bootstrap)
    kind, dlt = ("squared", delta) if objective == "squared" else ("huber", _LAD_SMOOTH if objective == "lad" else delta)
    m = len(starts0)
    bobj = _Objective(*pts, kind, dlt, weights=np.repeat(weights, m, axis=0))
    bres = batched_lbfgs(bobj, np.tile(np.array(starts0), (spec.bootstrap, 1)), maxiter=1000)
    fun = np.where(np.isfinite(bres.fun), bres.fun, np.inf).reshape(spec.bootstrap, m)
    rows = np.arange(spec.bootstrap) * m + np.argmin(fun, axis=1)
    x, f = bres.x[rows], bres.fun[rows]
    ok = np.isfinite(f) & np.all(np.isfinite(x), axis=1) & (np.max(x[:, :3], axis=1) < 700)
    return x, ok


def bootstrap_chinchilla(pts: LogPoints, objective: str, delta: float, best_theta, picks, spec: BootstrapSpec,
                         warnings: list[str]):
    """(se, ci, converged refits): bootstrap standard errors and percentile intervals of the params."""
    se: dict[str, float | None] = {k: None for k in PARAMS}
    ci: dict[str, list[float] | None] = {k: None for k in PARAMS}
    if spec.bootstrap <= 0:
        return se, ci, 0
    # Every resample is refitted from the point estimate and the next best distinct starts.
    starts0 = [best_theta] + [p for p in picks if np.max(np.abs(p - best_theta)) > 1e-4][: max(0, spec.n_starts - 1)]
    x, ok = bootstrap_refits(pts, objective, delta, starts0, spec)
    ok_count = int(ok.sum())
    if ok_count < spec.bootstrap:
        warnings.append(f"{spec.bootstrap - ok_count} of {spec.bootstrap} bootstrap refits failed or diverged and were dropped")
    if ok_count >= 2:
        th = x[ok]
        nat = np.column_stack([np.exp(th[:, 2]), np.exp(th[:, 0]), np.exp(th[:, 1]), th[:, 3], th[:, 4]])
        lo_q, hi_q = 50 * (1 - spec.ci_level), 100 - 50 * (1 - spec.ci_level)
        with np.errstate(over="ignore", invalid="ignore"):
            for j, k in enumerate(PARAMS):
                se[k] = _finite(np.std(nat[:, j], ddof=1))
                ci[k] = [_finite(np.percentile(nat[:, j], lo_q)), _finite(np.percentile(nat[:, j], hi_q))]
    return se, ci, ok_count


def fit_chinchilla(
    n,
    d,
    loss,
    *,
    objective: str = "huber",
    delta: float = HUBER_DELTA,
    bootstrap: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
    starts: np.ndarray | None = None,
    polish: int = 5,
    groups=None,
    n_boot_starts: int = 3,
) -> ChinchillaFit:
    """Fit ``E + A/N^alpha + B/D^beta`` to points (N, D, L); see the module docstring.

    Steps: guard (:func:`identifiability_warnings`), start grid (:func:`grid_search`),
    optimise (:func:`polish_best`), bootstrap (:func:`bootstrap_chinchilla`).
    ``groups``: a run id per point; when a run gives several points the bootstrap resamples
    runs. Each resample is refitted from the ``n_boot_starts`` best distinct polished starts.
    """
    if objective not in OBJECTIVES:
        raise FitError(f"Chinchilla fit: unknown objective '{objective}'; use one of {OBJECTIVES}")
    t0 = time.perf_counter()
    n, d, loss = check_points(n, d, loss)
    warnings = identifiability_warnings(n, d)
    pts = LogPoints(np.log(n), np.log(d), np.log(loss))
    grid = start_grid() if starts is None else np.asarray(starts, float)
    picks = grid_search(pts, objective, delta, grid, polish)
    best_theta, best_val = polish_best(picks, pts, objective, delta, warnings)
    spec = BootstrapSpec(bootstrap=int(bootstrap), seed=seed, groups=groups, ci_level=ci_level, n_starts=n_boot_starts)
    se, ci, ok_count = bootstrap_chinchilla(pts, objective, delta, best_theta, picks, spec, warnings)
    return ChinchillaFit(
        params=to_params(best_theta), objective=objective, delta=delta if objective == "huber" else None,
        objective_value=best_val, n_points=int(n.size), n_starts=int(grid.shape[0]), se=se, ci=ci,
        ci_level=ci_level, bootstrap=int(bootstrap), bootstrap_converged=ok_count,
        elapsed_s=time.perf_counter() - t0, warnings=warnings,
    )


def load_chinchilla_anchor(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch AI's extracted Chinchilla runs: N = Model Size, D = FLOP / (6 N), without the 5 highest losses.

    The exclusion follows Epoch's notebook: keep the points whose loss is strictly below
    the fifth-highest loss.
    """
    import pandas as pd

    df = pd.read_csv(path)
    n = df["Model Size"].to_numpy(float)
    d = df["Training FLOP"].to_numpy(float) / (6.0 * n)
    loss = df["loss"].to_numpy(float)
    keep = loss < np.sort(loss)[-5]
    return n[keep], d[keep], loss[keep]
