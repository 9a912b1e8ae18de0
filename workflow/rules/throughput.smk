# Inference throughput and energy per architecture (all configured batch sizes in one job),
# then a roofline cost model calibrated on the measurements.


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
    threads: config["throughput"]["threads"]
    resources:
        runtime=throughput_runtime,
        gpu=throughput_gpus(),
        gpu_model=gpu_model(throughput_gpus()),
        cpus_per_gpu=cpus_per_gpu(),
        mem_mb=throughput_mem_mb(),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account(),
        exclusive=int(config["throughput"]["exclusive"]),
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
