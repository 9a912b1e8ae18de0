"""Rule throughput_candidates: every architecture the search listed, measured interleaved in one job."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.io import read_json, write_json
    from archscale.search import measure_candidates_interleaved
    from archscale.study import Study

    # Hardware knobs and the network settings (the spec) come from the study, not params: they
    # do not change a measurement with random weights. Torch threads are throughput.threads (fixed); the job
    # itself reserves every core locally (isolation).
    study = Study.from_config(snakemake.config)
    record = measure_candidates_interleaved(
        read_json(snakemake.input[0]),
        snakemake.params.workload,
        study.throughput_hardware(),
        spec=study.spec,
    )
    write_json(snakemake.output[0], record)
