# One megatron-core training job per run (an architecture at one seed: {run} is its arch id
# for the base seed, arch id + -s<seed> otherwise; with token horizons, one job per decay
# branch, + -D<tokens>). Resumable checkpoints live in results/checkpoints/{run}/ (and the
# shared stable phase of a multi-horizon run in results/checkpoints/<arch id[-s<seed>]>-stable/),
# outside the declared outputs, so Snakemake never deletes them: re-running a killed or
# preempted job resumes from the latest one, and a new horizon continues the stable phase.


rule train:
    input:
        manifest="results/data/manifest.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
        previous=previous_branch,
    output:
        metrics="results/train/{run}/metrics.json",
        curve="results/train/{run}/curve.parquet",
        final=directory("results/train/{run}/final"),
    log:
        "logs/train/{run}.log",
    benchmark:
        "benchmarks/train/{run}.tsv"
    priority: train_priority
    conda:
        "../../environment.yml"
    threads: STUDY.training_threads
    resources:
        **gpu_job_resources(train_runtime, train_gpus, mem_mb=STUDY.mem_mb_per_job),
    params:
        arch=run_params,
        budget=train_budget,
        recipe=run_recipe,
        rope_base=STUDY.network["rope_base"],
        checkpoint_dir=lambda wc: f"results/checkpoints/{wc.run}",
    script:
        "../scripts/train.py"
