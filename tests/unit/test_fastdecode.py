"""The tight static-cache decoder: same greedy tokens as megatron's forward; decode at context."""

import pytest
import torch

from archscale.arch import Architecture
from archscale.model import build_model, resolve_runtime, setup_runtime
from archscale.throughput import engine
from archscale.throughput.fastdecode import FastDecoder, model_weights, random_weights

CPU = resolve_runtime(cuda_available=False, te_installed=False)
#: Grouped-query with tied embeddings, multi-head untied, multi-query.
SHAPES = [
    Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512),
    Architecture(d_model=64, ffn=96, layers=3, heads=4, kv_heads=4, head_dim=16, vocab=300, tied=False),
    Architecture(d_model=64, ffn=96, layers=1, heads=8, kv_heads=1, head_dim=8, vocab=256),
]
SHAPE_IDS = ["gqa2-tied", "mha-untied", "mqa"]


def _model(arch, seed=7):
    setup_runtime(CPU, seed)
    # A large init spreads the logits, so greedy tokens vary and the comparison is not trivial.
    return build_model(arch, CPU, max_sequence_length=64, rope_base=500000.0, init_std=0.5)


@pytest.mark.parametrize("arch", SHAPES, ids=SHAPE_IDS)
def test_fast_decoder_matches_megatron_greedy_tokens(arch):
    model = _model(arch)
    prompts = engine.random_prompts(arch.vocab, 3, 12, seed=1)
    fast = FastDecoder(model_weights(model), CPU, max_seq=40).generate(prompts, 10)
    ref = engine.StaticDecoder(model, CPU).generate(prompts, 10).tokens
    assert len(torch.unique(ref)) > 3, "degenerate reference: tokens do not vary"
    assert torch.equal(fast.tokens, ref)
    assert torch.equal(fast.tokens, engine.generate_without_cache(model, prompts, 10))
    assert fast.prefill_s > 0 and fast.decode_s > 0


def test_cache_allocated_once_per_batch_and_runs_repeat():
    arch = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)
    dec = FastDecoder(model_weights(_model(arch)), CPU, max_seq=32)
    prompts = engine.random_prompts(arch.vocab, 2, 8, seed=3)
    first = dec.generate(prompts, 6).tokens
    ptr = dec._caches[2].data_ptr()
    assert torch.equal(dec.generate(prompts, 6).tokens, first)
    assert dec._caches[2].data_ptr() == ptr and list(dec._caches) == [2]
    assert dec._caches[2].shape == (2, 2, 2, 2, 14, 8)  # layers, k/v, batch, kv heads, positions, head dim
    assert dec.generate(prompts, 3).tokens.shape == (2, 3) and dec._caches[2].data_ptr() == ptr  # shorter: reused
    assert dec.cache(2, 32).shape[4] == 32 and dec._caches[2].data_ptr() != ptr  # longer: reallocated
    dec.drop_caches()
    assert not dec._caches
    with pytest.raises(ValueError, match="exceeds max_seq"):
        dec.generate(prompts, 25)
    with pytest.raises(ValueError, match="output_len"):
        dec.generate(prompts, 0)


def test_decode_at_context_grows_the_cache_from_T_and_yields_the_requested_tokens():
    arch = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)
    dec = FastDecoder(model_weights(_model(arch)), CPU, max_seq=64)
    kv = dec.cache(3)  # max_seq positions: long enough for the run, so the run writes into it
    before = kv.clone()
    gen = dec.decode_at_context(batch=3, context=40, steps=7)
    assert gen.tokens.shape == (3, 7) and gen.prefill_s == 0.0 and gen.decode_s > 0
    assert gen.tokens.min() >= 0 and gen.tokens.max() < arch.vocab
    written = (kv != before).any(dim=(0, 1, 2, 3, 5))  # which positions changed
    assert written.nonzero().flatten().tolist() == list(range(40, 47))
    with pytest.raises(ValueError, match="exceeds max_seq"):
        dec.decode_at_context(batch=3, context=60, steps=5)


def test_decode_step_matches_megatron_at_a_filled_context():
    """After a prefill of T tokens, stepping from T equals megatron's own cached continuation."""
    arch = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)
    model = _model(arch, seed=11)
    prompts = engine.random_prompts(arch.vocab, 2, 20, seed=9)
    dec = FastDecoder(model_weights(model), CPU, max_seq=40)
    assert torch.equal(dec.generate(prompts, 8).tokens, engine.generate_without_cache(model, prompts, 8))


@pytest.mark.parametrize("arch", SHAPES, ids=SHAPE_IDS)
def test_random_weights_have_the_megatron_models_layout(arch):
    """The megatron-free random weights (throughput on random weights) are shaped, typed, tied and
    rotated exactly like a built megatron model's; only the values differ."""
    built, drawn = model_weights(_model(arch)), random_weights(arch.with_network(rope_base=500000.0), CPU, seed=3)
    for name in ("emb", "final_ln", "out"):
        assert getattr(drawn, name).shape == getattr(built, name).shape, name
        assert getattr(drawn, name).dtype == getattr(built, name).dtype, name
    assert (drawn.out is drawn.emb) == arch.tied == (built.out.data_ptr() == built.emb.data_ptr())
    assert len(drawn.layers) == len(built.layers) == arch.layers
    for mine, theirs in zip(drawn.layers, built.layers):
        for field in ("ln1", "qkv", "proj", "ln2", "fc1", "fc2"):
            assert getattr(mine, field).shape == getattr(theirs, field).shape, field
    assert (drawn.heads, drawn.kv_heads, drawn.head_dim, drawn.eps) == (built.heads, built.kv_heads,
                                                                          built.head_dim, built.eps)
    assert torch.equal(drawn.inv_freq, built.inv_freq)
    # seeded: the same seed draws the same weights, another seed others
    again = random_weights(arch.with_network(rope_base=500000.0), CPU, seed=3)
    assert torch.equal(again.layers[0].qkv, drawn.layers[0].qkv)
    assert not torch.equal(random_weights(arch.with_network(rope_base=500000.0), CPU, seed=4).layers[0].qkv, drawn.layers[0].qkv)
    dec = FastDecoder(drawn, CPU, max_seq=48)
    gen = dec.decode_at_context(batch=2, context=30, steps=5)
    assert gen.tokens.shape == (2, 5) and gen.decode_s > 0

