"""Aggregate every per-architecture record into ``results/runs.parquet``.

Length (~400 lines): the declared runs.parquet schema and its one builder; the record readers
live in archscale.records.

One row per training run (an architecture at one seed; ``run_id`` and ``seed`` columns, the
run id being the arch id for the base seed -- archscale.plan.run_id): its shape (from the plan),
its training result (``results/train/{run}/metrics.json`` and ``curve.parquet``) and the
inference throughput measured once per architecture (``results/throughput/{arch}.json``, the
same on every seed's row), flattened per batch size into columns ``<field>_bs<b>``. Evaluation
accuracies belong to the architecture's primary run (the one exported) and sit on its row only. The schema is declared (:func:`runs_schema`), so a record that is
missing, unreadable, lacks a field or has a wrong type is an error naming the file and
the key, never a silent gap. Provenance (config hash, code version, hardware) is stored in
the Parquet schema metadata under ``archscale.provenance`` (read it with :func:`read_runs`).
Column meanings are documented in docs/pipeline.md.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from numbers import Real
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..config import stable_hash
from ..records import THROUGHPUT_FIELDS, RecordError, ThroughputRecord, TrainingRecord, read_record

SCHEMA_VERSION = 1
PROVENANCE_KEY = b"archscale.provenance"

# (column, type, nullable, source) of the per-architecture part of the table.
BASE_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("run_id", pa.string(), False),
    ("arch_id", pa.string(), False),
    ("seed", pa.int64(), True),
    ("sweeps", pa.string(), True),
    ("scale", pa.string(), False),
    ("name", pa.string(), True),
    ("layers", pa.int64(), False),
    ("d_model", pa.int64(), False),
    ("heads", pa.int64(), False),
    ("kv_heads", pa.int64(), False),
    ("head_dim", pa.int64(), False),
    ("ffn", pa.int64(), False),
    ("gqa", pa.int64(), False),
    ("vocab", pa.int64(), False),
    ("tied", pa.bool_(), False),
    ("n_target", pa.int64(), False),
    ("params_non_embedding", pa.int64(), False),
    ("params_total", pa.int64(), False),
    ("tokens", pa.int64(), False),
    ("schedule", pa.string(), False),
    ("D", pa.int64(), False),
    ("mlp_attn_ratio", pa.float64(), False),
    ("d_over_sqrt_n", pa.float64(), False),
    ("train_flops", pa.float64(), False),
    ("kv_cache_bytes_per_token", pa.int64(), True),
    ("inference_flops_per_token", pa.float64(), True),
    ("valid_loss", pa.float64(), False),
    ("final_train_loss", pa.float64(), False),
    ("curve_final_loss", pa.float64(), True),
    ("curve_points", pa.int64(), False),
    ("steps", pa.int64(), False),
    ("wall_time_s", pa.float64(), True),
    ("tokens_per_s", pa.float64(), False),
    ("achieved_flops_per_s", pa.float64(), True),
    ("mfu", pa.float64(), True),
    ("train_device", pa.string(), False),
    ("precision", pa.string(), False),
    ("world_size", pa.int64(), False),
    ("resumed_from_step", pa.int64(), True),
    ("recipe_hash", pa.string(), True),
    ("torch_version", pa.string(), True),
    ("megatron_core_version", pa.string(), True),
    ("train_archscale_version", pa.string(), True),
    ("throughput_engine", pa.string(), False),
    ("throughput_weights", pa.string(), True),
    ("throughput_device", pa.string(), False),
    ("throughput_device_name", pa.string(), True),
    ("cpu_model", pa.string(), True),
    ("nvml_available", pa.bool_(), False),
    ("input_len", pa.int64(), False),
    ("output_len", pa.int64(), False),
]

# Per batch size b: column "<field>_bs<b>" for each field of records.THROUGHPUT_FIELDS.
PATH_FIELDS: list[tuple[str, pa.DataType, bool]] = [
    ("metrics_path", pa.string(), False),
    ("curve_path", pa.string(), False),
    ("throughput_path", pa.string(), False),
]

CURVE_COLUMNS = ("step", "tokens", "loss")

# Zero-shot accuracies (results/eval/{arch}.json, optional): acc_<task> columns come from the
# records (archscale.evaluate.accuracy_columns); these are always declared, null when not evaluated.
EVAL_FIELDS: list[tuple[str, pa.DataType]] = [
    ("acc_avg", pa.float64()),
    ("eval_tasks", pa.string()),
    ("eval_limit", pa.int64()),
]


def batch_column(field: str, batch_size: int) -> str:
    """The runs-table column of a per-batch throughput figure (``output_tokens_per_s_bs64``)."""
    return f"{field}_bs{int(batch_size)}"


def table_batch_sizes(columns: Iterable[str]) -> list[int]:
    """The throughput batch sizes a runs table has columns for."""
    prefix = batch_column("output_tokens_per_s", 0)[:-1]
    return sorted(int(c[len(prefix):]) for c in columns if c.startswith(prefix) and c[len(prefix):].isdigit())


def runs_schema(batch_sizes: Iterable[int], eval_columns: Iterable[str] = ()) -> pa.Schema:
    """The declared schema of runs.parquet for these throughput batch sizes (and accuracy columns)."""
    fields = [pa.field(n, t, nullable=nl) for n, t, nl in BASE_FIELDS]
    for b in sorted(set(int(b) for b in batch_sizes)):
        fields += [pa.field(batch_column(n, b), t, nullable=nl) for n, t, nl in THROUGHPUT_FIELDS]
    fields += [pa.field(c, pa.float64(), nullable=True) for c in sorted(eval_columns)]
    fields += [pa.field(n, t, nullable=True) for n, t in EVAL_FIELDS]
    fields += [pa.field(n, t, nullable=nl) for n, t, nl in PATH_FIELDS]
    return pa.schema(fields)


# ---- columns from the records ------------------------------------------------------------
ARCH_KEYS = ("layers", "d_model", "heads", "kv_heads", "head_dim", "ffn")


def _check_arch(rec: TrainingRecord, plan_row: dict) -> None:
    for key in ARCH_KEYS:
        if key in rec.arch and int(rec.arch[key]) != int(plan_row[key]):
            raise RecordError(
                f"{rec.where}: arch.{key} = {rec.arch[key]} but the plan has {plan_row[key]} for {plan_row['arch_id']}; "
                "the record is stale, re-run its job"
            )


def _record_seed(rec: TrainingRecord, planned: dict | None, metrics_path: Path) -> int | None:
    """The seed the run trained with (its recipe's); the plan's seed of the run must agree."""
    seed = rec.recipe.get("seed") if isinstance(rec.recipe, dict) else None
    want = None if planned is None else planned.get("seed")
    if want is not None and seed is not None and int(seed) != int(want):
        raise RecordError(f"{metrics_path}: recipe.seed = {seed} but the plan trains run "
                          f"'{planned['run_id']}' at seed {want}; the record is stale, re-run its job")
    return int(seed) if seed is not None else want


def train_columns(metrics_path: Path, plan_row: dict, planned_run: dict | None = None) -> dict[str, Any]:
    """Columns from metrics.json and the curve.parquet next to it (``planned_run``: the plan's
    typed row of the run -- run id, seed, tokens -- when known)."""
    metrics_path = Path(metrics_path)
    rec = TrainingRecord.read(metrics_path)
    if rec.arch_id != plan_row["arch_id"]:
        raise RecordError(f"{metrics_path}: arch_id '{rec.arch_id}' does not match '{plan_row['arch_id']}'")
    _check_arch(rec, plan_row)
    cols = {
        "seed": _record_seed(rec, planned_run, metrics_path),
        "tokens": int(rec.tokens_budget if rec.tokens_budget is not None else plan_row["tokens"]),
        "schedule": rec.schedule or "cosine",
        "D": rec.tokens_seen,
        "valid_loss": rec.valid_loss,
        "final_train_loss": rec.final_train_loss,
        "steps": rec.steps,
        "wall_time_s": rec.wall_time_s,
        "tokens_per_s": rec.tokens_per_s,
        "achieved_flops_per_s": rec.achieved_flops_per_s,
        "mfu": rec.mfu,
        "train_device": rec.device,
        "precision": rec.precision,
        "world_size": rec.world_size,
        "resumed_from_step": rec.resumed_from_step,
        "recipe_hash": stable_hash(rec.recipe) if rec.recipe is not None else None,
        "torch_version": rec.versions["torch"],
        "megatron_core_version": rec.versions["megatron_core"],
        "train_archscale_version": rec.versions["archscale"],
    }
    curve_path = metrics_path.parent / "curve.parquet"
    cols.update(curve_columns(curve_path))
    cols["metrics_path"] = str(metrics_path)
    cols["curve_path"] = str(curve_path)
    return cols


def curve_columns(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: loss curve is missing (did the train job finish?)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise RecordError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in CURVE_COLUMNS if c not in table.column_names]
    if missing:
        raise RecordError(f"{path}: loss curve lacks column(s) {missing} (has {table.column_names})")
    if table.num_rows == 0:
        raise RecordError(f"{path}: loss curve has no rows")
    loss = [v for v in table.column("loss").to_pylist() if v is not None and math.isfinite(v)]
    return {"curve_points": int(table.num_rows), "curve_final_loss": float(loss[-1]) if loss else None}


def throughput_columns(path: Path, arch_id: str, batch_sizes: Iterable[int]) -> dict[str, Any]:
    """Columns from throughput/{arch}.json, one group per expected batch size."""
    path = Path(path)
    rec = ThroughputRecord.read(path)
    if rec.arch_id != arch_id:
        raise RecordError(f"{path}: arch_id '{rec.arch_id}' does not match '{arch_id}'")
    cols: dict[str, Any] = {
        "throughput_engine": rec.engine,
        "throughput_weights": rec.weights,
        "throughput_device": rec.device,
        "throughput_device_name": rec.device_name,
        "cpu_model": rec.cpu_model,
        "nvml_available": rec.nvml_available,
        "input_len": rec.input_len,
        "output_len": rec.output_len,
        "throughput_path": str(path),
    }
    for bs in sorted(set(int(b) for b in batch_sizes)):
        cols.update({batch_column(name, bs): value for name, value in rec.at(bs).items()})
    return cols


# ---- provenance and the table -------------------------------------------------------------
def git_commit(start: Path | None = None) -> str | None:
    """The git commit of the code (with '-dirty' when the tracked tree differs), or None."""
    cwd = Path(start or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def provenance(rows: list[dict], config: dict | None, run_name: str | None, batch_sizes) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_name": run_name,
        "config_hash": stable_hash(config) if config is not None else None,
        "code_version": {"archscale": __version__, "git_commit": git_commit()},
        "hardware": {
            "train_devices": sorted({r["train_device"] for r in rows}),
            "throughput_devices": sorted({r["throughput_device"] for r in rows}),
            "cpu_models": sorted({r["cpu_model"] for r in rows if r.get("cpu_model")}),
            "nvml_available": sorted({bool(r["nvml_available"]) for r in rows}),
            "aggregated_on": {"machine": platform.machine(), "python": platform.python_version()},
        },
        "n_runs": len(rows),
        "batch_sizes": sorted(set(int(b) for b in batch_sizes)),
    }


def _plan_rows(plan_path: Path) -> dict[str, dict]:
    plan_path = Path(plan_path)
    if not plan_path.exists():
        raise RecordError(f"{plan_path}: the plan is missing (run the plan rule)")
    rows = pq.read_table(plan_path).to_pylist()
    need = ["arch_id", "scale", "n_target", "params_non_embedding", "params_total", "tokens",
            "mlp_attn_ratio", "d_over_sqrt_n", "train_flops", *ARCH_KEYS, "gqa", "vocab", "tied"]
    if rows:
        missing = [c for c in need if c not in rows[0]]
        if missing:
            raise RecordError(f"{plan_path}: plan lacks column(s) {missing}")
    return {r["arch_id"]: r for r in rows}


def seed_spread(runs, value: str = "valid_loss", by: str = "arch_id"):
    """Per ``by`` group: mean, sample standard deviation (NaN with one seed), min, max and the
    number of seeds of ``value`` -- the seed noise next to each architecture's result."""
    g = runs.groupby(by, sort=False)[value]
    out = g.agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n_seeds"})
    return out.reset_index()


def _architectures_of_runs(metrics: dict[str, Path], planned_runs: dict[str, dict], plan: dict,
                           plan_path) -> dict[str, str]:
    """run id -> architecture: the plan's typed run when given, a run named by its arch id, else
    the record's; every one must be in the plan."""
    arch_of = {run: planned_runs[run]["arch_id"] if run in planned_runs
               else run if run in plan else TrainingRecord.read(path).arch_id
               for run, path in metrics.items()}
    for run, arch in arch_of.items():
        if arch not in plan:
            raise RecordError(f"{metrics[run]}: architecture '{arch}' of run '{run}' is not in the plan {plan_path}")
    return arch_of


def aggregate_runs(
    plan_path: str | Path,
    metrics_paths: Iterable[str | Path],
    throughput_paths: Iterable[str | Path],
    *,
    batch_sizes: Iterable[int] | None = None,
    config: dict | None = None,
    run_name: str | None = None,
    eval_paths: Iterable[str | Path] = (),
    train_runs: Iterable[dict] | None = None,
) -> pa.Table:
    """Build the runs table (see the module docstring).

    ``metrics_paths`` are ``.../{run}/metrics.json`` (one per seed run) and ``throughput_paths``
    ``.../{arch}.json`` (one per architecture); every trained architecture must have exactly one
    throughput record. ``batch_sizes`` are the
    expected throughput batch sizes (default: those of the first record; every record
    must then have the same ones). ``eval_paths`` are optional ``.../eval/{arch}.json``
    records whose accuracies are joined on ``arch_id`` (null for runs not evaluated).
    """
    plan = _plan_rows(plan_path)
    metrics = {Path(p).parent.name: Path(p) for p in metrics_paths}
    through = {Path(p).stem: Path(p) for p in throughput_paths}
    planned_runs = {r["run_id"]: r for r in (train_runs or [])}
    arch_of = _architectures_of_runs(metrics, planned_runs, plan, plan_path)
    if set(arch_of.values()) != set(through):
        only_m = sorted(set(arch_of.values()) - set(through))
        only_t = sorted(set(through) - set(arch_of.values()))
        raise RecordError(
            f"training and throughput records do not cover the same architectures: "
            f"without throughput record {only_m}, without training record {only_t}"
        )
    if not metrics:
        raise RecordError("no run records to aggregate")
    if batch_sizes is None:
        batch_sizes = ThroughputRecord.read(through[sorted(through)[0]]).batch_sizes
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    rows = []
    for run in sorted(metrics):
        arch = arch_of[run]
        p = plan[arch]
        row: dict[str, Any] = {
            "run_id": run,
            "arch_id": arch,
            "sweeps": p.get("sweeps") or None,
            "scale": str(p["scale"]),
            "name": p.get("name") or None,
            "n_target": int(p["n_target"]),
            "params_non_embedding": int(p["params_non_embedding"]),
            "params_total": int(p["params_total"]),
            "mlp_attn_ratio": float(p["mlp_attn_ratio"]),
            "d_over_sqrt_n": float(p["d_over_sqrt_n"]),
            "train_flops": float(p["train_flops"]),
            "kv_cache_bytes_per_token": _opt_int(p.get("kv_cache_bytes_per_token")),
            "inference_flops_per_token": _opt_float(p.get("inference_flops_per_token")),
            "gqa": int(p["gqa"]),
            "vocab": int(p["vocab"]),
            "tied": bool(p["tied"]),
            **{k: int(p[k]) for k in ARCH_KEYS},
        }
        row.update(train_columns(metrics[run], p, planned_runs.get(run)))
        row.update(throughput_columns(through[arch], arch, batch_sizes))
        rows.append(row)
    acc = eval_columns(eval_paths, set(arch_of.values()))
    task_cols = sorted({c for r in acc.values() for c in r} - {n for n, _ in EVAL_FIELDS})
    for row in rows:
        # an evaluation is of the exported (primary) run's weights: on that row only
        primary = plan[row["arch_id"]].get("primary_run_id") or row["arch_id"]
        extra = acc.get(row["arch_id"], {}) if row["run_id"] == primary else {}
        row.update({c: extra.get(c) for c in task_cols})
        row.update({n: extra.get(n) for n, _ in EVAL_FIELDS})
    schema = runs_schema(batch_sizes, task_cols)
    prov = provenance(rows, config, run_name, batch_sizes)
    prov["evaluated_runs"] = len(acc)
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.replace_schema_metadata({PROVENANCE_KEY: json.dumps(prov, sort_keys=True).encode()})


def eval_columns(paths: Iterable[str | Path], arch_ids: set[str]) -> dict[str, dict[str, Any]]:
    """arch_id -> accuracy columns of each eval record (archscale.evaluate.accuracy_columns)."""
    out: dict[str, dict[str, Any]] = {}
    paths = [Path(p) for p in paths]
    if not paths:
        return out
    from ..evaluate import accuracy_columns

    for path in paths:
        rec = read_record(path)
        try:
            cols = accuracy_columns(rec)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecordError(f"{path}: malformed evaluation record ({type(exc).__name__}: {exc})") from None
        arch = cols.pop("arch_id")
        if arch != path.stem or arch not in arch_ids:
            raise RecordError(f"{path}: arch_id '{arch}' does not match the file name or is not a trained run")
        for key, value in cols.items():
            if key.startswith("acc_") and value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
                raise RecordError(f"{path}: accuracy '{key}' must be a number, got {value!r}")
        out[arch] = cols
    return out


def _opt_int(v):
    return None if v is None else int(v)


def _opt_float(v):
    return None if v is None else float(v)


def read_runs(path: str | Path):
    """(DataFrame, provenance dict) of a runs.parquet written by :func:`aggregate_runs`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: runs table is missing (run the aggregate rule)")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    prov = json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else None
    return table.to_pandas(), prov
