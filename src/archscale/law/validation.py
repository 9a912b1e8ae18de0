"""Progressive cross-scale validation (Bian et al. 2025, Sec. 5 / method.md section 5).

Scales are ordered by their nominal N. Task k fits the conditional law on the k smallest
scales and predicts the next one; each task reports the MSE and Spearman rank correlation
of the predicted losses on the held-out scale, and the optima its fit implies.

The reference loss of the held-out scale follows the fit's reference: empirical (the lowest
loss observed at that scale, as the paper does) or a Chinchilla law fitted on the training
scales only and extrapolated. A task that cannot be fitted (too few points, a Chinchilla law
on too few runs) is kept as a row with ``status`` saying why, never silently dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .chinchilla import FitError, fit_chinchilla
from .chinchilla import predict_loss as chinchilla_predict
from .conditional import (
    FORMS,
    _key,
    check_runs,
    empirical_l_opt,
    fit_form,
    predict_loss,
    resolve_columns,
)

VALIDATION_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("form", pa.string(), nullable=False),
        pa.field("train_scales", pa.string(), nullable=False),
        pa.field("test_scale", pa.string(), nullable=False),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_test", pa.int64(), nullable=False),
        pa.field("mse", pa.float64()),
        pa.field("spearman", pa.float64()),
        pa.field("d_over_sqrt_n_opt", pa.float64()),
        pa.field("r_opt", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
    ]
)


def _scale_label(runs: pd.DataFrame, mask, n_value) -> str:
    if "scale" in runs.columns:
        names = sorted(set(runs.loc[mask, "scale"].astype(str)))
        if len(names) == 1:
            return names[0]
    return f"N={n_value:.4g}"


def progressive_validation(
    runs: pd.DataFrame,
    *,
    reference: str = "empirical",
    r_range: tuple[float, float] = (0.5, 5.0),
    forms=FORMS,
    columns: dict | None = None,
) -> pd.DataFrame:
    """One row per (task, form); see the module docstring."""
    cols = resolve_columns(runs, columns)
    check_runs(runs, cols)
    groups = sorted(runs[cols["group_n"]].unique())
    in_range = (runs[cols["r"]] >= r_range[0]) & (runs[cols["r"]] <= r_range[1])
    rows = []
    for k in range(1, len(groups)):
        train_mask = runs[cols["group_n"]].isin(groups[:k])
        test_mask = runs[cols["group_n"]] == groups[k]
        train_labels = [_scale_label(runs, runs[cols["group_n"]] == g, g) for g in groups[:k]]
        test_label = _scale_label(runs, test_mask, groups[k])
        task = f"{'+'.join(train_labels)}->{test_label}"
        train, test = runs[train_mask & in_range], runs[test_mask & in_range]
        status, l_tab = "ok", None
        try:
            if reference == "chinchilla":
                sub = runs[train_mask]
                chin = fit_chinchilla(sub[cols["n"]], sub[cols["d"]], sub[cols["loss"]], bootstrap=0)
                keys = empirical_l_opt(runs, cols)
                l_tab = {
                    key: float(chinchilla_predict(chin.params, *map(float, key.split("|")))) for key in keys
                }
            else:
                l_tab = empirical_l_opt(runs, cols)
        except FitError as exc:
            status = f"skipped: {exc}"
        for form in forms:
            row = {
                "task": task, "form": form, "train_scales": "+".join(train_labels), "test_scale": test_label,
                "n_train": int(len(train)), "n_test": int(len(test)), "mse": None, "spearman": None,
                "d_over_sqrt_n_opt": None, "r_opt": None, "status": status,
            }
            if status == "ok":
                try:
                    if len(test) == 0:
                        raise FitError(f"no runs of {test_label} have r in [{r_range[0]}, {r_range[1]}]")

                    def lo(df):
                        return np.array([l_tab[_key(n, d)] for n, d in zip(df[cols["group_n"]], df[cols["group_d"]])])

                    fit = fit_form(
                        form, train[cols["x"]], train[cols["r"]], train[cols["loss"]], lo(train), bootstrap=0
                    )
                    pred = predict_loss(fit, test[cols["x"]].to_numpy(float), test[cols["r"]].to_numpy(float), lo(test))
                    y = test[cols["loss"]].to_numpy(float)
                    row["mse"] = float(np.mean((pred - y) ** 2))
                    if len(y) >= 2 and np.ptp(pred) > 0 and np.ptp(y) > 0:
                        from scipy.stats import spearmanr

                        rho = spearmanr(pred, y).statistic
                        row["spearman"] = float(rho) if np.isfinite(rho) else None
                    row["d_over_sqrt_n_opt"] = fit["optimum"]["d_over_sqrt_n"]
                    row["r_opt"] = fit["optimum"]["r"]
                    notes = [fit["optimum"][f"{k}_reason"] for k in ("d_over_sqrt_n", "r") if fit["optimum"][f"{k}_reason"]]
                    row["status"] = "ok" if not notes else "ok; " + "; ".join(notes)
                except FitError as exc:
                    row["status"] = f"skipped: {exc}"
            rows.append(row)
    return pd.DataFrame(rows, columns=VALIDATION_SCHEMA.names)


def validation_table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, schema=VALIDATION_SCHEMA, preserve_index=False)
