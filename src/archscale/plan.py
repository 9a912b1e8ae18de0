"""Grid expansion and the compute plan.

``build_plan(config)`` resolves every grid point of every scale into a concrete
architecture (failing before any job starts, naming the grid point, when one is
infeasible), deduplicates points that land on the same architecture, and attaches the
training budget and the estimated cost of each. The Snakemake workflow and
``archscale plan`` both use it, so the dry-run and the plan agree.

Seeds are a grid dimension: each architecture trains once per seed of its ``seeds`` (a grid
sweep's or explicit architecture's, else its scale's, else ``[training.seed]``). The run of
the base seed (``training.seed``) keeps the architecture's id, so adding seeds never renames a
finished run; any other seed ``s`` is the run ``<arch_id>-s<s>`` (:func:`run_id`).

Token horizons are a second dimension: a scale (or the whole study, ``horizons:``) may declare
several token budgets. Each (architecture, seed) then trains one warmup-stable-decay run whose
stable phase is shared and which branches into a short decay at each horizon; every branch is
a training run of its own, ``<run>-D<tokens>`` (:func:`branch_id`), with its own outputs, and
its row in runs.parquet carries its token budget. Without horizons a run is one cosine run of
the scale's budget, as before.

:class:`TrainRun` is the typed identity of one training job (architecture, seed, tokens,
branch); :attr:`Plan.train_runs` maps run ids to them, so no id is ever parsed back. Throughput,
export and evaluation stay per architecture, on its primary run (:attr:`PlannedRun.primary_run_id`:
the base seed at the longest horizon).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .arch import Architecture, GridPoint, InfeasiblePoint, Scale, architecture_from_entry, network_settings, resolve
from .config import ConfigError, schema_default, validate_config
from .cost import PEAK_FLOPS, gpu_hours, inference_flops_per_token, training_cost
from .sweeps import grid_point_sweeps


def run_id(arch_id: str, seed: int, base_seed: int) -> str:
    """The training run id of ``arch_id`` at ``seed``: the arch id itself for the base seed."""
    return arch_id if int(seed) == int(base_seed) else f"{arch_id}-s{int(seed)}"


def tokens_label(tokens: int) -> str:
    """Exact, short spelling of a token count: 150000 -> 150k, 2000000 -> 2M, 1234567 -> 1234567."""
    tokens = int(tokens)
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if tokens >= size and tokens % size == 0:
            return f"{tokens // size}{unit}"
    return str(tokens)


def branch_id(run: str, tokens: int) -> str:
    """The run id of the decay branch of ``run`` (an arch id at a seed) ending at ``tokens``."""
    return f"{run}-D{tokens_label(tokens)}"


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule of a multi-horizon run: linear warm-up over ``warmup_steps``
    (the same for every branch of a run), the stable phase at the peak, then a decay of
    ``decay_fraction`` of each branch's steps in ``decay_style`` (megatron-core's WSD styles)."""

    warmup_steps: int
    decay_fraction: float
    decay_style: str

    def decay_steps(self, steps: int) -> int:
        """Steps of the decay of a branch of ``steps`` steps (at least one)."""
        return max(1, int(round(self.decay_fraction * steps)))

    def branch_step(self, steps: int) -> int:
        """The step at which a branch of ``steps`` steps leaves the stable phase."""
        return steps - self.decay_steps(steps)


@dataclass(frozen=True)
class TrainRun:
    """One training job: an architecture at one seed, trained to ``tokens``.

    ``trunk`` is the id shared by the branches of one multi-horizon run (the arch id at the
    seed; its stable phase lives in ``results/checkpoints/<trunk>-stable``); ``schedule`` is
    None for a plain cosine run. ``previous`` is the run id of the next shorter branch of the
    same trunk (it trains the stable phase this branch continues), or None."""

    run_id: str
    arch_id: str
    seed: int
    tokens: int
    trunk: str
    schedule: Schedule | None = None
    previous: str | None = None

    @property
    def horizon(self) -> bool:
        return self.schedule is not None


