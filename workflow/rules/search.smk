# Architecture search (Algorithm 1): candidates from the fitted law and the cost model, a
# checkpoint listing what to measure, one throughput job per listed architecture, then the
# GQA walk on the measurements and the Panda / Surefire picks. The checkpoint is the only
# one of the workflow: everything upstream of it shows in a dry-run.
from archscale.workflow_support import isolated_threads


include: "search_common.smk"


checkpoint search_candidates:
    input:
        runs="results/runs.parquet",
        fit="results/fit/conditional.json",
        cost_model="results/throughput/cost_model.json",
    output:
        candidates="results/search/{target}/candidates.json",
        space="results/search/{target}/space.parquet",
    log:
        "logs/search/{target}/candidates.log",
    conda:
        "../../environment.yml"
    params:
        target=search_target,
        settings=SEARCH_SETTINGS.to_dict(),
    script:
        "../scripts/search_candidates.py"


rule throughput_candidate:
    input:
        "results/search/{target}/candidates.json",
    output:
        "results/search/{target}/throughput/{arch}.json",
    log:
        "logs/search/{target}/throughput/{arch}.log",
    benchmark:
        "benchmarks/search/{target}/throughput/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: isolated_threads(workflow.local_exec, workflow._cores, config["throughput"]["threads"])
    resources:
        **gpu_job_resources(
            throughput_runtime,
            throughput_gpus(),
            mem_mb=throughput_mem_mb(),
            exclusive=int(config["throughput"]["exclusive"]),
        ),
    params:
        workload=candidate_workload(),
    script:
        "../scripts/throughput_candidate.py"


rule search_select:
    input:
        candidates="results/search/{target}/candidates.json",
        space="results/search/{target}/space.parquet",
        measured=measured_candidates,
    output:
        result="results/search/{target}/result.json",
        pareto="results/search/{target}/pareto.parquet",
    log:
        "logs/search/{target}/select.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/search_select.py"
