"""The report's figures (matplotlib, Agg backend): one function per figure, data in, PNG out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..analysis.aggregate import batch_column, table_batch_sizes  # noqa: E402
from ..analysis.effects import at_common_budget  # noqa: E402
from ..io import atomic_path  # noqa: E402
from ..sweeps import Sweep  # noqa: E402
from .words import finite, num, sweep_name  # noqa: E402

if TYPE_CHECKING:
    from ..law.laws import Law

DPI = 110


def _log_x(ax) -> None:
    """Log x axis with plain tick labels (0.2, 0.3, ...) rather than 2x10^-1."""
    from matplotlib.ticker import FormatStrFormatter

    ax.set_xscale("log")
    # Labels at 1, 2, 3 and 5 of each decade only: neighbouring labels never overlap.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=8)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    cols = min(n, 3) or 1
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = axes.ravel().tolist()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n] if n else flat[:1]


def _message(path: str | Path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(fig, path)


def _scales(runs: pd.DataFrame) -> list[str]:
    order = runs.groupby("scale")["params_non_embedding"].median().sort_values()
    return order.index.tolist()


def seed_points(grp: pd.DataFrame, col: str) -> pd.DataFrame:
    """One point per architecture, sorted by ``col``: its position ``x``, mean validation loss over
    its seed runs ``m``, their sd ``sd`` (0 with one seed) and seed count ``n``."""
    g = grp.groupby("arch_id").agg(x=(col, "first"), m=("valid_loss", "mean"), sd=("valid_loss", "std"),
                                   n=("valid_loss", "size")).sort_values("x")
    g["sd"] = g["sd"].fillna(0.0).where(g["n"] > 1, 0.0)
    return g


def at_scale_budget(runs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Each scale's runs at the largest token budget all its architectures have, and whether any
    scale had several (multi-horizon runs give one row per budget: a point compares like with
    like, as the effects table does). A scale whose architectures share no budget keeps each
    architecture's largest."""
    if "tokens" not in runs or runs.empty:
        return runs, False
    parts, several = [], False
    for _, sub in runs.groupby("scale", sort=False):
        several |= sub["tokens"].nunique() > 1
        try:
            parts.append(at_common_budget(sub)[0])
        except ValueError:
            parts.append(sub[sub["tokens"] == sub.groupby("arch_id")["tokens"].transform("max")])
    return pd.concat(parts), several


def _l_opt_per_scale(runs: pd.DataFrame, conditional: dict) -> dict[str, float]:
    """Each scale's reference loss: the fit's L_opt at its (N, D), else its lowest mean loss."""
    table = {(int(e["n"]), int(e["d"])): float(e["l_opt"]) for e in conditional.get("l_opt") or []
             if finite(e.get("l_opt"))}
    out = {}
    for scale, sub in runs.groupby("scale"):
        key = (int(sub["n_target"].iloc[0]), int(sub["tokens"].iloc[0])) if {"n_target", "tokens"} <= set(sub) else None
        out[scale] = table.get(key) or float(sub.groupby("arch_id")["valid_loss"].mean().min())
    return out


def _along(runs: pd.DataFrame, knob: str) -> pd.DataFrame:
    """The runs on a one-knob sweep of ``knob`` (the plan's memberships), with the sweep's name."""
    if "sweeps" not in runs:
        return runs.assign(sweep_key="all runs")
    rows = []
    for _, row in runs.iterrows():
        for m in Sweep.parse_cell(row["sweeps"]):
            if m.knob == knob:
                rows.append(dict(row, sweep_key=m.key))
    if not rows:  # no sweep of this knob (at this scale): no rows, the runs' columns
        return runs.iloc[0:0].assign(sweep_key=pd.Series(dtype=str))
    return pd.DataFrame(rows)


def loss_vs_knob(runs: pd.DataFrame, law: Law, knob: str, path: str | Path,
                 resolved: dict | None = None) -> dict[str, Any]:
    """Loss / L_opt against one knob along its sweeps, scales as colours (the paper's Figures 3-4).

    One point per architecture: the mean over its seeds, with the seed sd as error bar where it
    was trained at several. The fitted law is drawn only where its optimum is a finding
    (``resolved``: knob -> value, interval, form, from :func:`~archscale.report.findings.resolved_optima`),
    with the optimum and its interval; otherwise the points speak alone.
    """
    key, col, label = (("d_over_sqrt_n", "d_over_sqrt_n", "d / sqrt(N)") if knob == "d" else
                       ("r", "mlp_attn_ratio", "r (MLP / attention parameters)"))
    runs, several_budgets = at_scale_budget(runs[np.isfinite(runs["valid_loss"].astype(float))])
    along = _along(runs, key)
    if runs.empty or along.empty:
        _message(path, f"no one-knob sweep of {label} among the finished runs")
        return {"panels": 0, "caption": f"No sweep of {label} finished."}
    l_opt = _l_opt_per_scale(runs, law.fit)
    fig, ax = plt.subplots(figsize=(5.4, 3.4))
    seeded = 0
    for i, scale in enumerate(_scales(runs)):
        sub = along[along["scale"] == scale]
        for j, (sweep, grp) in enumerate(sub.groupby("sweep_key", sort=True)):
            g = seed_points(grp, col)
            y, err = g["m"] / l_opt[scale], g["sd"] / l_opt[scale]
            seeded += int((g["n"] > 1).sum())
            ax.errorbar(g["x"], y, yerr=err if (g["n"] > 1).any() else None, fmt="o", ms=4, lw=1, capsize=2,
                        color=f"C{i}", ls="-" if j == 0 else "--",
                        label=f"{scale}" + (f" ({sweep_name(sweep)})" if sub["sweep_key"].nunique() > 1 else ""))
    found = (resolved or {}).get(key)
    if found:
        _draw_law(ax, law, found, key, along, col)
    _log_x(ax)
    ax.set_xlabel(label)
    ax.set_ylabel("validation loss / L_opt of its scale")
    ax.legend(fontsize=7, title="scale" + (" (error bar: seed sd)" if seeded else ""), title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)
    return {"panels": 1, "seeded_architectures": seeded, "law_drawn": bool(found),
            "caption": _loss_caption(label, along, found, seeded, several_budgets)}


def _draw_law(ax, law: Law, found: dict, key: str, along: pd.DataFrame, col: str) -> None:
    """The fitted law's factor along the knob (the other knob at its sweep value), the optimum and its interval."""
    form = law.forms.get(found["form"])
    other_col = "mlp_attn_ratio" if key == "d_over_sqrt_n" else "d_over_sqrt_n"
    held = float(along[other_col].median())
    lo, hi = float(along[col].min()), float(along[col].max())
    x = np.geomspace(lo * 0.9, hi * 1.1, 100)

    def f(c, v):
        return c[0] + c[1] * np.log(v) + c[2] / v

    if found["form"] == "multiplicative" and form is not None:
        y = f(form.a, x) * f(form.b, held) if key == "d_over_sqrt_n" else f(form.a, held) * f(form.b, x)
        ax.plot(x, y, color="k", lw=1.2, label="fitted law")
    v, (c0, c1) = found["value"], found["ci"]
    ax.axvline(v, color="k", lw=0.8, ls=":")
    ax.axvspan(c0, c1, color="0.5", alpha=0.15, label=f"optimum {num(v)} [{num(c0)}, {num(c1)}]")


def _loss_caption(label: str, along: pd.DataFrame, found: dict | None, seeded: int, several_budgets: bool = False) -> str:
    scales = along["scale"].nunique()
    head = f"Loss against {label.split(' (')[0]} along its sweeps at {scales} scale{'s' if scales != 1 else ''}"
    if several_budgets:
        per = along.groupby("scale")["tokens"].first()
        head += (" at each scale's largest token budget every architecture has ("
                 + ", ".join(f"{s} {num(t)}" for s, t in per.items()) + " tokens)")
    seeds = "; error bars are the seed sd" if seeded else "; one seed each, so no error bars"
    if found:
        return (f"{head}{seeds}; the fitted law places the optimum at {num(found['value'])} "
                f"[{num(found['ci'][0])}, {num(found['ci'][1])}].")
    return f"{head}{seeds}; no optimum is resolved, so no law is drawn."


def _tokens_axis(ax) -> None:
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))


def throughput_figure(runs: pd.DataFrame, results: list[dict], path: str | Path) -> dict[str, Any]:
    """Measured output tokens/s against each knob at every measured batch size (the paper's Figure 2).

    d/sqrt(N) and r along their sweeps at the search's scale (else the largest), one colour per
    batch size, error bars the measurement's interval; GQA from the search's interleaved
    measurements (Surefire's walk) where it measured several GQA settings.
    """
    batches = table_batch_sizes(runs.columns)
    scales = _scales(runs) if len(runs) else []
    if not batches or not scales:
        _message(path, "no throughput record")
        return {"points": 0, "caption": "No throughput was measured."}
    scale = results[0]["scale"] if results and results[0].get("scale") in scales else scales[-1]
    at = runs[runs["scale"] == scale]
    gqa = [m for r in results for m in r.get("measured_architectures", []) if r.get("scale") == scale]
    panels = [("d_over_sqrt_n", "d_over_sqrt_n", "d / sqrt(N)"), ("r", "mlp_attn_ratio", "r")]
    if len({m["gqa"] for m in gqa}) > 1:
        panels.append(("gqa", "gqa", "GQA (heads / KV heads)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.3), squeeze=False)
    points = 0
    for ax, (key, col, label) in zip(axes[0], panels):
        if key == "gqa":
            g = pd.DataFrame(gqa).groupby("gqa")["measured_output_tokens_per_s"].median()
            ax.plot(g.index, g.values, "D-", color="C3", ms=5, lw=1,
                    label=f"search, batch {results[0]['batch_size']}")
            ax.set_xticks(sorted(g.index))
            points += len(g)
        else:
            along = _along(at, key)
            for i, b in enumerate(batches):
                v, lo, hi = (batch_column(f"output_tokens_per_s{s}", b) for s in ("", "_low", "_high"))
                sub = along.drop_duplicates("arch_id").sort_values(col)
                if sub.empty or v not in sub:
                    continue
                err = None
                if lo in sub and hi in sub and sub[lo].notna().all() and sub[hi].notna().all():
                    err = [sub[v] - sub[lo], sub[hi] - sub[v]]
                ax.errorbar(sub[col], sub[v], yerr=err, fmt="o-", ms=4, lw=1, capsize=2, color=f"C{i}",
                            label=f"batch {b}")
                points += len(sub)
            _log_x(ax)
        ax.set_xlabel(label)
        _tokens_axis(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # no one-knob sweep of this knob at this scale
            ax.text(0.5, 0.5, f"no {label} sweep at {scale}", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8, color="#666666")
    axes[0][0].set_ylabel("output tokens/s")
    devices = ", ".join(sorted({str(d) for d in at["throughput_device"].dropna()})) if "throughput_device" in at else ""
    _save(fig, path)
    caption = (f"Measured output tokens/s at {scale} on {devices or 'an unrecorded device'} against d/sqrt(N) and r"
               + (" and GQA" if len(panels) > 2 else "") + f" at batch {', '.join(map(str, batches))}"
               + "; error bars are the measurement's interval.")
    return {"points": points, "batch_sizes": batches, "caption": caption}


def pareto_figure(searches: list[tuple[dict, pd.DataFrame]], path: str | Path) -> dict[str, Any]:
    """Predicted loss against predicted throughput per target: candidates, front, picks labelled."""
    if not searches:
        _message(path, "no search target configured")
        return {"panels": 0, "caption": "No search target was configured."}
    fig, axes = _panels(len(searches), width=5.6, height=3.8)
    captions = []
    for ax, (res, space) in zip(axes, searches):
        ok = space["within_target"]
        ax.scatter(space.loc[~ok, "pred_output_tokens_per_s"], space.loc[~ok, "loss"], s=7, color="0.78",
                   label="candidates")
        ax.scatter(space.loc[ok, "pred_output_tokens_per_s"], space.loc[ok, "loss"], s=7, color="C0",
                   label="within the loss target")
        front = space[space["pareto"]].sort_values("pred_output_tokens_per_s")
        ax.plot(front["pred_output_tokens_per_s"], front["loss"], "-", color="k", lw=1, label="Pareto front")
        lt = (res.get("loss_target") or {}).get("value")
        if lt is not None:
            ax.axhline(lt, color="C3", lw=0.8, ls=":", label="loss target")
        for role, marker, color, (dx, dy, ha) in (("baseline", "X", "C3", (-12, 18, "right")), ("panda", "*", "C2", (10, -14, "left")),
                                                  ("surefire", "D", "C1", (10, -18, "left"))):
            e = res.get(role)
            if e is not None:
                ax.scatter([e["pred_output_tokens_per_s"]], [e["loss"]], marker=marker, s=110, color=color,
                           edgecolors="k", zorder=5)
                ax.annotate(f"{role.capitalize()} (GQA {e['gqa']})", (e["pred_output_tokens_per_s"], e["loss"]),
                            textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=8, color="k",
                            arrowprops={"arrowstyle": "-", "lw": 0.5})
        ax.set_xlabel(f"predicted output tokens/s (batch {res['batch_size']})")
        ax.set_ylabel(f"predicted loss ({res['form']} law)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        ax.set_title(f"{res['target']}: N = {num(res['n_target'])}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        captions.append(f"{res['target']}: {int(space['pareto'].sum())} of {len(space):,} candidates on the front, "
                        f"{int(ok.sum()):,} within the loss target")
    _save(fig, path)
    return {"panels": len(searches), "caption": "Predicted loss against predicted throughput: " + "; ".join(captions)
            + "; Panda has the lowest predicted loss, Surefire the highest measured speed within the target."}


PRED_COLS = ("predicted", "predicted_loss", "loss_predicted")
OBS_COLS = ("observed", "observed_loss", "valid_loss", "loss_observed")


def _col(df: pd.DataFrame, names) -> str | None:
    return next((c for c in names if c in df.columns), None)


def validation_figure(validation: pd.DataFrame | None, path: str | Path, per_run: pd.DataFrame | None = None) -> dict[str, Any]:
    """Predicted against observed loss of the held-out scale, one panel per progressive task.

    ``per_run`` (task, form, observed, predicted) gives the points; the titles carry the
    table's MSE and Spearman. Tasks without points show the table's Spearman as bars.
    """
    if validation is None or validation.empty or "task" not in validation:
        _message(path, "no progressive validation task (one scale only)")
        return {"panels": 0}
    tasks = list(dict.fromkeys(validation["task"]))
    fig, axes = _panels(len(tasks))
    points = 0
    for ax, task in zip(axes, tasks):
        stats = validation[validation["task"] == task]
        sub = per_run[per_run["task"] == task] if per_run is not None and len(per_run) else stats
        pc, oc = _col(sub, PRED_COLS), _col(sub, OBS_COLS)
        if not (pc and oc and len(sub)) and not pd.to_numeric(stats["spearman"], errors="coerce").notna().any():
            import textwrap

            status = sorted({str(r.get("status", "no result")).split(";")[0].split(":")[0] for _, r in stats.iterrows()})
            ax.axis("off")
            ax.text(0.5, 0.5, textwrap.fill(f"{', '.join(status)}: the causes are under Cross-scale validation", 40),
                    ha="center", va="center", fontsize=8)
            ax.set_title(task, fontsize=8)
            continue
        if pc and oc and len(sub):
            points += len(sub)
            for form, fsub in sub.groupby("form") if "form" in sub else [("", sub)]:
                ax.scatter(fsub[oc], fsub[pc], s=20, label=form or None)
            lo = float(np.nanmin([sub[oc].min(), sub[pc].min()]))
            hi = float(np.nanmax([sub[oc].max(), sub[pc].max()]))
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
            ax.set_xlabel("measured loss")
            ax.set_ylabel("predicted loss")
        else:
            forms = stats["form"].astype(str).tolist() if "form" in stats else [""] * len(stats)
            ax.bar(forms, pd.to_numeric(stats["spearman"], errors="coerce").fillna(0.0))
            ax.set_ylabel("Spearman (held-out scale)")

        txt = "\n".join(
            f"{r.get('form', '')}: MSE {num(r.get('mse'))}, rank corr. {num(r.get('spearman'))}"
            for _, r in stats.iterrows() if finite(r.get("mse"))
        )
        ax.set_title(f"{task}\n{txt}", fontsize=8)
        if pc and oc and len(sub):
            ax.legend(fontsize=7)
    _save(fig, path)
    done = [t for t in tasks if per_run is not None and len(per_run) and (per_run["task"] == t).any()]
    caption = (f"Predicted against measured loss on the held-out scale for {len(done)} of {len(tasks)} checks "
               f"({', '.join(done) or 'none'}); points on the dotted line are predicted exactly.")
    return {"panels": len(tasks), "points": points, "caption": caption}


def loss_curves_figure(curves: dict[str, pd.DataFrame], runs: pd.DataFrame, path: str | Path) -> dict[str, Any]:
    """Training loss against tokens per scale (validation points where evaluated)."""
    if not curves:
        _message(path, "no loss curve")
        return {"curves": 0}
    ids = runs["run_id"] if "run_id" in runs.columns else runs.get("arch_id", [])  # curves are per run
    scale_of = dict(zip(ids, runs["scale"])) if len(runs) else {}
    scales = sorted({scale_of.get(a, "?") for a in curves}, key=lambda s: list(_scales(runs)).index(s) if s in set(runs.get("scale", [])) else 99)
    fig, axes = _panels(len(scales), width=4.6)
    for ax, scale in zip(axes, scales):
        for i, (arch, curve) in enumerate(sorted((a, c) for a, c in curves.items() if scale_of.get(a, "?") == scale)):
            color = f"C{i % 10}"
            ax.plot(curve["tokens"], curve["loss"], lw=0.8, color=color, label=arch.split("-", 1)[-1])
            v = curve[np.isfinite(curve["valid_loss"].astype(float))]
            if len(v):
                ax.scatter(v["tokens"], v["valid_loss"], s=10, color=color, edgecolors="k", linewidths=0.3, zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("tokens")
        ax.set_ylabel("training loss (dots: validation)")
        ax.set_title(scale)
        ax.legend(fontsize=5, ncol=1, loc="upper right")
    _save(fig, path)
    return {"curves": len(curves)}
