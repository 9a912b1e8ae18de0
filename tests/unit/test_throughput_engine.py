"""Decoding with megatron-core's KV cache, and the objects of the GPU (dynamic engine) path."""

import pytest
import torch

from archscale.arch import Architecture
from archscale.model import build_model, resolve_runtime, setup_runtime
from archscale.throughput import engine

ROPE = 500000.0
ARCH = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)
CPU = resolve_runtime(cuda_available=False, te_installed=False)
GPU = resolve_runtime(cuda_available=True, te_installed=False)


@pytest.fixture(scope="module")
def model():
    setup_runtime(CPU, 7)
    # A large init spreads the logits, so greedy tokens vary and the comparison is not trivial.
    return build_model(ARCH, CPU, max_sequence_length=64, rope_base=ROPE, init_std=0.5)


def test_kv_cache_decoding_matches_decoding_without_cache(model):
    prompts = engine.random_prompts(ARCH.vocab, 3, 12, seed=1)
    dec = engine.StaticDecoder(model, CPU)
    gen = dec.generate(prompts, 10)
    ref = engine.generate_without_cache(model, prompts, 10)
    assert gen.tokens.shape == (3, 10)
    assert len(torch.unique(ref)) > 3, "degenerate reference: tokens do not vary"
    assert torch.equal(gen.tokens, ref)
    assert gen.prefill_s > 0 and gen.decode_s > 0


def test_cache_is_reused_and_reset_between_runs(model):
    prompts = engine.random_prompts(ARCH.vocab, 2, 8, seed=3)
    dec = engine.StaticDecoder(model, CPU)
    first = dec.generate(prompts, 6).tokens
    ctx = dec._contexts[(2, 14)]
    kv = ctx.key_value_memory_dict[1][0].data_ptr()
    second = dec.generate(prompts, 6).tokens
    assert torch.equal(first, second)
    assert ctx.key_value_memory_dict[1][0].data_ptr() == kv  # allocated once, as a serving engine
    assert len(dec._contexts) == 1


def test_single_token_output_is_prefill_only(model):
    prompts = engine.random_prompts(ARCH.vocab, 2, 5, seed=4)
    gen = engine.StaticDecoder(model, CPU).generate(prompts, 1)
    assert torch.equal(gen.tokens, engine.generate_without_cache(model, prompts, 1))
    with pytest.raises(ValueError):
        engine.StaticDecoder(model, CPU).generate(prompts, 0)


def test_random_prompts_are_seeded():
    a = engine.random_prompts(512, 2, 9, seed=5)
    assert torch.equal(a, engine.random_prompts(512, 2, 9, seed=5))
    assert not torch.equal(a, engine.random_prompts(512, 2, 9, seed=6))
    assert a.max() < 512 and a.dtype == torch.long


# ---- GPU path, down to the objects it builds ---------------------------------------------
def test_make_decoder_picks_fast_on_cpu_and_refuses_dynamic(model):
    from archscale.throughput import decoders
    from archscale.throughput.fastdecode import FastDecoder

    assert isinstance(decoders.make_decoder("auto", model, ARCH, CPU, 8, 96, 0), FastDecoder)
    assert isinstance(decoders.make_decoder("static", model, ARCH, CPU, 8, 96, 0), engine.StaticDecoder)
    with pytest.raises(RuntimeError, match="needs a GPU"):
        decoders.make_decoder("dynamic", model, ARCH, CPU, 8, 96, 0)
    with pytest.raises(ValueError, match="megatron_engine"):
        decoders.make_decoder("paged", model, ARCH, CPU, 8, 96, 0)


def test_dynamic_context_sized_for_the_workload():
    kw = engine.dynamic_context_kwargs(ARCH, GPU, max_batch=8, max_seq=5120)
    assert kw["params_dtype"] == torch.bfloat16
    assert kw["num_attention_heads"] == ARCH.kv_heads and kw["kv_channels"] == 8 and kw["num_layers"] == 2
    assert kw["max_requests"] == 8 and kw["max_sequence_length"] == 5120
    assert kw["max_tokens"] >= 8 * 5120
    need = engine.kv_cache_bytes(ARCH, 8, 5120, 2)
    assert need == 2 * 2 * 2 * 8 * 2 * 8 * 5120
    assert kw["buffer_size_gb"] * 1024**3 >= need


def test_dynamic_context_arguments_fit_the_installed_megatron_core():
    """0.16 takes every size as a keyword; 0.17+ an InferenceConfig with the rest from the model config."""
    import dataclasses
    import inspect

    from megatron.core.inference.contexts.dynamic_context import DynamicInferenceContext

    from archscale.compat import megatron_api

    api = megatron_api()
    kw = engine.dynamic_context_kwargs(ARCH, GPU, max_batch=8, max_seq=5120)
    params = set(inspect.signature(DynamicInferenceContext.__init__).parameters)
    if not api.inference_config:
        assert set(kw) <= params
        return
    from megatron.core.inference.config import InferenceConfig

    assert params == {"self", "model_config", "inference_config"}
    rest = {k: v for k, v in kw.items() if k not in engine.MODEL_CONFIG_KEYS}
    assert set(rest) <= {f.name for f in dataclasses.fields(InferenceConfig)}
    cfg = InferenceConfig(**rest)
    assert cfg.max_requests == 8 and cfg.max_sequence_length == 5120 and cfg.block_size_tokens == 256


def test_dynamic_engine_signatures_of_the_installed_megatron_core():
    """The wrapper, controller and engine take the arguments dynamic_engine passes for this release."""
    import inspect

    from megatron.core.inference.engines import DynamicInferenceEngine
    from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import GPTInferenceWrapper

    from archscale.compat import megatron_api

    api = megatron_api()
    engine_params = set(inspect.signature(DynamicInferenceEngine.__init__).parameters)
    wrapper_params = list(inspect.signature(GPTInferenceWrapper.__init__).parameters)
    if api.inference_config:
        assert "random_seed" not in engine_params and wrapper_params[:3] == ["self", "model", "inference_context"]
    else:
        assert "random_seed" in engine_params and "inference_wrapper_config" in wrapper_params
        cfg = engine.inference_wrapper_config(ARCH, GPU, 8, 5120)
        assert cfg.hidden_size == 96 and cfg.padded_vocab_size == 512
        assert cfg.inference_max_requests == 8 and cfg.inference_max_seq_length == 5120
        assert cfg.params_dtype == torch.bfloat16


def test_decode_only_state_of_each_release():
    from types import SimpleNamespace

    from archscale.compat import megatron_api

    old, new = megatron_api("0.16.1"), megatron_api("0.19.2")
    assert engine.step_was_decode_only(SimpleNamespace(is_decode_only=True), old) is True
    assert engine.step_was_decode_only(SimpleNamespace(is_decode_only=False), old) is False
    state = SimpleNamespace(consumed=False, launched=True)
    assert engine.step_was_decode_only(SimpleNamespace(decode_only=state), new) is True
    state = SimpleNamespace(consumed=True, launched=None)  # nothing launched: the consumed forward
    assert engine.step_was_decode_only(SimpleNamespace(decode_only=state), new) is True


def test_greedy_sampling():
    sp = engine.greedy_sampling(1024)
    assert sp.top_k == 1 and sp.num_tokens_to_generate == 1024 and sp.termination_id == -1


def test_split_steps_prefill_then_decode():
    steps = [{"decode_only": False, "time_s": 0.5}, {"decode_only": False, "time_s": 0.25}]
    steps += [{"decode_only": True, "time_s": 0.01}] * 4
    assert engine.split_steps(steps) == pytest.approx((0.75, 0.04))
    assert engine.split_steps([]) == (0.0, 0.0)


def test_generation_suspends_the_cpu_redirect_mode_and_restores_it(model):
    from torch.overrides import _get_current_function_mode_stack

    from archscale import compat

    before = list(_get_current_function_mode_stack())
    assert compat.is_active() and any(type(m).__name__ == "_CudaToCpu" for m in before)
    seen = []
    handle = model.register_forward_pre_hook(lambda *_: seen.append(list(_get_current_function_mode_stack())))
    try:
        engine.StaticDecoder(model, CPU).generate(engine.random_prompts(ARCH.vocab, 1, 4, seed=0), 3)
    finally:
        handle.remove()
    assert len(seen) == 3 and all(not any(type(m).__name__ == "_CudaToCpu" for m in s) for s in seen)
    assert list(_get_current_function_mode_stack()) == before


def test_vllm_engine_fails_clearly_where_it_cannot_run():
    from archscale.throughput.vllm_engine import VllmDecoder

    try:
        import vllm  # noqa: F401

        expected = "needs a GPU"
    except ImportError:
        expected = "vLLM is not installed"
    if torch.cuda.is_available():
        pytest.skip("GPU machine: vLLM may run here")
    with pytest.raises(RuntimeError, match=expected):
        VllmDecoder(ARCH.with_network(rope_base=ROPE), 8, 96, seed=0)
