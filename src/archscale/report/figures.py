"""The report's figures (matplotlib, Agg backend): one function per figure, data in, PNG out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..analysis.aggregate import batch_column, table_batch_sizes  # noqa: E402
from ..io import atomic_path  # noqa: E402
from ..search import LawModel  # noqa: E402

FORM_STYLE = {"multiplicative": "-", "additive": "--"}
DPI = 110


def _log_x(ax) -> None:
    """Log x axis with plain tick labels (0.2, 0.3, ...) rather than 2x10^-1."""
    from matplotlib.ticker import FormatStrFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.tick_params(axis="x", which="minor", labelsize=6)


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


def _seed_means(sub: pd.DataFrame, col: str, other: str) -> pd.DataFrame:
    """One point per architecture: mean validation loss over its seed runs, min and max."""
    key = "arch_id" if "arch_id" in sub.columns else None
    if key is None:
        return sub.assign(lo=sub["valid_loss"], hi=sub["valid_loss"], n_seeds=1)
    g = sub.groupby(key, sort=False)
    out = g.agg(**{col: (col, "first"), other: (other, "first"), "mlp_attn_ratio_": ("mlp_attn_ratio", "first"),
                   "valid_loss": ("valid_loss", "mean"), "lo": ("valid_loss", "min"), "hi": ("valid_loss", "max"),
                   "n_seeds": ("valid_loss", "size")})
    return out.reset_index()


def _other_groups(values: pd.Series, max_groups: int = 6) -> list[float]:
    """Distinct values of the other knob (2 significant figures), at most ``max_groups`` (quantiles beyond)."""
    v = np.unique(np.array([float(f"{x:.2g}") for x in values]))
    return list(v) if len(v) <= max_groups else list(np.quantile(values, np.linspace(0, 1, max_groups)))


def loss_vs_knob(runs: pd.DataFrame, conditional: dict, knob: str, path: str | Path) -> dict[str, Any]:
    """Observed validation loss against d/sqrt(N) or r per scale, with the fitted law.

    Points are per architecture (the mean over its seed runs; the bar spans their min to max
    when there are several). The law is drawn where the runs are: a marker at each
    architecture's own (d/sqrt(N), r), and curves at each value of the other knob the grid
    holds (coloured like the points). A fitted optimum is a vertical line with its interval.
    """
    col, other, label, other_label, opt_key = (
        ("d_over_sqrt_n", "mlp_attn_ratio", "d / sqrt(N)", "r", "d_over_sqrt_n") if knob == "d" else
        ("mlp_attn_ratio", "d_over_sqrt_n", "r (MLP / attention parameters)", "d/sqrt(N)", "r")
    )
    runs = runs[np.isfinite(runs["valid_loss"].astype(float))]
    if runs.empty:
        _message(path, "no finished training run")
        return {"panels": 0}
    law = LawModel(conditional, runs)
    r_lo, r_hi = conditional.get("r_range") or (0.0, np.inf)
    scales = _scales(runs)
    fig, axes = _panels(len(scales))
    seeded = 0
    for ax, scale in zip(axes, scales):
        sub = _seed_means(runs[runs["scale"] == scale], col, other)
        r_of = sub["mlp_attn_ratio_"] if "mlp_attn_ratio_" in sub else sub["mlp_attn_ratio"]
        inside = (r_of >= r_lo) & (r_of <= r_hi)
        lo_c, hi_c = np.log(sub[other].min()), np.log(sub[other].max())
        norm = matplotlib.colors.Normalize(lo_c, hi_c if hi_c > lo_c else lo_c + 1)
        many = sub["n_seeds"] > 1
        seeded += int(many.sum())
        if many.any():
            m = sub[many]
            ax.errorbar(m[col], m["valid_loss"], yerr=[m["valid_loss"] - m["lo"], m["hi"] - m["valid_loss"]],
                        fmt="none", ecolor="grey", elinewidth=0.8, capsize=2, zorder=2,
                        label=f"seed min-max ({int(m['n_seeds'].min())}-{int(m['n_seeds'].max())} seeds)")
        sc = ax.scatter(sub.loc[inside, col], sub.loc[inside, "valid_loss"], c=np.log(sub.loc[inside, other]),
                        cmap="viridis", norm=norm, s=28, zorder=3,
                        label="runs (fitted)" + (", mean over seeds" if many.any() else ""))
        if (~inside).any():
            ax.scatter(sub.loc[~inside, col], sub.loc[~inside, "valid_loss"], facecolors="none", edgecolors="grey",
                       s=28, zorder=3, label="runs outside r range")
        n_target, tokens = int(runs.loc[runs["scale"] == scale, "n_target"].iloc[0]), int(runs.loc[runs["scale"] == scale, "tokens"].iloc[0])
        l_opt = law.l_opt(n_target, tokens)
        lo, hi = float(sub[col].min()), float(sub[col].max())
        grid = np.geomspace(lo * 0.9, hi * 1.1, 80) if hi > lo else np.array([lo])
        src = sub[inside] if inside.any() else sub
        for f, form in enumerate(law.forms):
            color = "C3" if form == "multiplicative" else "C1"
            own = [law.predict(x, r, l_opt)[form] for x, r in zip(src["d_over_sqrt_n"], src["mlp_attn_ratio"])]
            ax.scatter(src[col], own, marker="_" if f == 0 else "x", s=60, color=color, zorder=4,
                       label=f"{form} fit at each run's own {other_label}")
            if f == 0:  # curves of the first form at each value of the other knob in the grid
                for v in _other_groups(src[other]):
                    pred = [law.predict(x if knob == "d" else v, v if knob == "d" else x, l_opt)[form] for x in grid]
                    ax.plot(grid, pred, FORM_STYLE.get(form, ":"), lw=0.9, color=matplotlib.cm.viridis(norm(np.log(v))))
            opt = ((conditional.get("forms") or {}).get(form) or {}).get("optimum") or {}
            x_opt, ci = opt.get(opt_key), opt.get(f"{opt_key}_ci")
            if x_opt is not None and np.isfinite(x_opt):
                ci = ci if ci and all(c is not None and np.isfinite(c) for c in ci) else None
                ax.axvline(x_opt, color=color, lw=0.8, ls="--", label=f"{form} optimum {x_opt:.3g}"
                           + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else " (no interval)"))
                if ci:
                    ax.axvspan(ci[0], ci[1], color=color, alpha=0.12)
        _log_x(ax)
        ax.set_title(f"{scale}: N = {n_target:,}, D = {tokens:,}")
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=6)
        fig.colorbar(sc, ax=ax, label=f"ln {other_label} (points and curves)") if inside.any() else None
    _save(fig, path)
    return {"panels": len(scales), "seeded_architectures": seeded}


def throughput_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Measured output tokens/s of the grid from runs.parquet: one row per (architecture, batch size)."""
    keep = ["arch_id", "scale", "d_model", "gqa", "mlp_attn_ratio", "d_over_sqrt_n"]
    parts = [
        runs[keep].assign(source="grid", batch_size=b, output_tokens_per_s=runs[batch_column("output_tokens_per_s", b)],
                          device=runs["throughput_device"])
        for b in table_batch_sizes(runs.columns)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keep, "source", "batch_size"])


