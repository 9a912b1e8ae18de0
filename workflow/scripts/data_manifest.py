"""Rule data_manifest: blend weights and per-source totals of the tokenized shards."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        import json

        from archscale.data.manifest import build_manifest, load_records
        from archscale.io import read_json, write_json

        manifest = build_manifest(
            load_records(snakemake.input.records),
            read_json(snakemake.input.tokenizer_meta),
            mixture=snakemake.params.mixture,
            seed=snakemake.params.seed,
            tokenizer_path=snakemake.input.tokenizer,
        )
        write_json(snakemake.output[0], manifest)
        print(json.dumps(manifest["sources"], indent=2))
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise
