"""Rule report: figures, tables and the summary -> results/report/ (index.json lists them)."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    import json

    from archscale.report import OUTPUTS, build_report

    inp = snakemake.input
    index = build_report(
        outputs={name: getattr(snakemake.output, name) for name in [*OUTPUTS, "index"]},
        plan=inp.plan,
        runs=inp.runs,
        conditional=inp.conditional,
        validation=inp.validation,
        curves=list(inp.curves),
        search_results=list(inp.search_results),
        search_pareto=list(inp.search_pareto),
        search_throughput=list(inp.search_throughput),
        title=snakemake.params.title,
        batch_size=snakemake.params.batch_size,
        science=inp.science[0] if inp.science else None,
        cost_model=inp.cost_model,
        lifetime=list(inp.lifetime),
    )
    print(json.dumps(index, indent=2))
