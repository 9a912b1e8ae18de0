"""Rule throughput_candidate: measure one architecture listed by the search checkpoint."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.io import read_json, write_json
    from archscale.search import measure_candidate
    from archscale.study import Study

    # Hardware knobs and the RoPE base are read from the study, not params: they do not change
    # a measurement with random weights.
    study = Study.from_config(snakemake.config)
    record = measure_candidate(
        read_json(snakemake.input[0]),
        snakemake.wildcards.arch,
        snakemake.params.workload,
        study.throughput_hardware(),
        rope_base=study.rope_base,
    )
    write_json(snakemake.output[0], record)
