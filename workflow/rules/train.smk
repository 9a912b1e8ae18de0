# One megatron-core training job per architecture. Resumable checkpoints live in
# results/checkpoints/{arch}/, outside the declared outputs, so Snakemake never deletes them:
# re-running a killed or preempted job resumes from the latest one.


rule train:
    input:
        manifest="results/data/manifest.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
    output:
        metrics="results/train/{arch}/metrics.json",
        curve="results/train/{arch}/curve.parquet",
        final=directory("results/train/{arch}/final"),
    log:
        "logs/train/{arch}.log",
    benchmark:
        "benchmarks/train/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: config["training"]["threads"]
    resources:
        **gpu_job_resources(
            train_runtime, train_gpus, mem_mb=config["compute"]["mem_mb_per_job"]
        ),
    params:
        arch=arch_params,
        budget=train_budget,
        recipe=training_recipe(),
        rope_base=config["model"]["rope_base"],
        checkpoint_dir=lambda wc: f"results/checkpoints/{wc.arch}",
    script:
        "../scripts/train.py"
