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

from ..io import json_clean
from .calibration import N_COEF, fit_form  # noqa: F401  (re-exported: the law's public surface)
from .form import FORMS, normalise_multiplicative, optimum, predict_loss, u_factor  # noqa: F401
from .chinchilla import ChinchillaFit, FitError, fit_chinchilla
from .chinchilla import predict_loss as chinchilla_predict

DEFAULT_COLUMNS = {
    "n": "params_non_embedding",  # non-embedding parameters of the run
    "d": "D",  # training tokens of the run
    "loss": "valid_loss",  # the loss the law models (validation loss)
    "x": "d_over_sqrt_n",  # d_model / sqrt(N)
    "r": "mlp_attn_ratio",  # MLP-to-attention parameter ratio r
    "group_n": "n_target",  # nominal N of the run's scale: L_opt is per (group_n, group_d)
    "group_d": "tokens",  # planned training tokens of the run's scale
    "run": "",  # run id: rows sharing it are checkpoints of one run (bootstrap resamples runs)
}
RUN_ID_CANDIDATES = ("run_id", "arch_id", "arch")


# ---- runs tables, reference loss ------------------------------------------------------
def _key(n: float, d: float) -> tuple[int, int]:
    """Key of an (N, D) reference group in an L_opt table: the rounded integers."""
    return int(round(float(n))), int(round(float(d)))


def l_opt_records(table: dict[tuple[int, int], float]) -> list[dict[str, float]]:
    """The JSON form of an L_opt table: one record per (N, D) group."""
    return [{"n": int(n), "d": int(d), "l_opt": float(v)} for (n, d), v in sorted(table.items())]


def l_opt_table(records) -> dict[tuple[int, int], float]:
    """An L_opt table from its JSON records (conditional.json ``l_opt``)."""
    if isinstance(records, dict):
        raise ValueError(
            "conditional.json: 'l_opt' is a mapping of 'N|D' strings (written by an older archscale); "
            "refit to write it as records of n, d, l_opt"
        )
    return {_key(rec["n"], rec["d"]): float(rec["l_opt"]) for rec in records}


def resolve_columns(runs: pd.DataFrame, columns: dict | None = None) -> dict[str, str]:
    """Column names to use, checking that each exists; group columns fall back to N and D.

    ``run`` (optional): the run id column; when not given, the first of run_id, arch_id, arch
    present in the table (or none: every row is its own run).
    """
    given = {k: v for k, v in (columns or {}).items() if v}
    cols = dict(DEFAULT_COLUMNS)
    cols.update(given)
    if cols["group_n"] not in runs.columns and "group_n" not in given:
        cols["group_n"] = cols["n"]
    if cols["group_d"] not in runs.columns and "group_d" not in given:
        cols["group_d"] = cols["d"]
    if "run" not in given:
        cols["run"] = next((c for c in RUN_ID_CANDIDATES if c in runs.columns), "")
    missing = sorted({c for c in cols.values() if c and c not in runs.columns})
    if missing:
        raise FitError(
            f"runs table is missing column(s) {missing}; it has {sorted(map(str, runs.columns))}. "
            "Name the columns to use (e.g. --loss valid_loss)"
        )
    return cols


