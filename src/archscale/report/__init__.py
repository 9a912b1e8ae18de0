"""The study's report: figures, tables and an honest summary, from the workflow's records.

:func:`build_report` reads the records named in docs/pipeline.md (plan, runs -- which hold the
measured throughput of the grid --, fits, loss curves, search results) and writes one file per
output name (figures as PNG, tables and the summary as HTML) plus ``index.json`` listing what it
made. The Snakemake rule ``report`` declares those files with ``report(...)`` so that
``snakemake --report results/report.html`` gathers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..io import read_json, write_json
from . import figures, tables
from .findings import findings
from .science import load_science, plan_vs_fit_sentences
from .validation import validation_html, validation_points, validation_summary

#: Output name -> (kind, title). The rule declares exactly these files.
OUTPUTS = {
    "findings": ("table", "What the runs show and do not show"),
    "loss_vs_d": ("figure", "Loss against d/sqrt(N) with the fitted law"),
    "loss_vs_r": ("figure", "Loss against r with the fitted law"),
    "throughput": ("figure", "Measured throughput against d_model, r and GQA"),
    "pareto": ("figure", "Predicted loss against predicted throughput: Pareto front and picks"),
    "validation": ("figure", "Predicted against observed loss on held-out scales"),
    "loss_curves": ("figure", "Training loss curves"),
    "plan": ("table", "Compute plan"),
    "chosen": ("table", "Chosen architectures"),
}


def _read_parquet(path: str | None) -> pd.DataFrame | None:
    if not path:
        return None
    return pd.read_parquet(path)


def build_report(
    *,
    outputs: dict[str, str],
    plan: str,
    runs: str,
    conditional: str,
    validation: str | None = None,
    curves: Iterable[str] = (),
    search_results: Iterable[str] = (),
    search_pareto: Iterable[str] = (),
    title: str = "archscale report",
    batch_size: int | None = None,
    science: str | None = None,
    cost_model: str | None = None,
) -> dict[str, Any]:
    """Write every output of :data:`OUTPUTS` (paths in ``outputs``) and ``outputs['index']``."""
    missing = [k for k in [*OUTPUTS, "index"] if k not in outputs]
    if missing:
        raise ValueError(f"report: no output path for {missing}")
    plan_df = pd.read_parquet(plan)
    runs_df = pd.read_parquet(runs)
    cond = read_json(conditional)
    val = _read_parquet(validation)
    results = [read_json(p) for p in search_results]
    spaces = [pd.read_parquet(p) for p in search_pareto]
    if len(results) != len(spaces):
        raise ValueError(f"report: {len(results)} search results but {len(spaces)} Pareto tables")
    curve_dfs = {Path(p).parent.name: pd.read_parquet(p) for p in curves}
    tput = figures.throughput_rows(runs_df)
    search_rows = []
    for res in results:
        for m in res.get("measured_architectures", []):
            search_rows.append({
                "arch_id": m["arch_id"], "source": "search", "scale": m["scale"], "d_model": m["d_model"], "gqa": m["gqa"],
                "mlp_attn_ratio": m["mlp_attn_ratio"], "d_over_sqrt_n": m["d_over_sqrt_n"], "batch_size": res["batch_size"],
                "output_tokens_per_s": m["measured_output_tokens_per_s"],
                "device": ", ".join(res.get("measurement", {}).get("devices", [])) or "unrecorded device",
            })
    if search_rows:
        tput = pd.concat([tput, pd.DataFrame(search_rows)], ignore_index=True)
    if batch_size is None and results:
        batch_size = results[0]["batch_size"]

    made: dict[str, dict] = {}
    made["loss_vs_d"] = figures.loss_vs_knob(runs_df, cond, "d", outputs["loss_vs_d"])
    made["loss_vs_r"] = figures.loss_vs_knob(runs_df, cond, "r", outputs["loss_vs_r"])
    made["throughput"] = figures.throughput_figure(tput, batch_size, outputs["throughput"])
    made["pareto"] = figures.pareto_figure(list(zip(results, spaces)), outputs["pareto"])
    per_run = validation_points(runs_df, cond, val)
    made["validation"] = figures.validation_figure(val, outputs["validation"], per_run)
    made["loss_curves"] = figures.loss_curves_figure(curve_dfs, runs_df, outputs["loss_curves"])
    made["plan"] = {"rows": len(tables.plan_table(plan_df, outputs["plan"]))}
    made["chosen"] = {"rows": len(tables.chosen_table(results, outputs["chosen"]))}
    measured = [r.get("measurement", {}) for r in results]
    devices = sorted({str(d) for d in runs_df["throughput_device"]} | {d for m in measured for d in m.get("devices", [])})
    engines = sorted({str(e) for e in runs_df["throughput_engine"]} | {e for m in measured for e in m.get("engines", [])})
    text = findings(cond, runs_df, val, results, devices, engines, read_json(cost_model) if cost_model else None)
    planned = plan_vs_fit_sentences(load_science(science), cond) if science else []
    if planned:  # what the science plan (results/plan/science.json) had predicted for these optima
        text["what the plan predicted"] = planned
    tables.findings_page(title, text, outputs["findings"], extra_html=tables.effects_html(runs_df) + validation_html(val))
    made["findings"] = {"sentences": sum(len(v) for v in text.values())}
    summary = validation_summary(val)

    index = {
        "title": title,
        "items": [
            {"name": name, "kind": kind, "title": heading, "path": str(outputs[name]), **made[name]}
            for name, (kind, heading) in OUTPUTS.items()
        ],
        "findings": text,
        "fit_status": cond.get("status"),
        "validation_table": summary.astype(object).where(summary.notna(), None).to_dict("records"),
        "searches": [
            {"target": r["target"], "panda": (r.get("panda") or {}).get("arch_id"),
             "surefire": (r.get("surefire") or {}).get("arch_id"), "baseline": (r.get("baseline") or {}).get("arch_id"),
             "probability_within_target": {k: (r.get(k) or {}).get("probability_within_target")
                                           for k in ("panda", "surefire", "baseline")}}
            for r in results
        ],
    }
    write_json(outputs["index"], index)
    return index


__all__ = ["OUTPUTS", "build_report"]
