"""What a training run reports: throughput, FLOP/s, MFU, versions, progress lines, the curve."""

from __future__ import annotations

import math
import platform
from typing import Any

from ..arch import Architecture
from ..cost import training_flops_per_token

#: Columns of curve.parquet (docs/pipeline.md).
CURVE_COLUMNS = ["step", "tokens", "loss", "lr", "grad_norm", "valid_loss", "elapsed_s"]


def flops_per_token(arch: Architecture, seq_length: int) -> float:
    """Training FLOPs per token: 6N + attention + logit layer (:mod:`archscale.cost`)."""
    return training_flops_per_token(arch, seq_length)


def throughput(
    arch: Architecture, seq_length: int, tokens: int, seconds: float, peak_flops: float | None, devices: int
) -> dict[str, float | None]:
    """tokens/s, achieved FLOP/s and MFU (achieved / (peak x devices)) of ``tokens`` in ``seconds``."""
    if seconds <= 0:
        return {"tokens_per_s": None, "achieved_flops_per_s": None, "mfu": None}
    tps = tokens / seconds
    achieved = tps * flops_per_token(arch, seq_length)
    mfu = achieved / (peak_flops * max(1, devices)) if peak_flops else None
    return {"tokens_per_s": tps, "achieved_flops_per_s": achieved, "mfu": mfu}


def versions() -> dict[str, str]:
    """Installed versions for provenance, from package metadata.

    Never ``megatron.core.__version__``: from 0.18 it appends the git hash of the checkout that
    encloses the package (archscale's own, in a virtual environment inside the repository).
    ``torch_cuda`` is the CUDA version torch was built for (absent on CPU-only builds).
    """
    import torch

    from ..provenance import versions as installed

    found = installed("torch", "megatron-core", "archscale", "transformer-engine")
    out = {"torch": found["torch"] or torch.__version__, "megatron_core": found["megatron-core"] or "unknown",
           "archscale": found["archscale"] or "unknown", "python": platform.python_version()}
    if torch.version.cuda:
        out["torch_cuda"] = torch.version.cuda
    if found["transformer-engine"]:
        out["transformer_engine"] = found["transformer-engine"]
    return out


def device_name(on_gpu: bool) -> str:
    import torch

    if on_gpu:
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return f"cpu ({name}, {torch.get_num_threads()} threads)"


def format_seconds(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def progress_line(
    step: int, total: int, loss: float, lr: float, grad_norm: float | None, tokens_per_s: float,
    elapsed_s: float, eta_s: float,
) -> str:
    grad = "-" if grad_norm is None else f"{grad_norm:.3f}"
    return (
        f"step {step}/{total} | loss {loss:.4f} | lr {lr:.3e} | grad_norm {grad} | "
        f"{tokens_per_s:,.0f} tokens/s | elapsed {format_seconds(elapsed_s)} | eta {format_seconds(eta_s)}"
    )


def curve_table(rows: list[dict[str, Any]]):
    """The loss curve as a pyarrow Table with the documented columns and types."""
    import pyarrow as pa

    schema = pa.schema([
        ("step", pa.int64()), ("tokens", pa.int64()), ("loss", pa.float64()), ("lr", pa.float64()),
        ("grad_norm", pa.float64()), ("valid_loss", pa.float64()), ("elapsed_s", pa.float64()),
    ])
    cols = {c: [r.get(c) for r in rows] for c in CURVE_COLUMNS}
    cols["valid_loss"] = [math.nan if v is None else v for v in cols["valid_loss"]]
    cols["grad_norm"] = [math.nan if v is None else v for v in cols["grad_norm"]]
    return pa.table(cols, schema=schema)