def derive_knobs(runs: pd.DataFrame, columns: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The knob columns a table lacks, derived where the table allows it (and what was done, in words).

    A table of shapes without archscale's knob columns (the paper authors' tables) gets
    ``d_over_sqrt_n = d_model / sqrt(N)`` from its ``d_model`` and ``--n`` columns, and then, with
    no r column at all, every run at one r (1: all runs share the MLP-to-attention ratio), so the
    r factor is not fitted. Only defaults are derived (a column named by the caller must exist),
    and r only for such a table of shapes: a runs table with d/sqrt(N) but no r is an error.
    """
    given = {k: v for k, v in (columns or {}).items() if v}
    notes = []
    n_col = given.get("n", DEFAULT_COLUMNS["n"])
    if "x" not in given and DEFAULT_COLUMNS["x"] not in runs.columns and "d_model" in runs.columns \
            and n_col in runs.columns:
        n = pd.to_numeric(runs[n_col], errors="coerce")
        runs = runs.assign(**{DEFAULT_COLUMNS["x"]: pd.to_numeric(runs["d_model"], errors="coerce") / np.sqrt(n)})
        notes.append(f"d/sqrt(N) derived as d_model / sqrt({n_col}) (the table has no '{DEFAULT_COLUMNS['x']}' column)")
    if notes and "r" not in given and DEFAULT_COLUMNS["r"] not in runs.columns:  # a table of shapes, not of runs
        runs = runs.assign(**{DEFAULT_COLUMNS["r"]: 1.0})
        notes.append(f"r not fitted: the table has no r column ('{DEFAULT_COLUMNS['r']}'), so every run is taken at "
                     "one MLP-to-attention ratio (r = 1); the r factor is left out and no optimum of r is reported")
    return runs, notes


def run_ids(runs: pd.DataFrame, cols: dict[str, str]):
    """One run id per row (for the bootstrap), or None when every row is its own run."""
    col = cols.get("run") or ""
    if not col:
        return None
    ids = runs[col].astype(str).to_numpy()
    return ids if pd.unique(ids).size < ids.size else None


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


def empirical_l_opt(runs: pd.DataFrame, cols: dict[str, str], min_runs: int = 2) -> dict[tuple[int, int], float]:
    """Lowest observed loss at each (N, D) group (all runs, whatever their r), keyed by ``_key``.

    A group of fewer than ``min_runs`` runs is an error: its L_opt is the run's own loss and
    the law would be fitted to ``L / L_opt = 1``.
    """
    gcols = [cols["group_n"], cols["group_d"]]
    keyed = runs.assign(_gn=runs[gcols[0]].map(lambda v: int(round(float(v)))),
                        _gd=runs[gcols[1]].map(lambda v: int(round(float(v)))))
    run_col = cols.get("run") or ""
    sizes = keyed.groupby(["_gn", "_gd"])[run_col].nunique() if run_col else keyed.groupby(["_gn", "_gd"]).size()
    small = sizes[sizes < min_runs]
    if len(small):
        shown = ", ".join(f"(N={n:,}, D={d:,})" for n, d in list(small.index)[:4])
        raise FitError(
            f"empirical reference: {len(small)} of {len(sizes)} (N, D) groups hold fewer than {min_runs} runs "
            f"({shown}{', ...' if len(small) > 4 else ''}); the lowest loss of a group of one is that run's own "
            f"loss. Group runs of one scale with --group-n/--group-d columns (now '{gcols[0]}', '{gcols[1]}'), "
            "train more variants per (N, D), or use the chinchilla reference"
        )
    grouped = keyed.groupby(["_gn", "_gd"])[cols["loss"]].min()
    return {(int(n), int(d)): float(v) for (n, d), v in grouped.items()}


def _chinchilla_params(chin) -> dict:
    if isinstance(chin, ChinchillaFit):
        return chin.params
    if isinstance(chin, dict) and "params" in chin:
        return chin["params"]
    raise FitError("chinchilla reference: no fitted Chinchilla law is available (fit it first)")


def _lookup(l_opt: dict[tuple[int, int], float], n: float, d: float, n_rel_tol: float = 0.10) -> float:
    best, best_dist = None, None
    for (kn, kd), val in l_opt.items():
        if abs(math.log(kd / d)) > 0.01:
            continue
        dist = abs(math.log(kn / n))
        if dist <= math.log1p(n_rel_tol) and (best_dist is None or dist < best_dist):
            best, best_dist = val, dist
    if best is None:
        raise ValueError(
            f"empirical reference loss: no observed runs at N = {n:.4g}, D = {d:.4g} (observed (N, D): "
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
    return _lookup(l_opt_table(conditional_json["l_opt"]), n, d)


def reference_table(runs: pd.DataFrame, cols, reference: str, chinchilla, bootstrap: int, seed: int):
    """(L_opt per (N, D) group, the Chinchilla fit's dict or None): the lowest observed loss
    (empirical) or the Chinchilla law's prediction, fitting that law when none is given."""
    if reference != "chinchilla":
        return empirical_l_opt(runs, cols), None
    groups = empirical_l_opt(runs, cols, min_runs=1)
    if chinchilla is None:
        chinchilla = fit_chinchilla(runs[cols["n"]], runs[cols["d"]], runs[cols["loss"]], bootstrap=bootstrap, seed=seed)
    chin_dict = chinchilla.to_dict() if isinstance(chinchilla, ChinchillaFit) else dict(chinchilla)
    params = _chinchilla_params(chin_dict)
    return {k: float(chinchilla_predict(params, *k)) for k in groups}, chin_dict


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
    keep_samples: bool = True,
) -> dict[str, Any]:
    """Fit the conditional law on a runs table; returns the conditional.json object.

    ``reference="chinchilla"`` uses ``chinchilla`` (a fit or its dict) or, when None, fits
    one (Huber, grid of starts) on every run of the table. ``keep_samples`` stores the
    multiplicative bootstrap samples (``forms.multiplicative.samples``) for pick probabilities.
    """
    if reference not in ("empirical", "chinchilla"):
        raise FitError(f"fit.reference: unknown reference '{reference}'; use empirical or chinchilla")
    lo, hi = float(r_range[0]), float(r_range[1])
    if not lo < hi:
        raise FitError(f"fit.r_min ({lo}) must be below fit.r_max ({hi})")
    for f in forms:
        if f not in FORMS:
            raise FitError(f"fit.forms: unknown form '{f}'; use {FORMS}")
    runs, notes = derive_knobs(runs, columns)
    cols = resolve_columns(runs, columns)
    check_runs(runs, cols)
    table, chin_dict = reference_table(runs, cols, reference, chinchilla, bootstrap, seed)
    sel = runs[(runs[cols["r"]] >= lo) & (runs[cols["r"]] <= hi)]
    if len(sel) < N_COEF:
        raise FitError(
            f"conditional fit: {len(sel)} runs have r in [{lo}, {hi}] (of {len(runs)}), fewer than the "
            f"{N_COEF} coefficients; add runs or widen fit.r_min / fit.r_max"
        )
    l_opt = np.array([table[_key(n, d)] for n, d in zip(sel[cols["group_n"]], sel[cols["group_d"]])])
    x = sel[cols["x"]].to_numpy(float)
    r = sel[cols["r"]].to_numpy(float)
    loss = sel[cols["loss"]].to_numpy(float)
    ids = run_ids(sel, cols)
    out_forms = {
        f: fit_form(f, x, r, loss, l_opt, bootstrap=bootstrap, seed=seed, ci_level=ci_level, groups=ids,
                    keep_samples=keep_samples)
        for f in forms
    }
    for note in notes:
        if note.startswith("r not fitted"):
            for v in out_forms.values():
                v["optimum"]["r_reason"] = note
    flagged = [f"{f}: {v['status']}" for f, v in out_forms.items() if v["status"] != "ok"]
    if chin_dict and chin_dict.get("warnings"):
        flagged.append("chinchilla: " + "; ".join(chin_dict["warnings"]))
    return json_clean({
        "reference": reference,
        "status": "ok" if not flagged else "flagged: " + " | ".join(flagged),
        "r_range": [lo, hi],
        "n_points": int(len(sel)),
        "n_runs": int(len(runs)),
        "columns": cols,
        "forms": out_forms,
        "l_opt": l_opt_records(table),
        "chinchilla": chin_dict,
        "notes": notes,
    })
