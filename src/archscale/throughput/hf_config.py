"""A Hugging Face ``LlamaConfig`` for an architecture (for vLLM and transformers).

The mapping is exact: ``LlamaForCausalLM`` built from it has the resolver's parameter count
(``head_dim`` is explicit, so ``heads * head_dim`` need not equal ``d_model``; no biases;
RMSNorm eps and RoPE base as in the megatron model).
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..arch import Architecture
from ..io import write_json


def llama_config(
    arch: Architecture,
    max_position_embeddings: int = 4096,
    *,
    dtype: str = "bfloat16",
) -> dict:
    """The ``config.json`` of a LlamaForCausalLM of the spec ``arch`` (shape, RoPE, norm)."""
    if arch.rope_base is None:
        raise ValueError(f"{arch.arch_id}: the spec has no RoPE base (build it from a study: Study.spec)")
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
        "rms_norm_eps": arch.norm_eps,
        "rope_theta": float(arch.rope_base),
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
    the paper's architectures break that rule on purpose (Panda-1B: d=2560, 72 heads). The config
    is therefore an instance of :func:`explicit_head_dim_config_class`, a ``LlamaConfig`` whose
    architecture validator checks what the modelling code needs instead.
    """
    values = {k: v for k, v in llama_config(arch, **kwargs).items() if k not in ("architectures", "model_type")}
    return explicit_head_dim_config_class()(**values)


@functools.cache
def explicit_head_dim_config_class():
    """``LlamaConfig`` validated for an explicit ``head_dim`` (huggingface_hub's ``@strict`` validators).

    ``@strict`` collects a class's ``validate_*`` methods, so a subclass that overrides
    ``validate_architecture`` and is itself declared ``@strict`` replaces that one check and keeps
    every other (types, token ids, rope parameters). ``model_type`` stays ``llama``, so the saved
    ``config.json`` loads as a plain ``LlamaConfig``.
    """
    from huggingface_hub.dataclasses import strict
    from transformers import LlamaConfig

    @strict
    class ExplicitHeadDimLlamaConfig(LlamaConfig):
        def validate_architecture(self):
            """The attention shape the modelling code needs: explicit head_dim, kv heads divide heads."""
            if not self.head_dim or self.head_dim <= 0:
                raise ValueError(f"head_dim ({self.head_dim}) must be a positive integer")
            if self.num_attention_heads % self.num_key_value_heads != 0:
                raise ValueError(
                    f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                    f"num_key_value_heads ({self.num_key_value_heads})"
                )

    return ExplicitHeadDimLlamaConfig


def hf_llama_model(arch: Architecture, seed: int = 0, **kwargs):
    """``LlamaForCausalLM`` of ``arch`` with seeded random weights (fp32 unless ``dtype`` says otherwise)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(hf_llama_config(arch, **kwargs)).eval()
