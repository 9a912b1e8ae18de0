rule plan:
    output:
        "results/plan/plan.parquet",
    log:
        "logs/plan.log",
    conda:
        "../../environment.yml"
    params:
        rows=PLAN.rows(),
        skipped=PLAN.skipped,
    script:
        "../scripts/plan.py"