def throughput_figure(tput: pd.DataFrame, batch_size: int | None, path: str | Path) -> dict[str, Any]:
    """Measured output tokens/s against d_model, r and GQA (grid runs and search measurements)."""
    if tput.empty:
        _message(path, "no throughput record")
        return {"points": 0}
    if batch_size is None or batch_size not in set(tput["batch_size"]):
        batch_size = int(tput["batch_size"].max())
    sel = tput[tput["batch_size"] == batch_size]
    fig, axes = _panels(3)
    markers = {"grid": "o", "search": "^"}
    for ax, (col, label) in zip(axes, [("d_model", "d_model"), ("mlp_attn_ratio", "r"), ("gqa", "GQA (heads / kv heads)")]):
        for (scale, source), sub in sel.groupby(["scale", "source"]):
            ax.scatter(sub[col], sub["output_tokens_per_s"], marker=markers.get(source, "s"), s=26,
                       label=f"{scale} ({source})")
        ax.set_xlabel(label)
        ax.set_ylabel(f"output tokens/s (batch {batch_size})")
        if col != "gqa":
            _log_x(ax)
    axes[0].legend(fontsize=7, loc="upper right")
    devices = ", ".join(sorted({str(d) for d in sel["device"]}))
    fig.suptitle(f"measured throughput on {devices}", fontsize=9)
    _save(fig, path)
    return {"points": int(len(sel)), "batch_size": int(batch_size)}


