"""The study's report: figures, tables and an honest summary, from the workflow's records.

:func:`build_report` reads the records named in docs/pipeline.md (plan, runs -- which hold the
measured throughput of the grid --, fits, loss curves, search results) and writes one file per
output name (figures as PNG, tables and the summary as HTML) plus ``index.json`` listing what it
made. The Snakemake rule ``report`` declares those files with ``report(...)`` so that
``snakemake --report results/report.html`` gathers them.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..io import read_json, write_json
from ..law.laws import Law, law_from_conditional
from . import figures, tables
from .answer import answer_frame, answer_notes, answer_rows, study_sentence
from .findings import findings, key_points, resolved_optima
from .words import caught, humanize
from .science import load_science, plan_vs_fit_sentences
from .validation import validation_html, validation_points, validation_summary

#: Output name -> (kind, title). The rule declares exactly these files.
OUTPUTS = {
    "findings": ("table", "What the runs show and do not show"),
    "loss_vs_d": ("figure", "Loss against d/sqrt(N)"),
    "loss_vs_r": ("figure", "Loss against r"),
    "throughput": ("figure", "Measured throughput against each knob"),
    "pareto": ("figure", "Pareto front and picks"),
    "validation": ("figure", "Predicted against measured loss on the held-out scale"),
    "loss_curves": ("figure", "Training loss curves"),
    "plan": ("table", "Compute plan"),
    "chosen": ("table", "Chosen architectures"),
}


def _read_parquet(path: str | None) -> pd.DataFrame | None:
    if not path:
        return None
    return pd.read_parquet(path)


def _figures(runs_df, law, val, results, spaces, curve_dfs, outputs, resolved) -> dict[str, dict]:
    made: dict[str, dict] = {}
    made["loss_vs_d"] = figures.loss_vs_knob(runs_df, law, "d", outputs["loss_vs_d"], resolved)
    made["loss_vs_r"] = figures.loss_vs_knob(runs_df, law, "r", outputs["loss_vs_r"], resolved)
    made["throughput"] = figures.throughput_figure(runs_df, results, outputs["throughput"])
    made["pareto"] = figures.pareto_figure(list(zip(results, spaces)), outputs["pareto"])
    per_run = validation_points(runs_df, law.fit, val)
    made["validation"] = figures.validation_figure(val, outputs["validation"], per_run)
    made["loss_curves"] = figures.loss_curves_figure(curve_dfs, runs_df, outputs["loss_curves"])
    return made


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
    search_throughput: Iterable[str] = (),
    title: str = "archscale report",
    batch_size: int | None = None,
    science: str | None = None,
    cost_model: str | None = None,
    lifetime: Iterable[str] = (),
) -> dict[str, Any]:
    """Write every output of :data:`OUTPUTS` (paths in ``outputs``) and ``outputs['index']``.

    ``search_throughput``: the search's interleaved measurements (results/search/<target>/throughput.json),
    which give the answer table's speed intervals; ``batch_size`` is kept for the rule's signature
    (the search's own batch size is the one reported).
    """
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
    records = {Path(p).parent.name: read_json(p) for p in search_throughput if Path(p).is_file()}
    curve_dfs = {Path(p).parent.name: pd.read_parquet(p) for p in curves}
    measured = [r.get("measurement", {}) for r in results]
    devices = sorted({str(d) for d in runs_df["throughput_device_name"].dropna()} if "throughput_device_name" in runs_df
                     else {str(d) for d in runs_df["throughput_device"]})
    devices = sorted(set(devices) | {d for m in measured for d in m.get("devices", [])})
    engines = sorted({str(e) for e in runs_df["throughput_engine"]} | {e for m in measured for e in m.get("engines", [])})

    law = _law(cond)
    form = (results[0].get("form") if results else None) or "multiplicative"
    resolved = resolved_optima(law, runs_df, form)
    drawn: list[str] = []
    with caught(drawn, "the figures"):
        made = _figures(runs_df, law, val, results, spaces, curve_dfs, outputs, resolved)
    made["plan"] = {"rows": len(tables.plan_table(plan_df, outputs["plan"]))}
    made["chosen"] = {"rows": len(tables.chosen_table(results, outputs["chosen"]))}

    rows = answer_rows(results, law if law.forms else None, records)
    study = study_sentence(runs_df, devices, engines, results[0]["batch_size"] if results else batch_size)
    points = key_points(law, runs_df, val, results, devices, engines)
    text = findings(law, runs_df, val, results, devices, engines, read_json(cost_model) if cost_model else None)
    text["Numerical warnings"] = list(dict.fromkeys(text.get("Numerical warnings", []) + drawn))
    planned = plan_vs_fit_sentences(load_science(science), law) if science else []
    if planned:  # what the science plan (results/plan/science.json) had predicted for these optima
        text["What the plan predicted"] = planned
    figs = [(OUTPUTS[k][1], outputs[k], made[k].get("caption", "")) for k in
            ("loss_vs_d", "loss_vs_r", "throughput", "pareto", "validation")]
    lead = tables.lead_html(study, answer_frame(rows), answer_notes(rows, results), points)
    extra = humanize_html(tables.effects_html(runs_df)) + validation_html(val)
    with tempfile.TemporaryDirectory() as tmp:  # the crossover figures are embedded in the page
        life_html = _lifetime_html([read_json(p) for p in lifetime], Path(tmp), figs)
        tables.findings_page(title, text, outputs["findings"], extra_html=life_html + extra, lead=lead,
                             figures_html=tables.figures_html(figs))
    made["findings"] = {"sentences": sum(len(v) for v in text.values()) + len(points)}

    index = _index(title, study, rows, points, outputs, made, text, cond, val, results)
    write_json(outputs["index"], index)
    return index


def _law(cond: dict) -> Law:
    """The fit as the law object, read once; a fit without a fitted form is a law without forms
    (the report then says what the records show without a law)."""
    if cond.get("forms"):
        return law_from_conditional(cond, "fit")
    return Law(name="fit", source="fit", forms={}, range={}, status=cond.get("status", "ok"), fit=cond)


def _lifetime_html(records: list[dict], tmp: Path, figs: list) -> str:
    """Per search target with a lifetime search (results/search/<target>/lifetime.json): the
    crossover figure (appended to ``figs``) and the table of costs and crossover demands."""
    from .lifetime import crossover_figure, lifetime_table_html

    out = ""
    for rec in records:
        png = tmp / f"lifetime-{rec.get('target', len(figs))}.png"
        figs.append((f"Lifetime cost, {rec.get('target')}", str(png), crossover_figure(rec, png)))
        out += f"<h3>Lifetime cost: {html.escape(str(rec.get('target')))}</h3>" + lifetime_table_html(rec)
    return out


def _index(title, study, rows, points, outputs, made, text, cond, val, results) -> dict[str, Any]:
    """index.json: what was made, the answer, the key points and the findings (JSON-ready)."""
    summary = validation_summary(val)
    return {
        "title": title,
        "study": study,
        "answer": rows,
        "key_points": points,
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


def humanize_html(fragment: str) -> str:
    """An HTML fragment made elsewhere in the reader's words: sweep keys named, missing cells as "-"."""
    import re

    fragment = re.sub(r"<td>(None|nan|NaN)</td>", "<td>-</td>", fragment)
    return humanize(fragment)


__all__ = ["OUTPUTS", "build_report"]
