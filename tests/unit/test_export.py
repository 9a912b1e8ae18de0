"""Export of megatron-core models to HF Llama: logits equal in fp32, tied and untied, several GQA."""

import json
from pathlib import Path

import pytest
import torch

from archscale.arch import Architecture
from archscale.export import (
    ExportError,
    export_model,
    hf_logits,
    hf_tensor_shapes,
    megatron_logits,
    megatron_to_hf,
    merge_qkv,
    split_qkv,
)

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32
ROPE = 500000.0
META = {"vocab_size": 64, "eod_id": 0, "eod_token": "<|endoftext|>"}


@pytest.fixture(scope="module")
def runtime():
    from archscale.model import resolve_runtime, setup_runtime

    rt = resolve_runtime("fp32", "local", cuda_available=False)
    setup_runtime(rt, seed=0)
    return rt


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A real byte-level BPE (the data stage's trainer) with the end-of-document token at id 0."""
    from archscale.data.tokenizer import train_bpe

    texts = ["The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x + 1\n"] * 20
    tok = train_bpe(texts, 300, META["eod_token"])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _model(runtime, arch, seed=0):
    from archscale.model import build_model

    torch.manual_seed(seed)
    model = build_model(arch, runtime, max_sequence_length=SEQ, rope_base=ROPE)
    # Perturb every weight (norms included: they start at 1), so a swapped or mis-sliced tensor
    # shows in the logits.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _arch(heads, kv_heads, tied, d=44, head_dim=8, ffn=56, layers=2, vocab=300):
    # heads*head_dim != d on purpose (the paper's architectures rely on it).
    return Architecture(d_model=d, ffn=ffn, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                        vocab=vocab, tied=tied, scale="t")


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("kv_heads", [6, 3, 2, 1], ids=lambda g: f"gqa{6 // g}")
def test_exported_logits_equal_megatron(runtime, tokenizer_file, tmp_path, tied, kv_heads):
    # d % heads == 0 exports as llama; otherwise (h*dh != d, as in Panda/Surefire) as mistral.
    d = 48 if kv_heads in (6, 2) else 40
    arch = _arch(6, kv_heads, tied, d=d)
    model = _model(runtime, arch, seed=kv_heads)
    meta = dict(META, vocab_size=300)
    tokens = torch.randint(0, arch.vocab, (3, SEQ), generator=torch.Generator().manual_seed(7))
    out = tmp_path / "hf"
    record = export_model(model, arch, out, tokenizer_file=tokenizer_file, tokenizer_meta=meta,
                          seq_length=SEQ, rope_base=ROPE, verify_tokens=tokens[:1], verify_atol=1e-4)
    ours = megatron_logits(model, tokens)
    theirs = hf_logits(out, tokens)
    assert ours.shape == theirs.shape == (3, SEQ, arch.vocab)
    assert ours.abs().max() > 1.0  # the comparison is not between near-zero numbers
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-4)
    assert record["verify"]["max_abs_logit_diff"] < 1e-4
    assert record["parameters"] == arch.params_total

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head_dim"] == 8 and cfg["num_key_value_heads"] == kv_heads and cfg["hidden_size"] == d
    assert cfg["model_type"] == ("llama" if d == 48 else "mistral") == record["model_type"]
    if d == 40:
        assert cfg["sliding_window"] is None and cfg["architectures"] == ["MistralForCausalLM"]
    assert cfg["tie_word_embeddings"] is tied and cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    assert cfg["rope_theta"] == ROPE and cfg["rms_norm_eps"] == 1e-5 and cfg["max_position_embeddings"] == SEQ
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert ("lm_head.weight" in names) is (not tied)
    assert names == set(hf_tensor_shapes(arch))


def test_exported_model_is_not_position_blind(runtime, tokenizer_file, tmp_path):
    """RoPE is applied the same way: a wrong base would still match at position 0 only."""
    arch = _arch(4, 2, True)
    model = _model(runtime, arch, seed=3)
    out = tmp_path / "hf"
    export_model(model, arch, out, tokenizer_file=tokenizer_file, tokenizer_meta=dict(META, vocab_size=300),
                 seq_length=SEQ, rope_base=ROPE)
    cfg = json.loads((out / "config.json").read_text())
    cfg["rope_theta"] = 10000.0
    (out / "config.json").write_text(json.dumps(cfg))
    tokens = torch.randint(0, arch.vocab, (1, SEQ), generator=torch.Generator().manual_seed(1))
    diff = (megatron_logits(model, tokens) - hf_logits(out, tokens)).abs()
    assert diff[:, 0].max() < 1e-4  # position 0 has no rotation
    assert diff[:, 1:].max() > 1e-2  # the base matters elsewhere: the test above checks it


def test_tokenizer_loads_and_encodes_like_training(runtime, tokenizer_file, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    arch = _arch(2, 1, True)
    out = tmp_path / "hf"
    export_model(_model(runtime, arch), arch, out, tokenizer_file=tokenizer_file,
                 tokenizer_meta=dict(META, vocab_size=300), seq_length=SEQ, rope_base=ROPE)
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    raw = Tokenizer.from_file(str(tokenizer_file))
    text = "The lazy fox returns x + 1."
    expected = raw.encode(text, add_special_tokens=False).ids
    assert hf_tok(text)["input_ids"] == expected  # no BOS added, whatever the caller asks
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == 0 and hf_tok.pad_token_id == 0
    assert hf_tok.decode(expected) == text
    rec = json.loads((out / "archscale.json").read_text())
    assert rec["arch_id"] == arch.arch_id and rec["dtype"] == "float32"


def test_export_bf16_dtype(runtime, tokenizer_file, tmp_path):
    arch = _arch(4, 2, False)
    model = _model(runtime, arch)
    out = tmp_path / "hf"
    rec = export_model(model, arch, out, tokenizer_file=tokenizer_file, tokenizer_meta=dict(META, vocab_size=300),
                       seq_length=SEQ, rope_base=ROPE, dtype="bfloat16")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    assert rec["dtype"] == "bfloat16"
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_failed_verification_leaves_no_directory(runtime, tokenizer_file, tmp_path):
    arch = _arch(4, 2, True)
    model = _model(runtime, arch)
    out = tmp_path / "hf"
    tokens = torch.randint(0, arch.vocab, (1, 8))
    with pytest.raises(ExportError, match="differ"):
        export_model(model, arch, out, tokenizer_file=tokenizer_file, tokenizer_meta=dict(META, vocab_size=300),
                     seq_length=SEQ, rope_base=ROPE, verify_tokens=tokens, verify_atol=-1.0)
    assert not out.exists()
    assert not list(tmp_path.glob(".hf.*"))


def test_qkv_split_is_per_group_and_inverts():
    h, g, dh, d = 6, 2, 3, 5
    # Row r of the fused weight holds the value r: the layout is then readable in the output.
    qkv = torch.arange((h + 2 * g) * dh, dtype=torch.float32)[:, None].expand(-1, d).clone()
    q, k, v = split_qkv(qkv, h, g, dh)
    per = (h // g + 2) * dh  # rows per group: 3 query heads, 1 key, 1 value
    assert q[:, 0].tolist() == [*range(0, 9), *range(per, per + 9)]
    assert k[:, 0].tolist() == [*range(9, 12), *range(per + 9, per + 12)]
    assert v[:, 0].tolist() == [*range(12, 15), *range(per + 12, per + 15)]
    assert torch.equal(merge_qkv(q, k, v, h, g, dh), qkv)


def test_mapping_accepts_transformer_engine_names_and_rejects_strays():
    arch = _arch(4, 2, True, layers=1)
    shapes = hf_tensor_shapes(arch)
    d, f = arch.d_model, arch.ffn
    te = {
        "embedding.word_embeddings.weight": torch.zeros(arch.vocab, d),
        "decoder.final_layernorm.weight": torch.zeros(d),
        "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": torch.full((d,), 2.0),
        "decoder.layers.0.self_attention.linear_qkv.weight": torch.zeros((4 + 4) * 8, d),
        "decoder.layers.0.self_attention.linear_qkv._extra_state": None,
        "decoder.layers.0.self_attention.linear_proj.weight": torch.zeros(d, 32),
        "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": torch.full((d,), 3.0),
        "decoder.layers.0.mlp.linear_fc1.weight": torch.cat([torch.ones(f, d), 2 * torch.ones(f, d)]),
        "decoder.layers.0.mlp.linear_fc2.weight": torch.zeros(d, f),
    }
    out = megatron_to_hf(te, arch)
    assert set(out) == set(shapes)
    assert out["model.layers.0.input_layernorm.weight"][0] == 2.0
    assert out["model.layers.0.post_attention_layernorm.weight"][0] == 3.0
    assert out["model.layers.0.mlp.gate_proj.weight"].unique().tolist() == [1.0]
    assert out["model.layers.0.mlp.up_proj.weight"].unique().tolist() == [2.0]
    with pytest.raises(ExportError, match="linear_qkv.bias"):
        megatron_to_hf({**te, "decoder.layers.0.self_attention.linear_qkv.bias": torch.zeros(64)}, arch)
    missing = dict(te)
    del missing["decoder.layers.0.mlp.linear_fc2.weight"]
    with pytest.raises(ExportError, match="down_proj"):
        megatron_to_hf(missing, arch)
    with pytest.raises(ExportError, match="shape"):
        megatron_to_hf({**te, "decoder.final_layernorm.weight": torch.zeros(d + 1)}, arch)


def test_hf_config_reuses_the_throughput_mapping():
    from archscale.export import hf_config
    from archscale.throughput.hf_config import llama_config

    arch = _arch(4, 2, False)
    cfg = hf_config(arch.with_network(rope_base=ROPE), 128, eod_id=5, dtype="float32")
    base = llama_config(arch.with_network(rope_base=ROPE), max_position_embeddings=128, dtype="float32")
    assert {k: v for k, v in cfg.items() if not k.endswith("token_id")} == {
        k: v for k, v in base.items() if not k.endswith("token_id")
    }
    assert cfg["eos_token_id"] == 5 and cfg["pad_token_id"] == 5 and cfg["bos_token_id"] is None


def test_model_type_choice():
    from archscale.export import hf_model_type

    panda = Architecture(d_model=2560, ffn=4096, layers=16, heads=72, kv_heads=18, head_dim=64, vocab=128256)
    llama = Architecture(d_model=2048, ffn=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256)
    assert hf_model_type(panda) == "mistral" and hf_model_type(llama) == "llama"
    assert hf_model_type(panda, "llama") == "llama"
    with pytest.raises(ExportError, match="export.model_type"):
        hf_model_type(llama, "gpt2")


def test_export_checkpoint_from_a_final_dist_checkpoint(runtime, tokenizer_file, tmp_path):
    """The rule's path: results/train/{arch}/final (the training stage's save_final/load_final)."""
    from types import SimpleNamespace

    from archscale.export import export_checkpoint
    from archscale.io import write_json
    from archscale.checkpoint import save_final

    arch = _arch(6, 2, False, d=40)
    model = _model(runtime, arch, seed=11)
    final = tmp_path / "train" / arch.arch_id / "final"
    save_final(final, SimpleNamespace(module=model), {
        "arch": arch.to_dict(), "arch_id": arch.arch_id, "seq_length": SEQ, "rope_base": ROPE, "step": 5,
        "precision": "fp32",
    })
    meta = tmp_path / "tokenizer.meta.json"
    write_json(meta, dict(META, vocab_size=300))
    out = tmp_path / "export" / arch.arch_id
    record = export_checkpoint(final, out, tokenizer_file=tokenizer_file, tokenizer_meta_file=meta)
    assert record["verify"]["max_abs_logit_diff"] < 1e-4
    assert record["source_checkpoint"] == str(final) and record["source"]["step"] == 5
    tokens = torch.randint(0, arch.vocab, (2, SEQ), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(hf_logits(out, tokens), megatron_logits(model, tokens), rtol=1e-5, atol=1e-4)


def test_bf16_checkpoint_exports_in_bf16_from_a_cpu_job(runtime, tokenizer_file, tmp_path):
    """A GPU (bf16) run exported on a CPU node: loaded into fp32, written back in bf16, exactly."""
    from types import SimpleNamespace

    from safetensors import safe_open

    from archscale.export import export_checkpoint
    from archscale.io import write_json
    from archscale.model import Runtime, build_model
    from archscale.checkpoint import save_final

    arch = _arch(4, 2, True)
    model = build_model(arch, Runtime("cpu", "bf16", "local"), max_sequence_length=SEQ, rope_base=ROPE)
    assert next(model.parameters()).dtype == torch.bfloat16
    final = tmp_path / "final"
    save_final(final, SimpleNamespace(module=model), {"arch": arch.to_dict(), "arch_id": arch.arch_id,
                                                      "seq_length": SEQ, "rope_base": ROPE, "precision": "bf16"})
    meta = tmp_path / "meta.json"
    write_json(meta, dict(META, vocab_size=300))
    rec = export_checkpoint(final, tmp_path / "hf", tokenizer_file=tokenizer_file, tokenizer_meta_file=meta)
    assert rec["dtype"] == "bfloat16" and rec["verify"]["max_abs_logit_diff"] < 1e-4
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.dtype == torch.bfloat16 and torch.equal(emb, model.embedding.word_embeddings.weight.detach())


def test_export_checkpoint_names_a_missing_checkpoint(tmp_path):
    from archscale.export import export_checkpoint

    with pytest.raises(ExportError, match="archscale.json missing"):
        export_checkpoint(tmp_path / "nope", tmp_path / "out", tokenizer_file="x", tokenizer_meta_file="y")
