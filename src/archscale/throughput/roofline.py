"""Analytic inference cost (a roofline), calibrated per device on the measured jobs.

One forward step takes ``max(bytes / bandwidth, flops / peak)``:

* decode step at KV length T (batch B): bytes = weights (non-embedding + output layer) +
  B*T*KV bytes per token (keys and values read) + the new keys and values written;
  flops = B*(2N + 2*L*T*d_q + 2*V*d) (method.md section 4 plus the logits);
* prefill of S prompt tokens: bytes = weights + B*S*KV bytes written; flops =
  B*(2N*S + L*d_q*S*(S+1)) + B*2*V*d (only the last position's logits are computed).

Bandwidth and peak are measured on the device in each throughput job
(:func:`measure_device`). The roofline is an ideal; :func:`fit_cost_model` calibrates a
per-device scale and an overhead per step (a constant plus a per-layer term: kernel launches,
Python), separately for prefill and decode, by non-negative least squares on the measured jobs:
``t_measured = scale * t_roofline + overhead + overhead_per_layer * layers``. It then reports how well the calibrated model
ranks the measured architectures (Spearman, within each batch size and over all points), so
the search can rank architectures that were never measured, and knows how far to trust it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from statistics import fmean

from ..arch import Architecture
from ..cost import inference_flops_per_token, logits_flops_per_token
from ..ranks import spearman


# ---- analytic costs -----------------------------------------------------------------
def weight_bytes(arch: Architecture, dtype_bytes: int) -> int:
    """Weights read per forward step: the non-embedding weights and the output layer.

    The input embedding is a gather of B rows (negligible); the output layer (tied or not)
    is read whole for the logits.
    """
    return (arch.params_non_embedding + arch.vocab * arch.d_model) * dtype_bytes


def kv_bytes_per_token(arch: Architecture, dtype_bytes: int) -> int:
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes


def decode_step_cost(arch: Architecture, batch: int, context: int, dtype_bytes: int) -> tuple[float, float]:
    """(bytes, flops) of one decode step with ``context`` tokens already in the KV cache."""
    kv = kv_bytes_per_token(arch, dtype_bytes)
    nbytes = weight_bytes(arch, dtype_bytes) + batch * (context + 1) * kv
    flops = batch * (inference_flops_per_token(arch, context + 1) + logits_flops_per_token(arch))
    return float(nbytes), float(flops)


def prefill_cost(arch: Architecture, batch: int, input_len: int, dtype_bytes: int) -> tuple[float, float]:
    """(bytes, flops) of the prefill forward over ``input_len`` prompt tokens."""
    s = input_len
    nbytes = weight_bytes(arch, dtype_bytes) + batch * s * kv_bytes_per_token(arch, dtype_bytes)
    flops = batch * (2.0 * arch.params_non_embedding * s + arch.layers * arch.q_width * s * (s + 1))
    flops += batch * logits_flops_per_token(arch)
    return float(nbytes), float(flops)


def roofline_times(
    arch: Architecture,
    input_len: int,
    output_len: int,
    batch: int,
    mem_bw: float,
    peak_flops: float,
    dtype_bytes: int,
) -> tuple[float, float]:
    """Ideal (prefill seconds, seconds of the ``output_len - 1`` decode steps)."""
    if mem_bw <= 0 or peak_flops <= 0:
        raise ValueError(f"bandwidth and peak FLOP/s must be positive (got {mem_bw}, {peak_flops})")
    b, f = prefill_cost(arch, batch, input_len, dtype_bytes)
    prefill = max(b / mem_bw, f / peak_flops)
    decode = 0.0
    for step in range(1, output_len):
        b, f = decode_step_cost(arch, batch, input_len + step - 1, dtype_bytes)
        decode += max(b / mem_bw, f / peak_flops)
    return prefill, decode


# ---- device measurement ---------------------------------------------------------------
def measure_device(device: str = "cpu", dtype=None, mem_bytes: int | None = None, matmul_n: int | None = None,
                   repeats: int = 5) -> dict:
    """Memory bandwidth (copy) and dense matmul FLOP/s of ``device``, best of ``repeats``.

    Bandwidth counts the bytes read plus written by ``dst.copy_(src)`` on a buffer far larger
    than the last-level cache; FLOP/s is ``2 n^3`` per square matmul in the inference dtype.
    """
    import torch

    on_gpu = device == "cuda"
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    mem_bytes = mem_bytes or (1 << 30 if on_gpu else 1 << 27)
    matmul_n = matmul_n or (8192 if on_gpu else 1024)

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    def best(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return min(times)

    elem = torch.empty((), dtype=dtype).element_size()
    src = torch.ones(mem_bytes // elem, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    t_copy = best(lambda: dst.copy_(src))
    del src, dst
    a = torch.randn(matmul_n, matmul_n, device=device).to(dtype)
    b = torch.randn(matmul_n, matmul_n, device=device).to(dtype)
    t_mm = best(lambda: torch.mm(a, b))
    return {
        "mem_bw_bytes_per_s": 2.0 * mem_bytes / t_copy,
        "matmul_flops_per_s": 2.0 * matmul_n**3 / t_mm,
        "dtype_bytes": elem,
        "threads": torch.get_num_threads(),
        "copy_bytes": mem_bytes,
        "matmul_n": matmul_n,
    }


# ---- calibration ----------------------------------------------------------------------
def _nnls_fit(roof: list[float], layers: list[int], y: list[float]) -> dict:
    """``y = scale*roof + overhead + overhead_per_layer*layers``, all coefficients >= 0 (scipy's NNLS).

    The per-layer term is the launch/Python cost that grows with depth; where every point has
    the same depth it is not identifiable and NNLS leaves it at zero or shares it with the
    constant (their sum is what predictions at that depth use).
    """
    import numpy as np
    from scipy.optimize import nnls

    a = np.column_stack([np.asarray(roof, float), np.ones(len(roof)), np.asarray(layers, float)])
    col_scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # NNLS on comparable columns
    coef, _ = nnls(a / col_scale, np.asarray(y, float))
    coef = coef / col_scale
    return {"scale": float(coef[0]), "overhead_s": float(coef[1]), "overhead_per_layer_s": float(coef[2])}


def device_key(record: dict) -> str:
    return f"{record['device_name']} ({record['precision']})"


def decode_roofline_s(arch: Architecture, context: int, steps: int, batch: int, dev: dict) -> float:
    """Ideal seconds of ``steps`` decode steps from KV length ``context`` (decode_at_context)."""
    return roofline_times(arch, context, steps + 1, batch, dev["mem_bw_bytes_per_s"], dev["matmul_flops_per_s"],
                          dev["dtype_bytes"])[1]


def _points(job: dict) -> list[dict]:
    """One calibration point per batch size: the medians of the timed repeats (means for records
    without them), in the record's mode."""
    from ..records import with_medians

    arch = Architecture.from_dict(job["arch"])
    dev = job["roofline_device"]
    out = []
    for rec in job["records"]:
        r = with_medians(rec, f"{job['arch_id']} batch {rec['batch_size']}")
        mode, context = rec.get("mode", "prefill+decode"), rec.get("context")
        prefill_r, decode_r = roofline_times(
            arch, max(rec["input_len"], 1), rec["output_len"], rec["batch_size"],
            dev["mem_bw_bytes_per_s"], dev["matmul_flops_per_s"], dev["dtype_bytes"],
        )
        steps = rec["output_len"] - 1
        if mode == "decode_at_context":  # output_len steps from KV length `context`, no prefill paid
            steps = rec["output_len"]
            decode_r = decode_roofline_s(arch, context, steps, rec["batch_size"], dev)
        measured_prefill = r["prefill_latency_s"] if rec["input_len"] > 0 else None
        out.append({
            "arch_id": job["arch_id"],
            "batch_size": rec["batch_size"],
            "input_len": rec["input_len"],
            "output_len": rec["output_len"],
            "mode": mode,
            "context": context,
            "layers": arch.layers,
            "roof_prefill_s": prefill_r,
            "roof_decode_step_s": decode_r / steps if steps else 0.0,
            "prefill_s": measured_prefill,
            "decode_step_s": r["decode_s"] / steps if steps else 0.0,
            "output_tokens_per_s": r["output_tokens_per_s"],
        })
    return out


def _predict_tps(dev: dict, arch: Architecture, input_len: int, output_len: int, batch: int,
                 mode: str = "prefill+decode", context: int | None = None) -> float:
    p, d = dev["prefill"], dev["decode"]
    step_overhead = d["overhead_s"] + d.get("overhead_per_layer_s", 0.0) * arch.layers
    if mode == "decode_at_context":
        decode_r = decode_roofline_s(arch, context, output_len, batch, dev)
        return batch * output_len / (d["scale"] * decode_r + step_overhead * output_len)
    if p is None:
        raise ValueError("cost model: prefill was not measured (decode_at_context with input_len 0); "
                         "it predicts decode_at_context only")
    prefill_r, decode_r = roofline_times(
        arch, input_len, output_len, batch, dev["mem_bw_bytes_per_s"], dev["matmul_flops_per_s"], dev["dtype_bytes"]
    )
    steps = output_len - 1
    prefill = p["scale"] * prefill_r + p["overhead_s"] + p.get("overhead_per_layer_s", 0.0) * arch.layers
    decode = d["scale"] * decode_r + step_overhead * steps
    return batch * output_len / (prefill + decode)


def _workload(points: list[dict], key: str) -> dict:
    kinds = sorted({(p["mode"], p["context"]) for p in points}, key=str)
    if len(kinds) > 1:
        raise ValueError(f"cost model: device {key} has records of several modes/contexts {kinds}; "
                         "measure every architecture with one throughput workload")
    return {"mode": kinds[0][0], "context": kinds[0][1]}


def fit_cost_model(jobs: list[dict]) -> dict:
    """Calibrate the roofline per device on throughput records (``throughput/{arch}.json``)."""
    by_device: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_device[device_key(job)].append(job)
    if not by_device:
        raise ValueError("cost model: no throughput records to calibrate on")
    devices = {}
    for key, dev_jobs in sorted(by_device.items()):
        hw = [j["roofline_device"] for j in dev_jobs]
        dev = {
            "mem_bw_bytes_per_s": float(sorted(h["mem_bw_bytes_per_s"] for h in hw)[len(hw) // 2]),
            "matmul_flops_per_s": float(sorted(h["matmul_flops_per_s"] for h in hw)[len(hw) // 2]),
            "dtype_bytes": hw[0]["dtype_bytes"],
            "jobs": len(dev_jobs),
        }
        points = [p for j in dev_jobs for p in _points(j)]
        dev["workload"] = _workload(points, key)
        pre = [p for p in points if p["prefill_s"] is not None]
        dev["prefill"] = _nnls_fit(
            [p["roof_prefill_s"] for p in pre], [p["layers"] for p in pre], [p["prefill_s"] for p in pre]
        ) if pre else None
        decode_pts = [p for p in points if p["roof_decode_step_s"] > 0]
        if decode_pts:
            dev["decode"] = _nnls_fit(
                [p["roof_decode_step_s"] for p in decode_pts],
                [p["layers"] for p in decode_pts],
                [p["decode_step_s"] for p in decode_pts],
            )
        else:
            dev["decode"] = {"scale": 1.0, "overhead_s": 0.0, "overhead_per_layer_s": 0.0}
        arch_of = {j["arch_id"]: Architecture.from_dict(j["arch"]) for j in dev_jobs}
        for p in points:
            p["predicted_output_tokens_per_s"] = _predict_tps(
                dev, arch_of[p["arch_id"]], p["input_len"], p["output_len"], p["batch_size"], p["mode"], p["context"]
            )
            if p["mode"] == "decode_at_context":
                roof_s = p["roof_decode_step_s"] * p["output_len"]
            else:
                roof_s = p["roof_prefill_s"] + p["roof_decode_step_s"] * (p["output_len"] - 1)
            p["roofline_output_tokens_per_s"] = p["batch_size"] * p["output_len"] / roof_s
        per_batch = {}
        for b in sorted({p["batch_size"] for p in points}):
            sel = [p for p in points if p["batch_size"] == b]
            per_batch[str(b)] = {
                "n": len(sel),
                "spearman_calibrated": spearman(
                    [p["predicted_output_tokens_per_s"] for p in sel], [p["output_tokens_per_s"] for p in sel]
                ),
                "spearman_roofline": spearman(
                    [p["roofline_output_tokens_per_s"] for p in sel], [p["output_tokens_per_s"] for p in sel]
                ),
            }
        within = [v["spearman_calibrated"] for v in per_batch.values() if v["spearman_calibrated"] is not None]
        meas = [p["output_tokens_per_s"] for p in points]
        pred = [p["predicted_output_tokens_per_s"] for p in points]
        dev["spearman"] = {
            "within_batch_size_mean": fmean(within) if within else None,
            "by_batch_size": per_batch,
            "all_points": spearman(pred, meas),
        }
        dev["mean_abs_rel_error"] = fmean(abs(a / b - 1.0) for a, b in zip(pred, meas))
        dev["points"] = points
        devices[key] = dev
    default = max(devices, key=lambda k: devices[k]["jobs"])
    return {
        "model": (
            "t_step = scale * max(bytes/mem_bw, flops/peak) + overhead + overhead_per_layer * layers "
            "(prefill and decode separately)"
        ),
        "default_device": default,
        "devices": devices,
        "spearman": devices[default]["spearman"]["within_batch_size_mean"],
    }


def predict_output_tokens_per_s(
    cost_model: dict,
    arch: Architecture,
    input_len: int,
    output_len: int,
    batch_size: int,
    device: str | None = None,
    mode: str | None = None,
    context: int | None = None,
) -> float:
    """Calibrated output tokens/s of ``arch`` at a workload (``device`` defaults to the model's;
    ``mode``/``context`` default to the workload the device was calibrated on)."""
    key = device or cost_model["default_device"]
    try:
        dev = cost_model["devices"][key]
    except KeyError:
        raise KeyError(
            f"cost model: no calibration for device '{key}'; calibrated: {sorted(cost_model['devices'])}"
        ) from None
    calibrated = dev.get("workload") or {"mode": "prefill+decode", "context": None}
    mode = mode or calibrated["mode"]
    if mode == "decode_at_context":
        context = context or calibrated["context"]
        if not context or context < 1 or output_len < 1 or batch_size < 1:
            raise ValueError(f"context, output_len and batch_size must be >= 1 (got {context}, {output_len}, {batch_size})")
        return _predict_tps(dev, arch, input_len, output_len, batch_size, mode, context)
    if input_len < 1 or output_len < 1 or batch_size < 1:
        raise ValueError(f"input_len, output_len and batch_size must be >= 1 (got {input_len}, {output_len}, {batch_size})")
    return _predict_tps(dev, arch, input_len, output_len, batch_size)
