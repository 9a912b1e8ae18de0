"""Fixture records of a tiny study, built from the stage contracts (docs/pipeline.md).

The search and report stages consume ``results/runs.parquet``, ``results/fit/*.json`` /
``validation.parquet``, ``results/throughput/{arch}.json`` (+ ``cost_model.json``) and
``results/train/{arch}/curve.parquet``. These helpers write them for the default config's
plan, with losses from a known multiplicative law (so predictions can be checked) and
throughput from a known roofline (the cost model is calibrated by the real
``archscale.throughput.roofline.fit_cost_model``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from archscale.analysis.aggregate import throughput_columns
from archscale.arch import Architecture
from archscale.config import load_config
from archscale.io import write_json, write_parquet
from archscale.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
# A U-shaped law with interior optima (d/sqrtN* = 0.3, r* = 1.5) for the tiny scales.
LAW = {"a": [1.0, 0.2, 0.06], "b": [0.9, 0.04, 0.06]}
DEVICE = {"mem_bw_bytes_per_s": 5e9, "matmul_flops_per_s": 2e10, "dtype_bytes": 4}
SLOWDOWN, PREFILL_OVERHEAD, DECODE_OVERHEAD = 1.7, 2e-3, 4e-4


def factor(c, x):
    return c[0] + c[1] * math.log(x) + c[2] / x


def l_opt_of(n: int) -> float:
    return 3.0 + 40.0 / n**0.3


def true_loss(arch: Architecture, n_target: int) -> float:
    return factor(LAW["a"], arch.d_over_sqrt_n) * factor(LAW["b"], arch.mlp_attn_ratio) * l_opt_of(n_target)


def conditional_json(runs: pd.DataFrame, optimum: bool = True) -> dict:
    a, b = LAW["a"], LAW["b"]
    keys = runs.groupby(["n_target", "tokens"]).size().index
    return {
        "reference": "empirical",
        "r_range": [0.5, 5.0],
        "n_points": int(len(runs)),
        "forms": {
            "multiplicative": {
                "form": "multiplicative", "a": a, "b": b,
                "optimum": {
                    "d_over_sqrt_n": a[2] / a[1] if optimum else None, "d_over_sqrt_n_ci": [0.25, 0.35],
                    "r": b[2] / b[1] if optimum else None, "r_ci": [1.2, 1.8],
                },
                "mse": 1e-4, "spearman": 0.95,
            },
            "additive": {
                "form": "additive", "a": [0.5, a[1] * 3.5, a[2] * 3.5], "b": [0.0, b[1] * 3.5, b[2] * 3.5],
                "optimum": {"d_over_sqrt_n": a[2] / a[1], "d_over_sqrt_n_ci": [None, None], "r": b[2] / b[1], "r_ci": [None, None]},
                "mse": 2e-4, "spearman": 0.93,
            },
        },
        "l_opt": [{"n": int(n), "d": int(d), "l_opt": l_opt_of(int(n))} for n, d in keys],
        "chinchilla": None,
    }


def throughput_record(arch: Architecture, input_len: int, output_len: int, batch_sizes) -> dict:
    """A ``throughput/{arch}.json`` whose times are a known multiple of the roofline."""
    from archscale.throughput.roofline import roofline_times

    records = []
    for b in batch_sizes:
        pre, dec = roofline_times(arch, input_len, output_len, b, DEVICE["mem_bw_bytes_per_s"],
                                  DEVICE["matmul_flops_per_s"], DEVICE["dtype_bytes"])
        pre = SLOWDOWN * pre + PREFILL_OVERHEAD
        dec = SLOWDOWN * dec + DECODE_OVERHEAD * (output_len - 1)
        records.append({
            "batch_size": b, "input_len": input_len, "output_len": output_len, "prefill_latency_s": pre,
            "decode_s": dec, "decode_tokens_per_s": b * (output_len - 1) / dec,
            "output_tokens_per_s": b * output_len / (pre + dec), "total_tokens_per_s": b * (input_len + output_len) / (pre + dec),
            "repeats": [], "cv_output_tokens_per_s": 0.01, "peak_memory_bytes": 1 << 20, "energy_j": None,
            "energy_j_per_output_token": None, "power_mean_w": None, "power_peak_w": None,
        })
    return {
        "arch_id": arch.arch_id, "arch": arch.to_dict(), "engine": "megatron", "weights": "random", "device": "cpu",
        "device_name": "fixture-cpu", "precision": "fp32", "nvml_available": False, "cpu_model": "fixture-cpu",
        "roofline_device": dict(DEVICE), "records": records,
    }


def curve(arch: Architecture, tokens: int, final: float) -> pd.DataFrame:
    steps = np.arange(1, 21)
    t = steps * tokens / 20
    loss = final + 3.0 * (t / tokens) ** -0.5 - 3.0
    return pd.DataFrame({
        "step": steps, "tokens": t.astype(np.int64), "loss": loss, "lr": 1e-3, "grad_norm": 1.0,
        "valid_loss": np.where(steps % 10 == 0, loss + 0.02, np.nan), "elapsed_s": steps * 0.1,
    })


def write_study(root: Path, config_path: Path | str = REPO / "config" / "config.yaml", optimum: bool = True) -> dict:
    """Write plan, runs, fit, validation, throughput, cost model and curves under ``root``."""
    from archscale.throughput.roofline import fit_cost_model

    root = Path(root)
    config = load_config(config_path)
    plan = build_plan(config)
    tp = config["throughput"]
    rows, jobs = [], []
    for run in plan.runs.values():
        row = run.row(plan.compute)
        plan_columns = list(row)
        loss = true_loss(run.arch, run.scale.n_target)
        row.update(valid_loss=loss, final_train_loss=loss - 0.01, D=row["tokens"])
        rec = throughput_record(run.arch, tp["input_len"], tp["output_len"], tp["batch_sizes"])
        write_json(root / "results" / "throughput" / f"{run.arch_id}.json", rec)
        # runs.parquet carries the throughput columns as the aggregate stage writes them.
        row.update(throughput_columns(root / "results" / "throughput" / f"{run.arch_id}.json", run.arch_id, tp["batch_sizes"]))
        rows.append(row)
        jobs.append(rec)
        write_parquet(root / "results" / "train" / run.arch_id / "curve.parquet", curve(run.arch, run.tokens, loss))
    plan_df = pd.DataFrame(rows)[[c for c in rows[0] if c in plan_columns]]
    write_parquet(root / "results" / "plan" / "plan.parquet", plan_df)
    runs = pd.DataFrame(rows)
    write_parquet(root / "results" / "runs.parquet", runs)
    cond = conditional_json(runs, optimum=optimum)
    write_json(root / "results" / "fit" / "conditional.json", cond)
    write_json(root / "results" / "fit" / "chinchilla.json", {"fitted": False})
    # The fitting stage's own progressive validation on these runs (real schema and values).
    from archscale.law.validation import progressive_validation

    cond["columns"] = {"r": "mlp_attn_ratio"}
    write_json(root / "results" / "fit" / "conditional.json", cond)
    validation = progressive_validation(runs, columns=cond["columns"])
    write_parquet(root / "results" / "fit" / "validation.parquet", validation)
    cost = fit_cost_model(jobs)
    write_json(root / "results" / "throughput" / "cost_model.json", cost)
    return {"config": config, "plan": plan, "runs": runs, "conditional": cond, "cost_model": cost, "validation": validation}

