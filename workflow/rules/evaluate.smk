# Zero-shot downstream evaluation (lm-evaluation-harness) of exported models. On when
# evaluate.enabled: the records then join results/runs.parquet through all_eval_records()
# (common.smk). `snakemake evaluate_all` evaluates evaluate.architectures even when off.


rule evaluate:
    input:
        model="results/export/{arch}",
        tasks=evaluate_task_files,
    output:
        "results/eval/{arch}.json",
    log:
        "logs/eval/{arch}.log",
    benchmark:
        "benchmarks/eval/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: STUDY.evaluate_threads
    resources:
        **gpu_job_resources(evaluate_runtime, throughput_gpus(), cpus_per_gpu=None),
    params:
        spec=evaluate_spec(),
    script:
        "../scripts/evaluate.py"


rule evaluate_all:
    input:
        expand("results/eval/{arch}.json", arch=selected_architectures("evaluate")),
    localrule: True
