"""Algorithm 1 end to end, without files: :func:`prepare` (candidates and the measurement
plan, steps 1-4) and :func:`select` (the GQA walks on measured throughput, Panda, Surefire and
the Pareto table, step 5); :func:`run_search` runs both in one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from ..arch import Architecture, GridPoint, InfeasiblePoint, resolve
from .algorithm import (
    ARCH_COLUMNS,
    Efficiency,
    enumerate_space,
    gqa_walk,
    grid_axes,
    pareto_mask,
    pick_panda,
    rank_within_target,
    reference_l_opt,
    require_feasible,
    score,
    within_target,
)
from .targets import SearchError, SearchSettings, SearchTarget

if TYPE_CHECKING:
    from ..law.laws import Law


# ---- stage 1: candidates and the measurement plan ------------------------------------------
def loss_target_value(
    target: SearchTarget, law: Law, l_opt: float, settings: SearchSettings, runs: pd.DataFrame | None
) -> dict[str, Any]:
    """The numeric loss target, and where it came from."""
    lt = target.loss_target
    if lt is None:
        return {"value": None, "source": "none", "baseline": None}
    if not isinstance(lt, str):
        return {"value": float(lt), "source": "number", "baseline": None}
    base = target.baseline
    predicted = law.predict_forms(base.d_over_sqrt_n, base.mlp_attn_ratio, l_opt)
    observed = None
    loss_col = law.column("loss")  # the fit's mapping
    if runs is not None and len(runs) and loss_col in runs:
        hit = runs[runs["arch_id"] == base.arch_id]
        if len(hit) and np.isfinite(float(hit[loss_col].iloc[0])):
            observed = float(hit[loss_col].iloc[0])
    if settings.loss_target_source == "observed":
        if observed is None:
            raise SearchError(
                f"search target '{target.name}': loss_target_source is 'observed' but the runs table has no "
                f"{loss_col} for baseline '{base.name}' ({base.arch_id}); train it or use 'predicted'"
            )
        value = observed
    else:
        value = predicted[settings.form]
    return {
        "value": float(value), "source": f"{settings.loss_target_source} loss of baseline", "baseline": base.arch_id,
        "baseline_name": base.name, "baseline_predicted": predicted, "baseline_observed": observed,
    }


def _entry(row: pd.Series | dict, role: str, **extra) -> dict[str, Any]:
    row = dict(row)
    keep = ARCH_COLUMNS + ["name", "kv_cache_bytes_per_token", "loss", "pred_output_tokens_per_s", "within_target"]
    out = {k: _py(row.get(k)) for k in keep if k in row}
    out.update({k: _py(v) for k, v in row.items() if k.startswith("loss_")})
    out["role"] = role
    out.update(extra)
    return out


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _scored(arch: Architecture, law: Law, l_opt: float, efficiency: Efficiency, settings: SearchSettings,
            loss_target: float | None) -> dict[str, Any]:
    """One architecture scored as in the space, with its ``within_target`` flag."""
    row = score([arch], law, l_opt, efficiency, settings.form).iloc[0].to_dict()
    row["within_target"] = bool(loss_target is None or row["loss"] <= loss_target + 1e-12)
    return row


class _MeasureList:
    """The architectures to measure, in first-seen order, each with every role it plays."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict] = {}

    def add(self, entry: dict) -> dict:
        aid = entry["arch_id"]
        if aid not in self.by_id:
            self.by_id[aid] = dict(entry, roles=[entry["role"]])
        elif entry["role"] not in self.by_id[aid]["roles"]:
            self.by_id[aid]["roles"].append(entry["role"])
        return entry


def _walk_variants(
    target: SearchTarget, settings: SearchSettings, ranked: pd.DataFrame, score_one: Callable[[Architecture], dict],
    measure: _MeasureList,
) -> tuple[list[dict], list[dict]]:
    """The GQA variants of the ``measure_top_k`` best-ranked candidates (each walk's steps, in
    increasing GQA), and the variants that are not feasible at the target's scale."""
    walks, skipped = [], []
    for rank, (_, cand) in enumerate(ranked.head(settings.measure_top_k).iterrows()):
        steps = []
        for g in target.walk_gqas:
            if g == target.walk_base_gqa:
                row = cand.to_dict()
            else:
                try:
                    arch = resolve(
                        target.scale,
                        GridPoint(r=float(cand["mlp_attn_ratio"]), gqa=g, d_model=int(cand["d_model"]), origin="gqa walk"),
                    )
                except InfeasiblePoint as exc:
                    skipped.append({"base_arch_id": cand["arch_id"], "gqa": g, "reason": str(exc)})
                    continue
                row = score_one(arch)
            entry = measure.add(_entry(row, "walk", base_arch_id=cand["arch_id"], walk_rank=rank))
            steps.append({"gqa": g, "arch_id": entry["arch_id"], "within_target": bool(entry["within_target"])})
        walks.append({"base_arch_id": cand["arch_id"], "rank": rank, "steps": steps})
    return walks, skipped


