"""Per-run predicted vs observed losses of the progressive validation tasks.

``results/fit/validation.parquet`` holds one row per (task, form) with its MSE and Spearman;
the report also plots the points. They are recomputed here with the fitting stage's own
functions (``archscale.law.conditional.fit_form`` / ``predict_loss``, empirical reference,
no bootstrap), on the same runs and r range, so each task's MSE can be checked against the
table (:func:`validation_points` returns it per task and form).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _columns(runs: pd.DataFrame, conditional: dict) -> dict[str, str]:
    """The fit's column mapping (conditional.json ``columns``) over the defaults."""
    from ..law.conditional import resolve_columns

    return resolve_columns(runs, conditional.get("columns"))


def validation_points(runs: pd.DataFrame, conditional: dict, validation: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (task, form, held-out run): observed and predicted loss, plus the task's MSE."""
    from ..law.conditional import FitError, _key, empirical_l_opt, fit_form, predict_loss
    from ..law.result import FormFit

    out_cols = ["task", "form", "arch_id", "observed", "predicted", "mse_recomputed"]
    if validation is None or validation.empty or conditional.get("reference", "empirical") != "empirical":
        return pd.DataFrame(columns=out_cols)
    if "scale" not in runs.columns:
        return pd.DataFrame(columns=out_cols)
    cols = _columns(runs, conditional)
    r_lo, r_hi = conditional.get("r_range") or (0.5, 5.0)
    runs = runs[np.isfinite(runs[cols["loss"]].astype(float))]
    in_range = (runs[cols["r"]] >= r_lo) & (runs[cols["r"]] <= r_hi)
    l_tab = empirical_l_opt(runs, cols)

    def l_opt(df):
        return np.array([l_tab[_key(n, d)] for n, d in zip(df[cols["group_n"]], df[cols["group_d"]])])

    rows = []
    ok = validation[validation["status"].astype(str).str.startswith("ok")] if "status" in validation else validation
    for _, task in ok.iterrows():
        train = runs[runs["scale"].isin(str(task["train_scales"]).split("+")) & in_range]
        test = runs[(runs["scale"] == task["test_scale"]) & in_range]
        if train.empty or test.empty:
            continue
        try:
            fit = FormFit.from_dict(fit_form(task["form"], train[cols["x"]], train[cols["r"]], train[cols["loss"]],
                                             l_opt(train), bootstrap=0))
        except FitError:
            continue
        pred = np.asarray(predict_loss(fit, test[cols["x"]].to_numpy(float), test[cols["r"]].to_numpy(float), l_opt(test)))
        obs = test[cols["loss"]].to_numpy(float)
        mse = float(np.mean((pred - obs) ** 2))
        for aid, o, p in zip(test["arch_id"], obs, pred):
            rows.append({"task": task["task"], "form": task["form"], "arch_id": aid, "observed": float(o),
                         "predicted": float(p), "mse_recomputed": mse})
    return pd.DataFrame(rows, columns=out_cols)


#: Columns of the report's validation table: both references, side by side.
TABLE_COLUMNS = {
    "task": "task", "kind": "kind", "form": "form", "n_test": "held-out runs",
    "mse": "MSE (own L_opt, optimistic)", "spearman": "Spearman (own L_opt)",
    "mse_extrapolated": "MSE (L_opt extrapolated)", "spearman_extrapolated": "Spearman (extrapolated)",
    "status": "status",
}


def validation_summary(validation: pd.DataFrame | None) -> pd.DataFrame:
    """The validation table as the report shows it: every task under both references.

    The empirical reference (the held-out scale's own lowest loss as L_opt, the paper's choice)
    is labelled optimistic; the extrapolated one takes L_opt from a Chinchilla law fitted on
    the training scales and is empty, with the reason in ``status``, where that law is not
    identifiable. No optimum is shown.
    """
    if validation is None or validation.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS.values()))
    cols = [c for c in TABLE_COLUMNS if c in validation.columns]
    return validation[cols].rename(columns=TABLE_COLUMNS).reset_index(drop=True)


def validation_html(validation: pd.DataFrame | None) -> str:
    """The validation table as an HTML section (for the findings page), with the references explained."""
    import html

    from ..law.validation import EMPIRICAL_NOTE

    from .findings import short_status
    from .tables import frame_html

    df = validation_summary(validation)
    if "status" in df:
        df["status"] = [short_status(v) for v in df["status"]]
    if df.empty:
        return "<h3>Validation table</h3><p>No cross-scale validation: the fit has fewer than two scales.</p>"
    note = (f"<p>Own L_opt: {html.escape(EMPIRICAL_NOTE)}. Extrapolated: L_opt from a Chinchilla law fitted on "
            "the training scales only (withheld where that law is not identifiable; the causes are under Cross-scale "
            "validation).</p>")
    return "<h3>Validation table (both references)</h3>" + note + frame_html(df)
