"""Rule evaluate: lm-evaluation-harness zero-shot on results/export/{arch} -> results/eval/{arch}.json."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.evaluate import evaluate_model
    from archscale.io import write_json
    from archscale.study import Study

    # Hardware knobs come from the study, not params: they do not change a job's identity.
    hardware = {**Study.from_config(snakemake.config).hardware("evaluate"), "threads": snakemake.threads}
    record = evaluate_model(snakemake.wildcards.arch, snakemake.input.model, snakemake.params.spec, hardware)
    write_json(snakemake.output[0], record)
