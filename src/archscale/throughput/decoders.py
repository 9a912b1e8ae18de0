"""Choose the decoder of a throughput job (``throughput.megatron_engine``).

Its own module so that :mod:`.engine` (megatron-core's paths) and :mod:`.fastdecode`
(archscale's static-cache decoder, built on :mod:`.engine`'s ``Generation``) import one way.
"""

from __future__ import annotations

from ..arch import Architecture
from ..model import Runtime
from .engine import DynamicDecoder, StaticDecoder
from .fastdecode import FastDecoder


def make_decoder(kind: str, model, arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, seed: int):
    """``auto``: the dynamic engine on GPU (CUDA graphs), archscale's static-cache decoder on CPU.

    ``fast`` (:class:`~archscale.throughput.fastdecode.FastDecoder`) runs on both; ``static`` is
    megatron's own forward with its ``StaticInferenceContext`` (milliseconds of Python per step).
    """
    if kind == "auto":
        kind = "dynamic" if runtime.on_gpu else "fast"
    if kind == "fast":
        return FastDecoder(model, runtime, max_seq)
    if kind == "dynamic":
        return DynamicDecoder(model, arch, runtime, max_batch, max_seq, seed)
    if kind == "static":
        return StaticDecoder(model, runtime)
    raise ValueError(f"throughput.megatron_engine: unknown value '{kind}' (use auto, fast, static or dynamic)")
