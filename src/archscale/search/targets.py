"""Search targets and settings: what ``search.targets`` and ``search.*`` of the config ask for.

Built from a :class:`archscale.study.Study` (:func:`targets_from_study`,
:func:`settings_from_study`); the rules carry them as dicts (``to_dict``/``from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..arch import Architecture, Scale, architecture_from_entry
from ..config import ConfigError, schema_default

FORMS = ("multiplicative", "additive")


class SearchError(ValueError):
    """A search that cannot run; the message names the target and what to change."""


# ---- target and settings -----------------------------------------------------------------
@dataclass(frozen=True)
class SearchTarget:
    """One search target: where to search and what loss an answer must reach."""

    name: str
    scale: Scale
    tokens: int
    loss_target: float | str | None = None
    gqa_candidates: tuple[int, ...] = tuple(schema_default("search.targets[].gqa_candidates"))
    base_gqa: int | None = schema_default("search.targets[].base_gqa")
    baseline: Architecture | None = None

    def __post_init__(self) -> None:
        if not self.gqa_candidates:
            raise SearchError(f"search target '{self.name}': gqa_candidates is empty; list at least one GQA")
        if isinstance(self.loss_target, str) and self.baseline is None:
            raise SearchError(
                f"search target '{self.name}': loss_target names architecture '{self.loss_target}' "
                "but no such architecture was given"
            )

    @property
    def walk_base_gqa(self) -> int:
        """The GQA the walk starts from: ``base_gqa``, else 4 when listed, else the smallest."""
        if self.base_gqa is not None:
            return int(self.base_gqa)
        return 4 if 4 in self.gqa_candidates else min(self.gqa_candidates)

    @property
    def walk_gqas(self) -> list[int]:
        base = self.walk_base_gqa
        return sorted({base, *(g for g in self.gqa_candidates if g >= base)})

    def to_dict(self) -> dict[str, Any]:
        s = self.scale
        return {
            "name": self.name,
            "scale": {
                "name": s.name, "n_target": s.n_target, "layers": s.layers, "head_dim": s.head_dim,
                "vocab": s.vocab, "tied": s.tied, "d_multiple": s.d_multiple, "ffn_multiple": s.ffn_multiple,
                "n_tolerance": s.n_tolerance, "r_tolerance": s.r_tolerance, "tokens": s.tokens,
                "tokens_per_param": s.tokens_per_param,
            },
            "tokens": int(self.tokens),
            "loss_target": self.loss_target,
            "gqa_candidates": list(self.gqa_candidates),
            "base_gqa": self.base_gqa,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchTarget":
        scale = Scale(**data["scale"])
        baseline = Architecture.from_dict(data["baseline"]) if data.get("baseline") else None
        return cls(
            name=data["name"], scale=scale, tokens=int(data["tokens"]), loss_target=data.get("loss_target"),
            gqa_candidates=tuple(int(g) for g in data.get("gqa_candidates") or cls.gqa_candidates),
            base_gqa=data.get("base_gqa"), baseline=baseline,
        )


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` section of the config (minus targets) plus the measured workload."""

    form: str = schema_default("search.form")
    d_over_sqrt_n: tuple[float, ...] = tuple(schema_default("search.d_over_sqrt_n"))
    r: tuple[float, ...] = tuple(schema_default("search.r"))
    grid_points: int = schema_default("search.grid_points")
    measure_top_k: int = schema_default("search.measure_top_k")
    loss_target_source: str = schema_default("search.loss_target_source")
    input_len: int = schema_default("throughput.input_len")
    output_len: int = schema_default("throughput.output_len")
    #: search.batch_size null means the largest measured batch size.
    batch_size: int = max(schema_default("throughput.batch_sizes"))

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise SearchError(f"search.form: '{self.form}' is not one of {list(FORMS)}")
        if self.loss_target_source not in ("predicted", "observed"):
            raise SearchError("search.loss_target_source: use 'predicted' or 'observed'")
        if self.grid_points < 2:
            raise SearchError("search.grid_points: use at least 2 points per axis")

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form, "d_over_sqrt_n": list(self.d_over_sqrt_n), "r": list(self.r),
            "grid_points": self.grid_points, "measure_top_k": self.measure_top_k,
            "loss_target_source": self.loss_target_source, "input_len": self.input_len,
            "output_len": self.output_len, "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSettings":
        keys = cls.__dataclass_fields__
        kw = {k: data[k] for k in keys if k in data and data[k] is not None}
        for k in ("d_over_sqrt_n", "r"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)




def settings_from_study(study: "Study") -> SearchSettings:
    """The search settings; the batch size defaults to the largest measured (search.batch_size)."""
    search, tput = study.config["search"], study.config["throughput"]
    batch_sizes = tput["batch_sizes"]
    batch = search["batch_size"]
    if batch is None:
        batch = max(batch_sizes)
    elif batch not in batch_sizes:
        raise ConfigError(
            f"search.batch_size: {batch} is not among throughput.batch_sizes {batch_sizes}; "
            "the GQA walk compares measured throughput at that batch size, so list it there"
        )
    return SearchSettings(
        form=search["form"],
        d_over_sqrt_n=tuple(search["d_over_sqrt_n"]),
        r=tuple(search["r"]),
        grid_points=int(search["grid_points"]),
        measure_top_k=int(search["measure_top_k"]),
        loss_target_source=search["loss_target_source"],
        input_len=int(tput["input_len"]),
        output_len=int(tput["output_len"]),
        batch_size=int(batch),
    )


def targets_from_study(study: "Study") -> dict[str, SearchTarget]:
    """``search.targets`` resolved against the study's scales and explicit architectures."""
    entries = study.scale_entries
    scales = study.plan.scales
    targets: dict[str, SearchTarget] = {}
    for i, t in enumerate(study.config["search"]["targets"]):
        where = f"search.targets[{i}] '{t.get('name')}'"
        if t["name"] in targets:
            raise ConfigError(f"{where}: duplicate target name")
        if t["scale"] not in scales:
            raise ConfigError(f"{where}: scale '{t['scale']}' is not one of the configured scales {sorted(scales)}")
        scale = scales[t["scale"]]
        baseline = None
        loss_target = t.get("loss_target")
        if isinstance(loss_target, str):
            names = {a["name"]: a for a in entries[scale.name]["architectures"]}
            if loss_target not in names:
                raise ConfigError(
                    f"{where}: loss_target '{loss_target}' is neither a number nor an explicit architecture "
                    f"of scale '{scale.name}' (its architectures: {sorted(names) or 'none'}); add it under "
                    f"scales[{scale.name}].architectures or give a number"
                )
            baseline = architecture_from_entry(names[loss_target], scale)
        try:
            targets[t["name"]] = SearchTarget(
                name=t["name"], scale=scale, tokens=int(t.get("tokens") or scale.train_tokens),
                loss_target=loss_target, gqa_candidates=tuple(int(g) for g in t["gqa_candidates"]),
                base_gqa=t["base_gqa"], baseline=baseline,
            )
        except SearchError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return targets
