"""The report's tables and text as small self-contained HTML pages (shown inline by ``snakemake --report``)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..io import atomic_path

STYLE = """<style>
body{font-family:sans-serif;font-size:13px;margin:1em}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
</style>"""

PLAN_COLUMNS = [
    "arch_id", "scale", "name", "d_model", "heads", "kv_heads", "ffn", "gqa", "params_non_embedding",
    "d_over_sqrt_n", "mlp_attn_ratio", "tokens", "train_flops", "est_hours", "runtime_min",
]
CHOSEN_COLUMNS = [
    "target", "pick", "arch_id", "d_model", "heads", "kv_heads", "ffn", "gqa", "params_non_embedding",
    "d_over_sqrt_n", "mlp_attn_ratio", "predicted_loss", "pred_output_tokens_per_s", "measured_output_tokens_per_s",
    "measured_vs_baseline", "measured_vs_baseline_interval", "verdict", "probability_within_target",
]


def _page(path: str | Path, title: str, body: str) -> None:
    text = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{STYLE}</head><body>"
    text += f"<h2>{html.escape(title)}</h2>{body}</body></html>\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _fmt(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)


def plan_table(plan: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    cols = [c for c in PLAN_COLUMNS if c in plan.columns]
    df = plan[cols].sort_values([c for c in ("scale", "params_non_embedding") if c in cols])
    totals = ""
    if "train_flops" in plan:
        totals = (
            f"<p>{len(plan)} architectures, {plan['tokens'].sum():.3e} training tokens, "
            f"{plan['train_flops'].sum():.3e} training FLOPs"
            + (f", about {plan['est_device_hours'].sum():,.1f} device-hours" if "est_device_hours" in plan else "")
            + " (estimates from compute.*).</p>"
        )
    _page(path, "Compute plan", totals + _fmt(df))
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
        + (_fmt(df) if len(df) else "<p>No search target.</p>") + notes
    )
    _page(path, "Chosen architectures", body)
    return df


#: Columns of the effects table as the report labels them.
EFFECT_COLUMNS = {
    "scale": "scale", "knob": "knob", "sweep": "sweep (fixed)", "from": "from", "to": "to",
    "architectures": "architectures", "seeds": "seeds each", "best_at": "best at", "best_mean_loss": "best mean loss",
    "rise_low": "rise to low end", "rise_low_sd": "rise to low end (sd)", "rise_high": "rise to high end",
    "rise_high_sd": "rise to high end (sd)",
    "seed_noise_sd": "seed noise sd", "verdict": "verdict",
}


def effects_html(runs: pd.DataFrame) -> str:
    """The effects of d/sqrt(N) and r read from the runs, one row per one-knob sweep (for the findings page)."""
    from ..analysis.effects import RESOLVE_SIGMAS, effects_table

    df = effects_table(runs)
    head = "<h3>Effects against seed noise (table)</h3>"
    if df.empty:
        return head + "<p>No one-knob sweep of three or more architectures in the runs table.</p>"
    note = (f"<p>Per sweep, each architecture's validation loss is its mean over seeds. Rises are from the best "
            "point to the worst point on each side, in loss and in units of the scale's seed noise (pooled "
            f"within-architecture sd). Resolved: more than {RESOLVE_SIGMAS:g} sd, on both sides for an interior "
            "optimum, whose interval is then the best point's grid neighbours.</p>")
    return head + note + df.rename(columns=EFFECT_COLUMNS).to_html(
        index=False, na_rep="-", float_format=lambda v: f"{v:.3g}", border=0)


def findings_page(title: str, sections: dict[str, list[str]], path: str | Path, extra_html: str = "") -> None:
    """The findings as lists, one per section, then ``extra_html`` (e.g. the validation table)."""
    body = ""
    for head, lines in sections.items():
        if not lines:
            continue
        body += f"<h3>{html.escape(head)}</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines) + "</ul>"
    _page(path, title, body + extra_html)
