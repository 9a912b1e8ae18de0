"""Zero-shot downstream evaluation of exported models with lm-evaluation-harness.

Architecture selection, the harness call and the record; finding and resolving the tasks is
:mod:`archscale.eval_tasks`.

One job per trained architecture: the exported HF directory (:mod:`archscale.export`) is
evaluated with lm-evaluation-harness's ``hf`` model on the configured tasks, zero-shot, and the
record ``results/eval/{arch}.json`` keeps every metric lm-evaluation-harness reported plus one
*accuracy* per task (its primary metric, :data:`PRIMARY_METRIC`) and their mean.

Tasks are lm-evaluation-harness task names. A name defined by a YAML under one of the
``include_path`` directories (``resources/eval`` by default) is a local task: its relative
``data_files`` are resolved against the YAML's directory and the config is handed over inline,
so it runs from files in the repository without network. Other names must be tasks of
lm-evaluation-harness's registry (the paper's nine, :data:`PAPER_TASKS`), whose datasets come
from the Hugging Face hub at run time.

Which architectures are evaluated (``evaluate.architectures``): ``all`` trained architectures
of the plan, or a list of selectors, each an explicit architecture's name (``llama-3.2-1b``), an
architecture id, or a scale name (every architecture of that scale). The search's Panda and
Surefire picks are predictions of the fitted law, not trained models: to evaluate them, add them
to the config as explicit architectures (they are then trained like the baselines).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

from .config import schema_default
from .eval_tasks import EvaluationError, resolve_tasks, unknown_task_message
from .provenance import versions

#: The metric reported as a task's accuracy (the paper does not name them: these are the usual
#: choices of lm-evaluation-harness reports; ``evaluate.metrics`` overrides them per task).
PRIMARY_METRIC = {
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "lambada_openai": "acc",
    "hellaswag": "acc_norm",
    "openbookqa": "acc_norm",
    "piqa": "acc_norm",
    "sciq": "acc",
    "winogrande": "acc",
    "coqa": "f1",
}
#: For any other task: the first of these it reports.
FALLBACK_METRICS = ("acc", "acc_norm", "exact_match", "em", "f1")


# ---- which architectures ------------------------------------------------------------------
def select_architectures(spec: str | list[str], archs: Iterable, key: str = "evaluate.architectures") -> list[str]:
    """Architecture ids selected by ``spec`` (``evaluate.architectures`` or ``export.architectures``)
    among the plan's architectures, in plan order.

    ``archs``: :class:`archscale.arch.Architecture` objects (the plan's, in plan order); ``key``
    names the config key in errors.
    """
    archs = list(archs)
    if spec == "all":
        return [a.arch_id for a in archs]
    if isinstance(spec, str):
        spec = [spec]
    chosen: list[str] = []
    for sel in spec:
        by_name = [a.arch_id for a in archs if a.name and a.name == sel]
        by_id = [a.arch_id for a in archs if a.arch_id == sel]
        by_scale = [a.arch_id for a in archs if a.scale == sel]
        hits = by_name or by_id or by_scale
        if not hits:
            names = sorted({a.name for a in archs if a.name})
            scales = sorted({a.scale for a in archs if a.scale})
            raise EvaluationError(
                f"{key}: '{sel}' is no architecture name, architecture id or scale of the plan "
                f"(names: {names[:12]}; scales: {scales}); use 'all' or one of these"
            )
        chosen += [h for h in hits if h not in chosen]
    return [a.arch_id for a in archs if a.arch_id in chosen]


def primary_metric(task: str, reported: Iterable[str], overrides: dict[str, str] | None = None) -> str:
    """The metric taken as ``task``'s accuracy among the metrics lm-evaluation-harness reported."""
    reported = list(reported)
    overrides = overrides or {}
    if task in overrides:
        if overrides[task] not in reported:
            raise EvaluationError(
                f"evaluate.metrics: task '{task}' reports {reported}, not '{overrides[task]}'"
            )
        return overrides[task]
    if task in PRIMARY_METRIC and PRIMARY_METRIC[task] in reported:
        return PRIMARY_METRIC[task]
    for m in FALLBACK_METRICS:
        if m in reported:
            return m
    raise EvaluationError(
        f"task '{task}' reports {reported}, none of {list(FALLBACK_METRICS)}: name its accuracy metric in "
        f"evaluate.metrics"
    )


# ---- running lm-evaluation-harness -------------------------------------------------------------
def model_args(model_dir: str | Path, dtype: str = "auto", max_length: int | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": dtype}
    if max_length:
        args["max_length"] = int(max_length)
    return args


def lm_eval_command(
    model_dir: str | Path,
    tasks: list[str],
    include_paths: Iterable[str | Path] = (),
    limit: int | float | None = None,
    batch_size: int | str = 1,
    device: str = "cpu",
    num_fewshot: int = 0,
    seed: int = 1234,
) -> list[str]:
    """The lm-evaluation-harness command line equivalent to :func:`run_lm_eval` (logged and
    recorded, so a result can be reproduced outside the workflow)."""
    args = ",".join(f"{k}={v}" for k, v in model_args(model_dir).items())
    cmd = ["lm_eval", "--model", "hf", "--model_args", args, "--tasks", ",".join(tasks),
           "--num_fewshot", str(num_fewshot), "--batch_size", str(batch_size), "--device", device,
           "--seed", str(seed)]
    paths = [str(p) for p in include_paths]
    if paths:
        cmd += ["--include_path", ",".join(paths)] if len(paths) > 1 else ["--include_path", paths[0]]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def run_lm_eval(
    model_dir: str | Path,
    specs: list,
    *,
    include_paths: Iterable[str | Path] = (),
    limit: int | float | None = None,
    num_fewshot: int = 0,
    batch_size: int | str = 1,
    device: str = "cpu",
    seed: int = 1234,
    offline: bool = False,
) -> dict:
    """``lm_eval.simple_evaluate`` on the exported directory; returns its results dict."""
    if offline:
        # Everything is local (model directory, task files): never reach for the hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    import lm_eval
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_paths] or None
    names = [s["task"] if isinstance(s, dict) else s for s in specs]
    # Only local tasks: lm-evaluation-harness's own registry need not be indexed.
    manager = TaskManager(include_path=paths, include_defaults=any(isinstance(s, str) for s in specs))
    unknown = [n for s, n in zip(specs, names) if isinstance(s, str) and n not in manager.all_tasks]
    if unknown:
        raise EvaluationError(unknown_task_message(unknown[0], include_paths or []))
    return lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args(model_dir),
        tasks=list(specs),
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=device,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=1000,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def parse_metrics(task_results: dict) -> dict[str, float | None]:
    """``{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}`` -> ``{"acc": 0.5, "acc_stderr": 0.1}``
    (filter ``none`` preferred; other filters keep their suffix)."""
    out: dict[str, float | None] = {}
    for key, value in task_results.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric}[{filt}]"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = None if (isinstance(value, float) and math.isnan(value)) else float(value)
        elif value == "N/A":
            out[name] = None
    return out