@dataclass
class PlannedRun:
    """One architecture of the plan and the seeds it trains with."""

    arch: Architecture
    scale: Scale
    tokens: int
    seq_length: int
    global_batch: int
    origins: list[str] = field(default_factory=list)
    gpus: int = 0
    seeds: list[int] = field(default_factory=list)
    base_seed: int = 1234
    sweeps: list[str] = field(default_factory=list)
    horizons: list[int] = field(default_factory=list)  # token budgets of the decay branches ([]: one cosine run)
    schedule: Schedule | None = None  # warm-up/decay of the branches (None without horizons)

    @property
    def arch_id(self) -> str:
        return self.arch.arch_id

    def train_runs(self) -> list[TrainRun]:
        """Every training job of this architecture: one per seed, or per seed and horizon."""
        out = []
        for s in self.seeds:
            trunk = run_id(self.arch_id, s, self.base_seed)
            if not self.horizons:
                out.append(TrainRun(trunk, self.arch_id, s, self.tokens, trunk))
                continue
            previous = None
            for tokens in self.horizons:
                rid = branch_id(trunk, tokens)
                out.append(TrainRun(rid, self.arch_id, s, tokens, trunk, self.schedule, previous))
                previous = rid
        return out

    @property
    def run_ids(self) -> list[str]:
        """Training run ids: one per seed (the base seed's is the arch id), or per seed and horizon."""
        return [r.run_id for r in self.train_runs()]

    @property
    def primary_run_id(self) -> str:
        """The run whose weights stand for the architecture (throughput, export): the base
        seed's when it is among the seeds, else the first seed's; its longest horizon."""
        seed = self.base_seed if self.base_seed in self.seeds else self.seeds[0]
        rid = run_id(self.arch_id, seed, self.base_seed)
        return branch_id(rid, self.horizons[-1]) if self.horizons else rid

    @property
    def steps(self) -> int:
        return steps_for(self.tokens, self.global_batch, self.seq_length)

    @property
    def flops(self) -> float:
        """Training FLOPs of one seed: the longest branch plus every other branch's decay."""
        return training_cost(self.arch, self.trained_tokens, self.seq_length).flops

    @property
    def trained_tokens(self) -> int:
        """Tokens one seed trains: the budget, or with horizons the longest branch plus the
        decay of every shorter one (the stable phase is shared)."""
        if not self.horizons:
            return self.tokens
        per_step = self.global_batch * self.seq_length
        decays = sum(self.schedule.decay_steps(steps_for(t, self.global_batch, self.seq_length))
                     for t in self.horizons[:-1])
        return self.horizons[-1] + decays * per_step

    def row(self, compute: dict) -> dict[str, Any]:
        a = self.arch
        cost = training_cost(a, self.trained_tokens, self.seq_length)
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
            "trained_tokens": self.trained_tokens,
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
            "sweeps": ";".join(sorted(set(self.sweeps))),
            "seeds": ",".join(str(x) for x in self.seeds),
            "n_seeds": len(self.seeds),
            "horizons": ",".join(str(t) for t in self.horizons),
            "n_horizons": len(self.horizons),
            "primary_run_id": self.primary_run_id,
        }


def steps_for(tokens: int, global_batch: int, seq_length: int) -> int:
    """Optimizer steps that cover ``tokens`` (the last may overshoot by less than one batch)."""
    return max(1, math.ceil(int(tokens) / (int(global_batch) * int(seq_length))))


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
    return gpu_hours(flops, peak_flops(compute) * devices, float(_compute_setting(compute, "mfu")))


def runtime_minutes(hours: float, compute: dict) -> int:
    """SLURM runtime of a training job: estimate x safety factor + overhead, whole minutes."""
    minutes = hours * 60.0 * float(_compute_setting(compute, "runtime_factor")) + float(
        _compute_setting(compute, "runtime_overhead_min")
    )
    return int(math.ceil(minutes))


def _compute_setting(compute: Mapping[str, Any], key: str) -> Any:
    """``compute[key]``, else the schema's default (a compute section not filled by validation)."""
    return compute[key] if key in compute else schema_default(f"compute.{key}")


def grid_sweeps(entry: dict, index: int) -> list[tuple[dict, list[GridPoint]]]:
    """(sweep, its grid points) of each sweep of ``scales[index].grid``."""
    out = []
    for k, sweep in enumerate(entry["grid"]):
        where = f"scales[{index}].grid[{k}]"
        if ("d_model" in sweep) == ("d_over_sqrt_n" in sweep):
            raise ConfigError(f"{where} (scale '{entry['name']}'): give exactly one of d_model and d_over_sqrt_n")
        key = "d_model" if "d_model" in sweep else "d_over_sqrt_n"
        out.append((sweep, [GridPoint(r=float(r), gqa=int(gqa), origin=where, **{key: dv})
                            for dv, r, gqa in itertools.product(sweep[key], sweep["r"], sweep["gqa"])]))
    return out


def grid_points(entry: dict, index: int) -> list[GridPoint]:
    return [p for _, points in grid_sweeps(entry, index) for p in points]


def _merge_seeds(into: list[int], seeds: list[int]) -> None:
    into.extend(int(s) for s in seeds if int(s) not in into)


@dataclass
class Plan:
    runs: dict[str, PlannedRun]
    compute: dict
    scales: dict[str, Scale]
    skipped: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """Architecture ids (one throughput measurement, export, evaluation each)."""
        return list(self.runs)

    @property
    def train_runs(self) -> dict[str, TrainRun]:
        """Every training job by run id: each seed (and horizon) of every architecture."""
        return {r.run_id: r for planned in self.runs.values() for r in planned.train_runs()}

    @property
    def train_ids(self) -> list[str]:
        """Training run ids: every seed (and horizon) of every architecture."""
        return list(self.train_runs)

    def __getitem__(self, arch_id: str) -> PlannedRun:
        return self.runs[arch_id]

    def train_run(self, run: str) -> TrainRun:
        """The typed training job of a run id; KeyError naming it if unplanned."""
        try:
            return self.train_runs[run]
        except KeyError:
            raise KeyError(f"run '{run}' is not in the plan") from None

    def of_run(self, run: str) -> tuple[PlannedRun, int]:
        """(the planned architecture, the seed) of a training run id; KeyError if unplanned."""
        tr = self.train_run(run)
        return self.runs[tr.arch_id], tr.seed

    def budget(self, run: str) -> dict[str, Any]:
        """The ``budget`` identity of a training job (the train rule's param): its tokens, scale
        and N target; a branch of a multi-horizon run adds its schedule and the trunk whose
        stable phase it shares (plain cosine runs keep exactly the keys they always had)."""
        tr = self.train_run(run)
        planned = self.runs[tr.arch_id]
        out: dict[str, Any] = {"tokens": tr.tokens, "scale": planned.scale.name, "n_target": planned.scale.n_target}
        if tr.schedule is not None:
            out["schedule"] = {"style": "wsd", "trunk": tr.trunk, "warmup_steps": tr.schedule.warmup_steps,
                               "decay_fraction": tr.schedule.decay_fraction, "decay_style": tr.schedule.decay_style}
        return out

    def run_rows(self) -> list[dict[str, Any]]:
        """One row per training job: run id, architecture, seed, token budget, trunk (the
        typed columns runs.parquet joins on)."""
        return [{"run_id": r.run_id, "arch_id": r.arch_id, "seed": r.seed, "tokens": r.tokens, "trunk": r.trunk,
                 "schedule": "wsd" if r.horizon else "cosine"} for r in self.train_runs.values()]

    def rows(self) -> list[dict[str, Any]]:
        return [run.row(self.compute) for run in self.runs.values()]

    def train_priorities(self) -> dict[str, int]:
        """Each training run's rank by estimated training FLOPs, 1 for the cheapest (ties by run
        id). The workflow gives it as the train job's priority: the longest jobs start first and
        the short ones fill the free slots at the end, so no long job runs alone at the end
        (longest-processing-time order; the same order on SLURM puts the big jobs in first)."""
        runs = self.train_runs

        def cost(rid: str) -> float:
            # the first branch of a trunk trains the stable phase up to its branch point
            planned = self.runs[runs[rid].arch_id]
            return training_cost(planned.arch, runs[rid].tokens, planned.seq_length).flops

        order = sorted(runs, key=lambda rid: (cost(rid), rid))
        return {rid: rank for rank, rid in enumerate(order, start=1)}

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
    base_seed = int(training["seed"])
    runs: dict[str, PlannedRun] = {}
    scales: dict[str, Scale] = {}
    problems: list[str] = []
    skip = config["model"]["on_infeasible"] == "skip"
    skipped: list[str] = []
    network = network_settings(config)
    for i, entry in enumerate(config["scales"]):
        scale = Scale.from_entry(entry, config)
        if scale.name in scales:
            problems.append(f"scales[{i}]: duplicate scale name '{scale.name}'")
            continue
        scales[scale.name] = scale
        tokens = scale.train_tokens
        horizons, schedule, why = scale_horizons(entry, i, config, tokens)
        if why:
            problems.append(why)
            continue
        if horizons:
            tokens = horizons[-1]
        gpus = int(entry.get("gpus", config["compute"]["gpus_per_job"]))
        scale_seeds = list(entry.get("seeds") or [base_seed])
        archs: list[tuple[Architecture, str, list[int], list[str]]] = []
        for k, (sweep, points) in enumerate(grid_sweeps(entry, i)):
            for point in points:
                try:
                    archs.append((resolve(scale, point), point.describe(), list(sweep.get("seeds") or scale_seeds),
                                  [m.key for m in grid_point_sweeps(sweep, point, i, k)]))
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
            archs.append((arch, where, list(ex.get("seeds") or scale_seeds), []))
        for arch, origin, seeds, sweeps in archs:
            arch = arch.with_network(**network)
            run = runs.get(arch.arch_id)
            if run is None:
                runs[arch.arch_id] = PlannedRun(arch, scale, tokens, seq, batch, [origin], gpus,
                                                seeds=[], base_seed=base_seed, sweeps=list(sweeps),
                                                horizons=list(horizons), schedule=schedule)
                _merge_seeds(runs[arch.arch_id].seeds, seeds)
            else:
                run.origins.append(origin)
                run.sweeps.extend(sweeps)
                _merge_seeds(run.seeds, seeds)
                if arch.name and not run.arch.name:
                    run.arch = arch
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConfigError(f"{len(problems)} infeasible grid point(s):\n  {shown}{more}")
    if not runs:
        raise ConfigError("scales: the grid is empty; add grid sweeps or architectures to a scale")
    return Plan(runs=runs, compute=config["compute"], scales=scales, skipped=skipped)