def pareto_figure(searches: list[tuple[dict, pd.DataFrame]], path: str | Path) -> dict[str, Any]:
    """Predicted loss against predicted throughput per target: front, Panda, Surefire, baseline."""
    if not searches:
        _message(path, "no search target configured")
        return {"panels": 0}
    fig, axes = _panels(len(searches), width=5.0, height=4.0)
    for ax, (res, space) in zip(axes, searches):
        ok = space["within_target"]
        ax.scatter(space.loc[~ok, "pred_output_tokens_per_s"], space.loc[~ok, "loss"], s=8, color="0.75",
                   label="candidates")
        ax.scatter(space.loc[ok, "pred_output_tokens_per_s"], space.loc[ok, "loss"], s=8, color="C0",
                   label="within loss target")
        front = space[space["pareto"]].sort_values("pred_output_tokens_per_s")
        ax.plot(front["pred_output_tokens_per_s"], front["loss"], "-", color="k", lw=1, label="Pareto front")
        lt = res["loss_target"]["value"]
        if lt is not None:
            ax.axhline(lt, color="C3", lw=0.8, ls=":", label="loss target")
        for role, marker, color in (("baseline", "X", "C3"), ("panda", "*", "C2"), ("surefire", "D", "C1")):
            e = res.get(role)
            if e is not None:
                ax.scatter([e["pred_output_tokens_per_s"]], [e["loss"]], marker=marker, s=120, color=color,
                           edgecolors="k", zorder=5, label=f"{role} (GQA {e['gqa']})")
        ax.set_xlabel(f"predicted output tokens/s (batch {res['batch_size']})")
        ax.set_ylabel(f"predicted loss ({res['form']})")
        ax.set_title(f"{res['target']}: N = {res['n_target']:,}")
        ax.legend(fontsize=7, loc="upper right")
    _save(fig, path)
    return {"panels": len(searches)}


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

            status = [f"{r.get('form', '')}: {r.get('status', 'no result')}" for _, r in stats.iterrows()]
            ax.axis("off")
            ax.text(0.5, 0.5, "\n\n".join(textwrap.fill(t, 48) for t in status), ha="center", va="center", fontsize=7)
            ax.set_title(task, fontsize=8)
            continue
        if pc and oc and len(sub):
            points += len(sub)
            for form, fsub in sub.groupby("form") if "form" in sub else [("", sub)]:
                ax.scatter(fsub[oc], fsub[pc], s=20, label=form or None)
            lo = float(np.nanmin([sub[oc].min(), sub[pc].min()]))
            hi = float(np.nanmax([sub[oc].max(), sub[pc].max()]))
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.8)
            ax.set_xlabel("observed loss")
            ax.set_ylabel("predicted loss")
        else:
            forms = stats["form"].astype(str).tolist() if "form" in stats else [""] * len(stats)
            ax.bar(forms, pd.to_numeric(stats["spearman"], errors="coerce").fillna(0.0))
            ax.set_ylabel("Spearman (held-out scale)")

        def num(v, fmt):
            return format(float(v), fmt) if v is not None and np.isfinite(float(v)) else "n/a"

        txt = "\n".join(
            f"{r.get('form', '')}: MSE {num(r.get('mse'), '.2g')}, rho {num(r.get('spearman'), '.2f')}"
            for _, r in stats.iterrows()
        )
        ax.set_title(f"{task}\n{txt}", fontsize=8)
        if pc and oc and len(sub):
            ax.legend(fontsize=7)
    _save(fig, path)
    return {"panels": len(tasks), "points": points}


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
