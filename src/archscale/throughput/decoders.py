"""Choose the decoder of a throughput job (``throughput.megatron_engine``).

Its own module so that :mod:`.engine` (megatron-core's paths) and :mod:`.fastdecode`
(archscale's static-cache decoder, built on :mod:`.engine`'s ``Generation``) import one way.
"""

from __future__ import annotations

from ..arch import Architecture
from ..model import Runtime
from .engine import DynamicDecoder, StaticDecoder
from .fastdecode import FastDecoder, model_weights


KINDS = ("auto", "fast", "static", "dynamic")


def resolve_kind(kind: str, runtime: Runtime) -> str:
    """``auto``: the dynamic engine on GPU (CUDA graphs), archscale's static-cache decoder on CPU."""
    if kind not in KINDS:
        raise ValueError(f"throughput.megatron_engine: unknown value '{kind}' (use auto, fast, static or dynamic)")
    if kind == "auto":
        return "dynamic" if runtime.on_gpu else "fast"
    return kind


def make_decoder(kind: str, model, arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, seed: int):
    """The decoder of ``kind`` (:func:`resolve_kind`) over a megatron model.

    ``fast`` (:class:`~archscale.throughput.fastdecode.FastDecoder`) runs on both; ``static`` is
    megatron's own forward with its ``StaticInferenceContext`` (milliseconds of Python per step).
    """
    kind = resolve_kind(kind, runtime)
    if kind == "fast":
        return FastDecoder(model_weights(model), runtime, max_seq)
    if kind == "dynamic":
        return DynamicDecoder(model, arch, runtime, max_batch, max_seq, seed)
    return StaticDecoder(model, runtime)
