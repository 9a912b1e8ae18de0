"""A tight greedy decoder over a megatron-core ``GPTModel``'s weights, with a preallocated KV cache.

Why: megatron's ``GPTModel`` forward costs milliseconds of Python per decode step (module
hooks, inference-context bookkeeping, rotary tables rebuilt per call), which at the default's
100k-parameter models is the whole step: every architecture then measures the same. This
decoder takes the weights of a megatron model (:func:`model_weights`: trained checkpoints
work, no copy of the values) or draws random ones in the same layout without building a
megatron model at all (:func:`random_weights`: throughput does not depend on the values, and
a throughput job on random weights then never imports megatron-core, seconds per job on
CPU), preallocates one static KV cache ``[layers, 2, batch, kv_heads,
positions, head_dim]`` per batch size, and runs a decode step as a handful of tensor ops per
layer. The same code runs on CPU and GPU (tensors on the model's device).

Attention in decode groups the query heads by their key/value head (``[b, kv_heads, gqa,
head_dim]`` against ``[b, kv_heads, t, head_dim]``) so GQA reads each cached key once, as
serving kernels do. The numerics are megatron's: RMSNorm (eps of the config), rotary embedding
(non-interleaved, the model's ``inv_freq``), SwiGLU MLP, the model's fused QKV layout
``[kv_heads, gqa + 2, head_dim]``. Tests check identical greedy tokens against megatron's own
forward.

Decode at context ``T`` (:meth:`FastDecoder.decode_at_context`): the cache positions
``0..T-1`` keep arbitrary values (random at allocation) and decode steps are timed from ``T``;
decode time depends on the KV length, not on the cached values. No prefill is paid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..arch import Architecture
from .engine import Generation, _sync, _without_cpu_redirect


@dataclass
class _Layer:
    ln1: torch.Tensor
    qkv: torch.Tensor
    proj: torch.Tensor
    ln2: torch.Tensor
    fc1: torch.Tensor
    fc2: torch.Tensor


def _weight(module, *names):
    for name in names:
        w = getattr(module, name, None)
        if isinstance(w, torch.Tensor) and w.numel():
            return w.detach()
    raise ValueError(f"{type(module).__name__}: none of the weights {names} found (unsupported layer spec)")


@dataclass
class DecoderWeights:
    """What the decoder computes with: the tensors in megatron's layout and the attention shape.

    ``qkv`` of a layer is megatron's fused ``[kv_heads * (gqa + 2) * head_dim, d_model]``
    (per key/value group: its ``gqa`` queries, then key, then value); ``fc1`` is SwiGLU's
    ``[2 * ffn, d_model]`` (gate, then up); ``out`` is ``emb`` itself when tied.
    """

    emb: torch.Tensor
    layers: list[_Layer]
    final_ln: torch.Tensor
    out: torch.Tensor
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    inv_freq: torch.Tensor


def model_weights(model) -> DecoderWeights:
    """The weights of a megatron ``GPTModel`` (views, not copies) and its attention shape."""
    cfg = model.config
    if getattr(cfg, "rotary_interleaved", False) or getattr(cfg, "qk_layernorm", False):
        raise ValueError("FastDecoder supports non-interleaved rotary embeddings without QK norm")
    emb, layers, final_ln, out = extract_weights(model)
    return DecoderWeights(emb, layers, final_ln, out, heads=cfg.num_attention_heads,
                          kv_heads=cfg.num_query_groups or cfg.num_attention_heads, head_dim=cfg.kv_channels,
                          eps=cfg.layernorm_epsilon, inv_freq=model.rotary_pos_emb.inv_freq.detach().float())


def random_weights(arch: Architecture, runtime, *, seed: int, init_std: float = 0.02) -> DecoderWeights:
    """Seeded random weights of the spec ``arch`` in megatron's layout (normal(0, ``init_std``)
    matrices, unit norms, as :func:`archscale.model.build_model` initialises), on the runtime's
    device and dtype."""
    from ..model import rope_inv_freq

    gen = torch.Generator().manual_seed(seed)
    dtype, device = runtime.params_dtype, runtime.device
    d, hd = arch.d_model, arch.head_dim
    qkv_rows = (arch.heads + 2 * arch.kv_heads) * hd

    def normal(*shape):
        return (torch.randn(shape, generator=gen) * init_std).to(device=device, dtype=dtype)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    layers = [
        _Layer(ones(d), normal(qkv_rows, d), normal(d, arch.heads * hd), ones(d), normal(2 * arch.ffn, d),
               normal(d, arch.ffn))
        for _ in range(arch.layers)
    ]
    emb = normal(arch.vocab, d)
    out = emb if arch.tied else normal(arch.vocab, d)
    return DecoderWeights(emb, layers, ones(d), out, heads=arch.heads, kv_heads=arch.kv_heads, head_dim=hd,
                          eps=arch.norm_eps, inv_freq=rope_inv_freq(arch))


def extract_weights(model) -> tuple[torch.Tensor, list[_Layer], torch.Tensor, torch.Tensor]:
    """Embedding, per-layer weights, final norm and output weight of a megatron ``GPTModel``.

    Works with the local spec (separate ``input_layernorm``/``pre_mlp_layernorm``) and the
    Transformer Engine spec (norms fused into ``linear_qkv``/``linear_fc1`` as ``layer_norm_weight``).
    """
    layers = []
    for layer in model.decoder.layers:
        attn, mlp = layer.self_attention, layer.mlp
        ln1 = getattr(layer.input_layernorm, "weight", None)
        ln1 = ln1.detach() if isinstance(ln1, torch.Tensor) else _weight(attn.linear_qkv, "layer_norm_weight")
        ln2 = getattr(layer.pre_mlp_layernorm, "weight", None)
        ln2 = ln2.detach() if isinstance(ln2, torch.Tensor) else _weight(mlp.linear_fc1, "layer_norm_weight")
        layers.append(
            _Layer(ln1, _weight(attn.linear_qkv, "weight"), _weight(attn.linear_proj, "weight"), ln2,
                   _weight(mlp.linear_fc1, "weight"), _weight(mlp.linear_fc2, "weight"))
        )
    emb = model.embedding.word_embeddings.weight.detach()
    out = model.shared_embedding_or_output_weight() if model.share_embeddings_and_output_weights else None
    out = (out if out is not None else model.output_layer.weight).detach()
    return emb, layers, _weight(model.decoder.final_layernorm, "weight"), out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class FastDecoder:
    """Greedy decoding with a static KV cache; ``generate`` has the interface of the other decoders."""

    name = "archscale-static"

    def __init__(self, weights: DecoderWeights, runtime, max_seq: int):
        """``weights``: :func:`model_weights` of a megatron model, or :func:`random_weights`."""
        w = weights
        self.runtime = runtime
        self.device = runtime.device
        self.heads, self.kv_heads, self.head_dim = w.heads, w.kv_heads, w.head_dim
        self.gqa = self.heads // self.kv_heads
        self.eps = w.eps
        self.max_seq = max_seq
        self.emb, self.layers, self.final_ln, self.out_w = w.emb, w.layers, w.final_ln, w.out
        self.dtype = self.emb.dtype
        inv_freq = w.inv_freq.float().to(self.device)
        freqs = torch.outer(torch.arange(max_seq, device=self.device, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)  # [max_seq, head_dim]
        # Decode applies the rotation as one matmul per layer: x @ rot[pos] == x*cos + rotate_half(x)*sin
        # (rotate_half(x) = x @ P with P the signed half swap), for queries and key of a group at once.
        half = self.head_dim // 2
        swap = torch.zeros(self.head_dim, self.head_dim, device=self.device, dtype=self.dtype)
        swap[torch.arange(half) + half, torch.arange(half)] = -1.0
        swap[torch.arange(half), torch.arange(half) + half] = 1.0
        self.rot = torch.diag_embed(self.cos) + swap * self.sin[:, None, :]  # [max_seq, head_dim, head_dim]
        self.scale = self.head_dim**-0.5
        self._caches: dict[int, torch.Tensor] = {}

    # ---- cache ------------------------------------------------------------------------------
    def cache(self, batch: int, length: int | None = None) -> torch.Tensor:
        """The static KV cache of ``batch`` sequences with at least ``length`` positions (default
        ``max_seq``), allocated once and reused while long enough (random values, never NaN)."""
        length = self.max_seq if length is None else length
        if length > self.max_seq:
            raise ValueError(f"{length} positions exceed max_seq {self.max_seq}")
        kv = self._caches.get(batch)
        if kv is None or kv.shape[4] < length:
            self._caches.pop(batch, None)
            shape = (len(self.layers), 2, batch, self.kv_heads, length, self.head_dim)
            gen = torch.Generator(device=self.device).manual_seed(0)
            kv = torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype)
            self._caches[batch] = kv
        return kv

    def drop_caches(self) -> None:
        """Free every KV cache (the next run allocates again)."""
        self._caches.clear()

    # ---- model pieces -----------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # written out: F.rms_norm costs ~70 us a call on CPU (dtype round trips), a third of a small step
        return x * torch.rsqrt(torch.mean(x * x, dim=-1, keepdim=True) + self.eps) * w

    def _mlp(self, x: torch.Tensor, layer: _Layer) -> torch.Tensor:
        gate, up = F.linear(self._rms(x, layer.ln2), layer.fc1).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, layer.fc2)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms(x, self.final_ln), self.out_w)

    def _prefill(self, tokens: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Encode ``tokens [b, s]`` into cache positions ``0..s-1``; next greedy token ``[b]``."""
        b, s = tokens.shape
        g, ng, hd = self.gqa, self.kv_heads, self.head_dim
        cos, sin = self.cos[:s, None], self.sin[:s, None]  # [s, 1, hd]
        x = F.embedding(tokens, self.emb)
        for i, layer in enumerate(self.layers):
            qkv = F.linear(self._rms(x, layer.ln1), layer.qkv).view(b, s, ng, g + 2, hd)
            q = qkv[:, :, :, :g].reshape(b, s, ng * g, hd)
            k, v = qkv[:, :, :, g], qkv[:, :, :, g + 1]
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            kv[i, 0, :, :, :s] = k.transpose(1, 2)
            kv[i, 1, :, :, :s] = v.transpose(1, 2)
            kk, vv = kv[i, 0, :, :, :s], kv[i, 1, :, :, :s]
            if g > 1:
                kk, vv = kk.repeat_interleave(g, dim=1), vv.repeat_interleave(g, dim=1)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, is_causal=True, scale=self.scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, s, ng * g * hd), layer.proj)
            x = x + self._mlp(x, layer)
        return self._logits(x[:, -1]).argmax(-1)

    def _step(self, tok: torch.Tensor, pos: int, kv: torch.Tensor) -> torch.Tensor:
        """One decode step: token ``[b]`` at position ``pos`` -> next greedy token ``[b]``."""
        b = tok.shape[0]
        g, ng, hd = self.gqa, self.kv_heads, self.head_dim
        rot = self.rot[pos]
        x = F.embedding(tok, self.emb)
        for i, layer in enumerate(self.layers):
            qkv = F.linear(self._rms(x, layer.ln1), layer.qkv).view(b, ng, g + 2, hd)
            qk = torch.matmul(qkv[:, :, : g + 1], rot)  # rotary embedding of the group's queries and key
            q = qk[:, :, :g]
            kv[i, 0, :, :, pos] = qk[:, :, g]
            kv[i, 1, :, :, pos] = qkv[:, :, g + 1]
            # queries of one group [b, ng, g, hd] attend to that group's keys [b, ng, pos+1, hd]
            a = F.scaled_dot_product_attention(q, kv[i, 0, :, :, : pos + 1], kv[i, 1, :, :, : pos + 1],
                                               scale=self.scale)
            x = x + F.linear(a.reshape(b, ng * g * hd), layer.proj)
            x = x + self._mlp(x, layer)
        return self._logits(x).argmax(-1)

    # ---- public -----------------------------------------------------------------------------
    def generate(self, prompts: torch.Tensor, output_len: int) -> Generation:
        """Prefill ``prompts [b, I]`` then ``output_len - 1`` decode steps (mode ``prefill+decode``)."""
        if output_len < 1:
            raise ValueError(f"output_len must be >= 1, got {output_len}")
        batch, input_len = prompts.shape
        if input_len + output_len > self.max_seq:
            raise ValueError(f"input_len + output_len = {input_len + output_len} exceeds max_seq {self.max_seq}")
        with _without_cpu_redirect(), torch.inference_mode():
            kv = self.cache(batch, input_len + output_len)
            prompts = prompts.to(self.device)
            out = torch.empty(batch, output_len, dtype=torch.long, device=self.device)
            _sync(self.runtime)
            t0 = time.perf_counter()
            out[:, 0] = self._prefill(prompts, kv)
            _sync(self.runtime)
            t1 = time.perf_counter()
            for i in range(1, output_len):
                out[:, i] = self._step(out[:, i - 1], input_len + i - 1, kv)
            _sync(self.runtime)
            t2 = time.perf_counter()
        return Generation(out, t1 - t0, t2 - t1)

    def decode_at_context(self, batch: int, context: int, steps: int, seed: int = 0) -> Generation:
        """``steps`` decode steps from KV length ``context`` (mode ``decode_at_context``; no prefill).

        Positions ``0..context-1`` of the cache hold arbitrary values; the first input token is
        random. Returns the ``steps`` generated tokens and the decode time (``prefill_s`` is 0).
        """
        if steps < 1 or context < 1:
            raise ValueError(f"decode at context needs context >= 1 and steps >= 1, got {context}, {steps}")
        if context + steps > self.max_seq:
            raise ValueError(f"context + steps = {context + steps} exceeds max_seq {self.max_seq}")
        with _without_cpu_redirect(), torch.inference_mode():
            kv = self.cache(batch, context + steps)
            gen = torch.Generator().manual_seed(seed)
            tok = torch.randint(0, self.emb.shape[0], (batch,), generator=gen).to(self.device)
            out = torch.empty(batch, steps, dtype=torch.long, device=self.device)
            _sync(self.runtime)
            t0 = time.perf_counter()
            for i in range(steps):
                tok = out[:, i] = self._step(tok, context + i, kv)
            _sync(self.runtime)
            t1 = time.perf_counter()
        return Generation(out, 0.0, t1 - t0)
