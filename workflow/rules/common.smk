# Config validation, grid expansion, wildcard constraints and input functions.
from pathlib import Path

from snakemake.utils import validate

from archscale.config import ConfigError, validate_config
from archscale.plan import build_plan

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    # Semantic checks the schema cannot express (GQA divides heads, N on target, ...).
    validate_config(config)
    PLAN = build_plan(config)
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None


ARCH_IDS = PLAN.ids


wildcard_constraints:
    arch="[A-Za-z0-9]+-L[0-9]+-d[0-9]+-h[0-9]+g[0-9]+x[0-9]+-f[0-9]+(-untied)?",


def arch_params(wildcards):
    """The job's own grid point: the only model parameters a training/throughput job sees."""
    return PLAN[wildcards.arch].arch.to_dict()


def get_final_output():
    return ["results/plan/plan.parquet"]
