"""Rule search_candidates: enumerate, predict and list what to measure -> candidates.json, space.parquet."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.io import write_json, write_parquet
    from archscale.search import prepare_from_files

    candidates, space = prepare_from_files(
        snakemake.params.target,
        snakemake.params.settings,
        snakemake.input.runs,
        snakemake.input.fit,
        snakemake.input.cost_model,
    )
    write_parquet(snakemake.output.space, space)
    write_json(snakemake.output.candidates, candidates)
    g = candidates["grid"]
    print(
        f"{g['points']} grid points, {g['infeasible']} infeasible, {g['architectures']} architectures, "
        f"{g['within_target']} within the loss target; {len(candidates['measure'])} to measure"
    )
