# Export of a trained checkpoint to a Hugging Face model directory (transformers, vLLM,
# lm-evaluation-harness): `snakemake results/export/{arch}` for any trained architecture,
# `snakemake export_all` for export.architectures.


rule export:
    input:
        checkpoint=final_checkpoint,
        tokenizer="results/tokenizer/tokenizer.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
    output:
        directory("results/export/{arch}"),
    log:
        "logs/export/{arch}.log",
    benchmark:
        "benchmarks/export/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=STUDY.export_mem_mb,
        runtime=lambda wc, attempt: runtime_string(60 * attempt),
    params:
        export=export_params(),
    script:
        "../scripts/export.py"


rule export_all:
    input:
        all_exports(),
    localrule: True
