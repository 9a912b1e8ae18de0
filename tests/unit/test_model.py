"""megatron-core GPTModel from resolved architectures; runtime and layer-spec decisions."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from archscale.arch import Architecture, GridPoint, Scale, resolve
from archscale.model import (
    build_model,
    causal_mask,
    count_parameters,
    layer_spec,
    resolve_runtime,
    setup_runtime,
    transformer_config,
)
from archscale.plan import build_plan

ROPE = 500000.0


@pytest.fixture(scope="module")
def cpu_runtime():
    rt = resolve_runtime()
    setup_runtime(rt, seed=1)
    return rt


def _resolved_archs() -> list[Architecture]:
    """Architectures as the resolver and the plan produce them: tied and untied, GQA 1..6."""
    archs = []
    for tied in (True, False):
        scale = Scale(name="t", n_target=60_000, layers=2, head_dim=8, vocab=320, tied=tied,
                      d_multiple=8, ffn_multiple=4, r_tolerance=0.4)
        for point in (GridPoint(r=1.0, gqa=1, d_model=64), GridPoint(r=2.0, gqa=2, d_model=96),
                      GridPoint(r=0.7, gqa=3, d_model=72)):
            archs.append(resolve(scale, point))
    config = {
        "tokenizer": {"vocab_size": 288},
        "model": {"tied_embeddings": False, "d_multiple": 8, "ffn_multiple": 4, "r_tolerance": 0.4},
        "training": {"seq_length": 32, "global_batch": 4},
        "scales": [{"name": "p", "n_target": 40_000, "layers": 3, "head_dim": 8, "tokens": 1000,
                    "grid": [{"d_model": [48], "r": [1.5], "gqa": [2, 6]}],
                    "architectures": [{"name": "mini", "d_model": 40, "ffn": 62, "heads": 6, "kv_heads": 3}]}],
    }
    archs += [run.arch for run in build_plan(config).runs.values()]
    return archs


@pytest.mark.parametrize("arch", _resolved_archs(), ids=lambda a: a.arch_id)
def test_built_parameter_count_equals_resolver(cpu_runtime, arch):
    model = build_model(arch, cpu_runtime, max_sequence_length=32, rope_base=ROPE)
    assert count_parameters(model) == arch.params_total
    # non-embedding part: everything but the embedding (and the untied output layer)
    emb = model.embedding.word_embeddings.weight.numel()
    out = 0 if arch.tied else model.output_layer.weight.numel()
    assert count_parameters(model) - emb - out == arch.params_non_embedding
    attn = model.decoder.layers[0].self_attention
    assert attn.linear_qkv.weight.shape == ((arch.heads + 2 * arch.kv_heads) * arch.head_dim, arch.d_model)
    assert model.decoder.layers[0].mlp.linear_fc1.weight.shape == (2 * arch.ffn, arch.d_model)
    assert model.share_embeddings_and_output_weights == arch.tied


def test_forward_returns_per_token_loss(cpu_runtime):
    arch = Architecture(d_model=32, ffn=64, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=128)
    model = build_model(arch, cpu_runtime, max_sequence_length=16, rope_base=ROPE)
    tokens = torch.randint(0, 128, (3, 16))
    labels = torch.randint(0, 128, (3, 16))
    loss = model(tokens, None, causal_mask(16), labels=labels)
    assert loss.shape == (3, 16)
    # an untrained model is near uniform over the vocabulary
    assert abs(loss.mean().item() - torch.log(torch.tensor(128.0)).item()) < 0.3
    logits = model(tokens, None, causal_mask(16))
    assert logits.shape == (3, 16, 128)


@pytest.mark.parametrize("heads,kv", [(4, 4), (4, 2), (6, 1)])
def test_sdpa_core_attention_matches_megatron(cpu_runtime, heads, kv):
    """'local' (SDPA core attention) computes what megatron's DotProductAttention computes."""
    arch = Architecture(d_model=48, ffn=96, layers=2, heads=heads, kv_heads=kv, head_dim=8, vocab=96)
    tokens = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(0))
    results = {}
    for impl in ("local", "local_megatron"):
        rt = resolve_runtime(transformer_impl=impl)
        torch.manual_seed(3)
        model = build_model(arch, rt, 24, rope_base=ROPE)
        loss = model(tokens, None, causal_mask(24), labels=tokens).mean()
        loss.backward()
        results[impl] = (loss.item(), model.decoder.layers[0].self_attention.linear_qkv.weight.grad.clone())
    assert results["local"][0] == pytest.approx(results["local_megatron"][0], abs=1e-5)
    torch.testing.assert_close(results["local"][1], results["local_megatron"][1], rtol=1e-4, atol=1e-6)
    spec = layer_spec(resolve_runtime(transformer_impl="local"))
    assert spec.submodules.self_attention.submodules.core_attention.__name__ == "SDPADotProductAttention"


def test_heads_not_divisible_by_kv_heads_is_refused(cpu_runtime):
    arch = Architecture(d_model=32, ffn=64, layers=1, heads=4, kv_heads=4, head_dim=8, vocab=64)
    object.__setattr__(arch, "kv_heads", 3)  # bypass the dataclass check to reach the model builder
    with pytest.raises(ValueError, match="not divisible"):
        transformer_config(arch, cpu_runtime)


# ---- runtime decisions (pure, so the GPU branch is testable here) ------------------------

def test_cpu_runtime_is_fp32_local():
    rt = resolve_runtime(cuda_available=False, te_installed=True)
    assert (rt.device, rt.precision, rt.transformer_impl) == ("cpu", "fp32", "local")
    assert rt.params_dtype == torch.float32
    with pytest.raises(ValueError, match="bf16 needs a GPU"):
        resolve_runtime(precision="bf16", cuda_available=False)
    with pytest.raises(ValueError, match="transformer_engine"):
        resolve_runtime(transformer_impl="transformer_engine", cuda_available=False, te_installed=True)
    with pytest.raises(ValueError, match="unknown value"):
        resolve_runtime(transformer_impl="flash", cuda_available=False)


def test_gpu_runtime_bf16_and_te_when_installed():
    rt = resolve_runtime(cuda_available=True, te_installed=True)
    assert (rt.device, rt.precision, rt.transformer_impl) == ("cuda", "bf16", "transformer_engine")
    assert rt.params_dtype == torch.bfloat16
    rt = resolve_runtime(cuda_available=True, te_installed=False)
    assert (rt.precision, rt.transformer_impl) == ("bf16", "local")


def test_gpu_runtime_multi_process_and_tensor_parallel(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    rt = resolve_runtime(tensor_parallel=2, cuda_available=True, te_installed=True)
    assert (rt.world_size, rt.rank, rt.local_rank, rt.tensor_parallel) == (8, 5, 1, 2)
    with pytest.raises(ValueError, match="must divide"):
        resolve_runtime(tensor_parallel=3, cuda_available=True)
    with pytest.raises(ValueError, match="tensor parallelism needs GPUs"):
        resolve_runtime(tensor_parallel=2, cuda_available=False)
    assert resolve_runtime(cuda_available=False).world_size == 8  # data parallelism over gloo


def test_gpu_transformer_config_and_te_spec(monkeypatch):
    rt = resolve_runtime(cuda_available=True, te_installed=True)
    arch = Architecture(d_model=2048, ffn=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256)
    cfg = transformer_config(arch, rt)
    assert cfg.bf16 and not cfg.fp16
    assert cfg.params_dtype == torch.bfloat16 and cfg.pipeline_dtype == torch.bfloat16
    assert not cfg.use_cpu_initialization
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size) == (16, 2048, 8192)
    assert (cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels) == (32, 8, 64)
    assert cfg.gated_linear_unit and cfg.normalization == "RMSNorm" and not cfg.add_bias_linear
    assert cfg.activation_func is torch.nn.functional.silu
    assert cfg.hidden_dropout == 0.0 and cfg.attention_dropout == 0.0

    from megatron.core.models.gpt import gpt_layer_specs

    calls = []
    monkeypatch.setattr(gpt_layer_specs, "get_gpt_layer_with_transformer_engine_spec",
                        lambda *a, **k: calls.append("te") or "TE-SPEC")
    assert layer_spec(rt) == "TE-SPEC" and calls == ["te"]
    rt_local = resolve_runtime(cuda_available=True, te_installed=False)
    assert layer_spec(rt_local) != "TE-SPEC" and calls == ["te"]


@pytest.mark.slow
def test_gpu_path_never_imports_the_cpu_compat_layer(tmp_path):
    """The GPU branch (config, spec, launcher, job) runs without archscale.compat being imported."""
    code = textwrap.dedent("""
        import sys
        import torch
        torch.cuda.is_available = lambda: True   # pretend to be a GPU node
        from megatron.core.models.gpt import gpt_layer_specs
        gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec = lambda *a, **k: "TE"
        from archscale.arch import Architecture
        from archscale.model import resolve_runtime, transformer_config, layer_spec
        import archscale.train.loop, archscale.train.checkpointing, archscale.data.dataset
        from archscale.train.launcher import command
        rt = resolve_runtime(te_installed=True)
        assert rt.device == "cuda" and rt.precision == "bf16", rt
        arch = Architecture(d_model=256, ffn=512, layers=2, heads=4, kv_heads=2, head_dim=64, vocab=1000)
        cfg = transformer_config(arch, rt)
        assert cfg.bf16 and layer_spec(rt) == "TE"
        cmd = command("job.json", 4)
        assert "--nproc-per-node" in cmd
        assert "archscale.compat" not in sys.modules, "compat imported on the GPU path"
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