def summarise(raw: dict, tasks: list[str], metrics: dict[str, str] | None = None) -> dict[str, Any]:
    """Per task: every metric, the primary metric, its value as ``accuracy``, sample count;
    plus the mean accuracy over the tasks."""
    results = raw.get("results", {})
    n_samples = raw.get("n-samples", {})
    per_task: dict[str, Any] = {}
    for task in tasks:
        if task not in results:
            raise EvaluationError(f"lm-evaluation-harness returned no result for task '{task}' (got {sorted(results)})")
        values = parse_metrics(results[task])
        reported = [m for m in values if not m.endswith("_stderr") and "[" not in m]
        metric = primary_metric(task, reported, metrics)
        n = n_samples.get(task, {})
        per_task[task] = {
            "metrics": values,
            "primary_metric": metric,
            "accuracy": values[metric],
            "accuracy_stderr": values.get(f"{metric}_stderr"),
            "n_samples": n.get("effective"),
            "n_samples_total": n.get("original"),
            "version": raw.get("versions", {}).get(task),
        }
    accs = [t["accuracy"] for t in per_task.values()]
    average = float(sum(accs) / len(accs)) if accs and all(a is not None for a in accs) else None
    return {"tasks": per_task, "average_accuracy": average}


def evaluate_model(
    arch_id: str,
    model_dir: str | Path,
    spec: dict[str, Any],
    hardware: dict[str, Any] | None = None,
    log=print,
) -> dict[str, Any]:
    """Evaluate one exported model; returns the record of ``results/eval/{arch}.json``.

    ``spec`` (the rule's params: what changes the result): ``tasks``, ``include_path``,
    ``limit``, ``num_fewshot``, ``metrics``, ``seed``. ``hardware`` (not part of the identity):
    ``batch_size``, ``device`` (``auto``: cuda when available), ``threads``.
    """
    import torch

    hardware = dict(hardware or {})
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise EvaluationError(f"{model_dir}: not an exported model directory (config.json missing)")
    tasks = list(spec["tasks"])
    include = [str(p) for p in spec.get("include_path") or []]
    specs, local = resolve_tasks(tasks, include)
    hardware = {**{k: schema_default(f"evaluate.{k}") for k in ("device", "batch_size")}, **hardware}
    spec = {**{k: schema_default(f"evaluate.{k}") for k in ("num_fewshot", "seed", "limit")}, **spec}
    device = hardware["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and hardware.get("threads"):
        torch.set_num_threads(int(hardware["threads"]))
    batch_size = hardware["batch_size"]
    num_fewshot = int(spec["num_fewshot"])
    seed = int(spec["seed"])
    limit = spec["limit"]
    cmd = lm_eval_command(model_dir, tasks, include, limit, batch_size, device, num_fewshot, seed)
    log(f"[archscale] evaluate {arch_id}: {' '.join(cmd)}")
    if len(local) < len(tasks):
        log(f"[archscale] tasks {[t for t in tasks if t not in local]} download their datasets from the Hugging Face hub")
    t0 = time.perf_counter()
    raw = run_lm_eval(model_dir, specs, include_paths=include, limit=limit, num_fewshot=num_fewshot,
                      batch_size=batch_size, device=device, seed=seed, offline=len(local) == len(tasks))
    wall = time.perf_counter() - t0
    summary = summarise(raw, tasks, spec.get("metrics") or {})
    for task, r in summary["tasks"].items():
        log(f"[archscale]   {task}: {r['primary_metric']} = {r['accuracy']:.4f} (n = {r['n_samples']})")
    record = {
        "arch_id": arch_id,
        "model_dir": str(model_dir),
        "tasks": summary["tasks"],
        "task_names": tasks,
        "average_accuracy": summary["average_accuracy"],
        "num_fewshot": num_fewshot,
        "limit": limit,
        "seed": seed,
        "command": cmd,
        "device": device,
        "batch_size": batch_size,
        "wall_time_s": wall,
        "versions": versions("lm-eval", "transformers", "torch", "datasets", "archscale"),
    }
    return record


# ---- into runs.parquet and the report -----------------------------------------------------------
def column_name(task: str) -> str:
    """Column of a task's accuracy in runs.parquet: ``acc_<task>`` (non-identifier characters -> _)."""
    return "acc_" + re.sub(r"[^A-Za-z0-9_]", "_", task)


AVERAGE_COLUMN = "acc_avg"


def accuracy_columns(record: dict) -> dict[str, Any]:
    """One row of accuracies for runs.parquet: arch_id, acc_<task> per task, acc_avg, eval_tasks."""
    row: dict[str, Any] = {"arch_id": record["arch_id"]}
    for task, r in record["tasks"].items():
        row[column_name(task)] = r["accuracy"]
    row[AVERAGE_COLUMN] = record["average_accuracy"]
    row["eval_tasks"] = ",".join(record["task_names"])
    row["eval_limit"] = record["limit"]
    return row


def accuracy_table(paths: Iterable[str | Path]):
    """DataFrame of :func:`accuracy_columns` over eval records (left-join it on ``arch_id``)."""
    import pandas as pd

    from .io import read_json

    rows = [accuracy_columns(read_json(p)) for p in paths]
    if not rows:
        return pd.DataFrame({"arch_id": pd.Series(dtype=str)})
    return pd.DataFrame(rows)


def accuracy_columns_of(frame) -> list[str]:
    """The task accuracy columns of a runs table (without the average)."""
    return [c for c in frame.columns if c.startswith("acc_") and c != AVERAGE_COLUMN]


def plot_accuracy_vs_loss(runs, path: str | Path, loss_column: str = "valid_loss") -> Path | None:
    """Accuracy against loss, one panel per task plus the average, a point per evaluated run.
    Returns None (and writes nothing) when the runs carry no accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    if AVERAGE_COLUMN not in runs.columns or runs[AVERAGE_COLUMN].notna().sum() == 0:
        return None
    cols = accuracy_columns_of(runs) + [AVERAGE_COLUMN]
    n = len(cols)
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    scales = sorted(runs["scale"].dropna().unique()) if "scale" in runs.columns else [None]
    for ax, col in zip(axes.flat, cols):
        for scale in scales:
            sub = runs if scale is None else runs[runs["scale"] == scale]
            sub = sub[sub[col].notna()]
            ax.scatter(sub[loss_column], 100 * sub[col], s=14, label=scale)
        ax.set_title("average" if col == AVERAGE_COLUMN else col[4:], fontsize=9)
        ax.set_xlabel(loss_column, fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if scales != [None]:
        axes.flat[0].legend(fontsize=7, title="scale", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path
