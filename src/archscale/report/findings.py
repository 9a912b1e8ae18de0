"""What the runs do and do not show, stated from the fit and the records (not from hopes).

Every sentence is computed: the fitted optimum (or its absence), the direction of each
knob's effect over the sampled range, fit quality, cross-scale validation, the search's
picks against the baseline, and the caveats that follow from the size of the models and
the hardware the throughput was measured on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.effects import effect_sentences

KNOBS = {"d_over_sqrt_n": ("a", "d/sqrt(N)", "hidden size"), "r": ("b", "r", "MLP-to-attention ratio")}
#: Below this N the embedding dominates and the paper's optima (80M-3B) are not expected.
TINY_N = 10_000_000


def factor_shape(c: list[float], lo: float, hi: float) -> dict[str, Any]:
    """Shape of ``c0 + c1 ln x + c2/x`` over [lo, hi]: interior minimum, maximum, or monotone.

    The derivative is ``(c1 x - c2) / x^2``: it vanishes at ``x* = c2/c1``, a minimum when
    c1 > 0 (and c2 > 0), a maximum when c1 < 0 (and c2 < 0).
    """
    c1, c2 = float(c[1]), float(c[2])
    x_star = c2 / c1 if c1 != 0 and c2 / c1 > 0 else None
    kind = "minimum" if (x_star is not None and c1 > 0) else ("maximum" if x_star is not None else None)
    inside = x_star is not None and lo <= x_star <= hi

    def slope(x: float) -> float:
        return (c1 * x - c2) / (x * x)

    if inside:
        trend = f"interior {kind}"
    else:
        s_lo, s_hi = slope(lo), slope(hi)
        if s_lo < 0 and s_hi < 0:
            trend = "falls"
        elif s_lo > 0 and s_hi > 0:
            trend = "rises"
        else:
            trend = "flat"
    return {"x_star": x_star, "kind": kind, "inside": inside, "trend": trend}


def _range(series: pd.Series) -> tuple[float, float]:
    return float(series.min()), float(series.max())


def knob_sentences(conditional: dict, runs: pd.DataFrame) -> list[str]:
    out = []
    r_lo, r_hi = conditional.get("r_range") or (0.5, 5.0)
    used = runs[(runs["mlp_attn_ratio"] >= r_lo) & (runs["mlp_attn_ratio"] <= r_hi)] if len(runs) else runs
    ranges = {
        "d_over_sqrt_n": _range(used["d_over_sqrt_n"]) if len(used) else (float("nan"),) * 2,
        "r": _range(used["mlp_attn_ratio"]) if len(used) else (float("nan"),) * 2,
    }
    for form, fit in (conditional.get("forms") or {}).items():
        if not fit:
            continue
        opt = fit.get("optimum") or {}
        for knob, (coef, label, name) in KNOBS.items():
            lo, hi = ranges[knob]
            shape = factor_shape(fit[coef], lo, hi)
            fitted = opt.get(knob)
            where = f"over the sampled {label} range [{lo:.3g}, {hi:.3g}]"
            if fitted is not None and shape["inside"]:
                ci = opt.get(f"{knob}_ci") or []
                ci_txt = f" (interval {ci[0]:.3g}-{ci[1]:.3g})" if len(ci) == 2 and None not in ci else ""
                out.append(f"{form} fit: the {name} has an interior optimum at {label} = {fitted:.3g}{ci_txt} {where}.")
            else:
                verb = {"falls": "loss falls as it grows", "rises": "loss rises as it grows",
                        "flat": "loss barely changes", "interior minimum": "the fitted curve turns inside the range",
                        "interior maximum": "the fitted curve has a maximum, not a minimum"}[shape["trend"]]
                # Never a number the fit withheld: the fit's own reason, else where the turn lies.
                why = opt.get(f"{knob}_reason") if fitted is None else None
                if why:
                    extra = f"; the fit withholds it: {why}"
                elif shape["x_star"] is not None and not shape["inside"]:
                    extra = f"; the fitted curve's {shape['kind']} lies outside the sampled range"
                else:
                    extra = ""
                out.append(f"{form} fit: no interior optimum of the {name} {where}: {verb}{extra}.")
    return out


def fit_sentences(conditional: dict) -> list[str]:
    out = []
    n = conditional.get("n_points")
    for form, fit in (conditional.get("forms") or {}).items():
        if not fit:
            continue
        mse, rho = fit.get("mse"), fit.get("spearman")
        rho_txt = f", Spearman {rho:.2f}" if rho is not None and math.isfinite(rho) else ""
        out.append(f"{form} fit on {n} runs: MSE {mse:.2g}{rho_txt} (in-sample).")
    return out


def _metric(v, fmt: str) -> str | None:
    return None if v is None or not np.isfinite(float(v)) else format(float(v), fmt)


def validation_sentences(validation: pd.DataFrame | None) -> list[str]:
    """One sentence per task and form, under both references; the empirical one flagged optimistic."""
    if validation is None or validation.empty or "task" not in validation:
        return ["No progressive cross-scale validation: the fit has fewer than two scales to hold one out."]
    out = []
    summary = validation.drop_duplicates(subset=[c for c in ("task", "kind", "form") if c in validation])
    for _, row in summary.iterrows():
        kind = f"{row['kind']}, " if "kind" in row and row.get("kind") else ""
        parts = []
        for suffix, label in (("", "own L_opt, optimistic"), ("_extrapolated", "L_opt extrapolated from the training scales")):
            mse, rho = _metric(row.get("mse" + suffix), ".2g"), _metric(row.get("spearman" + suffix), ".2f")
            if mse is None:
                parts.append(f"{label}: withheld")
            else:
                parts.append(f"{label}: MSE {mse}, Spearman {rho if rho is not None else 'undefined'}")
        status = row.get("status")
        tail = f" Status: {status}." if status and status != "ok" else ""
        out.append(f"Held-out check {row['task']} ({kind}{row.get('form', '')}): {'; '.join(parts)}.{tail}")
    return out


def guard_sentences(conditional: dict) -> list[str]:
    """The identifiability guards' verdicts: the fit's status, each form's factors and warnings."""
    out = [f"Conditional fit status: {conditional.get('status', 'not recorded (fit written before the guards)')}."]
    for form, fit in (conditional.get("forms") or {}).items():
        if not fit:
            continue
        for knob, f in (fit.get("factors") or {}).items():
            rng = f.get("range") or []
            rng_txt = f" over [{rng[0]:.3g}, {rng[1]:.3g}]" if len(rng) == 2 else ""
            out.append(f"{form} fit, {knob} factor{rng_txt}: " + ("fitted." if f.get("fitted") else f"left out: {f.get('reason')}."))
        if fit.get("status") not in (None, "ok"):
            out.append(f"{form} fit: {fit['status']}.")
        out += [f"{form} fit warning: {w}" for w in fit.get("warnings") or []]
    chin = conditional.get("chinchilla") or {}
    out += [f"Chinchilla reference warning: {w}" for w in chin.get("warnings") or []]
    if chin and chin.get("fitted") is False:
        out.append(f"Chinchilla reference not fitted: {chin.get('reason')}")
    return out


