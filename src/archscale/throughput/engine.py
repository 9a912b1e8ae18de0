"""Greedy generation with megatron-core and a KV cache, timed as prefill and decode.

Two decoders share one interface, ``generate(prompts, output_len) -> Generation``:

* :class:`StaticDecoder` (CPU, and GPU when asked): megatron-core's ``GPTModel`` driven
  with a :class:`~megatron.core.inference.contexts.StaticInferenceContext` (the KV cache):
  one prefill forward over the prompts, then one forward per generated token. The context
  is kept per batch size and reset between runs, so the cache is allocated once, as a
  serving engine does.
* :class:`DynamicDecoder` (GPU): megatron-core's production ``DynamicInferenceEngine``
  (paged KV cache, chunked prefill, CUDA graphs when the model config enables them). Its
  steps are classified as prefill (any request still encoding its prompt) or decode.

End of sequence is ignored: every request generates exactly ``output_len`` tokens, so the
work is fixed by the workload and the architecture, not by what random weights emit.
Timings synchronise the device (``torch.cuda.synchronize``; a no-op on CPU).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from ..arch import Architecture
from ..model import Runtime, causal_mask


@dataclass
class Generation:
    """Generated tokens ``[batch, output_len]`` and the split of the wall time."""

    tokens: torch.Tensor
    prefill_s: float
    decode_s: float
    steps: list[dict] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s


def _sync(runtime: Runtime) -> None:
    if runtime.on_gpu:
        torch.cuda.synchronize()


def random_prompts(vocab: int, batch: int, length: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """Seeded uniform random prompt tokens ``[batch, length]`` (throughput does not depend on them)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen, dtype=torch.long).to(device)


@contextlib.contextmanager
def _without_cpu_redirect():
    """Suspend the CPU compatibility layer's TorchFunctionMode while generating.

    The mode (``archscale.compat``) intercepts every torch call in Python to redirect
    ``device="cuda"`` to the CPU: about a third of a small model's decode step on CPU. Once the
    model is built, the forward passes only place tensors with ``torch.cuda.current_device()``
    (patched to "cpu" separately), so generation runs without it; on GPU there is no mode.
    """
    from torch.overrides import _get_current_function_mode_stack, _pop_mode_temporarily

    stack = _get_current_function_mode_stack()
    if stack and type(stack[-1]).__name__ == "_CudaToCpu":
        with _pop_mode_temporarily():
            yield
    else:
        yield


class StaticDecoder:
    """Greedy decoding through ``GPTModel`` and megatron-core's static KV cache."""

    name = "megatron-static"

    def __init__(self, model, runtime: Runtime):
        self.model = model.eval()
        self.runtime = runtime
        self._contexts: dict[tuple[int, int], object] = {}

    def _context(self, batch: int, max_seq: int):
        from megatron.core.inference.contexts import StaticInferenceContext

        key = (batch, max_seq)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = StaticInferenceContext(batch, max_seq)
        ctx.reset()
        return ctx

    def generate(self, prompts: torch.Tensor, output_len: int) -> Generation:
        with _without_cpu_redirect():
            return self._generate(prompts, output_len)

    @torch.inference_mode()
    def _generate(self, prompts: torch.Tensor, output_len: int) -> Generation:
        if output_len < 1:
            raise ValueError(f"output_len must be >= 1, got {output_len}")
        batch, input_len = prompts.shape
        device = self.runtime.device
        prompts = prompts.to(device)
        ctx = self._context(batch, input_len + output_len)
        out = torch.empty(batch, output_len, dtype=torch.long, device=device)
        positions = torch.arange(input_len, device=device)[None].expand(batch, input_len)

        _sync(self.runtime)
        t0 = time.perf_counter()
        logits = self.model(
            prompts, positions, causal_mask(input_len, device), inference_context=ctx, runtime_gather_output=True
        )
        out[:, 0] = logits[:, -1].argmax(-1)
        ctx.increment_sequence_len_offset(input_len)
        ctx.enable_decode_mode()
        _sync(self.runtime)
        t1 = time.perf_counter()
        pos = torch.empty(batch, 1, dtype=torch.long, device=device)
        for i in range(1, output_len):
            pos.fill_(input_len + i - 1)
            logits = self.model(out[:, i - 1 : i], pos, None, inference_context=ctx, runtime_gather_output=True)
            out[:, i] = logits[:, -1].argmax(-1)
            ctx.increment_sequence_len_offset(1)
        _sync(self.runtime)
        t2 = time.perf_counter()
        return Generation(out, t1 - t0, t2 - t1)


@torch.inference_mode()
def generate_without_cache(model, prompts: torch.Tensor, output_len: int) -> torch.Tensor:
    """Reference greedy decoding that re-encodes the whole sequence at every step (no KV cache)."""
    model = model.eval()
    seq = prompts
    batch = prompts.shape[0]
    for _ in range(output_len):
        length = seq.shape[1]
        positions = torch.arange(length, device=seq.device)[None].expand(batch, length)
        logits = model(seq, positions, causal_mask(length, seq.device), runtime_gather_output=True)
        seq = torch.cat([seq, logits[:, -1].argmax(-1)[:, None]], dim=1)
    return seq[:, prompts.shape[1] :]


# ---- GPU production path: megatron-core's dynamic engine --------------------------------------


class _TokenIds:
    """The engine needs a tokenizer only to detokenize finished requests: ids as text."""

    eod = -1
    bos = None

    def tokenize(self, text):  # pragma: no cover - prompts are always token ids here
        return [int(t) for t in text.split()]

    def detokenize(self, ids, **_):
        return " ".join(str(int(i)) for i in ids)


def kv_cache_bytes(arch: Architecture, batch: int, max_seq: int, dtype_bytes: int) -> int:
    """Bytes of keys and values for ``batch`` sequences of ``max_seq`` tokens."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes * batch * max_seq


def dynamic_context_kwargs(
    arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, block_size_tokens: int = 256
) -> dict:
    """Keyword arguments of ``DynamicInferenceContext`` for one workload (pure; tested on CPU).

    The KV buffer holds every request at full length plus one block per request of slack (the
    paged cache rounds each request up to whole blocks); ``max_tokens`` lets the whole batch
    prefill in one step, as vLLM does when the batch fits.
    """
    dtype_bytes = torch.finfo(runtime.params_dtype).bits // 8
    blocks_per_request = -(-max_seq // block_size_tokens) + 1
    buffer = kv_cache_bytes(arch, max_batch, blocks_per_request * block_size_tokens, dtype_bytes)
    return dict(
        params_dtype=runtime.params_dtype,
        num_layers=arch.layers,
        kv_channels=arch.head_dim,
        num_attention_heads=arch.kv_heads,  # the cache is per key/value head (megatron's from_config)
        max_sequence_length=max_seq,
        buffer_size_gb=buffer / 1024**3 * 1.05 + 1 / 1024,
        max_requests=max_batch,
        max_tokens=max(max_batch * max_seq, 256),
        block_size_tokens=block_size_tokens,
        tensor_model_parallel_size=runtime.tensor_parallel,
        materialize_only_last_token_logits=True,
        unified_memory_level=0,
    )


def inference_wrapper_config(arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int):
    """megatron-core 0.16's ``InferenceWrapperConfig`` (0.17 removed it: the context's config holds all)."""
    from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
        InferenceWrapperConfig,
    )

    return InferenceWrapperConfig(
        hidden_size=arch.d_model,
        params_dtype=runtime.params_dtype,
        inference_batch_times_seqlen_threshold=-1,  # no pipeline parallelism: never micro-batch
        padded_vocab_size=arch.vocab,
        inference_max_requests=max_batch,
        inference_max_seq_length=max_seq,
    )


#: Keys of :func:`dynamic_context_kwargs` that megatron-core 0.17+ reads from the model's
#: ``TransformerConfig`` instead of taking them as arguments.
MODEL_CONFIG_KEYS = ("params_dtype", "num_layers", "kv_channels", "num_attention_heads", "tensor_model_parallel_size")


def dynamic_context(model_config, arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, api):
    """``DynamicInferenceContext`` for one workload in the form of the installed megatron-core.

    0.16 takes every size as a keyword; 0.17+ takes ``(model_config, InferenceConfig)`` and
    reads the layer and head sizes from the model's config. ``api`` is
    :func:`archscale.compat.megatron_api`.
    """
    from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

    kw = dynamic_context_kwargs(arch, runtime, max_batch, max_seq)
    if not api.inference_config:
        return DynamicInferenceContext(**kw)
    from megatron.core.inference.config import InferenceConfig

    config = InferenceConfig(**{k: v for k, v in kw.items() if k not in MODEL_CONFIG_KEYS})
    return DynamicInferenceContext(model_config, config)


def dynamic_engine(model, arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, seed: int, api):
    """``(context, controller, engine)`` of megatron-core's dynamic inference for the installed release."""
    from megatron.core.inference.engines import DynamicInferenceEngine
    from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
        GPTInferenceWrapper,
    )
    from megatron.core.inference.text_generation_controllers.text_generation_controller import (
        TextGenerationController,
    )

    # 0.17+ seeds sampling from the model's config; 0.16 from the engine's random_seed (both set).
    model.config.inference_sampling_seed = seed
    context = dynamic_context(model.config, arch, runtime, max_batch, max_seq, api)
    if api.inference_config:
        wrapper = GPTInferenceWrapper(model, context)
    else:
        wrapper = GPTInferenceWrapper(model, inference_wrapper_config(arch, runtime, max_batch, max_seq), context)
    controller = TextGenerationController(wrapper, _TokenIds())
    if api.inference_config:
        return context, controller, DynamicInferenceEngine(controller, context)
    return context, controller, DynamicInferenceEngine(controller, context, random_seed=seed)


def step_was_decode_only(engine, api) -> bool:
    """Whether the engine's last step ran a decode-only forward.

    0.16-0.18 set ``engine.is_decode_only``; 0.19 keeps ``engine.decode_only`` with the
    consumed and launched forwards (equal in its default, legacy scheduling): the launched one
    is the step just timed, as megatron's own step log reads it.
    """
    if not api.decode_only_state:
        return bool(engine.is_decode_only)
    state = engine.decode_only
    launched = state.launched if state.launched is not None else state.consumed
    return bool(launched)


def greedy_sampling(output_len: int):
    """Greedy, exactly ``output_len`` tokens, end of sequence ignored (termination id -1)."""
    from megatron.core.inference.sampling_params import SamplingParams

    return SamplingParams(temperature=1.0, top_k=1, num_tokens_to_generate=output_len, termination_id=-1)


def split_steps(steps: list[dict]) -> tuple[float, float]:
    """Prefill and decode seconds from the engine's steps (``{"decode_only": bool, "time_s": float}``).

    Every step until the first decode-only step is prefill (with chunked prefill a long prompt
    takes several); the first token of each request comes out of the prefill.
    """
    prefill = decode = 0.0
    seen_decode = False
    for step in steps:
        seen_decode = seen_decode or step["decode_only"]
        if seen_decode:
            decode += step["time_s"]
        else:
            prefill += step["time_s"]
    return prefill, decode


class DynamicDecoder:
    """megatron-core's ``DynamicInferenceEngine`` (GPU only)."""

    name = "megatron-dynamic"

    def __init__(self, model, arch: Architecture, runtime: Runtime, max_batch: int, max_seq: int, seed: int):
        if not runtime.on_gpu:
            raise RuntimeError(
                "the dynamic inference engine needs a GPU (flash attention, pinned memory); on CPU the "
                "static KV-cache path is used"
            )
        from ..compat import megatron_api

        self.runtime = runtime
        self.api = megatron_api()
        self.context, self.controller, self.engine = dynamic_engine(
            model.eval(), arch, runtime, max_batch, max_seq, seed, self.api
        )
        self._next_id = 0

    @torch.inference_mode()
    def generate(self, prompts: torch.Tensor, output_len: int) -> Generation:
        engine = self.engine
        engine.reset()
        sampling = greedy_sampling(output_len)
        ids = []
        for row in prompts:
            ids.append(self._next_id)
            engine.add_request(self._next_id, row.to("cuda", torch.int64), sampling)
            self._next_id += 1
        steps, finished = [], {}
        _sync(self.runtime)
        while engine.has_unfinished_requests():
            t = time.perf_counter()
            result = engine.step_modern()
            _sync(self.runtime)
            # The engine records whether the step it just ran was decode-only.
            steps.append({"decode_only": step_was_decode_only(engine, self.api), "time_s": time.perf_counter() - t})
            for record in result["finished_request_records"]:
                finished[record.request_id] = record.merge()
        tokens = torch.tensor([list(finished[i].generated_tokens)[:output_len] for i in ids])
        if tokens.shape[1] != output_len:
            raise RuntimeError(f"dynamic engine generated {tokens.shape[1]} tokens, expected {output_len}")
        prefill, decode = split_steps(steps)
        return Generation(tokens, prefill, decode, steps)
