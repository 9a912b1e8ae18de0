# Aggregation of every run record, law fits and their validation.


rule aggregate:
    input:
        plan="results/plan/plan.parquet",
        metrics=all_metrics(),
        curves=expand("results/train/{run}/curve.parquet", run=TRAIN_IDS),
        throughput=all_throughput(),
        evaluation=all_eval_records(),
    output:
        "results/runs.parquet",
    log:
        "logs/aggregate.log",
    conda:
        "../../environment.yml"
    params:
        run_name=STUDY.run_name,
        batch_sizes=STUDY.batch_sizes,
        train_runs=PLAN.run_rows(),
    script:
        "../scripts/aggregate.py"


rule fit:
    input:
        "results/runs.parquet",
    output:
        chinchilla="results/fit/chinchilla.json",
        conditional="results/fit/conditional.json",
        validation="results/fit/validation.parquet",
    log:
        "logs/fit.log",
    benchmark:
        "benchmarks/fit.tsv"
    conda:
        "../../environment.yml"
    params:
        fit=STUDY.fit,
    script:
        "../scripts/fit.py"
