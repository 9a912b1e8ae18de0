# Architecture search (Algorithm 1): candidates from the fitted law and the cost model and the
# list of what to measure, one throughput job per target that measures every listed
# architecture interleaved (A B C A B C ...), then the GQA walk and the Surefire verdict on
# ratios with bootstrap intervals, and the Panda / Surefire picks.


include: "search_common.smk"


rule search_candidates:
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


rule throughput_candidates:
    input:
        "results/search/{target}/candidates.json",
    output:
        "results/search/{target}/throughput.json",
    log:
        "logs/search/{target}/throughput.log",
    benchmark:
        "benchmarks/search/{target}/throughput.tsv"
    conda:
        "../../environment.yml"
    threads: throughput_threads()
    resources:
        **gpu_job_resources(
            throughput_runtime,
            throughput_gpus(),
            mem_mb=throughput_mem_mb(),
            exclusive=int(STUDY.throughput_exclusive),
        ),
    params:
        workload=candidate_workload(),
    script:
        "../scripts/throughput_candidates.py"


rule search_select:
    input:
        candidates="results/search/{target}/candidates.json",
        space="results/search/{target}/space.parquet",
        measured="results/search/{target}/throughput.json",
    output:
        result="results/search/{target}/result.json",
        pareto="results/search/{target}/pareto.parquet",
    log:
        "logs/search/{target}/select.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/search_select.py"
