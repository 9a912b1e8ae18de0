"""Report pieces of the lifetime cost (``results/search/{target}/lifetime.json``): the crossover
figure (total cost against lifetime demand) and the table of the compared choices as HTML."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..search.lifetime import crossover_text

COLOURS = {"baseline": "#555555", "panda": "#1f77b4", "surefire": "#d62728", "lifetime": "#2ca02c"}


def _num(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 1e3 and abs(v) < 1e7 and v == int(v) else f"{v:.4g}"


def _interval(e: dict | None) -> str:
    if e is None or e.get("value") is None:
        return "-"
    lo, hi = e.get("low"), e.get("high")
    if lo is None or hi is None or _num(lo) == _num(hi) == _num(e["value"]):
        return _num(e["value"])
    return f"{_num(e['value'])} [{_num(lo)}, {_num(hi)}]"


def crossover_figure(lifetime: dict, path: str | Path) -> str:
    """Draw total cost against lifetime demand (log-log; each choice a line with its interval band, the
    lifetime optimum re-chosen at every demand) to ``path``; returns a one-line caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = lifetime["curve"]
    demand = curve["demand"]
    keep = [i for i, t in enumerate(demand) if t > 0]  # a log axis: demand 0 is in the table
    x = [demand[i] for i in keep]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for role, c in curve["choices"].items():
        y = [c["total"][i] for i in keep]
        if all(v is None for v in y):
            continue
        colour = COLOURS.get(role, "#9467bd")
        style = "-" if role != "lifetime" else "--"
        label = role if role != "lifetime" else "lifetime optimum (re-chosen per demand)"
        ax.plot(x, y, style, color=colour, label=label, lw=1.6)
        lo, hi = [c["low"][i] for i in keep], [c["high"][i] for i in keep]
        if None not in lo and None not in hi:
            ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
    ax.axvline(lifetime["demand_tokens"], color="#999999", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lifetime demand (output tokens)")
    ax.set_ylabel(f"total cost (price {lifetime['prices']['train_price_per_gpu_hour']:g} per GPU-hour)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    over = [x for x in lifetime["crossovers"] if x["status"] == "overtakes"]
    first = min(over, key=lambda x: x["demand"]) if over else None
    where = f"; {crossover_text(first, _num)}" if first else ""
    return (f"Total cost (training + serving + measured energy) against lifetime demand, target "
            f"{lifetime.get('target')}, bands {lifetime['interval']['level']:.0%} intervals{where}.")


def lifetime_table_html(lifetime: dict) -> str:
    """The compared choices (rows) with tokens, predicted loss, the cost split, total and sources,
    then the crossover demands, as an HTML fragment."""
    e = html.escape
    head = ["choice", "architecture", "N", "D", "predicted loss", "training", "serving", "energy", "total",
            "output tokens/s", "serving source"]
    rows = []
    for role, c in lifetime["choices"].items():
        energy = _interval(c["energy"]["cost"]) if c["energy"]["j_per_output_token"] else "not measured"
        cells = [role, c["arch_id"], _num(c["params_non_embedding"]), _interval(c["tokens"]),
                 _interval(c["predicted_loss"]), _interval(c["training"]["cost"]), _interval(c["serving"]["cost"]),
                 energy, _interval(c["total"]), _interval(c["serving"]["output_tokens_per_s"]),
                 c["serving"]["cost"]["source"]]
        rows.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in cells) + "</tr>")
    table = ("<table class=\"lifetime\"><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
             + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    items = [crossover_text(x, _num) for x in lifetime["crossovers"]]
    d = lifetime["deployment"]
    caption = (f"Lifetime cost at {_num(lifetime['demand_tokens'])} output tokens, deployment batch {d['batch_size']}, "
               f"{d['input_len']} in / {d['output_len']} out" + (f", context {d['context']}" if d["context"] else "")
               + f"; loss target {_num(lifetime['loss_target']['threshold'])}.")
    notes = "".join(f"<li>{e(n)}</li>" for n in lifetime.get("notes", []))
    return (f"<p>{e(caption)}</p>{table}<ul class=\"crossovers\">"
            + "".join(f"<li>{e(i)}</li>" for i in items) + f"</ul><ul class=\"notes\">{notes}</ul>")
