"""Rule throughput: measure one architecture (prefill, decode, energy) -> results/throughput/{arch}.json,
then log the record next to the architecture's training curves (TensorBoard / W&B)."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.io import write_json
    from archscale.study import Study
    from archscale.throughput import run_job
    from archscale.train.tracking import log_throughput

    # Hardware knobs and the network settings (the spec) come from the study, not params: they
    # do not change a measurement (a trained checkpoint brings its own, checked against the
    # spec). The torch threads are throughput.threads, not the job's (it reserves every core).
    study = Study.from_config(snakemake.config)
    checkpoint = snakemake.input[0] if len(snakemake.input) else None
    record = run_job(
        study.spec(snakemake.params.arch),
        snakemake.params.workload,
        study.throughput_hardware(),
        checkpoint=checkpoint,
    )
    write_json(snakemake.output[0], record)
    log_throughput(record, snakemake.config, f"results/train/{snakemake.wildcards.arch}")
