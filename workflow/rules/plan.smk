rule plan:
    output:
        "results/plan/plan.parquet",
    log:
        "logs/plan.log",
    conda:
        "../../environment.yml"
    params:
        rows=[run.row(PLAN.compute) for run in PLAN.runs.values()],
    script:
        "../scripts/plan.py"
