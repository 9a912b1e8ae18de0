"""File-level entry points of the workflow's search rules (``search_candidates``,
``throughput_candidates``, ``search_select``): read the inputs, call the pure algorithm.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from ..arch import Architecture
from ..io import read_json
from ..throughput.job import DEFAULT_SEED
from .algorithm import cost_model_efficiency, law_from_fit
from .anyscale import attach_probabilities
from .selection import measure_arch, measure_entry, measure_ids, prepare, select
from .targets import SearchError, SearchSettings, SearchTarget


def prepare_from_files(
    target: dict, settings: dict, runs_path: str, fit_path: str, cost_model_path: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``search_candidates``: the rule's params (target, settings) and its three input files."""
    t, s = SearchTarget.from_dict(target), SearchSettings.from_dict(settings)
    runs = pd.read_parquet(runs_path)
    law = law_from_fit(read_json(fit_path), str(fit_path))
    cost_model = read_json(cost_model_path)
    efficiency = cost_model_efficiency(cost_model, s.input_len, s.output_len, s.batch_size)
    candidates, space = prepare(t, s, law, efficiency, runs)
    candidates["inputs"] = {"runs": str(runs_path), "fit": str(fit_path), "cost_model": str(cost_model_path)}
    candidates["cost_model_spearman"] = cost_model.get("spearman")
    # The fitted form's coefficients and bootstrap samples: the picks' probabilities at select time.
    candidates["law_forms"] = {s.form: law.forms[s.form].to_dict()}
    return candidates, space


def measure_candidates_interleaved(candidates: dict, workload: dict, hardware: dict,
                                   spec: Callable[[Architecture], Architecture] | None = None) -> dict:
    """``throughput_candidates``: every listed architecture measured in one job, interleaved
    (A B C A B C ...) at the search's batch size, random weights; per architecture the rates of
    every round, so that any two can be compared with a bootstrap ratio. ``spec`` completes a
    shape with the study's network settings (:meth:`archscale.study.Study.spec`), else the
    schema's do."""
    import torch

    from ..model import resolve_runtime
    from ..throughput.compare import build_decoder, measure_interleaved
    from ..throughput.measure import check_mode

    ids = measure_ids(candidates)
    if spec is None:
        from ..study import default_spec as spec
    archs = {a: spec(measure_arch(candidates, a)) for a in ids}
    batch = int(candidates["settings"]["batch_size"])
    mode, context = check_mode(workload["mode"], workload["context"], workload["input_len"])
    torch.set_num_threads(int(hardware["threads"]))
    runtime = resolve_runtime(hardware.get("precision", "auto"), hardware.get("transformer_impl", "auto"))
    max_seq = max(workload["input_len"], context or 0) + workload["output_len"]
    seed = int(workload.get("seed", DEFAULT_SEED))
    decoders = {a: build_decoder(arch, runtime, max_seq, seed) for a, arch in archs.items()}
    res = measure_interleaved(decoders, {a: arch.vocab for a, arch in archs.items()}, batch, workload["input_len"],
                              workload["output_len"], mode, context, int(workload["repeats"]),
                              int(workload["warmup"]), seed)
    return {"target": candidates["target"]["name"], "engine": "archscale-static", "device": runtime.device,
            "precision": runtime.precision, "threads": torch.get_num_threads(), "weights": "random",
            "workload": dict(workload), **next(iter(archs.values())).network(), **res}


def interleaved_samples(record: dict, batch: int, where: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Median output tokens/s and the per-round rates of every architecture of an interleaved record."""
    if int(record.get("batch_size", -1)) != int(batch):
        raise SearchError(f"{where}: measured at batch size {record.get('batch_size')}, the search uses {batch}")
    medians, samples = {}, {}
    for aid, res in record["architectures"].items():
        samples[aid] = [float(r["output_tokens_per_s"]) for r in res["repeats"]]
        medians[aid] = float(res["median"]["output_tokens_per_s"]["value"])
    return medians, samples


def select_interleaved_from_files(candidates_path: str, space_path: str, measured_path: str) -> tuple[dict, pd.DataFrame]:
    """``search_select`` on one interleaved measurement: walks and Surefire verdict with intervals."""
    candidates = read_json(candidates_path)
    space = pd.read_parquet(space_path)
    record = read_json(measured_path)
    medians, samples = interleaved_samples(record, candidates["settings"]["batch_size"], measured_path)
    missing = [a for a in measure_ids(candidates) if a not in samples]
    if missing:
        raise SearchError(f"{measured_path}: no measurement of listed architecture(s) {missing}")

    def tput(arch_id: str) -> float:
        return medians[arch_id]

    label = f"measured interleaved ({record.get('engine')} on {record.get('device')}, {record.get('mode')})"
    result, pareto = select(candidates, space, tput, measured_label=label, samples=samples)
    result["measurement"] = {"devices": [record.get("device")], "engines": [record.get("engine")],
                             "records": len(samples), "mode": record.get("mode"), "context": record.get("context"),
                             "repeats": record.get("repeats"), "machine_before": record.get("machine_before"),
                             "machine_after": record.get("machine_after")}
    result["cost_model_spearman"] = candidates.get("cost_model_spearman")
    attach_probabilities(result, candidates.get("law_forms") or {}, name=str(candidates.get("inputs", {}).get("fit")))
    return result, pareto

