"""Scaling-law fits: the Chinchilla reference law, the conditional law and its validation.

Also: named laws (:func:`load_law`; the search at any scale that uses them is
:mod:`archscale.search.anyscale`), the
identifiability guards every fit applies (:mod:`archscale.law.guards`) and table reading
(:func:`read_table`).

:func:`fit_outputs` is what the workflow's ``fit`` rule runs: from a runs table and the
``fit`` config section it returns the contents of ``results/fit/chinchilla.json``,
``results/fit/conditional.json`` and ``results/fit/validation.parquet`` (formats in
docs/pipeline.md).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .chinchilla import ChinchillaFit, FitError, fit_chinchilla
from ..io import json_clean
from .conditional import fit_conditional, predict_loss, reference_loss, resolve_columns, run_ids
from .laws import NAMED_LAWS, Law, LawError, load_law
from .result import FormFit, FormFitError, KnobFactor, KnobOptimum, Optimum
from .tables import TableError, read_table
from .validation import format_validation, progressive_validation, validate_table

__all__ = [
    "NAMED_LAWS",
    "ChinchillaFit",
    "FitError",
    "FormFit",
    "FormFitError",
    "KnobFactor",
    "KnobOptimum",
    "Law",
    "LawError",
    "Optimum",
    "TableError",
    "fit_chinchilla",
    "fit_conditional",
    "fit_outputs",
    "format_validation",
    "load_law",
    "predict_loss",
    "progressive_validation",
    "read_table",
    "reference_loss",
    "validate_table",
]



def chinchilla_record(runs: pd.DataFrame, cfg: dict, cols: dict[str, str]) -> tuple[dict[str, Any], ChinchillaFit | None]:
    """chinchilla.json: the configured objective plus the Levenberg-Marquardt least-squares fit."""
    n, d, loss = runs[cols["n"]], runs[cols["d"]], runs[cols["loss"]]
    common = dict(bootstrap=int(cfg["bootstrap"]), seed=int(cfg["seed"]), delta=float(cfg["huber_delta"]),
                  groups=run_ids(runs, cols))
    try:
        main = fit_chinchilla(n, d, loss, objective=cfg["chinchilla_objective"], **common)
        lm = main if cfg["chinchilla_objective"] == "squared" else fit_chinchilla(n, d, loss, objective="squared", **common)
    except FitError as exc:
        if cfg["reference"] == "chinchilla":
            raise
        return {"fitted": False, "reason": str(exc), "columns": {k: cols[k] for k in ("n", "d", "loss")}}, None
    rec = main.to_dict()
    rec.update(fitted=True, reason=None, columns={k: cols[k] for k in ("n", "d", "loss")}, lm=lm.to_dict())
    return rec, main


def fit_outputs(runs: pd.DataFrame, fit_config: dict | None = None, columns: dict | None = None):
    """(chinchilla_json, conditional_json, validation DataFrame) for a runs table."""
    from ..config import section_defaults

    cfg = section_defaults("fit")  # the schema's defaults, the one place they live
    cfg.update(fit_config or {})
    cols = resolve_columns(runs, columns)
    chin_json, chin = chinchilla_record(runs, cfg, cols)
    conditional = fit_conditional(
        runs,
        reference=cfg["reference"],
        chinchilla=chin_json if chin is not None else None,
        r_range=(float(cfg["r_min"]), float(cfg["r_max"])),
        forms=tuple(cfg["forms"]),
        bootstrap=int(cfg["bootstrap"]),
        seed=int(cfg["seed"]),
        columns=cols,
    )
    validation = progressive_validation(
        runs,
        reference=cfg["reference"],
        r_range=(float(cfg["r_min"]), float(cfg["r_max"])),
        forms=tuple(cfg["forms"]),
        columns=cols,
    )
    return json_clean(chin_json), conditional, validation
