# archscale: architecture-conditional scaling laws for inference-efficient LLMs.
# Thin entry point: config + schema validation and the rules live in workflow/rules/.

import os
from pathlib import Path

from archscale.config import ConfigError, read_yaml

# Snakemake reports a YAML syntax error without file, line or column: read the workflow's
# config with archscale's loader first (files given with --configfile are parsed by snakemake
# before this file runs; common.smk rereads them, `archscale plan FILE` names the position).
try:
    if Path("config/config.yaml").is_file():
        read_yaml("config/config.yaml")
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None


configfile: "config/config.yaml"


# Every job in this image when ARCHSCALE_CONTAINER is set (profiles/slurm turns on apptainer;
# docs/install.md, "In a container"); unset, jobs run in the current environment.
container: os.environ.get("ARCHSCALE_CONTAINER", "")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/throughput.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/lifetime.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"


# Jobs of a second or two that read or summarise the others run where Snakemake runs (the
# submit host) under a cluster executor: a queue wait would cost more than the job.
localrules:
    all,
    plan,
    cost_model,
    data_manifest,
    aggregate,
    search_select,
    report,


rule all:
    default_target: True
    input:
        get_final_output(),
