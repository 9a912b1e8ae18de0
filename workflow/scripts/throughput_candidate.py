"""Rule throughput_candidate: measure one architecture listed by the search checkpoint."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        from archscale.io import read_json, write_json
        from archscale.search import measure_candidate
        from archscale.throughput import hardware_from_config

        # Hardware knobs are read here, not from params: they do not change a job's identity.
        hardware = hardware_from_config(snakemake.config["throughput"], snakemake.threads)
        candidates = read_json(snakemake.input[0])
        record = measure_candidate(candidates, snakemake.wildcards.arch, snakemake.params.workload, hardware)
        write_json(snakemake.output[0], record)
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise
