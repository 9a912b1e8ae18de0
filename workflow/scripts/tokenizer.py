"""Rule tokenizer: check and copy the configured tokenizer.json, or train a byte-level BPE."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        from archscale.data.tokenizer import build, set_threads

        set_threads(snakemake.threads)
        cfg = snakemake.params.tokenizer
        meta = build(
            snakemake.output.tokenizer,
            snakemake.output.meta,
            tokenizer_cfg=cfg,
            shards=[] if cfg.get("file") else list(snakemake.input),
            valid_fraction=snakemake.params.valid_fraction,
            on_bad_record=snakemake.params.on_bad_record,
        )
        print(f"tokenizer: {meta}")
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise
