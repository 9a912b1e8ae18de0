"""Cross-scale validation (Bian et al. 2025, Sec. 5 / method.md section 5).

Scales are ordered by their nominal N. Two task forms, as in the paper:

``progressive``
    task k fits the conditional law on the k smallest scales and predicts scale k+1;
``next``
    the law fitted on scale k alone predicts scale k+1 (k >= 2; for k = 1 it is the first
    progressive task). The paper's "3B predicted from the 1B-only fit" is of this form.

Every task reports the MSE and Spearman rank correlation of the held-out predictions under two
references for ``L_opt``:

empirical (``mse``, ``spearman``)
    the law is fitted with each training scale's lowest observed loss and the held-out scale
    uses *its own* lowest observed loss: the paper's choice. It is optimistic (the held-out
    reference is read off the very runs being predicted) and every row says so.
extrapolated (``mse_extrapolated``, ``spearman_extrapolated``)
    a Chinchilla law fitted on the training scales' runs gives ``L_opt`` for the training fit
    and, extrapolated, for the held-out scale. When that law is not identifiable (N or D takes
    fewer than 3 distinct values on the training scales, e.g. one or two scales at fixed
    tokens per parameter) the metrics are null and ``status_extrapolated`` says why.

A task that cannot be fitted is kept as a row whose status says why, never dropped; a fit the
guards flag (a knob left out, an ill-conditioned design, library warnings) is ``flagged: ...``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from ..ranks import spearman
from .calibration import fit_form
from .form import FORMS, predict_loss
from .chinchilla import FitError, fit_chinchilla
from .chinchilla import predict_loss as chinchilla_predict
from .conditional import _key, check_runs, empirical_l_opt, resolve_columns, run_ids
from .result import FormFit

KINDS = ("progressive", "next")
EMPIRICAL_NOTE = "optimistic: the held-out scale's L_opt is its own lowest observed loss (the paper's choice)"

VALIDATION_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("form", pa.string(), nullable=False),
        pa.field("train_scales", pa.string(), nullable=False),
        pa.field("test_scale", pa.string(), nullable=False),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_test", pa.int64(), nullable=False),
        pa.field("mse", pa.float64()),
        pa.field("spearman", pa.float64()),
        pa.field("mse_extrapolated", pa.float64()),
        pa.field("spearman_extrapolated", pa.float64()),
        pa.field("d_over_sqrt_n_opt", pa.float64()),
        pa.field("r_opt", pa.float64()),
        pa.field("status_empirical", pa.string(), nullable=False),
        pa.field("status_extrapolated", pa.string(), nullable=False),
        pa.field("reference_note", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
    ]
)


def _scale_label(runs: pd.DataFrame, mask, n_value) -> str:
    if "scale" in runs.columns:
        names = sorted(set(runs.loc[mask, "scale"].astype(str)))
        if len(names) == 1:
            return names[0]
    return f"N={n_value:.4g}"



def _evaluate(form, train, test, lo_train, lo_test, cols) -> tuple[FormFit, float, float | None]:
    fit = FormFit.from_dict(fit_form(form, train[cols["x"]], train[cols["r"]], train[cols["loss"]], lo_train,
                                     bootstrap=0, groups=run_ids(train, cols)))
    pred = predict_loss(fit, test[cols["x"]].to_numpy(float), test[cols["r"]].to_numpy(float), lo_test)
    y = test[cols["loss"]].to_numpy(float)
    return fit, float(np.mean((pred - y) ** 2)), spearman(pred, y, min_points=2)


def _tasks(groups: list, kinds) -> list[tuple[str, list, object]]:
    out = []
    for kind in kinds:
        if kind not in KINDS:
            raise FitError(f"validation: unknown task kind '{kind}'; use {KINDS}")
    for k in range(1, len(groups)):
        if "progressive" in kinds:
            out.append(("progressive", groups[:k], groups[k]))
        if "next" in kinds and k >= 2:
            out.append(("next", [groups[k - 1]], groups[k]))
    return out


class TaskData(NamedTuple):
    """One validation task's points and its two references for ``L_opt``.

    ``l_emp``: the empirical L_opt table of the training and held-out scales; ``chin``: the
    Chinchilla law fitted on the training scales; ``*_err``: why a reference is unavailable.
    """

    kind: str
    task: str
    train_scales: str
    test_scale: str
    train: pd.DataFrame
    test: pd.DataFrame
    l_emp: dict | None
    emp_err: str | None
    chin: Any
    chin_err: str | None


def task_references(runs: pd.DataFrame, cols, train_mask, test_mask):
    """(empirical table, its error, Chinchilla fit on the training scales, its error)."""
    l_emp = chin = emp_err = chin_err = None
    try:
        l_emp = empirical_l_opt(runs[train_mask | test_mask], cols)
    except FitError as exc:
        emp_err = f"skipped: {exc}"
    try:
        sub = runs[train_mask]
        chin = fit_chinchilla(sub[cols["n"]], sub[cols["d"]], sub[cols["loss"]], bootstrap=0,
                              groups=run_ids(sub, cols))
    except FitError as exc:
        chin_err = str(exc) if str(exc).startswith("Chinchilla law not identifiable") else f"skipped: {exc}"
    return l_emp, emp_err, chin, chin_err


def task_data(runs: pd.DataFrame, cols, kind: str, train_groups, test_group, r_range) -> TaskData:
    """The task's labels, in-range points and references."""
    g = runs[cols["group_n"]]
    train_mask, test_mask = g.isin(train_groups), g == test_group
    in_range = (runs[cols["r"]] >= r_range[0]) & (runs[cols["r"]] <= r_range[1])
    train_labels = [_scale_label(runs, g == t, t) for t in train_groups]
    test_label = _scale_label(runs, test_mask, test_group)
    l_emp, emp_err, chin, chin_err = task_references(runs, cols, train_mask, test_mask)
    test = runs[test_mask & in_range]
    if len(test) == 0:
        emp_err = chin_err = f"skipped: no runs of {test_label} have r in [{r_range[0]}, {r_range[1]}]"
    return TaskData(kind, f"{'+'.join(train_labels)}->{test_label}", "+".join(train_labels), test_label,
                    runs[train_mask & in_range], test, l_emp, emp_err, chin, chin_err)


def _empirical_metrics(t: TaskData, form: str, cols, row: dict) -> str:
    """Fill the empirical reference's metrics and optima into ``row``; returns its status."""
    if t.emp_err is not None:
        return t.emp_err

    def lo(df):
        return np.array([t.l_emp[_key(n, d)] for n, d in zip(df[cols["group_n"]], df[cols["group_d"]])])

    try:
        fit, row["mse"], row["spearman"] = _evaluate(form, t.train, t.test, lo(t.train), lo(t.test), cols)
    except FitError as exc:
        return f"skipped: {exc}"
    row["d_over_sqrt_n_opt"] = fit.optimum.d_over_sqrt_n.value
    row["r_opt"] = fit.optimum.r.value
    return fit.status


def _extrapolated_metrics(t: TaskData, form: str, cols, row: dict) -> str:
    """Fill the extrapolated (Chinchilla) reference's metrics into ``row``; returns its status."""
    if t.chin_err is not None:
        return t.chin_err

    def chin_lo(df):
        return chinchilla_predict(t.chin.params, df[cols["group_n"]].to_numpy(float), df[cols["group_d"]].to_numpy(float))

    try:
        fit_c, row["mse_extrapolated"], row["spearman_extrapolated"] = _evaluate(
            form, t.train, t.test, chin_lo(t.train), chin_lo(t.test), cols)
    except FitError as exc:
        return f"skipped: {exc}"
    notes = list(t.chin.warnings) + ([] if fit_c.status == "ok" else [fit_c.status])
    return "ok" if not notes else "flagged: " + "; ".join(notes)


