"""Plan the science (issue 15): results/plan/science.json from plan.science."""

from archscale.io import write_json
from archscale.science import format_science, science_from_config
from archscale.study import Study
from archscale.workflow_support import rule_logging

with rule_logging(snakemake) as log:
    result = science_from_config(Study.from_config(snakemake.config))
    write_json(snakemake.output[0], result)
    print(format_science(result), file=log)
