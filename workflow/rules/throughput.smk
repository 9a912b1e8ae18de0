# Inference throughput and energy per architecture (all configured batch sizes in one job),
# then a roofline cost model calibrated on the measurements. Locally a throughput job reserves
# every core of the run (throughput_threads) so that no other job runs beside a measurement.


rule throughput:
    input:
        throughput_weights,
    output:
        "results/throughput/{arch}.json",
    log:
        "logs/throughput/{arch}.log",
    benchmark:
        "benchmarks/throughput/{arch}.tsv"
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
        arch=arch_params,
        workload=throughput_workload(),
    script:
        "../scripts/throughput.py"


rule cost_model:
    input:
        all_throughput(),
    output:
        "results/throughput/cost_model.json",
    log:
        "logs/cost_model.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/cost_model.py"