def form_row(t: TaskData, form: str, cols, reference: str) -> dict:
    """One row of the validation table: the task fitted with ``form`` under both references."""
    row = {
        "task": t.task, "kind": t.kind, "form": form, "train_scales": t.train_scales,
        "test_scale": t.test_scale, "n_train": int(len(t.train)), "n_test": int(len(t.test)),
        "mse": None, "spearman": None, "mse_extrapolated": None, "spearman_extrapolated": None,
        "d_over_sqrt_n_opt": None, "r_opt": None, "reference_note": EMPIRICAL_NOTE,
    }
    st_emp = _empirical_metrics(t, form, cols, row)
    st_chin = _extrapolated_metrics(t, form, cols, row)
    row["status_empirical"], row["status_extrapolated"] = st_emp, st_chin
    lead, other, other_name = (st_chin, st_emp, "empirical") if reference == "chinchilla" else (
        st_emp, st_chin, "extrapolated")
    row["status"] = lead if other == "ok" else f"{lead}; {other_name} reference: {other}"
    return row


def progressive_validation(
    runs: pd.DataFrame,
    *,
    reference: str = "empirical",
    r_range: tuple[float, float] = (0.5, 5.0),
    forms=FORMS,
    columns: dict | None = None,
    kinds=KINDS,
) -> pd.DataFrame:
    """One row per (task, form); see the module docstring.

    ``reference`` is kept for the fit configuration's sake: both references are always
    reported; with ``reference="chinchilla"`` the row's ``status`` leads with the
    extrapolated reference's status.
    """
    if reference not in ("empirical", "chinchilla"):
        raise FitError(f"fit.reference: unknown reference '{reference}'; use empirical or chinchilla")
    cols = resolve_columns(runs, columns)
    check_runs(runs, cols)
    groups = sorted(runs[cols["group_n"]].unique())
    rows = []
    for kind, train_groups, test_group in _tasks(groups, tuple(kinds)):
        t = task_data(runs, cols, kind, train_groups, test_group, r_range)
        rows += [form_row(t, form, cols, reference) for form in forms]
    return pd.DataFrame(rows, columns=VALIDATION_SCHEMA.names)


def validation_table(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, schema=VALIDATION_SCHEMA, preserve_index=False)


def validate_table(
    df: pd.DataFrame,
    columns: dict | None = None,
    *,
    r_range: tuple[float, float] = (0.5, 5.0),
    forms=FORMS,
    kinds=KINDS,
    reference: str = "empirical",
) -> pd.DataFrame:
    """The validation table of a runs table, for ``archscale validate TABLE`` (no Snakemake).

    ``columns``: the fit's column mapping (keys of ``conditional.DEFAULT_COLUMNS``: n, d, loss,
    x, r, group_n, group_d, run). Returns :func:`progressive_validation`'s table; an empty
    table (one scale) raises :class:`FitError` saying so.
    """
    out = progressive_validation(df, reference=reference, r_range=r_range, forms=forms, columns=columns, kinds=kinds)
    if out.empty:
        cols = resolve_columns(df, columns)
        raise FitError(
            f"validation: the table has {df[cols['group_n']].nunique()} scale(s) in column '{cols['group_n']}'; "
            "a cross-scale task needs at least two"
        )
    return out


def format_validation(df: pd.DataFrame) -> str:
    """A plain-text rendering of the validation table (what ``archscale validate`` prints)."""
    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)

    lines = [f"{'task':<28} {'kind':<11} {'form':<14} {'MSE emp*':>9} {'rho emp*':>8} {'MSE extr':>9} {'rho extr':>8}  status"]
    for r in df.to_dict("records"):
        lines.append(
            f"{r['task']:<28} {r['kind']:<11} {r['form']:<14} {num(r['mse'], '.2g'):>9} {num(r['spearman'], '.2f'):>8} "
            f"{num(r['mse_extrapolated'], '.2g'):>9} {num(r['spearman_extrapolated'], '.2f'):>8}  {r['status']}"
        )
    lines.append(f"* emp: {EMPIRICAL_NOTE}; extr: L_opt from a Chinchilla law fitted on the training scales")
    return "\n".join(lines)
