"""Rule throughput: measure one architecture (prefill, decode, energy) -> results/throughput/{arch}.json."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        from archscale.io import write_json
        from archscale.throughput import hardware_from_config, run_job

        # Hardware knobs are read here, not from params: they do not change a job's identity.
        hardware = hardware_from_config(snakemake.config["throughput"], snakemake.threads)
        checkpoint = snakemake.input[0] if len(snakemake.input) else None
        record = run_job(snakemake.params.arch, snakemake.params.workload, hardware, checkpoint=checkpoint)
        write_json(snakemake.output[0], record)
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise
