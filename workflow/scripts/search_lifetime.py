"""Rule search_lifetime: training plus serving cost of the target's choices -> lifetime.json."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake) as log:
    from archscale.cli.search_lifetime import print_lifetime
    from archscale.io import write_json
    from archscale.search.lifetime import lifetime_from_files

    result = lifetime_from_files(
        snakemake.params.target, snakemake.params.settings, snakemake.input.result, snakemake.input.fit,
        snakemake.input.cost_model, snakemake.input.runs, snakemake.input.throughput, form=snakemake.params.form,
    )
    write_json(snakemake.output[0], result)
    print_lifetime(result, out=log)
