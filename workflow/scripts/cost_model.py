"""Rule cost_model: calibrate the roofline on every throughput record -> results/throughput/cost_model.json."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    import json

    from archscale.io import read_json, write_json
    from archscale.throughput.roofline import fit_cost_model

    model = fit_cost_model([read_json(p) for p in snakemake.input])
    write_json(snakemake.output[0], model)
    for name, dev in model["devices"].items():
        summary = {k: dev[k] for k in ("prefill", "decode", "spearman", "mean_abs_rel_error", "jobs")}
        print(name, json.dumps(summary, indent=2))