def scale_horizons(entry: Mapping[str, Any], index: int, config: Mapping[str, Any],
                   reference_tokens: int) -> tuple[list[int], Schedule | None, str | None]:
    """(token budgets in increasing order, their schedule, a problem or None) of ``scales[index]``.

    The budgets are the scale's ``horizon_tokens``, else its ``horizons`` (tokens per parameter
    of n_target), else the study's ``horizons.tokens_per_param``; none: ``([], None, None)``.
    The warm-up is ``training.warmup_fraction`` of the reference budget's steps (the scale's
    tokens / tokens_per_param), so adding a horizon never changes a branch already trained."""
    where = f"scales[{index}] '{entry['name']}'"
    if entry.get("horizons") and entry.get("horizon_tokens"):
        return [], None, f"{where}: give horizons or horizon_tokens, not both"
    n = int(entry["n_target"])
    if entry.get("horizon_tokens"):
        budgets = [int(t) for t in entry["horizon_tokens"]]
    else:
        per_param = entry.get("horizons") or config["horizons"]["tokens_per_param"]
        budgets = [int(round(float(x) * n)) for x in per_param]
    if not budgets:
        return [], None, None
    budgets = sorted(set(budgets))
    tr, hz = config["training"], config["horizons"]
    seq, batch = int(tr["seq_length"]), int(tr["global_batch"])
    schedule = Schedule(
        warmup_steps=int(round(float(tr["warmup_fraction"]) * steps_for(reference_tokens, batch, seq))),
        decay_fraction=float(hz["decay_fraction"]),
        decay_style=str(hz["decay_style"]),
    )
    shortest = steps_for(budgets[0], batch, seq)
    if schedule.branch_step(shortest) < max(1, schedule.warmup_steps):
        return [], None, (
            f"{where}: the shortest horizon ({budgets[0]:,} tokens, {shortest} steps) leaves its stable phase at "
            f"step {schedule.branch_step(shortest)}, before the warm-up ends (step {schedule.warmup_steps}, "
            "training.warmup_fraction of the scale's tokens); drop that horizon, lower warmup_fraction or "
            "horizons.decay_fraction"
        )
    return budgets, schedule, None


def plan_totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Totals over the plan's rows (one per architecture; each trains ``n_seeds`` times, and with
    horizons one job per seed and horizon whose stable phase is shared: ``trained_tokens``)."""
    n = [int(r.get("n_seeds", 1)) for r in rows]
    jobs = [k * max(1, int(r.get("n_horizons") or 0)) for k, r in zip(n, rows)]
    return {
        "architectures": len(rows),
        "training_runs": sum(jobs),
        "train_flops": sum(k * r["train_flops"] for k, r in zip(n, rows)),
        "est_device_hours": sum(k * r["est_device_hours"] for k, r in zip(n, rows)),
        "tokens": sum(k * r.get("trained_tokens", r["tokens"]) for k, r in zip(n, rows)),
    }
