"""Grid expansion and the compute plan.

``build_plan(config)`` resolves every grid point of every scale into a concrete
architecture (failing before any job starts, naming the grid point, when one is
infeasible), deduplicates points that land on the same architecture, and attaches the
training budget and the estimated cost of each. The Snakemake workflow and
``archscale plan`` both use it, so the dry-run and the plan agree.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .arch import Architecture, GridPoint, InfeasiblePoint, Scale, architecture_from_entry, resolve
from .config import ConfigError, validate_config
from .cost import PEAK_FLOPS, gpu_hours, inference_flops_per_token, training_cost


@dataclass
class PlannedRun:
    arch: Architecture
    scale: Scale
    tokens: int
    seq_length: int
    global_batch: int
    origins: list[str] = field(default_factory=list)
    gpus: int = 0

    @property
    def arch_id(self) -> str:
        return self.arch.arch_id

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.global_batch * self.seq_length)))

    @property
    def flops(self) -> float:
        return training_cost(self.arch, self.tokens, self.seq_length).flops

    def row(self, compute: dict) -> dict[str, Any]:
        a = self.arch
        cost = training_cost(a, self.tokens, self.seq_length)
        hours = estimated_hours(cost.flops, compute, self.gpus)
        return {
            "arch_id": a.arch_id,
            "scale": self.scale.name,
            "name": a.name,
            "layers": a.layers,
            "d_model": a.d_model,
            "heads": a.heads,
            "kv_heads": a.kv_heads,
            "head_dim": a.head_dim,
            "ffn": a.ffn,
            "gqa": a.gqa,
            "vocab": a.vocab,
            "tied": a.tied,
            "n_target": self.scale.n_target,
            "params_non_embedding": a.params_non_embedding,
            "params_total": a.params_total,
            "mlp_attn_ratio": a.mlp_attn_ratio,
            "d_over_sqrt_n": a.d_over_sqrt_n,
            "tokens": self.tokens,
            "steps": self.steps,
            "train_flops": cost.flops,
            "train_flops_6nd": cost.flops_6nd,
            "gpus": self.gpus,
            "est_hours": hours,
            "est_device_hours": hours * max(1, self.gpus),
            "runtime_min": runtime_minutes(hours, compute),
            "kv_cache_bytes_per_token": a.kv_cache_bytes_per_token("bf16"),
            "inference_flops_per_token": inference_flops_per_token(a, self.seq_length),
            "origins": "; ".join(self.origins),
        }


def peak_flops(compute: dict) -> float:
    if compute.get("peak_flops"):
        return float(compute["peak_flops"])
    model = compute.get("gpu_model") or "cpu"
    if model not in PEAK_FLOPS:
        raise ConfigError(
            f"compute.gpu_model: unknown GPU model '{model}'; use one of {sorted(PEAK_FLOPS)} "
            "or set compute.peak_flops"
        )
    return PEAK_FLOPS[model]


def estimated_hours(flops: float, compute: dict, gpus: int) -> float:
    """Wall-clock hours of a job on ``gpus`` devices (one CPU device when 0)."""
    devices = max(1, gpus)
    return gpu_hours(flops, peak_flops(compute) * devices, float(compute.get("mfu", 0.35)))


def runtime_minutes(hours: float, compute: dict) -> int:
    """SLURM runtime of a training job: estimate x safety factor + overhead, whole minutes."""
    minutes = hours * 60.0 * float(compute.get("runtime_factor", 1.5)) + float(
        compute.get("runtime_overhead_min", 10)
    )
    return int(math.ceil(minutes))


def grid_points(entry: dict, index: int) -> list[GridPoint]:
    points = []
    for k, sweep in enumerate(entry["grid"]):
        where = f"scales[{index}].grid[{k}]"
        if ("d_model" in sweep) == ("d_over_sqrt_n" in sweep):
            raise ConfigError(f"{where} (scale '{entry['name']}'): give exactly one of d_model and d_over_sqrt_n")
        key = "d_model" if "d_model" in sweep else "d_over_sqrt_n"
        for dv, r, gqa in itertools.product(sweep[key], sweep["r"], sweep["gqa"]):
            points.append(GridPoint(r=float(r), gqa=int(gqa), origin=where, **{key: dv}))
    return points


@dataclass
class Plan:
    runs: dict[str, PlannedRun]
    compute: dict
    scales: dict[str, Scale]
    skipped: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return list(self.runs)

    def __getitem__(self, arch_id: str) -> PlannedRun:
        return self.runs[arch_id]

    def rows(self) -> list[dict[str, Any]]:
        return [run.row(self.compute) for run in self.runs.values()]

    def baseline(self, name: str) -> PlannedRun:
        for run in self.runs.values():
            if run.arch.name == name:
                return run
        raise KeyError(name)


def build_plan(config: Mapping[str, Any]) -> Plan:
    """Resolve every grid point of a config (validated here: schema defaults filled in place);
    raise :class:`ConfigError` naming the bad ones. ``Study.plan`` is the cached plan of a study."""
    validate_config(config)
    training = config["training"]
    seq, batch = int(training["seq_length"]), int(training["global_batch"])
    runs: dict[str, PlannedRun] = {}
    scales: dict[str, Scale] = {}
    problems: list[str] = []
    skip = config["model"]["on_infeasible"] == "skip"
    skipped: list[str] = []
    for i, entry in enumerate(config["scales"]):
        scale = Scale.from_entry(entry, config)
        if scale.name in scales:
            problems.append(f"scales[{i}]: duplicate scale name '{scale.name}'")
            continue
        scales[scale.name] = scale
        tokens = scale.train_tokens
        gpus = int(entry.get("gpus", config["compute"]["gpus_per_job"]))
        archs: list[tuple[Architecture, str]] = []
        for point in grid_points(entry, i):
            try:
                archs.append((resolve(scale, point), point.describe()))
            except InfeasiblePoint as exc:
                (skipped if skip else problems).append(str(exc))
        for j, ex in enumerate(entry["architectures"]):
            where = f"scales[{i}].architectures[{j}] '{ex['name']}'"
            if ex["heads"] % ex["kv_heads"]:
                problems.append(
                    f"{where}: heads ({ex['heads']}) is not a multiple of kv_heads ({ex['kv_heads']}); "
                    "GQA must divide the head count"
                )
                continue
            arch = architecture_from_entry(ex, scale)
            rel = arch.params_non_embedding / scale.n_target - 1
            if abs(rel) > scale.n_tolerance:
                problems.append(
                    f"{where}: N={arch.params_non_embedding:,} is {rel:+.1%} off the scale's target "
                    f"{scale.n_target:,} (tolerance {scale.n_tolerance:.0%}); move it to a matching scale"
                )
                continue
            archs.append((arch, where))
        for arch, origin in archs:
            run = runs.get(arch.arch_id)
            if run is None:
                runs[arch.arch_id] = PlannedRun(arch, scale, tokens, seq, batch, [origin], gpus)
            else:
                run.origins.append(origin)
                if arch.name and not run.arch.name:
                    run.arch = arch
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConfigError(f"{len(problems)} infeasible grid point(s):\n  {shown}{more}")
    if not runs:
        raise ConfigError("scales: the grid is empty; add grid sweeps or architectures to a scale")
    return Plan(runs=runs, compute=config["compute"], scales=scales, skipped=skipped)


def plan_totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "architectures": len(rows),
        "train_flops": sum(r["train_flops"] for r in rows),
        "est_device_hours": sum(r["est_device_hours"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
    }
