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
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from .arch import Architecture, Scale, architecture_from_entry, network_settings  # noqa: F401 (re-exported)
from .config import cached_schema, schema_default, validate_config

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan
    from .search.targets import SearchSettings, SearchTarget

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


def default_spec(arch: Architecture) -> Architecture:
    """``arch`` with the schema's network settings where it has none (measurements of a shape
    outside a study: throughput does not depend on them)."""
    if arch.rope_base is not None:
        return arch
    return arch.with_network(rope_base=schema_default("model.rope_base"))


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
    def network(self) -> dict[str, Any]:
        """The model.* settings that define the network beyond its shape, as the config has
        them (the train rule's params: their values are part of a run's identity)."""
        return network_settings(self.config)

    def spec(self, arch: Mapping[str, Any] | Architecture) -> Architecture:
        """The whole network spec of a shape (a rule's ``arch`` params): the study's settings."""
        shape = arch if isinstance(arch, Architecture) else Architecture.from_dict(dict(arch))
        return shape.with_network(**self.network)

    def training_recipe(self) -> dict[str, Any]:
        return self.identity("training")

    def training_hardware(self) -> dict[str, Any]:
        """Hardware knobs of a training job, plus the device peak (None: MFU is not reported).

        ``tensorboard`` and ``wandb`` are the config's own values: the train package interprets
        them (:func:`archscale.train.launcher.training_hardware`)."""
        from .plan import peak_flops

        hw = self.hardware("training")
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

    # ---- run, data, tokenizer ------------------------------------------------------------
    @property
    def run_name(self) -> str:
        return str(self.config["run_name"])

    @property
    def corpus_dir(self) -> Path:
        return Path(self.config["data"]["corpus_dir"])

    @property
    def shard_glob(self) -> str:
        return str(self.config["data"]["shard_glob"])

    @property
    def data(self) -> Mapping[str, Any]:
        """The data section (split fraction, bad-record policy, mixture, seed): the data rules'
        params, every value as the config has it."""
        return self.section("data")

    @property
    def tokenizer(self) -> dict[str, Any]:
        """The tokenizer section (a fresh dict: the tokenizer rule's params)."""
        return copy.deepcopy(dict(self.config["tokenizer"]))

    @property
    def tokenizer_file(self) -> str | None:
        """A configured tokenizer.json, or None (a BPE is trained on the corpus)."""
        return self.config["tokenizer"]["file"] or None

    # ---- per-stage run settings ----------------------------------------------------------
    @property
    def training_threads(self) -> int:
        return int(self.config["training"]["threads"])

    @property
    def throughput_threads(self) -> int:
        return int(self.config["throughput"]["threads"])

    @property
    def throughput_exclusive(self) -> bool:
        return bool(self.config["throughput"]["exclusive"])

    @property
    def throughput_uses_trained_weights(self) -> bool:
        return self.config["throughput"]["weights"] == "trained"

    @property
    def batch_sizes(self) -> list[int]:
        return copy.deepcopy(self.config["throughput"]["batch_sizes"])

    @property
    def export_mem_mb(self) -> int:
        return self.config["export"]["mem_mb"]

    @property
    def evaluate_enabled(self) -> bool:
        return bool(self.config["evaluate"]["enabled"])

    @property
    def evaluate_threads(self) -> int:
        return int(self.config["evaluate"]["threads"])

    @property
    def evaluate_runtime_min(self) -> int:
        return int(self.config["evaluate"]["runtime_min"])

    @property
    def evaluate_tasks(self) -> tuple[list, str | None]:
        """The configured tasks and the include path of local task files."""
        ev = self.config["evaluate"]
        return copy.deepcopy(ev["tasks"]), ev["include_path"]

    def selected(self, section: str) -> Any:
        """``<section>.architectures`` of export or evaluate ("all", names, ids or scales)."""
        if section not in ("export", "evaluate"):
            raise KeyError(f"no architecture selection in '{section}'")
        return copy.deepcopy(self.config[section]["architectures"])

    @property
    def report_title(self) -> str:
        return self.config["report"]["title"]

    @property
    def report_batch_size(self) -> int | None:
        return self.config["report"]["throughput_batch_size"]

    # ---- science plan, lifetime ------------------------------------------------------------
    @property
    def science(self) -> dict[str, Any]:
        """plan.science (a fresh dict: the plan_science rule's params)."""
        return copy.deepcopy(dict(self.config["plan"]["science"]))

    @property
    def science_law(self) -> str | None:
        """plan.science.law: a named law, a fit file's path, or None (no science plan)."""
        return self.config["plan"]["science"]["law"] or None

    @property
    def lifetime_tokens(self) -> Any:
        """search.lifetime.tokens (None: no lifetime cost)."""
        return self.config["search"]["lifetime"]["tokens"]

    # ---- compute, fit --------------------------------------------------------------------
    @property
    def compute(self) -> Mapping[str, Any]:
        return self.section("compute")

    @property
    def gpus_per_job(self) -> int:
        return int(self.config["compute"]["gpus_per_job"])

    def gpu_model(self, gpus: int) -> str:
        """The ``gpu_model`` resource of a job with ``gpus`` GPUs ("" without GPUs)."""
        return (self.config["compute"]["gpu_model"] or "") if gpus else ""

    @property
    def mem_mb_per_job(self) -> int:
        return self.config["compute"]["mem_mb_per_job"]

    @property
    def cpus_per_gpu(self) -> int:
        return int(self.config["compute"]["cpus_per_gpu"])

    @property
    def throughput_runtime_min(self) -> int:
        return int(self.config["compute"]["throughput_runtime_min"])

    def slurm_partition(self, fallback: str = "") -> str:
        """compute.partition, else ``fallback`` (the caller's $SBATCH_PARTITION)."""
        return self.config["compute"]["partition"] or fallback

    def slurm_account(self, fallback: str = "") -> str:
        """compute.account, else ``fallback`` (the caller's $SBATCH_ACCOUNT)."""
        return self.config["compute"]["account"] or fallback

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
