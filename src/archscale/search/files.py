"""File-level entry points of the workflow's search rules (``search_candidates``,
``throughput_candidate``, ``search_select``): read the inputs, call the pure algorithm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..io import read_json
from .algorithm import LawModel, cost_model_efficiency
from .anyscale import attach_probabilities
from .selection import measure_arch, measure_entry, measure_ids, prepare, select, throughput_at
from .targets import SearchError, SearchSettings, SearchTarget


def prepare_from_files(
    target: dict, settings: dict, runs_path: str, fit_path: str, cost_model_path: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``search_candidates``: the rule's params (target, settings) and its three input files."""
    t, s = SearchTarget.from_dict(target), SearchSettings.from_dict(settings)
    runs = pd.read_parquet(runs_path)
    law = LawModel(read_json(fit_path), runs)
    cost_model = read_json(cost_model_path)
    efficiency = cost_model_efficiency(cost_model, s.input_len, s.output_len, s.batch_size)
    candidates, space = prepare(t, s, law, efficiency, runs)
    candidates["inputs"] = {"runs": str(runs_path), "fit": str(fit_path), "cost_model": str(cost_model_path)}
    candidates["cost_model_spearman"] = cost_model.get("spearman")
    # The fitted form's coefficients and bootstrap samples: the picks' probabilities at select time.
    candidates["law_forms"] = {s.form: law.conditional["forms"][s.form]}
    return candidates, space


def measure_candidate(candidates: dict, arch_id: str, workload: dict, hardware: dict, rope_base: float) -> dict:
    """``throughput_candidate``: measure one listed architecture with random weights."""
    from ..throughput import run_job

    entry = measure_entry(candidates, arch_id)
    arch = measure_arch(candidates, arch_id)
    record = run_job(arch.to_dict(), dict(workload, weights="random"), hardware, None, rope_base=rope_base)
    record["search"] = {"target": candidates["target"]["name"], "roles": entry.get("roles", [entry["role"]])}
    return record


def select_from_files(candidates_path: str, space_path: str, measured_paths: Iterable[str]) -> tuple[dict, pd.DataFrame]:
    """``search_select``: the GQA walks on the measured records, Panda, Surefire, Pareto table."""
    candidates = read_json(candidates_path)
    space = pd.read_parquet(space_path)
    records = {}
    for p in measured_paths:
        rec = read_json(p)
        aid = rec.get("arch_id") or Path(p).stem
        if Path(p).stem != aid:
            raise SearchError(f"{p}: record is for architecture {aid}, not {Path(p).stem}")
        records[aid] = (p, rec)
    missing = [a for a in measure_ids(candidates) if a not in records]
    if missing:
        raise SearchError(f"{candidates_path}: no throughput record for listed architecture(s) {missing}")
    batch = candidates["settings"]["batch_size"]

    def tput(arch_id: str) -> float:
        path, rec = records[arch_id]
        return throughput_at(rec, batch, path)

    devices = sorted({str(r.get("device")) for _, r in records.values()})
    engines = sorted({str(r.get("engine")) for _, r in records.values()})
    result, pareto = select(candidates, space, tput, measured_label=f"measured ({', '.join(engines)} on {', '.join(devices)})")
    result["measurement"] = {"devices": devices, "engines": engines, "records": len(records)}
    result["cost_model_spearman"] = candidates.get("cost_model_spearman")
    attach_probabilities(result, candidates.get("law_forms") or {}, name=str(candidates.get("inputs", {}).get("fit")))
    return result, pareto
