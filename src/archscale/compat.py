"""megatron-core across its tested releases, and on a machine without CUDA.

Two parts, both keyed on what is installed:

* **Versions.** :data:`REQUIREMENTS` is the tested range of torch and megatron-core (the same
  strings as pyproject.toml's dependencies; a test checks). :func:`megatron_api` says which
  form of megatron-core's API the installed release has, read from the package metadata
  (``importlib.metadata``), never from ``megatron.core.__version__``: from 0.18 that appends
  the git hash of whatever checkout encloses the package. :func:`check_versions` names what is
  out of range, with the fix.
* **The CPU layer.** megatron-core assumes CUDA in a handful of places
  (``torch.cuda.current_device()`` for RoPE and buffers, tensors created on ``device="cuda"``,
  CUDA events, streams and synchronisation, an assertion on CUDA gradients in gradient
  clipping). :func:`activate` patches exactly those, process-wide, and only when CUDA is
  absent. It also imports megatron-core the CPU way (:func:`import_megatron`): without
  ``torch.compile`` behind megatron's fused-kernel decorator. Importing this module changes
  nothing; the training path on GPUs never imports it (a test asserts it) and nothing on a GPU
  activates it, so the same model and training code runs unmodified on GPUs.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from torch.overrides import TorchFunctionMode

_ACTIVE = False

#: Tested ranges, as in pyproject.toml's dependencies. The lowest ends (torch 2.13.0,
#: megatron-core 0.16.1) are the locked install (constraints/cpu-lock.txt, Python 3.11);
#: the highest tested are torch 2.15.0 and megatron-core 0.19.2 (Python 3.12: megatron-core
#: 0.17 and later publish nothing for 3.11). ``2.13.0a0`` admits the pre-release builds NGC
#: containers ship (``2.13.0a0+<hash>.nv<yy>.<mm>``).
REQUIREMENTS = {"torch": ">=2.13.0a0,<2.16", "megatron-core": ">=0.16.1,<0.20"}
TESTED = {"torch": ("2.13.0", "2.15.0"), "megatron-core": ("0.16.1", "0.19.2")}


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` from its package metadata; None when absent."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class MegatronApi:
    """Which form of megatron-core's API the installed release has.

    ``inference_config`` (0.17+): ``DynamicInferenceContext(model_config, InferenceConfig)``,
    ``GPTInferenceWrapper(model, inference_context)`` without ``InferenceWrapperConfig``, and
    ``DynamicInferenceEngine(controller, context)`` seeded by
    ``TransformerConfig.inference_sampling_seed`` instead of ``random_seed``.
    ``decode_only_state`` (0.19+): the engine reports the last step as ``engine.decode_only``
    (consumed and launched forwards) instead of the boolean ``engine.is_decode_only``.
    (0.19's ``start_grad_sync`` also calls ``torch.cuda.current_stream()`` on every step:
    :func:`activate` gives every release a CPU stand-in, harmless where it is not called.)
    """

    version: Version

    @property
    def inference_config(self) -> bool:
        return self.version.release[:2] >= (0, 17)

    @property
    def decode_only_state(self) -> bool:
        return self.version.release[:2] >= (0, 19)


def megatron_api(installed: str | None = None) -> MegatronApi:
    """The API form of ``installed`` (default: the installed megatron-core's metadata)."""
    text = installed if installed is not None else installed_version("megatron-core")
    if text is None:
        raise RuntimeError("megatron-core is not installed; fix: pip install 'megatron-core"
                           f"{REQUIREMENTS['megatron-core']}' (or run archscale doctor)")
    try:
        return MegatronApi(Version(text))
    except InvalidVersion:
        raise RuntimeError(f"megatron-core: version {text!r} from its package metadata is not a PEP 440 version") from None


def check_versions(installed: dict[str, str | None] | None = None) -> list[str]:
    """Problems of the installed torch and megatron-core against :data:`REQUIREMENTS`, each with its fix.

    ``installed`` maps distribution -> version (None: absent); default: the package metadata.
    """
    if installed is None:
        installed = {name: installed_version(name) for name in REQUIREMENTS}
    problems = []
    for name, spec in REQUIREMENTS.items():
        got = installed.get(name)
        low, high = TESTED[name]
        if got is None:
            problems.append(f"{name} is not installed; fix: pip install '{name}{spec}'")
            continue
        try:
            ok = Version(got) in SpecifierSet(spec, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            where = " from the PyTorch index that matches the driver (archscale doctor names it)" if name == "torch" else ""
            problems.append(
                f"{name} {got} is outside the tested range {spec} (tested {low} to {high}); fix: "
                f"pip install '{name}{spec}'{where}, or use an environment (container) that has one"
            )
    return problems


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


class _CpuStream:
    """Stand-in for ``torch.cuda.current_stream()``: the CPU runs everything in order."""

    def wait_event(self, event=None):
        pass

    def wait_stream(self, stream=None):
        pass

    def record_event(self, event=None):
        return event if event is not None else _CpuEvent()

    def synchronize(self):
        pass

    def query(self):
        return True


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
    # megatron-core 0.18+ runs ``git rev-parse`` at import to append a hash to its __version__
    # (the enclosing checkout's, not its own); archscale reads versions from package metadata.
    os.environ.setdefault("NO_VCS_VERSION", "1")
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
    # megatron-core 0.19's start_grad_sync waits on the current stream at every step; on the
    # CPU there is one, in-order "stream".
    torch.cuda.current_stream = lambda *a, **k: _CpuStream()
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