def _probability(pick: dict) -> str:
    p = pick.get("probability_within_target")
    if p is not None:
        return f"; bootstrap probability that its predicted loss is within the target {p:.2f}"
    why = pick.get("probability_reason")
    return f"; probability of meeting the target withheld ({why})" if why else ""


def search_sentences(results: list[dict]) -> list[str]:
    out = []
    for res in results:
        name = res["target"]
        panda, sure, base = res.get("panda"), res.get("surefire"), res.get("baseline")
        g = res["grid"]
        out.append(
            f"Search '{name}' (scale {res['scale']}): {g['architectures']} valid architectures from {g['points']} grid "
            f"points ({g['infeasible']} infeasible), {g['within_target']} within the loss target."
        )
        if base is not None and panda is not None:
            out.append(
                f"  Panda {panda['arch_id']}: predicted loss {panda['loss']:.4f} against {base['loss']:.4f} for the "
                f"baseline {base.get('name') or base['arch_id']} ({res['form']} law, difference "
                f"{panda['loss'] - base['loss']:+.4f}){_probability(panda)}."
            )
        if sure is None:
            out.append(f"  No Surefire: {res.get('note')}")
        elif base is not None:
            sp = sure["measured_output_tokens_per_s"] / base["measured_output_tokens_per_s"]
            pp = sure["pred_output_tokens_per_s"] / base["pred_output_tokens_per_s"]
            out.append(
                f"  Surefire {sure['arch_id']} (GQA {sure['gqa']}) measures {sp:.2f}x the baseline's output tokens/s "
                f"at batch {res['batch_size']} (cost model predicted {pp:.2f}x), at a predicted loss within the "
                f"target{_probability(sure)}."
            )
            verdict = surefire_verdict_sentence(res.get("surefire_verdict"))
            if verdict:
                out.append(verdict)
        rho = res.get("cost_model_spearman")
        if rho is not None:
            out.append(f"  The calibrated cost model ranks the measured architectures with Spearman {rho:.2f}.")
    return out


def surefire_verdict_sentence(verdict: dict | None) -> str | None:
    """Surefire against the baseline from interleaved measurements: ratio, 95% interval, verdict."""
    if not verdict or verdict.get("ratio") is None:
        return None
    from ..throughput.stats import Estimate

    ratio = Estimate(**verdict["ratio"])
    kept = "Surefire is kept" if verdict["kept"] == verdict.get("candidate") else "the baseline is kept"
    return (f"  Interleaved measurement, Surefire / baseline output tokens/s: {ratio.text('.3f')} "
            f"({int(ratio.level * 100)}% bootstrap interval): {verdict['verdict']}; {kept}.")


