"""Rule search_select: GQA walk and Surefire verdict on the interleaved measurement -> result.json, pareto.parquet."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake) as log:
    from archscale.io import write_json, write_parquet
    from archscale.search import select_interleaved_from_files
    from archscale.cli.search import print_result

    result, pareto = select_interleaved_from_files(
        snakemake.input.candidates, snakemake.input.space, snakemake.input.measured
    )
    write_parquet(snakemake.output.pareto, pareto)
    write_json(snakemake.output.result, result)
    print_result(result, pareto, out=log)
