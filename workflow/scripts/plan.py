"""Write the compute plan resolved by the workflow (one row per architecture)."""

import pandas as pd

from archscale.cli import PLAN_COLUMNS, print_table
from archscale.io import write_parquet
from archscale.plan import plan_totals
from archscale.workflow_support import rule_logging

with rule_logging(snakemake) as log:
    rows = snakemake.params.rows
    write_parquet(snakemake.output[0], pd.DataFrame(rows))
    print_table(rows, PLAN_COLUMNS, out=log)
    print(plan_totals(rows), file=log)
    for reason in snakemake.params.skipped:
        print(f"skipped infeasible grid point: {reason}", file=log)
