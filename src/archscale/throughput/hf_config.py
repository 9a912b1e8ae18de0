"""A Hugging Face ``LlamaConfig`` for an architecture (for vLLM and transformers).

The mapping is exact: ``LlamaForCausalLM`` built from it has the resolver's parameter count
(``head_dim`` is explicit, so ``heads * head_dim`` need not equal ``d_model``; no biases;
RMSNorm eps and RoPE base as in the megatron model).
"""

from __future__ import annotations

from pathlib import Path

from ..arch import Architecture
from ..io import write_json


def llama_config(
    arch: Architecture,
    max_position_embeddings: int = 4096,
    *,
    rope_base: float,
    dtype: str = "bfloat16",
    rms_norm_eps: float = 1e-5,
) -> dict:
    """The ``config.json`` of a LlamaForCausalLM with the shape of ``arch``."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": arch.d_model,
        "intermediate_size": arch.ffn,
        "num_hidden_layers": arch.layers,
        "num_attention_heads": arch.heads,
        "num_key_value_heads": arch.kv_heads,
        "head_dim": arch.head_dim,
        "vocab_size": arch.vocab,
        "tie_word_embeddings": arch.tied,
        "hidden_act": "silu",
        "rms_norm_eps": rms_norm_eps,
        "rope_theta": float(rope_base),
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": int(max_position_embeddings),
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def write_llama_config(arch: Architecture, directory: str | Path, **kwargs) -> Path:
    """Write ``config.json`` (atomically) into ``directory``; returns the directory."""
    directory = Path(directory)
    write_json(directory / "config.json", llama_config(arch, **kwargs))
    return directory


def hf_llama_config(arch: Architecture, **kwargs):
    """A ``transformers.LlamaConfig`` of ``arch``.

    transformers >= 5 validates ``hidden_size % num_attention_heads == 0`` although the Llama
    modelling code uses the explicit ``head_dim`` (q/o projections are ``heads*head_dim`` wide);
    the paper's architectures break that rule on purpose (Panda-1B: d=2560, 72 heads), so that
    one check is skipped while the config is built.
    """
    from unittest import mock

    from transformers import LlamaConfig

    values = {k: v for k, v in llama_config(arch, **kwargs).items() if k not in ("architectures", "model_type")}
    validators = getattr(LlamaConfig, "__class_validators__", None)  # huggingface_hub's @strict
    if arch.d_model % arch.heads == 0 or validators is None:
        return LlamaConfig(**values)
    kept = [v for v in validators if v.__name__ != "validate_architecture"]
    with mock.patch.object(LlamaConfig, "__class_validators__", kept):
        return LlamaConfig(**values)


def hf_llama_model(arch: Architecture, seed: int = 0, **kwargs):
    """``LlamaForCausalLM`` of ``arch`` with seeded random weights (fp32 unless ``dtype`` says otherwise)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(hf_llama_config(arch, **kwargs)).eval()


def megatron_to_hf_state_dict(megatron_state: dict, arch: Architecture) -> dict:
    """Megatron GPTModel tensors under LlamaForCausalLM names (``lm_head`` included when tied).

    The mapping itself is :func:`archscale.export.megatron_to_hf` (strict: every tensor is
    accounted for and shape-checked); a tied in-memory ``LlamaForCausalLM`` also expects its
    ``lm_head.weight`` key, so it is added here.
    """
    from ..export import megatron_to_hf

    out = megatron_to_hf(megatron_state, arch)
    if arch.tied:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out
