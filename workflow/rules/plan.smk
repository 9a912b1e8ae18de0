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


# Plan the science: on when plan.science.law is set (see get_final_output).
rule plan_science:
    input:
        "results/plan/plan.parquet",
        law=science_law_input,
    output:
        "results/plan/science.json",
    log:
        "logs/plan_science.log",
    conda:
        "../../environment.yml"
    params:
        science=STUDY.science,
    script:
        "../scripts/plan_science.py"
