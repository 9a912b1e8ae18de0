# Inference throughput and energy per architecture (all configured batch sizes in one job),
# then a roofline cost model calibrated on the measurements. Locally a throughput job reserves
# every core of the run (isolated_threads) so that no other job runs beside a measurement.
from archscale.workflow_support import isolated_threads


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
    threads: isolated_threads(workflow.local_exec, workflow._cores, config["throughput"]["threads"])
    resources:
        **gpu_job_resources(
            throughput_runtime,
            throughput_gpus(),
            mem_mb=throughput_mem_mb(),
            exclusive=int(config["throughput"]["exclusive"]),
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
