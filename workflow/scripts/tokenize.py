"""Rule tokenize: one Dolma shard -> {train,valid} Megatron indexed datasets + a record."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        from archscale.data.tokenize import tokenize_shard
        from archscale.data.tokenizer import file_sha256, load_checked, set_threads

        set_threads(snakemake.threads)  # before the tokenizer's thread pool starts
        tok, meta = load_checked(snakemake.input.tokenizer, snakemake.input.meta)
        tokenize_shard(
            snakemake.input.shard,
            tok,
            eod_id=meta["eod_id"],
            vocab_size=meta["vocab_size"],
            out_prefix=snakemake.output.train_bin[: -len(".train.bin")],
            record_path=snakemake.output.record,
            valid_fraction=snakemake.params.valid_fraction,
            on_bad_record=snakemake.params.on_bad_record,
            source=snakemake.wildcards.source,
            extra={"tokenizer_sha256": file_sha256(snakemake.input.tokenizer)},
        )
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise
