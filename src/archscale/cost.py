"""Compute and inference cost arithmetic (method.md section 4).

Training FLOPs follow Kaplan et al. (2020): per token, the forward pass costs
``2*N + 2*L*S*d_q`` (non-embedding weights plus attention scores and values over a
context of S tokens, with d_q = heads*head_dim) and the backward pass twice that, so
training costs ``6*N*D + 6*L*S*d_q*D``. The output (logit) layer, ``2*V*d`` per token
forward, is reported separately because at small scale it dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

from .arch import Architecture

#: Dense bf16 peak of common accelerators (FLOP/s), used when the config names a GPU model.
PEAK_FLOPS = {
    "a100": 312e12,
    "h100": 989e12,
    "cpu": 1e11,
}


@dataclass(frozen=True)
class TrainingCost:
    flops_6nd: float
    flops_attention: float
    flops_logits: float

    @property
    def flops(self) -> float:
        """Total training FLOPs: 6ND plus attention plus the logit layer."""
        return self.flops_6nd + self.flops_attention + self.flops_logits


def training_cost(arch: Architecture, tokens: int, seq_length: int) -> TrainingCost:
    n = arch.params_non_embedding
    return TrainingCost(
        flops_6nd=6.0 * n * tokens,
        flops_attention=6.0 * arch.layers * seq_length * arch.q_width * tokens,
        flops_logits=6.0 * arch.vocab * arch.d_model * tokens,
    )


def training_flops_per_token(arch: Architecture, seq_length: int) -> float:
    return training_cost(arch, 1, seq_length).flops


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """Accelerator hours at a model-FLOPs utilisation ``mfu`` of ``peak_flops``."""
    if peak_flops <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"peak_flops must be > 0 and 0 < mfu <= 1 (got {peak_flops}, {mfu})")
    return flops / (peak_flops * mfu) / 3600.0


def inference_flops_per_token(arch: Architecture, context: int) -> float:
    """Non-embedding FLOPs to generate one token at KV length ``context``: 2N + 2*L*T*d_q."""
    return 2.0 * arch.params_non_embedding + 2.0 * arch.layers * context * arch.q_width


def logits_flops_per_token(arch: Architecture) -> float:
    return 2.0 * arch.vocab * arch.d_model


def arch_summary(arch: Architecture, context: int, kv_dtype: str = "bf16") -> dict:
    """The numbers ``archscale arch`` prints."""
    return {
        "d_model": arch.d_model,
        "ffn": arch.ffn,
        "layers": arch.layers,
        "heads": arch.heads,
        "kv_heads": arch.kv_heads,
        "head_dim": arch.head_dim,
        "vocab": arch.vocab,
        "tied": arch.tied,
        "params_total": arch.params_total,
        "params_non_embedding": arch.params_non_embedding,
        "params_embedding": arch.params_embedding,
        "mlp_attn_ratio": arch.mlp_attn_ratio,
        "d_over_sqrt_n": arch.d_over_sqrt_n,
        "gqa": arch.gqa,
        "context": context,
        "kv_cache_dtype": kv_dtype,
        "kv_cache_bytes_per_token": arch.kv_cache_bytes_per_token(kv_dtype),
        "inference_flops_per_token": inference_flops_per_token(arch, context),
        "logits_flops_per_token": logits_flops_per_token(arch),
    }
