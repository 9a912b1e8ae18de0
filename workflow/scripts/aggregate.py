"""Aggregate every per-architecture record into results/runs.parquet (archscale.analysis.aggregate)."""

import sys

from archscale.analysis.aggregate import aggregate_runs
from archscale.io import write_parquet

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        table = aggregate_runs(
            snakemake.input.plan,
            snakemake.input.metrics,
            snakemake.input.throughput,
            batch_sizes=snakemake.params.batch_sizes,
            # Provenance only: the hash of the whole config is recorded, not tracked as a param.
            config=snakemake.config,
            run_name=snakemake.params.run_name,
            eval_paths=snakemake.input.evaluation,
        )
        write_parquet(snakemake.output[0], table)
        print(f"{table.num_rows} runs, {table.num_columns} columns -> {snakemake.output[0]}")
        print(table.schema.metadata[b"archscale.provenance"].decode())
    except Exception as exc:  # the log names the record or key at fault
        print(f"error: {exc}", file=log)
        raise
