"""LLaMA-3.2-style architecture arithmetic and the grid-point resolver.

Definitions follow the paper (method.md section 2):

* attention parameters per layer: ``2*d*dh*(h+g)`` (q, k, v, o; no biases)
* MLP parameters per layer (SwiGLU gate+up+down): ``3*d*f``
* norms: ``2*d`` per layer plus ``d`` for the final norm
* ``N`` (non-embedding) = ``L*(2*d*dh*(h+g) + 3*d*f + 2*d) + d``
* ``r = 3*d*f / (2*d*dh*(h+g))`` (MLP-to-attention parameter ratio)
* embedding ``V*d``, plus ``V*d`` again when the output layer is untied.

An :class:`Architecture` is the whole network spec: the shape above, the vocabulary and
embedding tying, and the network settings beyond the shape (RoPE base, RMSNorm epsilon).
Jobs, export and throughput take the spec; nothing carries those settings beside it.

The resolver turns a *grid point* (hidden size, r, GQA) at a *scale* (layers, head
dim, vocabulary, target N) into a concrete architecture (d, heads, kv heads, ffn
width). Rounding rules are explicit:

1. ``d`` is rounded to the nearest multiple of ``d_multiple``.
2. The per-layer budget ``P = (N - d)/L - 2d`` is split so that MLP/attention = r:
   the ideal number of kv groups is ``P / (1 + r) / (2*d*dh*(gqa+1))``; its floor and
   ceiling (at least 1) are tried, with ``h = gqa*g`` so GQA always divides the heads.
3. The MLP takes the rest of the budget: ``f = round((P - attention) / (3*d))`` to a
   multiple of ``ffn_multiple``; so N lands on target and r moves with the rounding of
   the heads. Of the two candidates, the one whose r is closest (in log) to the
   requested r wins.
4. The resolved N must lie within ``n_tolerance`` of the target and the resolved r
   within ``r_tolerance`` of the requested one (both relative), otherwise the point is
   infeasible and the message says why and what to change.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from typing import Any

BYTES_PER_ELEMENT = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}

#: RMSNorm epsilon of the LLaMA-3.2 family (not a config setting: a spec's field default).
NORM_EPS = 1e-5

#: Network settings beyond the shape, as records and checkpoint descriptions store them.
NETWORK_FIELDS = ("rope_base", "norm_eps")


class InfeasiblePoint(ValueError):
    """A grid point that cannot be resolved into a valid architecture."""


@dataclass(frozen=True)
class Architecture:
    """A concrete decoder-only LLaMA-style architecture."""

    d_model: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = True
    scale: str = ""
    name: str = ""
    #: RoPE base frequency (the config's model.rope_base); None on a shape read back from a
    #: record without it: such a spec sizes and names a network but cannot build one. The
    #: network settings take no part in equality: two specs are equal when their shapes are
    #: (as their arch ids are), whether or not one was read back without its settings.
    rope_base: float | None = field(default=None, compare=False)
    norm_eps: float = field(default=NORM_EPS, compare=False)

    def __post_init__(self) -> None:
        for key in ("d_model", "ffn", "layers", "heads", "kv_heads", "head_dim", "vocab"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"architecture {self.label()}: {key} must be a positive integer, got {value!r}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"architecture {self.label()}: heads ({self.heads}) must be a multiple of kv_heads "
                f"({self.kv_heads}); GQA = heads / kv_heads must be a whole number"
            )

    def label(self) -> str:
        return self.name or f"d{self.d_model}"

    # ---- counts -------------------------------------------------------------------
    @property
    def gqa(self) -> int:
        return self.heads // self.kv_heads

    @property
    def attn_params_per_layer(self) -> int:
        return 2 * self.d_model * self.head_dim * (self.heads + self.kv_heads)

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.d_model * self.ffn

    @property
    def params_non_embedding(self) -> int:
        per_layer = self.attn_params_per_layer + self.mlp_params_per_layer + 2 * self.d_model
        return self.layers * per_layer + self.d_model

    @property
    def params_embedding(self) -> int:
        return self.vocab * self.d_model * (1 if self.tied else 2)

    @property
    def params_total(self) -> int:
        return self.params_non_embedding + self.params_embedding

    @property
    def mlp_attn_ratio(self) -> float:
        return self.mlp_params_per_layer / self.attn_params_per_layer

    @property
    def d_over_sqrt_n(self) -> float:
        return self.d_model / math.sqrt(self.params_non_embedding)

    @property
    def q_width(self) -> int:
        """Width of the query projection, ``h*dh`` (need not equal d_model)."""
        return self.heads * self.head_dim

    def kv_cache_bytes_per_token(self, dtype: str = "bf16") -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * BYTES_PER_ELEMENT[dtype]

    # ---- identity -----------------------------------------------------------------
    @property
    def arch_id(self) -> str:
        """Stable readable id: depends only on this architecture, never on its neighbours."""
        tie = "" if self.tied else "-untied"
        prefix = f"{self.scale}-" if self.scale else ""
        return (
            f"{prefix}L{self.layers}-d{self.d_model}-h{self.heads}g{self.kv_heads}"
            f"x{self.head_dim}-f{self.ffn}{tie}"
        )

    def network(self) -> dict[str, Any]:
        """The network settings beyond the shape (what a checkpoint's description and a training
        job's fingerprint store beside :meth:`to_dict`): the RoPE base, and the norm epsilon
        when it is not the family's."""
        if self.rope_base is None:
            raise ValueError(f"architecture {self.label()}: no rope_base (a shape without its network settings)")
        out: dict[str, Any] = {"rope_base": float(self.rope_base)}
        if self.norm_eps != NORM_EPS:
            out["norm_eps"] = float(self.norm_eps)
        return out

    def spec_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` plus the network settings: the whole spec, as a job file holds it."""
        return {**self.to_dict(), **self.network()}

    def to_dict(self) -> dict[str, Any]:
        """The shape (the rules' ``arch`` params, records, plan rows): the network settings are
        left out but for a non-default norm epsilon, so the dict of an architecture, and with
        it every finished job's identity, is the same as before the spec carried them."""
        out = asdict(self)
        del out["rope_base"]
        if self.norm_eps == NORM_EPS:
            del out["norm_eps"]
        out.update(
            arch_id=self.arch_id,
            gqa=self.gqa,
            params_non_embedding=self.params_non_embedding,
            params_total=self.params_total,
            mlp_attn_ratio=self.mlp_attn_ratio,
            d_over_sqrt_n=self.d_over_sqrt_n,
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        """The one reader of an architecture dict (a rule's params, a record, a search entry):
        extra keys (arch_id, derived counts) are ignored; numpy integers (parquet) become ints."""
        ints = ("d_model", "ffn", "layers", "heads", "kv_heads", "head_dim", "vocab")
        kw: dict[str, Any] = {k: _plain(data[k]) for k in ints if k in data}
        if "tied" in data:
            kw["tied"] = bool(data["tied"])
        for k in ("scale", "name"):
            if k in data:
                kw[k] = str(data[k] or "")
        for k in NETWORK_FIELDS:
            if data.get(k) is not None:
                kw[k] = float(data[k])
        return cls(**kw)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Architecture":
        """The spec of a record or checkpoint description: its ``arch`` dict, with the network
        settings that older records store beside it (``rope_base`` next to ``arch``)."""
        beside = {k: record[k] for k in NETWORK_FIELDS if record.get(k) is not None}
        return cls.from_dict({**beside, **record["arch"]})

    def with_network(self, **settings: Any) -> "Architecture":
        """This shape with the given network settings (``rope_base``, ``norm_eps``)."""
        unknown = set(settings) - set(NETWORK_FIELDS)
        if unknown:
            raise TypeError(f"not network settings: {sorted(unknown)}")
        return replace(self, **{k: float(v) for k, v in settings.items()})


def _plain(value: Any) -> Any:
    """A numpy integer as a Python int; anything else unchanged (validated by Architecture)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def round_to_multiple(x: float, multiple: int, minimum: int | None = None) -> int:
    value = int(round(x / multiple)) * multiple
    floor = multiple if minimum is None else minimum
    return max(value, floor)


def network_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The network settings beyond the shape of a validated config (:class:`Architecture`
    fields), as the config has them: what the plan gives every spec, and the train rule's
    identity params."""
    return {"rope_base": config["model"]["rope_base"]}


@dataclass(frozen=True)
class Scale:
    """One model scale of the study: the fixed part of every architecture at that size."""

    name: str
    n_target: int
    layers: int
    head_dim: int
    vocab: int
    tied: bool = True
    d_multiple: int = 64
    ffn_multiple: int = 64
    n_tolerance: float = 0.05
    r_tolerance: float = 0.15
    tokens: int | None = None
    tokens_per_param: float | None = None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], config: Mapping[str, Any]) -> "Scale":
        """A ``scales[]`` entry of a validated config (``model.*`` rounding keys unless overridden)."""
        model = config["model"]
        return cls(
            name=entry["name"],
            n_target=int(entry["n_target"]),
            layers=int(entry["layers"]),
            head_dim=int(entry["head_dim"]),
            vocab=int(config["tokenizer"]["vocab_size"]),
            tied=bool(model["tied_embeddings"]),
            d_multiple=int(entry.get("d_multiple", model["d_multiple"])),
            ffn_multiple=int(entry.get("ffn_multiple", model["ffn_multiple"])),
            n_tolerance=float(entry.get("n_tolerance", model["n_tolerance"])),
            r_tolerance=float(entry.get("r_tolerance", model["r_tolerance"])),
            tokens=entry.get("tokens"),
            tokens_per_param=entry["tokens_per_param"],
        )

    @property
    def train_tokens(self) -> int:
        if self.tokens is not None:
            return int(self.tokens)
        if self.tokens_per_param is None:
            raise ValueError(f"scale {self.name}: set 'tokens' or 'tokens_per_param'")
        return int(round(self.tokens_per_param * self.n_target))


@dataclass(frozen=True)
class GridPoint:
    """A requested point: a hidden size (absolute or relative to sqrt(N)), r and GQA."""

    r: float
    gqa: int
    d_model: int | None = None
    d_over_sqrt_n: float | None = None
    origin: str = field(default="", compare=False)

    def describe(self) -> str:
        d = f"d_model={self.d_model}" if self.d_model is not None else f"d_over_sqrt_n={self.d_over_sqrt_n}"
        where = f" ({self.origin})" if self.origin else ""
        return f"{d}, r={self.r}, gqa={self.gqa}{where}"


def resolve(scale: Scale, point: GridPoint) -> Architecture:
    """Resolve a grid point at a scale into a concrete architecture (see module doc)."""

    where = f"scale '{scale.name}', grid point {point.describe()}"
    if (point.d_model is None) == (point.d_over_sqrt_n is None):
        raise InfeasiblePoint(f"{where}: give exactly one of d_model and d_over_sqrt_n")
    if point.r <= 0:
        raise InfeasiblePoint(f"{where}: r must be positive")
    if point.gqa < 1:
        raise InfeasiblePoint(f"{where}: gqa must be >= 1")
    raw_d = point.d_model if point.d_model is not None else point.d_over_sqrt_n * math.sqrt(scale.n_target)
    d = round_to_multiple(raw_d, scale.d_multiple)
    L, dh = scale.layers, scale.head_dim
    per_layer = (scale.n_target - d) / L - 2 * d
    if per_layer <= 0:
        raise InfeasiblePoint(
            f"{where}: d_model={d} leaves no parameters for attention and MLP at N={scale.n_target:,} "
            f"with {L} layers; lower the hidden size or raise n_target"
        )
    head_pair = 2 * d * dh * (point.gqa + 1)  # attention parameters per kv group
    ideal_g = per_layer / (1.0 + point.r) / head_pair
    best: Architecture | None = None
    for g in sorted({max(1, math.floor(ideal_g)), max(1, math.ceil(ideal_g))}):
        mlp_budget = per_layer - head_pair * g
        f = round_to_multiple(mlp_budget / (3 * d), scale.ffn_multiple, minimum=0)
        if f < scale.ffn_multiple:
            continue
        cand = Architecture(
            d_model=d, ffn=f, layers=L, heads=point.gqa * g, kv_heads=g, head_dim=dh,
            vocab=scale.vocab, tied=scale.tied, scale=scale.name,
        )
        if best is None or abs(math.log(cand.mlp_attn_ratio / point.r)) < abs(math.log(best.mlp_attn_ratio / point.r)):
            best = cand
    if best is None:
        raise InfeasiblePoint(
            f"{where}: with d_model={d} and one kv group of {point.gqa} heads x {dh} the attention alone "
            f"exceeds the per-layer budget at N={scale.n_target:,}; lower d_model, gqa or head_dim"
        )
    rel_n = best.params_non_embedding / scale.n_target - 1.0
    rel_r = best.mlp_attn_ratio / point.r - 1.0
    if abs(rel_n) > scale.n_tolerance or abs(rel_r) > scale.r_tolerance:
        raise InfeasiblePoint(
            f"{where}: the nearest architecture is d={d}, heads={best.heads}/{best.kv_heads}, ffn={best.ffn} "
            f"with N={best.params_non_embedding:,} ({rel_n:+.1%} off {scale.n_target:,}, tolerance "
            f"{scale.n_tolerance:.0%}) and r={best.mlp_attn_ratio:.3g} ({rel_r:+.1%} off, tolerance "
            f"{scale.r_tolerance:.0%}); heads come in steps of {point.gqa}x{dh} here: change d_model, r, "
            "gqa or head_dim, or widen n_tolerance / r_tolerance"
        )
    return best


def architecture_from_entry(entry: Mapping[str, Any], scale: Scale) -> Architecture:
    """An explicit architecture of ``scales[].architectures`` at its scale (the one constructor)."""
    return Architecture(
        d_model=int(entry["d_model"]), ffn=int(entry["ffn"]), layers=scale.layers, heads=int(entry["heads"]),
        kv_heads=int(entry["kv_heads"]), head_dim=scale.head_dim, vocab=scale.vocab, tied=scale.tied,
        scale=scale.name, name=entry["name"],
    )
