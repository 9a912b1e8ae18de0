"""Fit the Chinchilla and conditional laws and run the progressive validation (archscale.law)."""

import json

from archscale.analysis.aggregate import read_runs
from archscale.io import write_json, write_parquet
from archscale.law import fit_outputs
from archscale.law.laws import law_from_conditional
from archscale.law.validation import validation_table
from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    runs, provenance = read_runs(snakemake.input[0])
    chinchilla, conditional, validation = fit_outputs(runs, dict(snakemake.params.fit))
    conditional["provenance"] = provenance
    write_json(snakemake.output.chinchilla, chinchilla)
    write_json(snakemake.output.conditional, conditional)
    write_parquet(snakemake.output.validation, validation_table(validation))
    for form, fit in law_from_conditional(conditional, snakemake.output.conditional).forms.items():
        print(form, json.dumps(fit.optimum.to_dict()), f"mse={fit.mse}", f"spearman={fit.spearman}")
    print(validation.to_string())
