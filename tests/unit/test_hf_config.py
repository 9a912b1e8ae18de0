"""The Hugging Face Llama config of an architecture has exactly the resolver's parameter count."""

import json

import pytest

from archscale.arch import Architecture
from archscale.throughput.hf_config import hf_llama_model, llama_config, write_llama_config

pytest.importorskip("transformers")

ROPE = 500000.0
ARCHS = [
    # embedded-default shapes, including h*dh != d and d % h != 0
    Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512),
    Architecture(d_model=88, ffn=24, layers=2, heads=3, kv_heads=3, head_dim=8, vocab=512),
    Architecture(d_model=32, ffn=80, layers=3, heads=7, kv_heads=7, head_dim=8, vocab=512, tied=False),
    # Panda-1B's attention shape (d=2560, 72/18 heads of 64) scaled down in depth and vocabulary
    Architecture(d_model=2560, ffn=64, layers=1, heads=72, kv_heads=18, head_dim=64, vocab=64),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.arch_id)
def test_llama_param_count_matches_resolver(arch):
    model = hf_llama_model(arch.with_network(rope_base=ROPE), dtype="float32")
    assert sum(p.numel() for p in model.parameters()) == arch.params_total
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.shape == (arch.heads * arch.head_dim, arch.d_model)
    assert attn.k_proj.weight.shape == (arch.kv_heads * arch.head_dim, arch.d_model)
    assert model.config.tie_word_embeddings == arch.tied


def test_config_json_written(tmp_path):
    a = ARCHS[0]
    write_llama_config(a.with_network(rope_base=10000), tmp_path, max_position_embeddings=96)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg == json.loads(json.dumps(llama_config(a.with_network(rope_base=10000), max_position_embeddings=96)))
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert cfg["max_position_embeddings"] == 96 and cfg["rope_theta"] == 10000.0


@pytest.mark.parametrize("arch", [ARCHS[0], ARCHS[2]], ids=lambda a: a.arch_id)
def test_megatron_weights_in_transformers_give_the_same_logits_and_tokens(arch):
    """The converted megatron model is the same function in transformers (tied and untied, GQA)."""
    import torch

    from archscale.model import build_model, causal_mask, resolve_runtime, setup_runtime
    from archscale.throughput.engine import StaticDecoder, random_prompts
    from archscale.export import megatron_to_hf_state_dict

    runtime = resolve_runtime(cuda_available=False, te_installed=False)
    setup_runtime(runtime, 3)
    mcore = build_model(arch, runtime, max_sequence_length=64, rope_base=ROPE, init_std=0.3).eval()
    hf = hf_llama_model(arch.with_network(rope_base=ROPE), dtype="float32", max_position_embeddings=64)
    missing, unexpected = hf.load_state_dict(megatron_to_hf_state_dict(mcore.state_dict(), arch), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    prompts = random_prompts(arch.vocab, 2, 10, seed=0)
    with torch.inference_mode():
        ref = mcore(prompts, torch.arange(10)[None].expand(2, 10), causal_mask(10), runtime_gather_output=True)
        got = hf(prompts).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    tokens = StaticDecoder(mcore, runtime).generate(prompts, 8).tokens
    hf_tokens = hf.generate(prompts, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                            cache_implementation="static", pad_token_id=0)[:, 10:]
    assert len(torch.unique(tokens)) > 2
    assert torch.equal(tokens, hf_tokens)


def test_config_is_a_llama_config_whose_validators_still_run():
    """d % heads != 0 is accepted (explicit head_dim); a head layout the model cannot build is not."""
    from transformers import LlamaConfig

    from archscale.throughput.hf_config import hf_llama_config

    cfg = hf_llama_config(ARCHS[3].with_network(rope_base=500000.0))
    assert isinstance(cfg, LlamaConfig) and cfg.model_type == "llama" and cfg.head_dim == 64
    cfg.num_key_value_heads = 5  # 72 heads are not a multiple of 5
    with pytest.raises(Exception, match="num_key_value_heads"):
        cfg.validate()
