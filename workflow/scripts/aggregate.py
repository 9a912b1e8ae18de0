"""Aggregate every per-architecture record into results/runs.parquet (archscale.analysis.aggregate)."""

from archscale.analysis.aggregate import aggregate_runs
from archscale.io import write_parquet
from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    table = aggregate_runs(
        snakemake.input.plan,
        snakemake.input.metrics,
        snakemake.input.throughput,
        batch_sizes=snakemake.params.batch_sizes,
        # Provenance only: the hash of the whole config is recorded, not tracked as a param.
        config=snakemake.config,
        run_name=snakemake.params.run_name,
        eval_paths=snakemake.input.evaluation,
        train_runs=snakemake.params.train_runs,
    )
    write_parquet(snakemake.output[0], table)
    print(f"{table.num_rows} runs, {table.num_columns} columns -> {snakemake.output[0]}")
    print(table.schema.metadata[b"archscale.provenance"].decode())
