"""megatron-core on a machine without CUDA: the small compatibility layer.

megatron-core assumes CUDA in a handful of places (``torch.cuda.current_device()`` for RoPE
and buffers, tensors created on ``device="cuda"``, CUDA events and synchronisation, an
assertion on CUDA gradients in gradient clipping). :func:`activate` patches exactly those,
process-wide, and only when CUDA is absent. It also imports megatron-core the CPU way
(:func:`import_megatron`): without ``torch.compile`` behind megatron's fused-kernel decorator.
The GPU path never imports this module (a test asserts it), so the same model and training
code runs unmodified on GPUs.
"""

from __future__ import annotations

import sys
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


def _eager(model=None, **_):
    """``torch.compile``'s signature, compiling nothing (megatron's ``noop_decorator`` as both
    ``@torch.compile`` and ``@torch.compile(...)``)."""
    return model if model is not None else (lambda fn: fn)


def import_megatron() -> None:
    """Import megatron-core with its ``jit_fuser`` as megatron's own no-op decorator.

    ``megatron.core.jit`` sets ``jit_fuser = torch.compile`` at import, and 38 functions are
    decorated with it while ``import megatron.core`` runs (bias-GELU/SwiGLU/GEGLU fusions, L2
    norm, activations). Wrapping them loads ``torch._dynamo`` and inductor's configuration:
    about 1.5 s of every CPU job's start-up (a training job of the embedded default trains for
    6-90 s), for kernels the CPU path never calls (archscale keeps megatron's defaults, which
    turn the bias, activation and RoPE fusions and the qk L2 norm off). Here
    ``torch.compile`` is the no-op :func:`_eager` for the duration of that import only, then
    :func:`megatron.core.jit.disable_jit_fuser` (megatron's switch) keeps later imports eager.
    A no-op when megatron-core is already imported.
    """
    if "megatron.core" in sys.modules:
        return
    compile_ = torch.compile
    torch.compile = _eager
    try:
        import megatron.core  # noqa: F401 - the import is the point
        from megatron.core import jit
    finally:
        torch.compile = compile_
    jit.disable_jit_fuser()


def activate() -> None:
    """Install the layer (idempotent). Refuses to run when CUDA is available."""
    global _ACTIVE
    if _ACTIVE:
        return
    if torch.cuda.is_available():
        raise RuntimeError("archscale.compat is the CPU-only layer; CUDA is available, do not activate it")
    import_megatron()
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
