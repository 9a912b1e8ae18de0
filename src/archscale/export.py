"""Export a trained megatron-core model to a Hugging Face Llama model directory.

Length (~450 lines): the export stage end to end -- checkpoint loading, the megatron -> HF weight
mapping, the config/model-type choice and the logits check -- one concept, one module.

The directory loads with ``transformers`` (``LlamaForCausalLM``), vLLM and lm-evaluation-harness
(``--model hf --model_args pretrained=DIR``)::

    config.json              LlamaConfig (archscale.throughput.hf_config.llama_config) + token ids;
                             model_type llama, or mistral (the same network) where transformers 5
                             refuses the Llama shape (:func:`hf_model_type`)
    generation_config.json   eos = the end-of-document token
    model.safetensors        weights (tied: no lm_head.weight, transformers ties it on load)
    tokenizer.json           the training tokenizer, encoding exactly as the training data was
    tokenizer_config.json    PreTrainedTokenizerFast, eos/pad = end-of-document token
    archscale.json           provenance: architecture, source checkpoint, dtype, logit check

Weight mapping (megatron-core 0.16 GPTModel -> HF Llama), per layer ``i``:

* ``linear_qkv`` [(h+2g)*dh, d] is laid out per query group: for each of the g groups, the
  group's h/g query heads, then its key head, then its value head (``SelfAttention.
  get_query_key_value_tensors``). Query head j belongs to group j // (h/g), which is the key/value
  head HF's ``repeat_kv`` pairs it with, so q/k/v are cut out of each group and concatenated.
* ``linear_fc1`` [2f, d] = [gate; up]; ``linear_fc2`` = down; ``linear_proj`` = o_proj.
* Norms: ``input_layernorm`` / ``pre_mlp_layernorm`` (local spec) or the Transformer Engine
  fused names ``linear_qkv.layer_norm_weight`` / ``linear_fc1.layer_norm_weight``.
* RoPE: megatron's default (non-interleaved, rotate-half, inv_freq = base^(-2i/dh)) is HF's
  default rope; softmax scale 1/sqrt(dh) in both; RMSNorm eps 1e-5 in both.

The tokenizer has no post-processor (no BOS), like the training data (:mod:`archscale.data`:
documents encoded without special tokens, each followed by the end-of-document token); the
end-of-document token is eos and pad, and lm-evaluation-harness prefixes empty contexts with it,
which is what a model trained on concatenated documents saw at a document start.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .arch import Architecture
from .io import atomic_dir, read_json, write_json
from .provenance import versions

DTYPES = ("auto", "float32", "bfloat16", "float16")
MODEL_TYPES = ("auto", "llama", "mistral")

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# megatron (local spec name, Transformer Engine fused name) -> HF name inside model.layers.{i}.
_NORMS = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "post_attention_layernorm.weight",
}


class ExportError(ValueError):
    """A checkpoint that cannot be exported (names the file or tensor at fault)."""


def split_qkv(qkv, heads: int, kv_heads: int, head_dim: int):
    """megatron's per-group fused QKV weight [(h+2g)*dh, d] -> (q [h*dh, d], k [g*dh, d], v [g*dh, d])."""
    per_group = heads // kv_heads
    rows = (heads + 2 * kv_heads) * head_dim
    if qkv.shape[0] != rows:
        raise ExportError(
            f"linear_qkv has {qkv.shape[0]} rows, expected (heads {heads} + 2*kv_heads {kv_heads}) * "
            f"head_dim {head_dim} = {rows}"
        )
    grouped = qkv.reshape(kv_heads, (per_group + 2) * head_dim, qkv.shape[-1])
    q, k, v = grouped.split([per_group * head_dim, head_dim, head_dim], dim=1)
    d = qkv.shape[-1]
    return q.reshape(heads * head_dim, d), k.reshape(kv_heads * head_dim, d), v.reshape(kv_heads * head_dim, d)


def merge_qkv(q, k, v, heads: int, kv_heads: int, head_dim: int):
    """Inverse of :func:`split_qkv` (HF q/k/v -> megatron's per-group layout)."""
    import torch

    per_group = heads // kv_heads
    d = q.shape[-1]
    grouped = torch.cat(
        [
            q.reshape(kv_heads, per_group * head_dim, d),
            k.reshape(kv_heads, head_dim, d),
            v.reshape(kv_heads, head_dim, d),
        ],
        dim=1,
    )
    return grouped.reshape((heads + 2 * kv_heads) * head_dim, d)


def megatron_to_hf(state_dict: dict[str, Any], arch: Architecture) -> dict[str, Any]:
    """HF Llama tensors from a megatron-core GPTModel state dict (local or TE layer names).

    ``_extra_state`` entries (Transformer Engine / fp8 metadata) are ignored; any other tensor
    that has no HF counterpart, and any HF tensor left unfilled, is an error: nothing is dropped
    silently.
    """
    h, g, dh = arch.heads, arch.kv_heads, arch.head_dim
    out: dict[str, Any] = {}
    unused = []
    for name, tensor in state_dict.items():
        if name.endswith("_extra_state") or tensor is None:
            continue
        if name == "embedding.word_embeddings.weight":
            out["model.embed_tokens.weight"] = tensor
        elif name == "decoder.final_layernorm.weight":
            out["model.norm.weight"] = tensor
        elif name == "output_layer.weight":
            if not arch.tied:
                out["lm_head.weight"] = tensor
        elif m := _LAYER_RE.match(name):
            i, rest = int(m.group(1)), m.group(2)
            p = f"model.layers.{i}."
            if rest in _NORMS:
                out[p + _NORMS[rest]] = tensor
            elif rest == "self_attention.linear_qkv.weight":
                q, k, v = split_qkv(tensor, h, g, dh)
                out[p + "self_attn.q_proj.weight"] = q
                out[p + "self_attn.k_proj.weight"] = k
                out[p + "self_attn.v_proj.weight"] = v
            elif rest == "self_attention.linear_proj.weight":
                out[p + "self_attn.o_proj.weight"] = tensor
            elif rest == "mlp.linear_fc1.weight":
                if tensor.shape[0] != 2 * arch.ffn:
                    raise ExportError(f"{name}: {tensor.shape[0]} rows, expected 2*ffn = {2 * arch.ffn} (gate; up)")
                gate, up = tensor.chunk(2, dim=0)
                out[p + "mlp.gate_proj.weight"] = gate
                out[p + "mlp.up_proj.weight"] = up
            elif rest == "mlp.linear_fc2.weight":
                out[p + "mlp.down_proj.weight"] = tensor
            else:
                unused.append(name)
        else:
            unused.append(name)
    if unused:
        raise ExportError(
            f"megatron tensors without a Llama counterpart: {unused[:8]}"
            f"{' ...' if len(unused) > 8 else ''} (biases or extra norms are not part of the LLaMA-3.2 shape)"
        )
    expected = set(hf_tensor_shapes(arch))
    missing = sorted(expected - set(out))
    if missing:
        raise ExportError(f"checkpoint lacks tensors for {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for key, shape in hf_tensor_shapes(arch).items():
        if tuple(out[key].shape) != shape:
            raise ExportError(f"{key}: shape {tuple(out[key].shape)}, architecture {arch.arch_id} needs {shape}")
    return out


def hf_tensor_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the exported model (``lm_head`` only when untied)."""
    d, f, dq, dkv = arch.d_model, arch.ffn, arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab, d), "model.norm.weight": (d,)}
    if not arch.tied:
        shapes["lm_head.weight"] = (arch.vocab, d)
    for i in range(arch.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (dq, d),
            p + "self_attn.k_proj.weight": (dkv, d),
            p + "self_attn.v_proj.weight": (dkv, d),
            p + "self_attn.o_proj.weight": (d, dq),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        })
    return shapes


def hf_model_type(arch: Architecture, requested: str = "auto") -> str:
    """``llama``, or ``mistral`` where transformers' LlamaConfig refuses the shape.

    transformers 5.x (checked up to 5.23) rejects a LlamaConfig whose hidden size is not a
    multiple of the head count even when ``head_dim`` is explicit (huggingface/transformers
    #46082), which is the case of the paper's Panda and Surefire models (d=2560, h=72). Mistral
    with ``sliding_window: null`` is the same network (same tensor names, RoPE, RMSNorm, SwiGLU,
    no biases, explicit head_dim), accepted by transformers 4.x and 5.x, and vLLM runs
    ``MistralForCausalLM`` with its Llama implementation. ``auto`` picks llama whenever it loads.
    """
    if requested not in MODEL_TYPES:
        raise ExportError(f"export.model_type: '{requested}' is not one of {', '.join(MODEL_TYPES)}")
    if requested != "auto":
        return requested
    return "llama" if arch.d_model % arch.heads == 0 else "mistral"


def hf_config(
    arch: Architecture,
    seq_length: int,
    eod_id: int | None,
    dtype: str,
    model_type: str = "auto",
) -> dict[str, Any]:
    """``config.json`` of the spec ``arch``: the mapping of
    :func:`archscale.throughput.hf_config.llama_config` (one copy of it in the project), with the
    trained context length, the token ids and the model type of :func:`hf_model_type`."""
    from .throughput.hf_config import llama_config

    cfg = llama_config(arch, max_position_embeddings=seq_length, dtype=dtype)
    cfg.update(eos_token_id=eod_id, pad_token_id=eod_id, bos_token_id=None)
    if hf_model_type(arch, model_type) == "mistral":
        cfg.update(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=None)
    return cfg


def write_tokenizer(tokenizer_file: str | Path, meta: dict, directory: Path, model_max_length: int) -> None:
    """tokenizer.json (post-processor removed: no BOS, as in training) + tokenizer_config.json."""
    path = Path(tokenizer_file)
    try:
        tok = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: tokenizer file is missing") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not a tokenizer.json ({exc})") from None
    eod = meta["eod_token"]
    specials = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    if specials.get(eod) != meta["eod_id"]:
        raise ExportError(
            f"{path}: end-of-document token {eod!r} has id {specials.get(eod)}, the tokenizer record says "
            f"{meta['eod_id']}; re-run the tokenizer rule"
        )
    tok["post_processor"] = None
    tok["truncation"] = None
    tok["padding"] = None
    (directory / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eod,
        "pad_token": eod,
        "bos_token": None,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(model_max_length),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": eod, "pad_token": eod}, indent=2) + "\n"
    )


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_dtype(requested: str, model_dtype) -> str:
    """The exported dtype: ``auto`` keeps the dtype the model's parameters have."""
    import torch

    if requested not in DTYPES:
        raise ExportError(f"export.dtype: '{requested}' is not one of {', '.join(DTYPES)}")
    if requested != "auto":
        return requested
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    return names[model_dtype]


def export_model(
    model,
    arch: Architecture,
    out_dir: str | Path,
    *,
    tokenizer_file: str | Path,
    tokenizer_meta: dict,
    seq_length: int,
    rope_base: float | None = None,
    dtype: str = "auto",
    model_type: str = "auto",
    provenance: dict | None = None,
    verify_tokens=None,
    verify_atol: float | None = None,
) -> dict:
    """Write the HF directory of an in-memory megatron-core GPTModel of the spec ``arch`` (its
    RoPE base replaced by ``rope_base`` when given); returns the export record.

    With ``verify_tokens`` ([B, S] token ids), the exported directory is loaded back with
    transformers and its logits compared with megatron's (both in fp32); the max absolute
    difference goes into the record, and a difference above ``verify_atol`` fails the export
    before the directory appears.
    """
    import torch
    from safetensors.torch import save_file

    if rope_base is not None:
        arch = arch.with_network(rope_base=rope_base)
    params = list(model.parameters())
    out_dtype = resolve_dtype(dtype, params[0].dtype)
    if arch.vocab < int(tokenizer_meta["vocab_size"]):
        raise ExportError(
            f"{arch.arch_id}: embedding has {arch.vocab} rows but the tokenizer has {tokenizer_meta['vocab_size']} tokens"
        )
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) or v is None}
    tensors = megatron_to_hf(state, arch)
    tensors = {k: v.detach().to("cpu", _torch_dtype(out_dtype)).contiguous() for k, v in tensors.items()}
    config = hf_config(arch, seq_length, int(tokenizer_meta["eod_id"]), out_dtype, model_type)
    record = {
        "arch_id": arch.arch_id,
        "model_type": config["model_type"],
        "arch": arch.to_dict(),
        "dtype": out_dtype,
        "seq_length": int(seq_length),
        **arch.network(),
        "tensors": len(tensors),
        "parameters": int(sum(t.numel() for t in tensors.values())),
        "files": ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json"],
        "versions": versions("torch", "megatron-core", "transformers", "safetensors", "archscale"),
        **(provenance or {}),
    }
    if record["parameters"] != arch.params_total:
        raise ExportError(f"{arch.arch_id}: exported {record['parameters']} parameters, the architecture has {arch.params_total}")
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        gen = {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"], "do_sample": False}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        write_tokenizer(tokenizer_file, tokenizer_meta, tmp, seq_length)
        if verify_tokens is not None:
            diff = max_logit_difference(model, tmp, verify_tokens)
            record["verify"] = {"batch": list(verify_tokens.shape), "max_abs_logit_diff": diff, "atol": verify_atol}
            print(f"[archscale] export {arch.arch_id}: max |logit(HF) - logit(megatron)| = {diff:.3e}", flush=True)
            if verify_atol is not None and not diff <= verify_atol:
                raise ExportError(
                    f"{arch.arch_id}: exported model's logits differ from megatron's by {diff:.3e} > {verify_atol:.1e}"
                )
        write_json(tmp / "archscale.json", record)
    return record


def megatron_logits(model, tokens):
    """Logits [B, S, V] of a megatron-core GPTModel (explicit causal mask, as on CPU)."""
    import torch

    from .model import causal_mask

    device = next(model.parameters()).device
    tokens = tokens.to(device)
    positions = torch.arange(tokens.shape[1], device=device)[None].expand_as(tokens)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(tokens, positions, causal_mask(tokens.shape[1], str(device.type))).float().cpu()
    finally:
        model.train(was_training)


def hf_logits(directory: str | Path, tokens, dtype=None):
    """Logits [B, S, V] of the exported directory, loaded with transformers (fp32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    hf = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
    hf.eval()
    with torch.no_grad():
        return hf(input_ids=tokens.cpu()).logits.float()


def max_logit_difference(model, directory: str | Path, tokens) -> float:
    """Max |HF - megatron| logit on ``tokens``, the HF model in the megatron model's dtype."""
    ours = megatron_logits(model, tokens)
    theirs = hf_logits(directory, tokens, dtype=next(model.parameters()).dtype)
    if ours.shape != theirs.shape:
        raise ExportError(f"logit shapes differ: megatron {tuple(ours.shape)}, HF {tuple(theirs.shape)}")
    return float((ours - theirs).abs().max())


def verify_batch(vocab: int, batch: int = 2, seq: int = 16, seed: int = 0):
    """A fixed batch of random token ids for the export's logit check."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=gen)


def default_atol(dtype) -> float:
    """Tolerance of the logit check: fp32 is exact up to summation order; bf16/fp16 are not."""
    import torch

    return 1e-3 if dtype == torch.float32 else 0.25


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    tokenizer_file: str | Path,
    tokenizer_meta_file: str | Path,
    dtype: str = "auto",
    model_type: str = "auto",
    verify: bool = True,
    threads: int | None = None,
) -> dict:
    """Export ``results/train/{arch}/final`` (megatron-core dist_checkpointing) to ``out_dir``.

    The model is rebuilt and loaded by the loader of the checkpoint format
    (:func:`archscale.checkpoint.load_final`), with the local layer spec (the
    checkpoint's keys are the same for both specs) on whatever device this process has.
    """
    import torch

    from .checkpoint import DESCRIPTION, load_final
    from .model import resolve_runtime, setup_runtime

    checkpoint = Path(checkpoint)
    if not (checkpoint / DESCRIPTION).exists():
        raise ExportError(f"{checkpoint}: not a final checkpoint of archscale ({DESCRIPTION} missing)")
    runtime = resolve_runtime(precision="auto", transformer_impl="local")
    if not runtime.on_gpu and threads:
        torch.set_num_threads(int(threads))
    setup_runtime(runtime, seed=0)
    model, desc = load_final(checkpoint, runtime)
    arch = Architecture.from_record(desc)
    if dtype == "auto" and desc.get("precision") == "bf16":
        # Trained in bf16 and loaded here in fp32 (a CPU job): keep the checkpoint's precision.
        dtype = "bfloat16"
    meta = read_json(tokenizer_meta_file)
    tokens = None
    atol = None
    if verify:
        tokens = verify_batch(arch.vocab, seq=min(16, int(desc["seq_length"])))
        atol = default_atol(next(model.parameters()).dtype)
    return export_model(
        model,
        arch,
        out_dir,
        tokenizer_file=tokenizer_file,
        tokenizer_meta=meta,
        seq_length=int(desc["seq_length"]),
        dtype=dtype,
        model_type=model_type,
        provenance={"source_checkpoint": str(checkpoint), "source": {k: desc[k] for k in desc if k != "arch"}},
        verify_tokens=tokens,
        verify_atol=atol,
    )


def megatron_to_hf_state_dict(megatron_state: dict, arch: Architecture) -> dict:
    """Megatron GPTModel tensors for an in-memory ``LlamaForCausalLM`` (``lm_head`` included when tied).

    The mapping itself is :func:`megatron_to_hf` (strict: every tensor is accounted for and
    shape-checked); a tied in-memory ``LlamaForCausalLM`` also expects its ``lm_head.weight`` key,
    so it is added here.
    """
    out = megatron_to_hf(megatron_state, arch)
    if arch.tied:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out