def interior_optima(conditional: dict, runs: pd.DataFrame) -> list[str]:
    """Knobs (per form) whose fitted optimum is not null and lies inside the sampled range."""
    found = []
    r_lo, r_hi = conditional.get("r_range") or (0.5, 5.0)
    used = runs[(runs["mlp_attn_ratio"] >= r_lo) & (runs["mlp_attn_ratio"] <= r_hi)] if len(runs) else runs
    for form, fit in (conditional.get("forms") or {}).items():
        opt = (fit or {}).get("optimum") or {}
        for knob, col in (("d_over_sqrt_n", "d_over_sqrt_n"), ("r", "mlp_attn_ratio")):
            v = opt.get(knob)
            if v is not None and len(used) and used[col].min() <= v <= used[col].max():
                found.append(f"{knob} = {v:.3g} ({form})")
    return found


def caveat_sentences(
    runs: pd.DataFrame, devices: list[str], engines: list[str], conditional: dict | None = None
) -> list[str]:
    out = []
    if len(runs) and "params_non_embedding" in runs:
        n_max = float(runs["params_non_embedding"].max())
        n_min = float(runs["params_non_embedding"].min())
        if n_max < TINY_N:
            emb_txt = ""
            if "vocab" in runs and "d_model" in runs:
                emb = runs["vocab"] * runs["d_model"] / runs["params_non_embedding"]
                emb_txt = f"; the embedding V x d is {emb.min():.2g}-{emb.max():.2g} x N"
            optima = interior_optima(conditional or {}, runs)
            if optima:
                opt_txt = (
                    f" The fit does place interior optima ({', '.join(optima)}); a fitted optimum is not a finding: "
                    "the section on effects against seed noise says which the runs themselves resolve."
                )
            else:
                opt_txt = " Consistently, the fit finds no interior optimum inside the sampled range."
            out.append(
                f"These are tiny models (N = {n_min:,.0f}-{n_max:,.0f} non-embedding parameters{emb_txt}). "
                "Runs of this size show the direction of the d and r effects and, with seeds and a grid that spans "
                "both sides, this size's own optima; they are not the paper's U-shapes (optima near d/sqrt(N) = 0.08 "
                "and r = 1-1.2 at 80M-1B), and neither the fitted optima nor the picks transfer to models of that "
                f"size.{opt_txt}"
            )
    if "scale" in runs and len(runs):
        seeds = runs.groupby("arch_id").size() if "arch_id" in runs else pd.Series([1] * len(runs))
        if int(seeds.max()) <= 1:
            out.append(
                f"Each architecture was trained once ({len(runs)} runs, one seed each): the seed noise is not "
                "measured, loss differences of its order are not resolved, and the fit's confidence intervals do not "
                "include seed variance (add seeds: [...] to a scale or sweep)."
            )
        else:
            out.append(
                f"{int((seeds > 1).sum())} of {len(seeds)} architectures were trained at several seeds "
                f"({len(runs)} runs); the fit uses every run, so its intervals include that seed variance."
            )
    if devices and all("cpu" in d.lower() for d in devices):
        out.append(
            f"Throughput was measured on CPU ({', '.join(engines) or 'unknown engine'}): it ranks architectures on "
            "this machine; absolute numbers and the size of the KV-cache and GQA effects at these short contexts "
            "and small batches do not transfer to GPU serving (the paper: vLLM, A100, 4096 + 1024 tokens)."
        )
    return out


def cost_model_sentences(cost_model: dict | None) -> list[str]:
    """How well the calibrated roofline ranks the measured architectures (Spearman), per batch size."""
    if not cost_model:
        return []
    out = []
    for key, dev in cost_model["devices"].items():
        sp = dev["spearman"]
        w = dev.get("workload") or {"mode": "prefill+decode", "context": None}
        at = f"{w['mode']}" + (f" at context {w['context']}" if w.get("context") else "")
        per = []
        for b, v in sp["by_batch_size"].items():
            cal, roof = v.get("spearman_calibrated"), v.get("spearman_roofline")
            cal_txt = f"{cal:.2f}" if cal is not None else "undefined"
            roof_txt = f"{roof:.2f}" if roof is not None else "undefined"
            per.append(f"batch {b}: {cal_txt} calibrated, {roof_txt} raw roofline ({v['n']} architectures)")
        mean = sp.get("within_batch_size_mean")
        head = (f"The calibrated roofline ranks the {dev['jobs']} measured architectures on {key} ({at}) with "
                f"Spearman {mean:.2f} (mean within batch size)" if mean is not None else
                f"The calibrated roofline's Spearman on {key} ({at}) is undefined (fewer than 3 distinct architectures)")
        out.append(f"{head}: {'; '.join(per)}; mean absolute relative error {dev['mean_abs_rel_error']:.0%}.")
    return out


def findings(
    conditional: dict, runs: pd.DataFrame, validation: pd.DataFrame | None, results: list[dict],
    devices: list[str], engines: list[str], cost_model: dict | None = None,
) -> dict[str, list[str]]:
    return {
        "What the runs show": fit_sentences(conditional) + knob_sentences(conditional, runs),
        "Effects against seed noise (no fitted law)": effect_sentences(runs),
        "Fit verdicts (identifiability guards)": guard_sentences(conditional),
        "Cross-scale validation": validation_sentences(validation),
        "Throughput cost model": cost_model_sentences(cost_model),
        "Search": search_sentences(results),
        "What the runs do not show": caveat_sentences(runs, devices, engines, conditional),
    }
