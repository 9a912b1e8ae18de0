"""The report's tables and text as small self-contained HTML pages (shown inline by ``snakemake --report``)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path
from .words import finite, humanize, num

STYLE = """<style>
body{font-family:"DejaVu Sans",Arial,sans-serif;font-size:13px;margin:12px 18px;color:#222;max-width:1240px}
h2{font-size:19px;margin:0 0 4px}h3{font-size:15px;margin:18px 0 6px}
p.study{margin:0 0 8px;color:#333}
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3;font-weight:600}td:first-child,th:first-child{text-align:left}
table.answer td,table.answer th{padding:3px 7px}table.answer td:nth-child(2){text-align:left;font-weight:600}
tr.faster td{background:#eaf6ea}p.notes{font-size:11.5px;color:#555;margin:2px 0 8px}
dl.points{margin:6px 0}dl.points dt{font-weight:600;float:left;width:105px;clear:left}
dl.points dd{margin:0 0 5px 110px}code{font-size:11.5px;background:#f4f4f4}
figure{display:inline-block;margin:6px 10px 10px 0;vertical-align:top}figure img{max-width:1230px;border:1px solid #eee}
figcaption{font-size:12px;max-width:600px;color:#333}figure.wide figcaption{max-width:1200px}ul{margin:4px 0;padding-left:20px}li{margin:2px 0}
</style>"""

PLAN_COLUMNS = {
    "arch_id": "architecture", "scale": "scale", "name": "name", "d_model": "d_model", "heads": "heads",
    "kv_heads": "KV heads", "ffn": "ffn", "gqa": "GQA", "params_non_embedding": "N (non-embedding)",
    "d_over_sqrt_n": "d/sqrt(N)", "mlp_attn_ratio": "r", "tokens": "training tokens", "train_flops": "training FLOPs",
    "est_hours": "estimated hours", "runtime_min": "runtime limit (min)",
}
CHOSEN_COLUMNS = [
    "target", "pick", "arch_id", "d_model", "heads", "kv_heads", "ffn", "gqa", "params_non_embedding",
    "d_over_sqrt_n", "mlp_attn_ratio", "predicted_loss", "pred_output_tokens_per_s", "measured_output_tokens_per_s",
    "measured_vs_baseline", "measured_vs_baseline_interval", "verdict", "probability_within_target",
]
#: The chosen table's columns as the reader sees them.
CHOSEN_WORDS = {
    "arch_id": "architecture", "kv_heads": "KV heads", "gqa": "GQA", "params_non_embedding": "N (non-embedding)",
    "d_over_sqrt_n": "d/sqrt(N)", "mlp_attn_ratio": "r", "predicted_loss": "predicted loss",
    "pred_output_tokens_per_s": "predicted output tokens/s", "measured_output_tokens_per_s": "measured output tokens/s",
    "measured_vs_baseline": "measured vs baseline", "measured_vs_baseline_interval": "95% interval",
    "probability_within_target": "P(within loss target)",
}


def _page(path: str | Path, title: str, body: str) -> None:
    text = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head><body>"
    text += f"<h2>{html.escape(title)}</h2>{body}</body></html>\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not finite(v)):
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return humanize(str(v)) if str(v) not in ("None", "nan", "") else "-"
    return num(v)


def frame_html(df: pd.DataFrame, words: dict[str, str] | None = None, css: str = "") -> str:
    """A table a reader scans: numbers at 3 significant digits, missing values as "-", columns in words."""
    out = df.copy()
    for c in out.columns:
        out[c] = [_cell(v) for v in out[c]]
    out = out.rename(columns=words or {})
    return out.to_html(index=False, border=0, escape=True, classes=css or None).replace(' border="0"', "")


def _fmt(df: pd.DataFrame) -> str:
    return frame_html(df)


def plan_table(plan: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    cols = [c for c in PLAN_COLUMNS if c in plan.columns]
    df = plan[cols].sort_values([c for c in ("scale", "params_non_embedding") if c in cols])
    totals = ""
    if "train_flops" in plan:
        totals = (
            f"<p>{len(plan)} architectures, {num(plan['tokens'].sum())} training tokens, "
            f"{num(plan['train_flops'].sum())} training FLOPs"
            + (f", about {num(plan['est_device_hours'].sum())} device-hours" if "est_device_hours" in plan else "")
            + " (estimates from compute.*).</p>"
        )
    _page(path, "Compute plan", totals + frame_html(df, PLAN_COLUMNS))
    return df


def chosen_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for res in results:
        base = res.get("baseline")
        for pick in ("baseline", "panda", "surefire"):
            e = res.get(pick)
            if e is None:
                continue
            row = {"target": res["target"], "pick": pick + (f" ({e['name']})" if e.get("name") else "")}
            row.update({k: e.get(k) for k in CHOSEN_COLUMNS if k in e})
            row["predicted_loss"] = e.get("loss")
            if base is not None and e.get("measured_output_tokens_per_s") and base.get("measured_output_tokens_per_s"):
                row["measured_vs_baseline"] = e["measured_output_tokens_per_s"] / base["measured_output_tokens_per_s"]
            verdict = res.get("surefire_verdict") if pick == "surefire" else None
            if verdict and verdict.get("ratio"):
                r = verdict["ratio"]
                row["measured_vs_baseline"] = r["value"]  # ratio of medians of the interleaved rounds
                row["measured_vs_baseline_interval"] = (
                    f"[{r['low']:.3f}, {r['high']:.3f}]" if r.get("low") is not None else r.get("withheld_reason"))
                row["verdict"] = f"{verdict['verdict']} (kept: {verdict['kept']})"
            rows.append(row)
    df = pd.DataFrame(rows)
    return df[[c for c in CHOSEN_COLUMNS if c in df.columns]] if len(df) else df


def chosen_table(results: list[dict], path: str | Path) -> pd.DataFrame:
    df = chosen_rows(results)
    notes = "".join(f"<p>{html.escape(r['target'])}: {html.escape(r['note'])}</p>" for r in results if r.get("note"))
    body = (
        "<p>Baseline = the target's reference architecture; Panda = lowest predicted loss; Surefire = highest "
        "measured output tokens/s within the loss target after the GQA walk.</p>"
        + (frame_html(df, CHOSEN_WORDS) if len(df) else "<p>No search target.</p>") + notes
    )
    _page(path, "Chosen architectures", body)
    return df


#: Columns of the effects table as the report labels them (differences shown with their intervals).
EFFECT_COLUMNS = {
    "scale": "scale", "knob": "knob", "sweep": "sweep (fixed)", "tokens": "tokens", "from": "from", "to": "to",
    "architectures": "architectures", "seeds": "seeds each", "best_at": "best at", "best_mean_loss": "best mean loss",
    "rise_low": "rise to low end [95%]", "rise_high": "rise to high end [95%]", "ends": "last - first [95%]",
    "per_run_sd": "per-run sd", "method": "interval", "corrected_level": "corrected level",
    "p_adjusted": "adjusted p", "verdict": "verdict",
}


def _with_interval(est, ci) -> str:
    if est is None or (isinstance(est, float) and np.isnan(est)):
        return "-"
    return f"{est:+.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, tuple) else " (no interval)")


def effects_html(runs: pd.DataFrame) -> str:
    """The effects of d/sqrt(N) and r read from the runs, one row per one-knob sweep (for the findings page)."""
    from ..analysis.effects import CORRECTION, effects_table

    df = effects_table(runs)
    head = "<h3>Effects against seed noise (table)</h3>"
    if df.empty:
        return head + "<p>No one-knob sweep of three or more architectures in the runs table.</p>"
    for key in ("rise_low", "rise_high", "ends"):
        df[key] = [_with_interval(e, c) for e, c in zip(df[key], df[f"{key}_ci95"])]
    if df["tokens"].isna().all():
        df = df.drop(columns="tokens")
    note = ("<p>Per sweep, each architecture's validation loss is its mean over seeds (at one token budget: the "
            "largest every point of the sweep has). Rises are the mean loss at each end minus the best point's; "
            "each difference carries its 95% interval (paired t at matched seeds, Welch t when the seeds differ, a "
            "bootstrap over seeds from 20 seeds on); the per-run seed sd is shown beside them. Resolved: the "
            "intervals at the corrected level exclude 0 (both rises for an interior optimum, whose interval is then "
            f"the best point's grid neighbours; the ends for a monotone effect). Correction: {html.escape(CORRECTION)}, "
            "family-wise 5%. With one seed per architecture there is no interval and nothing is resolved.</p>")
    df = df[[c for c in EFFECT_COLUMNS if c in df.columns]]
    return head + note + df.rename(columns=EFFECT_COLUMNS).to_html(
        index=False, na_rep="-", float_format=lambda v: f"{v:.3g}", border=0)


def findings_page(title: str, sections: dict[str, list[str]], path: str | Path, extra_html: str = "", *,
                  lead: str = "", figures_html: str = "") -> None:
    """The findings: ``lead`` (the study, the answer table, the key points: the first screen), the
    figures, then the detail sections as lists and ``extra_html`` (the effects and validation tables)."""
    body = ""
    for head, lines in sections.items():
        if not lines:
            continue
        body += f"<h3>{html.escape(head)}</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines) + "</ul>"
    details = "<h3 id='details' style='margin-top:26px;border-top:1px solid #ccc;padding-top:8px'>Details</h3>" if body else ""
    _page(path, title, lead + figures_html + details + body + extra_html)


def lead_html(study: str, answer: pd.DataFrame, notes: list[str], points: dict[str, str]) -> str:
    """The first screen: the study in one sentence, the answer table, its notes, the key points."""
    rows = answer.copy()
    table = frame_html(rows, css="answer") if len(rows) else "<p>No search target configured: no pick to show.</p>"
    table = table.replace('<table class="dataframe answer">', "<table id='answer' class='dataframe answer'>", 1)
    note = "<p class='notes'>" + html.escape(" ".join(notes)) + "</p>" if notes else ""
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{_code(v)}</dd>" for k, v in points.items())
    return f"<p class='study'>{html.escape(study)}</p>{table}{note}<dl class='points'>{dl}</dl>"


def _code(text: str) -> str:
    """Escape ``text`` and set `backquoted` commands in code."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def figures_html(figures: list[tuple[str, str, str]]) -> str:
    """(title, png path, caption) -> the figures inline (data URIs: the page stands alone, also inside
    ``snakemake --report``)."""
    import base64

    out = "<h3>Figures</h3>" if figures else ""
    for title, png, caption in figures:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        out += (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
                f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption></figure>")
    return out
