"""megatron-core on a machine without CUDA: the small compatibility layer.

megatron-core assumes CUDA in a handful of places (``torch.cuda.current_device()`` for RoPE
and buffers, tensors created on ``device="cuda"``, CUDA events and synchronisation, an
assertion on CUDA gradients in gradient clipping). :func:`activate` patches exactly those,
process-wide, and only when CUDA is absent. The GPU path never imports this module (a test
asserts it), so the same model and training code runs unmodified on GPUs.
"""

from __future__ import annotations

import time

import torch
from torch.overrides import TorchFunctionMode

_ACTIVE = False

# Factory functions whose ``device=`` argument is redirected from CUDA to CPU.
_FACTORIES = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.arange, torch.tensor, torch.rand,
    torch.randn, torch.randint, torch.empty_like, torch.zeros_like, torch.ones_like,
    torch.full_like, torch.as_tensor, torch.linspace, torch.eye,
}


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, int):
        return True  # a bare ordinal means a CUDA device
    return str(device).startswith("cuda")


class _CudaToCpu(TorchFunctionMode):
    """Redirect ``device="cuda"`` in tensor factories and ``.to``/``.cuda`` to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        elif func is torch.Tensor.cuda:
            return args[0]
        elif func is torch.Tensor.to:
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            args = tuple("cpu" if i > 0 and _is_cuda(a) else a for i, a in enumerate(args))
        return func(*args, **kwargs)


class _CpuEvent:
    """Stand-in for ``torch.cuda.Event(enable_timing=True)``."""

    def __init__(self, enable_timing: bool = False, **_):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def query(self):
        return True

    def wait(self, stream=None):
        pass

    def elapsed_time(self, end: "_CpuEvent") -> float:
        return (end.t - self.t) * 1000.0


def _clip_grad_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """CPU version of megatron's ``clip_grad_by_total_norm_fp32`` (which asserts CUDA grads)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    coeff = max_norm / (total_norm + 1.0e-6)
    if coeff >= 1.0:
        return
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    with torch.no_grad():
        for p in parameters:
            g = getattr(p, attr, None)
            if g is not None:
                g.mul_(coeff)


def activate() -> None:
    """Install the layer (idempotent). Refuses to run when CUDA is available."""
    global _ACTIVE
    if _ACTIVE:
        return
    if torch.cuda.is_available():
        raise RuntimeError("archscale.compat is the CPU-only layer; CUDA is available, do not activate it")
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.Event = _CpuEvent
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    torch.cuda.memory_allocated = lambda *a, **k: 0
    torch.cuda.reset_peak_memory_stats = lambda *a, **k: None
    _CudaToCpu().__enter__()  # process-wide, for the life of the process

    from megatron.core.optimizer import clip_grads, optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm
    optimizer.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm
    _ACTIVE = True


def is_active() -> bool:
    return _ACTIVE
