"""The answer a reader opens the report for: which architecture to train, and how sure we are.

:func:`study_sentence` says what was run in one sentence; :func:`answer_rows` gives, per search
target, the baseline, Panda and Surefire with their shape, predicted loss (with the bootstrap
interval of the fitted law where the fit kept its samples) and measured speed against the
baseline (with the interleaved bootstrap interval and verdict where the search measured the
architectures in rounds); :func:`key_points` gives the three or four things a reader must know:
what is resolved, what is not and the one action that would resolve it, and the conditions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .words import finite, interval, num, plural

NO_INTERVAL = "no interval"
ROLES = (("baseline", "Baseline"), ("panda", "Panda"), ("surefire", "Surefire"))
#: The answer table's columns, as the reader sees them.
ANSWER_COLUMNS = ["target", "pick", "d_model", "layers", "heads / KV heads", "ffn", "r", "d/sqrt(N)",
                  "predicted loss", "speed vs baseline", "verdict"]


def _loss_interval(law, pick: dict, l_opt, form: str | None) -> tuple[float, float] | None:
    """2.5-97.5% of the predicted loss over the fit's bootstrap samples (None when not kept)."""
    if law is None or not finite(l_opt):
        return None
    try:
        s = law.predict_samples(pick["d_over_sqrt_n"], pick["mlp_attn_ratio"], float(l_opt), form)
    except (KeyError, ValueError):
        return None
    if s is None:
        return None
    s = np.asarray(s, float)
    s = s[np.isfinite(s)]
    return (float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))) if s.size >= 20 else None


def _repeats(record: dict | None, arch_id: str) -> list[float] | None:
    arch = ((record or {}).get("architectures") or {}).get(arch_id) or {}
    vals = [r.get("output_tokens_per_s") for r in arch.get("repeats") or []]
    vals = [float(v) for v in vals if finite(v)]
    return vals if len(vals) >= 2 else None


def speed_vs_baseline(res: dict, role: str, record: dict | None) -> dict[str, Any]:
    """The pick's measured output tokens/s over the baseline's: ratio, interval and verdict.

    From the search's interleaved rounds (``record``: results/search/<target>/throughput.json)
    when both were measured there; else Surefire's recorded verdict; else the ratio of single
    measurements, without an interval.
    """
    from ..throughput.stats import compare_rates

    pick, base = res.get(role), res.get("baseline")
    if pick is None or base is None:
        return {"ratio": None, "low": None, "high": None, "verdict": "-"}
    if pick["arch_id"] == base["arch_id"]:
        return {"ratio": 1.0, "low": None, "high": None, "verdict": "the baseline itself" if role != "baseline" else "-"}
    a, b = _repeats(record, pick["arch_id"]), _repeats(record, base["arch_id"])
    cmp = compare_rates(a, b) if a and b else None
    if cmp is None and role == "surefire" and (res.get("surefire_verdict") or {}).get("ratio"):
        cmp = res["surefire_verdict"]
    if cmp is not None and cmp.get("ratio"):
        r = cmp["ratio"]
        return {"ratio": r["value"], "low": r.get("low"), "high": r.get("high"), "verdict": cmp["verdict"],
                "n": r.get("n")}
    mp, mb = pick.get("measured_output_tokens_per_s"), base.get("measured_output_tokens_per_s")
    ratio = mp / mb if finite(mp) and finite(mb) and mb else None
    return {"ratio": ratio, "low": None, "high": None, "verdict": NO_INTERVAL}


def answer_rows(results: list[dict], law=None, records: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    """One row per (target, pick), the baseline first; numbers left as numbers (see :func:`answer_frame`)."""
    rows = []
    for res in results:
        rec = (records or {}).get(res["target"])
        for role, label in ROLES:
            pick = res.get(role)
            if pick is None:
                rows.append({"target": res["target"], "role": role, "pick": label, "missing": res.get("note")
                             or f"no {label} within the loss target"})
                continue
            name = pick.get("name")
            speed = speed_vs_baseline(res, role, rec)
            rows.append({
                "target": res["target"], "role": role, "pick": f"{label} ({name})" if name else label,
                "arch_id": pick["arch_id"], "d_model": pick.get("d_model"), "layers": pick.get("layers"),
                "heads": pick.get("heads"), "kv_heads": pick.get("kv_heads"), "ffn": pick.get("ffn"),
                "r": pick.get("mlp_attn_ratio"), "d_over_sqrt_n": pick.get("d_over_sqrt_n"),
                "loss": pick.get("loss"), "loss_ci": _loss_interval(law, pick, res.get("l_opt"), res.get("form")),
                "tokens_per_s": pick.get("measured_output_tokens_per_s"), **{f"speed_{k}": v for k, v in speed.items()},
            })
    return rows


def answer_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as the reader reads them: 3 significant digits, intervals in brackets."""
    out = []
    for r in rows:
        if "missing" in r:
            out.append({"target": r["target"], "pick": r["pick"], "d_model": r["missing"]})
            continue
        ci = r["loss_ci"]
        ratio = "1 (reference)" if r["role"] == "baseline" else (
            f"{num(r['speed_ratio'])}x {interval(r['speed_low'], r['speed_high'])}".strip()
            if finite(r["speed_ratio"]) else "-")
        out.append({
            "target": r["target"], "pick": r["pick"], "d_model": num(r["d_model"]), "layers": num(r["layers"]),
            "heads / KV heads": f"{num(r['heads'])} / {num(r['kv_heads'])}", "ffn": num(r["ffn"]),
            "r": num(r["r"]), "d/sqrt(N)": num(r["d_over_sqrt_n"]),
            "predicted loss": f"{num(r['loss'])} {interval(*ci) if ci else ''}".strip(),
            "speed vs baseline": ratio,
            "verdict": "-" if r["role"] == "baseline" else r["speed_verdict"],
        })
    return pd.DataFrame(out, columns=ANSWER_COLUMNS).fillna("")


def answer_notes(rows: list[dict], results: list[dict]) -> list[str]:
    """What the table's numbers are, said once under it (batch size, where intervals come from)."""
    notes = []
    for res in results:
        base = res.get("baseline") or {}
        tps = base.get("measured_output_tokens_per_s")
        notes.append(f"{res['target']}: predicted loss from the {res.get('form', 'fitted')} law at N = "
                     f"{num(res.get('n_target'))}; speed is measured output tokens/s at batch {res.get('batch_size')}"
                     + (f" (baseline {num(tps, 'tokens/s')})" if finite(tps) else "") + ".")
    picks = [r for r in rows if "missing" not in r]
    if picks and all(r["loss_ci"] is None for r in picks):
        notes.append("Predicted losses have no interval: the fit kept no bootstrap samples of its coefficients.")
    elif any(r["loss_ci"] for r in picks):
        notes.append("Loss intervals: 2.5-97.5% of the prediction over the fit's bootstrap samples.")
    if any(r.get("speed_verdict") == NO_INTERVAL for r in picks):
        notes.append("Speeds without an interval are ratios of single measurements: no interleaved rounds of the "
                     "search were recorded for them.")
    if any(r.get("speed_low") is not None for r in picks):
        notes.append("Speed intervals: 95% bootstrap interval of the ratio of medians over interleaved rounds; "
                     "faster only when the whole interval is above 1.")
    return notes


def per_arch(runs: pd.DataFrame, column: str) -> pd.Series:
    """Distinct values of ``column`` per architecture (seeds, token budgets); rows when it is absent."""
    if "arch_id" not in runs or not len(runs):
        return pd.Series(dtype=int)
    if column in runs and runs[column].notna().all():
        return runs.groupby("arch_id")[column].nunique()
    rows = runs.groupby("arch_id").size()
    return rows if column == "seed" else rows * 0 + 1  # without a seed column every row is a seed


def _count_range(counts: pd.Series, word: str) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return plural(lo, word) if lo == hi else f"{lo}-{hi} {word}s"


def study_sentence(runs: pd.DataFrame, devices: list[str], engines: list[str], batch_size: int | None) -> str:
    """The study in one sentence: scales, runs, architectures, seeds, hardware."""
    scales = runs.groupby("scale")["params_non_embedding"].median().sort_values().index.tolist() if len(runs) else []
    seeds = per_arch(runs, "seed")
    budgets = per_arch(runs, "tokens")
    seed_txt = (_count_range(seeds, "seed") + (f", {_count_range(budgets, 'token budget')}" if budgets.max() > 1 else "")
                + " each") if len(seeds) else ""
    n = runs["params_non_embedding"] if "params_non_embedding" in runs and len(runs) else pd.Series(dtype=float)
    n_txt = f", N = {num(n.min())}-{num(n.max())} non-embedding parameters" if len(n) else ""
    where = ", ".join(devices) or "an unrecorded device"
    eng = f" ({', '.join(engines)})" if engines else ""
    at = f" at batch {batch_size}" if batch_size else ""
    return (f"{plural(len(runs), 'training run')} of {plural(len(seeds), 'architecture')} ({seed_txt}) at "
            f"{plural(len(scales), 'scale')} ({', '.join(map(str, scales))}{n_txt}); throughput measured on "
            f"{where}{eng}{at}.")