def prepare(
    target: SearchTarget,
    settings: SearchSettings,
    law: Law,
    efficiency: Efficiency,
    runs: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Steps 1-4: the scored space (one row per architecture) and the measurement plan."""
    xs, rs, grid_source = grid_axes(settings, law.fit, runs)
    base_gqa = target.walk_base_gqa
    space = enumerate_space(target.scale, xs, rs, base_gqa)
    require_feasible(target, space, xs, rs)

    l_opt = reference_l_opt(law, target.scale.n_target, target.tokens)
    df = score(space.archs.values(), law, l_opt, efficiency, settings.form)
    df["requested_d_over_sqrt_n"] = [space.requested[a][0] for a in df["arch_id"]]
    df["requested_r"] = [space.requested[a][1] for a in df["arch_id"]]
    lt = loss_target_value(target, law, l_opt, settings, runs)
    df["within_target"] = within_target(df, lt["value"])
    df["pareto"] = pareto_mask(df["loss"], df["pred_output_tokens_per_s"])

    panda = pick_panda(df)
    ranked = rank_within_target(df)
    surefire_pred = ranked.iloc[0] if len(ranked) else None

    def score_one(arch: Architecture) -> dict[str, Any]:
        return _scored(arch, law, l_opt, efficiency, settings, lt["value"])

    measure = _MeasureList()
    baseline_entry = None
    if target.baseline is not None:
        baseline_entry = measure.add(_entry(score_one(target.baseline), "baseline"))
    panda_entry = measure.add(_entry(panda, "panda"))
    walks, skipped = _walk_variants(target, settings, ranked, score_one, measure)

    candidates = {
        "target": target.to_dict(),
        "settings": settings.to_dict(),
        "l_opt": l_opt,
        "loss_target": lt,
        "grid": {
            "source": grid_source, "d_over_sqrt_n": xs, "r": rs, "gqa": base_gqa, "points": space.points,
            "infeasible": space.infeasible, "infeasible_examples": space.examples, "architectures": len(df),
            "within_target": int(df["within_target"].sum()),
        },
        "panda": panda_entry,
        "surefire_predicted": _entry(surefire_pred, "surefire_predicted") if surefire_pred is not None else None,
        "baseline": baseline_entry,
        "walks": walks,
        "skipped_variants": skipped,
        "measure": list(measure.by_id.values()),
    }
    return candidates, df


def measure_ids(candidates: dict) -> list[str]:
    """Architecture ids the workflow must measure for this target (deduplicated, ordered)."""
    return [m["arch_id"] for m in candidates["measure"]]


def measure_entry(candidates: dict, arch_id: str) -> dict:
    for m in candidates["measure"]:
        if m["arch_id"] == arch_id:
            return m
    raise SearchError(f"architecture {arch_id} is not in the search's measurement list ({len(candidates['measure'])} entries)")


def measure_arch(candidates: dict, arch_id: str) -> Architecture:
    return Architecture.from_dict(measure_entry(candidates, arch_id))


# ---- stage 2: selection with measured throughput -------------------------------------------
def throughput_at(record: dict, batch_size: int, where: str = "throughput record") -> float:
    """Output tokens/s at ``batch_size`` from a throughput record (docs/pipeline.md)."""
    for rec in record.get("records", []):
        if int(rec.get("batch_size", -1)) == int(batch_size):
            value = rec.get("output_tokens_per_s")
            if value is None or not np.isfinite(float(value)):
                raise SearchError(f"{where}: output_tokens_per_s at batch size {batch_size} is missing or not finite")
            return float(value)
    sizes = [rec.get("batch_size") for rec in record.get("records", [])]
    raise SearchError(f"{where}: no record at batch size {batch_size} (measured: {sizes}); set search.batch_size to one of them")


def _measured_walks(candidates: dict, tput: Callable[[str], float], compare: Callable[[str, str], dict] | None) -> list[dict]:
    """Each non-empty GQA walk of the plan taken on measured throughput (with intervals when
    ``compare`` is given, on point values otherwise)."""
    walks = []
    for w in candidates["walks"]:
        if not w["steps"]:
            continue
        if compare:
            walk = resolved_gqa_walk(w["steps"], compare)
            for step in walk["steps"]:
                step["throughput"] = tput(step["arch_id"])  # the median, for tables and logs
        else:
            walk = gqa_walk(w["steps"], tput)
        walk["base_arch_id"] = w["base_arch_id"]
        walk["rank"] = w["rank"]
        walks.append(walk)
    return walks


def _surefire(candidates: dict, walks: list[dict], tput: Callable[[str], float]) -> dict | None:
    """The fastest (measured) of the walks' choices, as its measurement entry; None if no walk
    found an architecture within the loss target."""
    best = [w["best"] for w in walks if w["best"] is not None]
    if not best:
        return None
    top = max(best, key=lambda v: tput(v["arch_id"]))
    surefire = dict(measure_entry(candidates, top["arch_id"]))
    surefire["role"] = "surefire"
    surefire["measured_output_tokens_per_s"] = tput(top["arch_id"])
    return surefire


def _versus_baseline(baseline: dict | None, picks: dict[str, dict | None], verdict: dict | None) -> dict[str, dict]:
    """Loss difference and measured/predicted speed-ups of each pick against the baseline; the
    Surefire verdict's interval and choice where the rates were measured interleaved."""
    summary: dict[str, dict] = {}
    if baseline is not None:
        for key, pick in picks.items():
            if pick is None:
                continue
            summary[key] = {
                "loss_delta_vs_baseline": pick["loss"] - baseline["loss"],
                "measured_speedup_vs_baseline": pick["measured_output_tokens_per_s"] / baseline["measured_output_tokens_per_s"],
                "predicted_speedup_vs_baseline": pick["pred_output_tokens_per_s"] / baseline["pred_output_tokens_per_s"],
            }
    if verdict is not None and "surefire" in summary:
        summary["surefire"]["measured_speedup_interval"] = verdict["ratio"]
        summary["surefire"]["verdict"] = verdict["verdict"]
        summary["surefire"]["kept"] = verdict["kept"]
    return summary


def _pareto_table(space: pd.DataFrame, measured: dict[str, float], panda_id: str, surefire: dict | None) -> pd.DataFrame:
    """The scored space with measured throughput and the picks flagged, best loss first."""
    pareto = space.copy()
    pareto["measured_output_tokens_per_s"] = [measured.get(a, np.nan) for a in pareto["arch_id"]]
    pareto["is_panda"] = pareto["arch_id"] == panda_id
    pareto["is_surefire"] = pareto["arch_id"] == (surefire["arch_id"] if surefire else None)
    pareto = pareto.sort_values(["loss", "pred_output_tokens_per_s"], ascending=[True, False], kind="mergesort")
    return pareto.reset_index(drop=True)


def select(
    candidates: dict, space: pd.DataFrame, throughput: Callable[[str], float], measured_label: str = "measured",
    samples: dict[str, list[float]] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Step 5: GQA walks with measured throughput; Panda, Surefire, baseline and the Pareto table.

    With ``samples`` (per architecture, rates measured interleaved in one job) the walks and
    the Surefire verdict use ratios with intervals (:func:`resolved_gqa_walk`,
    :func:`surefire_verdict`); without, point values (the cost model's predictions).
    """
    cache: dict[str, float] = {}
    compare = interleaved_comparer(samples) if samples is not None else None

    def tput(arch_id: str) -> float:
        if arch_id not in cache:
            cache[arch_id] = float(throughput(arch_id))
        return cache[arch_id]

    def with_measured(entry: dict | None) -> dict | None:
        if entry is None:
            return None
        out = dict(entry)
        out["measured_output_tokens_per_s"] = tput(entry["arch_id"])
        return out

    walks = _measured_walks(candidates, tput, compare)
    surefire = _surefire(candidates, walks, tput)
    panda = with_measured(candidates["panda"])
    baseline = with_measured(candidates.get("baseline"))
    lt = candidates["loss_target"]
    verdict = surefire_verdict(surefire, baseline, compare) if compare else None
    summary = _versus_baseline(baseline, {"panda": panda, "surefire": surefire}, verdict)
    t = candidates["target"]
    result = {
        "target": t["name"],
        "scale": t["scale"]["name"],
        "n_target": t["scale"]["n_target"],
        "tokens": t["tokens"],
        "form": candidates["settings"]["form"],
        "batch_size": candidates["settings"]["batch_size"],
        "input_len": candidates["settings"]["input_len"],
        "output_len": candidates["settings"]["output_len"],
        "throughput_source": measured_label,
        "l_opt": candidates["l_opt"],
        "loss_target": lt,
        "grid": candidates["grid"],
        "panda": panda,
        "surefire": surefire,
        "surefire_predicted": with_measured(candidates.get("surefire_predicted")),
        "baseline": baseline,
        "versus_baseline": summary,
        "surefire_verdict": verdict,
        "gqa_walks": walks,
        "skipped_variants": candidates.get("skipped_variants", []),
        "measured": {a: v for a, v in cache.items()},
        "measured_architectures": [
            dict(m, measured_output_tokens_per_s=cache[m["arch_id"]]) for m in candidates["measure"] if m["arch_id"] in cache
        ],
        "note": None if surefire is not None else (
            f"no architecture meets the loss target {lt['value']:.4g}: Panda's predicted loss is "
            f"{candidates['panda']['loss']:.4g}; relax loss_target or widen the grid"
        ),
    }
    return result, _pareto_table(space, cache, candidates["panda"]["arch_id"], surefire)


def run_search(
    target: SearchTarget,
    settings: SearchSettings,
    law: Law,
    efficiency: Efficiency,
    runs: pd.DataFrame | None = None,
    measure: Callable[[Architecture], float] | None = None,
    measured_label: str = "cost model (predicted)",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Algorithm 1 in one process; ``measure`` defaults to the efficiency prediction."""
    candidates, space = prepare(target, settings, law, efficiency, runs)
    measure = measure or efficiency
    result, pareto = select(candidates, space, lambda a: measure(measure_arch(candidates, a)), measured_label)
    return result, pareto




# ---- interleaved comparisons: GQA walk and Surefire verdict with intervals ------------------
def resolved_gqa_walk(steps: list[dict], compare: Callable[[str, str], dict]) -> dict[str, Any]:
    """The GQA walk on interleaved measurements: a step is taken only when it is resolved faster.

    ``steps`` as for :func:`archscale.search.algorithm.gqa_walk` (increasing GQA, the base
    first); ``compare(candidate_id, current_id)`` is :func:`archscale.throughput.stats.compare_rates`
    of the two architectures' interleaved rates: ``{"ratio": Estimate dict, "verdict": ...}``.
    The walk moves to a step when its ratio's lower bound is above 1 and it is within the loss
    target; it stops at the first step that is not resolved faster (the current choice stays).
    """
    from ..throughput.stats import FASTER

    if not steps:
        raise SearchError("GQA walk: no steps")
    current, visited, stopped_at = steps[0], [dict(steps[0], status="base")], None
    for step in steps[1:]:
        cmp = compare(step["arch_id"], current["arch_id"])
        row = dict(step, against=current["arch_id"], ratio=cmp["ratio"], verdict=cmp["verdict"])
        if cmp["verdict"] != FASTER:
            visited.append(dict(row, status=f"{cmp['verdict']}: stop"))
            stopped_at = step["gqa"]
            break
        if not step.get("within_target", True):
            visited.append(dict(row, status="faster but above loss target: stop"))
            stopped_at = step["gqa"]
            break
        visited.append(dict(row, status="kept"))
        current = step
    best = current if current.get("within_target", True) else None
    return {"base_gqa": steps[0]["gqa"], "steps": visited, "stopped_at_gqa": stopped_at, "best": best,
            "comparison": "interleaved, bootstrap ratio of medians"}


def surefire_verdict(pick: dict | None, baseline: dict | None, compare: Callable[[str, str], dict]) -> dict | None:
    """Surefire against the baseline: the ratio with its interval and the verdict.

    ``faster`` only when the ratio's lower bound is above 1; otherwise the verdict is
    ``not resolved`` (or ``slower``) and the study keeps the baseline (``kept`` names it).
    """
    if pick is None or baseline is None:
        return None
    from ..throughput.stats import FASTER

    if pick["arch_id"] == baseline["arch_id"]:
        return {"ratio": None, "verdict": "same architecture", "kept": baseline["arch_id"]}
    cmp = compare(pick["arch_id"], baseline["arch_id"])
    kept = pick["arch_id"] if cmp["verdict"] == FASTER else baseline["arch_id"]
    return {"ratio": cmp["ratio"], "verdict": cmp["verdict"], "kept": kept,
            "candidate": pick["arch_id"], "baseline": baseline["arch_id"]}


def interleaved_comparer(samples: dict[str, list[float]]) -> Callable[[str, str], dict]:
    """``compare(a, b)`` over per-architecture rates measured interleaved in one job."""
    from ..throughput.stats import compare_rates

    def compare(a: str, b: str) -> dict:
        for aid in (a, b):
            if aid not in samples:
                raise SearchError(f"no interleaved measurement of {aid} (measured: {sorted(samples)})")
        return compare_rates(samples[a], samples[b])

    return compare
