"""One reading of the study config: typed, frozen views that every stage asks.

:class:`Study` validates the config once (``archscale.config.validate_config`` fills the
schema's defaults, so every default lives in ``schemas/config.schema.yaml`` and nowhere else)
and hands out what each part needs:

* the plan inputs (:meth:`Study.scale`, :attr:`Study.scales`) and the plan itself;
* per stage, the *identity* params -- the keys the schema marks ``x-identity: true``, in the
  schema's order: they change a job's result and are the rules' ``params`` -- and the
  *hardware* knobs, read at run time and never part of a job's identity;
* the search targets and settings, the compute settings and the fit settings.

Snakemake's rules and the rule scripts build it from ``config``/``snakemake.config``; the CLIs
from :func:`archscale.config.load_config`'s result. Imports neither torch nor the workflow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from .arch import Architecture, Scale, architecture_from_entry  # noqa: F401 (re-exported)
from .config import cached_schema, validate_config

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan
    from .search import SearchSettings, SearchTarget

#: Sections whose keys split into identity (``x-identity: true`` in the schema) and the rest.
STAGES = ("training", "throughput", "export", "evaluate")


def identity_keys(section: str, schema: Mapping | None = None) -> tuple[str, ...]:
    """Keys of ``section`` that decide a job's result, in the schema's order."""
    props = (schema or cached_schema())["properties"][section]["properties"]
    return tuple(k for k, spec in props.items() if spec.get("x-identity"))


def hardware_keys(section: str, schema: Mapping | None = None) -> tuple[str, ...]:
    """Keys of ``section`` that do not change a result (threads, precision, intervals, ...)."""
    props = (schema or cached_schema())["properties"][section]["properties"]
    return tuple(k for k, spec in props.items() if not spec.get("x-identity"))


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(copy.deepcopy(dict(d)))


@dataclass(frozen=True)
class Study:
    """The validated config and its views. Build with :meth:`from_config`."""

    config: Mapping[str, Any]
    schema: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_config(cls, config: dict, source: str = "config") -> "Study":
        """Validate (fills defaults in place, as Snakemake's ``validate`` does) and wrap."""
        validate_config(config, source=source)
        return cls(config=config, schema=cached_schema())

    def section(self, name: str) -> Mapping[str, Any]:
        return _frozen(self.config[name])

    # ---- stage identity and hardware ----------------------------------------------------
    def identity(self, stage: str) -> dict[str, Any]:
        """The identity params of ``stage`` (a fresh dict: the rule's ``params`` content)."""
        if stage not in STAGES:
            raise KeyError(f"no identity params for '{stage}' (one of {STAGES})")
        sec = self.config[stage]
        return {k: copy.deepcopy(sec[k]) for k in identity_keys(stage, self.schema)}

    def hardware(self, stage: str) -> dict[str, Any]:
        sec = self.config[stage]
        return {k: copy.deepcopy(sec[k]) for k in hardware_keys(stage, self.schema) if k in sec}

    @property
    def rope_base(self) -> float:
        return float(self.config["model"]["rope_base"])

    def training_recipe(self) -> dict[str, Any]:
        return self.identity("training")

    def training_hardware(self) -> dict[str, Any]:
        """Hardware knobs of a training job, plus the device peak (None: MFU is not reported)."""
        from .plan import peak_flops
        from .train.tracking import settings_from_config

        hw = self.hardware("training")
        hw.update(settings_from_config(self.config))  # TensorBoard / W&B (W&B group: run_name)
        try:
            hw["peak_flops"] = float(peak_flops(self.config["compute"]))
        except (KeyError, ValueError):  # CPU plan or an unknown GPU model without compute.peak_flops
            hw["peak_flops"] = None
        return hw

    def throughput_workload(self) -> dict[str, Any]:
        return self.identity("throughput")

    def throughput_hardware(self, threads: int | None = None) -> dict[str, Any]:
        """Hardware knobs of a throughput job; ``threads`` is the job's (Snakemake's) thread count."""
        hw = {k: v for k, v in self.hardware("throughput").items() if k != "exclusive"}
        if threads is not None:
            hw["threads"] = int(threads)
        return hw

    def export_params(self) -> dict[str, Any]:
        return self.identity("export")

    def evaluate_spec(self) -> dict[str, Any]:
        return self.identity("evaluate")

    # ---- compute, fit --------------------------------------------------------------------
    @property
    def compute(self) -> Mapping[str, Any]:
        return self.section("compute")

    @property
    def fit(self) -> dict[str, Any]:
        """The fit settings (every key filled from the schema)."""
        return copy.deepcopy(dict(self.config["fit"]))

    # ---- plan ----------------------------------------------------------------------------
    def scale(self, entry: Mapping[str, Any]) -> Scale:
        """A ``scales[]`` entry as a :class:`Scale` (model.* rounding keys unless overridden)."""
        return Scale.from_entry(entry, self.config)

    @property
    def scale_entries(self) -> dict[str, Mapping[str, Any]]:
        return {e["name"]: e for e in self.config["scales"]}

    @cached_property
    def plan(self) -> "Plan":
        from .plan import build_plan

        return build_plan(self.config)

    # ---- search --------------------------------------------------------------------------
    @cached_property
    def search_settings(self) -> "SearchSettings":
        from .search.targets import settings_from_study

        return settings_from_study(self)

    @cached_property
    def search_targets(self) -> dict[str, "SearchTarget"]:
        """The targets resolved against the plan's scales (errors name search.targets[i])."""
        from .search.targets import targets_from_study

        return targets_from_study(self)

    def search_target_names(self) -> list[str]:
        return [t["name"] for t in self.config["search"]["targets"]]


def study_of(config: dict | Study) -> Study:
    """A :class:`Study` from a config dict (validated here) or a study itself."""
    return config if isinstance(config, Study) else Study.from_config(config)
