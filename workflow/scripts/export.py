"""Rule export: results/train/{arch}/final (megatron-core) -> results/export/{arch} (HF directory)."""

from archscale.workflow_support import rule_logging

with rule_logging(snakemake):
    from archscale.export import export_checkpoint
    from archscale.study import Study

    record = export_checkpoint(
        snakemake.input.checkpoint,
        snakemake.output[0],
        tokenizer_file=snakemake.input.tokenizer,
        tokenizer_meta_file=snakemake.input.tokenizer_meta,
        dtype=snakemake.params.export["dtype"],
        model_type=snakemake.params.export["model_type"],
        # A check, not part of the result: a hardware knob of the study, not a param.
        verify=Study.from_config(snakemake.config).hardware("export")["verify"],
        threads=snakemake.threads,
    )
    print(f"[archscale] exported {record['arch_id']} ({record['model_type']}, {record['dtype']}, "
          f"{record['parameters']:,} parameters) -> {snakemake.output[0]}")
