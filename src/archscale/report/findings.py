"""What the runs do and do not show, stated from the fit and the records (not from hopes).

Every sentence is computed: the fitted optimum (or its absence), the direction of each
knob's effect over the sampled range, fit quality, cross-scale validation, the search's
picks against the baseline, and the caveats that follow from the size of the models and
the hardware the throughput was measured on.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from ..analysis.effects import effect_sentences
from ..law.laws import Law
from ..law.result import FormFit, Optimum
from .answer import per_arch
from .words import KNOB_WORDS, common_tail, finite, group_by_subject, group_causes, humanize, num, plural, span

KNOBS = {"d_over_sqrt_n": ("d/sqrt(N)", "hidden size"), "r": ("r", "MLP-to-attention ratio")}
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


def _used(law: Law, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the fit used: r inside its r range."""
    r_lo, r_hi = law.fit.get("r_range") or (0.5, 5.0)
    return runs[(runs["mlp_attn_ratio"] >= r_lo) & (runs["mlp_attn_ratio"] <= r_hi)] if len(runs) else runs


def _optimum(fit: FormFit) -> Optimum:
    """A form's guarded optimum (none recorded: every knob withheld without a reason)."""
    return fit.optimum or Optimum()


def knob_sentences(law: Law, runs: pd.DataFrame) -> list[str]:
    out = []
    used = _used(law, runs)
    ranges = {
        "d_over_sqrt_n": _range(used["d_over_sqrt_n"]) if len(used) else (float("nan"),) * 2,
        "r": _range(used["mlp_attn_ratio"]) if len(used) else (float("nan"),) * 2,
    }
    for form, fit in law.forms.items():
        for knob, (label, name) in KNOBS.items():
            lo, hi = ranges[knob]
            shape = factor_shape(fit.coefficients(knob), lo, hi)
            opt = _optimum(fit).knob(knob)
            fitted = opt.value
            where = f"over the sampled {label} range [{lo:.3g}, {hi:.3g}]"
            if fitted is not None and shape["inside"]:
                ci = opt.interval or []
                ci_txt = f" (interval {ci[0]:.3g}-{ci[1]:.3g})" if len(ci) == 2 and None not in ci else ""
                out.append(f"{form} fit: the {name} has an interior optimum at {label} = {fitted:.3g}{ci_txt} {where}.")
            else:
                verb = {"falls": "loss falls as it grows", "rises": "loss rises as it grows",
                        "flat": "loss barely changes", "interior minimum": "the fitted curve turns inside the range",
                        "interior maximum": "the fitted curve has a maximum, not a minimum"}[shape["trend"]]
                # Never a number the fit withheld: the fit's own reason, else where the turn lies.
                why = opt.reason if fitted is None else None
                if why:
                    extra = f"; the fit withholds it: {why}"
                elif shape["x_star"] is not None and not shape["inside"]:
                    extra = f"; the fitted curve's {shape['kind']} lies outside the sampled range"
                else:
                    extra = ""
                out.append(f"{form} fit: no interior optimum of the {name} {where}: {verb}{extra}.")
    return out


def fit_sentences(law: Law) -> list[str]:
    out = []
    n = law.fit.get("n_points")
    for form, fit in law.forms.items():
        mse, rho = fit.mse, fit.spearman
        rho_txt = f", Spearman {rho:.2f}" if rho is not None and math.isfinite(rho) else ""
        out.append(f"{form} fit on {n} runs: MSE {num(mse)}{rho_txt} (in-sample).")
    return out


_WARNING = re.compile(r"\b(?:Runtime|Optimize|Convergence|User)?Warning: ([^;]*?)(?: encountered[^;]*)?(?=;|$)")


def clean_status(text: str) -> str:
    """A status as a reader reads it: a Python warning's text becomes a plain clause."""
    return _WARNING.sub(lambda m: f"numerical warning ({m.group(1).strip()}; the value is left out)", str(text))


#: A validation status is "<verdict>[: why]; extrapolated reference: <why>" (law.validation).
STATUS_PARTS = re.compile(r"; (?=extrapolated reference:|skipped:|ok\b)")


def short_status(status) -> str:
    """A validation status in a word or two for the table (its causes are said once in the text)."""
    parts = STATUS_PARTS.split(clean_status(status or ""))
    head = parts[0].split(":")[0].strip() or "-"
    withheld = any(p.startswith("extrapolated reference:") for p in parts[1:])
    return head + ("; extrapolated withheld" if withheld else "")


def validation_causes(validation: pd.DataFrame | None) -> list[str]:
    """Why checks were skipped or a reference withheld, each cause once with the checks it holds for."""
    if validation is None or validation.empty or "status" not in validation:
        return []
    pairs = []
    for _, row in validation.iterrows():
        subject = f"{row['task']} ({row.get('form', '')})"
        form = str(row.get("form", ""))
        for part in STATUS_PARTS.split(clean_status(row["status"])):
            part = part.replace(f"conditional fit ({form}): ", "conditional fit: ")
            if part.strip() in ("", "ok"):
                continue
            if part.startswith("extrapolated reference: "):
                part = "the extrapolated reference is withheld: " + part[len("extrapolated reference: "):]
            elif part.startswith("skipped: "):
                part = "the check is skipped: " + part[len("skipped: "):]
            pairs.append((subject, part))
    return group_causes(pairs, "validation checks")


def validation_sentences(validation: pd.DataFrame | None) -> list[str]:
    """How well the law predicts a held-out scale (the best and worst checks) and the causes of
    withheld numbers, grouped; every check's numbers are in the validation table."""
    if validation is None or validation.empty or "task" not in validation:
        return ["No progressive cross-scale validation: the fit has fewer than two scales to hold one out."]
    ok = validation[pd.to_numeric(validation.get("mse"), errors="coerce").notna()] if "mse" in validation else validation.iloc[:0]
    out = []
    if len(ok):
        mse = pd.to_numeric(ok["mse"], errors="coerce")
        rho = pd.to_numeric(ok["spearman"], errors="coerce") if "spearman" in ok else pd.Series(dtype=float)
        rho_txt = f", rank correlation {span(rho.min(), rho.max())}" if rho.notna().any() else ""
        out.append(f"{plural(len(ok), 'held-out check')} of {len(validation)} predict the held-out scale's loss with "
                   f"MSE {span(mse.min(), mse.max())}{rho_txt} (own L_opt, optimistic).")
    return out + validation_causes(validation)


def guard_sentences(law: Law) -> list[str]:
    """The identifiability guards' verdicts: the fit's status, each form's factors and warnings."""
    status = law.fit.get("status") or "not recorded (fit written before the guards)"
    out = [f"Conditional fit status: {clean_status(status)}."]
    for form, fit in law.forms.items():
        for knob, f in (fit.factors or {}).items():
            rng = f.range or []
            rng_txt = f" over [{num(rng[0])}, {num(rng[1])}]" if len(rng) == 2 else ""
            out.append(f"{form} fit, {KNOB_WORDS.get(knob, knob)} factor{rng_txt}: "
                       + ("fitted." if f.fitted else f"left out: {humanize(str(f.reason))}."))
        if fit.status not in (None, "ok") and f"{form}: {fit.status}" not in status:
            out.append(f"{form} fit: {clean_status(fit.status)}.")
        out += [f"{form} fit warning: {clean_status(w).removeprefix(form + ' fit: ')}." for w in fit.warnings or ()]
    chin = law.fit.get("chinchilla") or {}
    out += [f"Chinchilla reference warning: {clean_status(w)}." for w in chin.get("warnings") or []]
    if chin and chin.get("fitted") is False:
        out.append(f"Chinchilla reference not fitted: {humanize(str(chin.get('reason')))}.")
    return [humanize(t).replace("..", ".") for t in out]


def _probabilities(res: dict) -> str | None:
    """The picks' bootstrap probabilities of meeting the loss target, or why they are withheld, once."""
    have, why = [], []
    for role, label in (("panda", "Panda"), ("surefire", "Surefire")):
        pick = res.get(role) or {}
        if pick.get("probability_within_target") is not None:
            have.append(f"{label} {pick['probability_within_target']:.2f}")
        elif pick.get("probability_reason"):
            why.append((label, pick["probability_reason"]))
    out = []
    if have:
        out.append(f"bootstrap probability that the predicted loss is within the target: {', '.join(have)}")
    for reason in dict.fromkeys(r for _, r in why):
        who = " and ".join(lbl for lbl, r in why if r == reason)
        out.append(f"probability of meeting the target withheld for {who} ({reason})")
    return "; ".join(out) or None


def search_sentences(results: list[dict]) -> list[str]:
    """The search behind the answer table: the candidate grid, the picks' probabilities, the cost
    model's prediction beside the measurement."""
    out = []
    for res in results:
        name = res["target"]
        panda, sure, base = res.get("panda"), res.get("surefire"), res.get("baseline")
        g = res["grid"]
        out.append(
            f"Search {name} (scale {res['scale']}): {g['architectures']:,} valid architectures from {g['points']:,} grid "
            f"points ({g['infeasible']:,} infeasible), {g['within_target']:,} within the loss target"
            + (f" (the baseline {base.get('name') or base['arch_id']}'s predicted loss {num(base['loss'])})" if base else "")
            + ".")
        prob = _probabilities(res)
        if prob:
            out.append(f"{name}: {prob[:1].upper()}{prob[1:]}.")
        if sure is None:
            out.append(f"{name}: no Surefire: {res.get('note')}")
        elif base is not None and finite(sure.get("pred_output_tokens_per_s")) and finite(base.get("pred_output_tokens_per_s")):
            pp = sure["pred_output_tokens_per_s"] / base["pred_output_tokens_per_s"]
            out.append(f"{name}: the cost model predicted Surefire at {num(pp)}x the baseline's output tokens/s "
                       f"(batch {res['batch_size']}); the answer table gives the measurement.")
            verdict = surefire_verdict_sentence(res.get("surefire_verdict"))
            if verdict:
                out.append(verdict)
        rho = res.get("cost_model_spearman")
        if rho is not None:
            out.append(f"{name}: the calibrated cost model ranks the measured architectures with Spearman {rho:.2f}.")
    return out


def surefire_verdict_sentence(verdict: dict | None) -> str | None:
    """Surefire against the baseline from interleaved measurements: ratio, 95% interval, verdict."""
    if not verdict or verdict.get("ratio") is None:
        return None
    from ..throughput.stats import Estimate

    ratio = Estimate(**verdict["ratio"])
    kept = "Surefire is kept" if verdict["kept"] == verdict.get("candidate") else "the baseline is kept"
    return (f"Interleaved measurement, Surefire / baseline output tokens/s: {ratio.text('.3f')} "
            f"({int(ratio.level * 100)}% bootstrap interval): {verdict['verdict']}; {kept}.")


def interior_optima(law: Law, runs: pd.DataFrame) -> list[str]:
    """Knobs (per form) whose fitted optimum is not null and lies inside the sampled range."""
    found = []
    used = _used(law, runs)
    for form, fit in law.forms.items():
        for knob, col in (("d_over_sqrt_n", "d_over_sqrt_n"), ("r", "mlp_attn_ratio")):
            v = _optimum(fit).knob(knob).value
            if v is not None and len(used) and used[col].min() <= v <= used[col].max():
                found.append(f"{KNOB_WORDS[knob]} = {v:.3g} ({form})")
    return found


def resolved_optima(law: Law, runs: pd.DataFrame, form: str = "multiplicative") -> dict[str, dict]:
    """Knobs whose fitted optimum is a finding: inside the sampled range and with a finite interval.

    ``form``: the law the search uses (the first fitted form when it is absent).
    """
    fit = law.forms.get(form) or next(iter(law.forms.values()), None)
    if fit is None:
        return {}
    out = {}
    for knob, col in (("d_over_sqrt_n", "d_over_sqrt_n"), ("r", "mlp_attn_ratio")):
        opt = _optimum(fit).knob(knob)
        v, ci = opt.value, opt.interval or []
        if finite(v) and len(ci) == 2 and all(finite(c) for c in ci) and len(runs) and \
                runs[col].min() <= v <= runs[col].max():
            out[knob] = {"value": float(v), "ci": [float(ci[0]), float(ci[1])], "form": fit.form}
    return out


def _seed_counts(runs: pd.DataFrame) -> pd.Series:
    """Seeds per architecture (not rows: a multi-horizon run gives one row per token budget)."""
    return per_arch(runs, "seed") if "arch_id" in runs and len(runs) else pd.Series([1] * len(runs))


SCIENCE_COMMAND = ("archscale plan --science CONFIG --law results/fit/conditional.json "
                   "--seed-noise-from results/runs.parquet")
#: The sequential design of a finished study (archscale.science.suggest).
NEXT_ROUND_COMMAND = "archscale plan CONFIG --science --suggest --from-results results --overlay-out next.yaml"


def key_points(law: Law, runs: pd.DataFrame, validation: pd.DataFrame | None, results: list[dict],
               devices: list[str], engines: list[str]) -> dict[str, str]:
    """The three or four things a reader must know, each once: resolved, not resolved (with the one
    action that would resolve it), and the conditions the numbers hold under."""
    out = {}
    form = (results[0].get("form") if results else None) or "multiplicative"
    found = resolved_optima(law, runs, form)
    seeds = _seed_counts(runs)
    one_seed = len(seeds) == 0 or int(seeds.max()) <= 1
    if found:
        parts = [f"{KNOB_WORDS[k]} {num(v['value'])} [{num(v['ci'][0])}, {num(v['ci'][1])}]" for k, v in found.items()]
        held = _held_out_phrase(validation, form)
        out["Resolved"] = (f"The fitted {form} law places the loss optimum at {' and '.join(parts)} (95% interval, "
                           f"{plural(len(runs), 'run')}" + (", seed variance not included" if one_seed else "") + f").{held}")
    else:
        out["Resolved"] = ("No optimum is resolved: the fitted law places no interior optimum with an interval "
                           f"inside the sampled range (d/sqrt(N) {num(runs['d_over_sqrt_n'].min())}-"
                           f"{num(runs['d_over_sqrt_n'].max())}, r {num(runs['mlp_attn_ratio'].min())}-"
                           f"{num(runs['mlp_attn_ratio'].max())}).") if len(runs) else "No finished run."
    if one_seed:
        out["Not resolved"] = (
            "Seed noise: each architecture was trained once, so no loss difference between architectures is tested "
            "against it. To resolve it, train every architecture at three seeds (seeds: [1234, 1, 2] under each "
            f"scale, as config/study-cpu.yaml does); then `{SCIENCE_COMMAND}` says whether the grid resolves the optima.")
    else:
        missing = [KNOB_WORDS[k] for k in ("d_over_sqrt_n", "r") if k not in found]
        what = (f"the optimum of {' and '.join(missing)}" if missing else "nothing the grid was built for")
        out["Not resolved"] = (f"Against the measured seed noise ({int(seeds.min())}-{int(seeds.max())} seeds per "
                               f"architecture), {what} is not resolved." + (
            f" `{NEXT_ROUND_COMMAND}` proposes the seeds and grid points that narrow the open intervals most per "
            "device-hour, says which it would settle, and writes them as a config overlay." if missing else ""))
    out["Conditions"] = conditions_sentence(runs, devices, engines, results)
    return out


def _held_out_phrase(validation: pd.DataFrame | None, form: str) -> str:
    """The law's held-out checks in a clause (the details list every check)."""
    if validation is None or validation.empty or "mse" not in validation:
        return ""
    ok = validation.assign(mse=pd.to_numeric(validation["mse"], errors="coerce")).dropna(subset=["mse"])
    if "form" in ok and (ok["form"] == form).any():
        ok = ok[ok["form"] == form]
    if ok.empty:
        return " No held-out check could be run."
    tasks = ", ".join(dict.fromkeys(ok["task"]))
    return f" Refitted without the held-out scale ({tasks}), it predicts its loss with MSE {span(ok['mse'].min(), ok['mse'].max())}."


def conditions_sentence(runs: pd.DataFrame, devices: list[str], engines: list[str], results: list[dict]) -> str:
    """What the numbers hold for: model size against the paper's, and the throughput hardware."""
    parts = []
    if len(runs) and "params_non_embedding" in runs and float(runs["params_non_embedding"].max()) < TINY_N:
        parts.append(f"Miniature models (N up to {num(runs['params_non_embedding'].max())} non-embedding parameters, "
                     "against the paper's 80M-3B): they show this size's own effects; neither the optima nor the "
                     "picks transfer to the paper's sizes")
    cpu = bool(devices) and all("cpu" in d.lower() for d in devices)
    batch = results[0].get("batch_size") if results else None
    where = f"{', '.join(devices) or 'an unrecorded device'} ({', '.join(engines) or 'unrecorded engine'})"
    parts.append(f"throughput was measured on {where}" + (f" at batch {batch}" if batch else "") + (
        ": it ranks architectures on this machine and does not transfer to GPU serving" if cpu else ""))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def tiny_model_sentence(runs: pd.DataFrame, law: Law | None = None) -> list[str]:
    """Why tiny models' optima are not the paper's (the details under the conditions key point)."""
    if not len(runs) or "params_non_embedding" not in runs or float(runs["params_non_embedding"].max()) >= TINY_N:
        return []
    emb_txt = ""
    if "vocab" in runs and "d_model" in runs:
        emb = runs["vocab"] * runs["d_model"] / runs["params_non_embedding"]
        emb_txt = f"; the embedding V x d is {num(emb.min())}-{num(emb.max())} x N"
    optima = interior_optima(law, runs) if law is not None else []
    opt_txt = (f" The fit places interior optima ({', '.join(optima)})." if optima else
               " Consistently, the fit finds no interior optimum inside the sampled range.")
    return [f"These are tiny models (N = {num(runs['params_non_embedding'].min())}-"
            f"{num(runs['params_non_embedding'].max())} non-embedding parameters{emb_txt}): they are not the paper's "
            "U-shapes (optima near d/sqrt(N) = 0.08 and r = 1-1.2 at 80M-1B)." + opt_txt]


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


def effects_sentences(runs: pd.DataFrame, notes: list[str]) -> list[str]:
    """The effects module's sentences in the reader's words, a clause shared by all said once."""
    from .words import caught

    with caught(notes, "effects against seed noise"):
        raw = [humanize(t) for t in effect_sentences(runs)]
    raw = group_by_subject(raw, "scales")
    heads, tail = common_tail([t for t in raw if "sweep" in t])
    rest = [t for t in raw if "sweep" not in t]
    return rest + heads + ([f"Every sweep above: {tail[:1].lower()}{tail[1:]}"] if tail else [])


def findings(
    law: Law, runs: pd.DataFrame, validation: pd.DataFrame | None, results: list[dict],
    devices: list[str], engines: list[str], cost_model: dict | None = None,
) -> dict[str, list[str]]:
    """The detail sections (below the answer table and the key points), each status said once."""
    notes: list[str] = []
    from .words import caught

    with caught(notes, "the fitted law's description"):
        shows = fit_sentences(law) + knob_sentences(law, runs)
    return {
        "What the runs show": [humanize(t) for t in shows] + tiny_model_sentence(runs, law),
        "Effects against seed noise (no fitted law)": effects_sentences(runs, notes),
        "Fit verdicts (identifiability guards)": guard_sentences(law),
        "Cross-scale validation": validation_sentences(validation),
        "Throughput cost model": cost_model_sentences(cost_model),
        "Search": search_sentences(results),
        "Numerical warnings": list(dict.fromkeys(notes)),
    }
