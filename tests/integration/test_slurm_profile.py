"""The SLURM profile as `snakemake --profile slurm` sees it from the repository root, checked on
dry-runs (no cluster needed): training jobs get the GPUs, GPU model and runtime of the compute plan,
throughput jobs one GPU of the configured model, partition/account come from the config or the
user's environment, and the preemption/retry policy is the one documented in the profile.
"""

from __future__ import annotations

import os

import pytest
import yaml

from archscale.plan import build_plan
from helpers.workflow import REPO, copy_workflow, env_for_runs, parse_jobs, snakemake, write_config

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("slurm-profile"))


def paper_subset() -> dict:
    """The paper config on three of its scales: the same resources, a faster dry-run."""
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    keep = ("80m", "1b", "3b")  # 4 and 8 GPUs per job; every named architecture of the config
    config["scales"] = [s for s in config["scales"] if s["name"] in keep]
    config["search"]["targets"] = [t for t in config["search"]["targets"] if t["scale"] in keep]
    return config


def test_root_link_points_at_the_profile():
    link = REPO / "slurm"
    assert link.is_symlink() and link.resolve() == (REPO / "profiles" / "slurm").resolve()
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    # Preemption: SLURM requeues (same job id, Snakemake keeps waiting); timeouts/cancellations:
    # Snakemake retries with runtime x attempt. Both resume from results/checkpoints/{arch}/.
    assert profile["slurm-requeue"] is True and profile["retries"] >= 1
    assert profile["rerun-incomplete"] is True
    assert profile["slurm-status-command"] == "squeue"


def test_training_and_throughput_resources_come_from_the_compute_plan(workdir):
    config = paper_subset()
    config["compute"]["partition"] = "gpu-a100"
    config["compute"]["account"] = "scaling-lab"
    write_config(workdir, config, "paper-subset.yaml")
    run = snakemake(workdir, "--profile", "slurm", "-n", "--configfile", "config/paper-subset.yaml",
                    env={"SBATCH_PARTITION": "cpu-short", "SBATCH_ACCOUNT": "lab-cpu"})
    assert "Using profiles slurm" in run.output, run.tail()
    jobs = parse_jobs(run.output)
    plan = build_plan(config)
    model = config["compute"]["gpu_model"]
    assert model, "config/paper.yaml should name its GPU model"
    trains = [j for j in jobs if j.rule == "train"]
    assert len(trains) == len(plan.ids)
    gpus_seen = set()
    for job in trains:
        row = plan[plan.train_run(job.wildcards["run"]).arch_id].row(plan.compute)  # train jobs are per run
        res = job.resources
        assert int(res["gpu"]) == row["gpus"] > 0, (job.wildcards, res)
        assert res["gpu_model"] == model
        assert int(res["runtime"]) == row["runtime_min"], (job.wildcards, res, row["runtime_min"])
        assert res["slurm_partition"] == "gpu-a100" and res["slurm_account"] == "scaling-lab"
        assert int(res["cpus_per_gpu"]) == config["compute"].get("cpus_per_gpu", 4)
        assert int(res["mem_mb"]) == config["compute"]["mem_mb_per_job"]
        gpus_seen.add(row["gpus"])
    assert gpus_seen == {4, 8}, gpus_seen  # the per-scale GPU counts of the paper config
    throughputs = [j for j in jobs if j.rule == "throughput"]
    assert throughputs and all(
        int(j.resources["gpu"]) == 1 and j.resources["gpu_model"] == model for j in throughputs
    )
    share = config["compute"]["mem_mb_per_job"] // config["compute"]["gpus_per_job"]
    assert all(int(j.resources["mem_mb"]) == share for j in throughputs)
    # CPU jobs take the user's environment through the profile's default resources.
    others = [j for j in jobs if j.rule in ("plan", "tokenizer", "tokenize", "aggregate", "fit")]
    assert others
    for job in others:
        assert job.resources.get("slurm_partition") == "cpu-short", (job.rule, job.resources)
        assert job.resources.get("slurm_account") == "lab-cpu", (job.rule, job.resources)
        assert "gpu" not in job.resources or int(job.resources["gpu"]) == 0


def test_environment_partition_reaches_gpu_jobs_when_the_config_names_none(workdir):
    config = paper_subset()
    config["compute"]["partition"] = None
    config["compute"]["account"] = None
    write_config(workdir, config, "paper-subset-env.yaml")
    run = snakemake(workdir, "--profile", "slurm", "-n", "--configfile", "config/paper-subset-env.yaml",
                    env={"SBATCH_PARTITION": "gpu", "SBATCH_ACCOUNT": "lab"})
    trains = [j for j in parse_jobs(run.output) if j.rule == "train"]
    assert trains and all(j.resources["slurm_partition"] == "gpu" for j in trains)
    assert all(j.resources["slurm_account"] == "lab" for j in trains)


def test_cpu_plan_requests_no_gpu(workdir):
    run = snakemake(workdir, "--profile", "slurm", "-n")
    jobs = parse_jobs(run.output)
    trains = [j for j in jobs if j.rule == "train"]
    assert trains
    for job in jobs:
        assert int(job.resources.get("gpu", 0)) == 0 and not job.resources.get("gpu_model"), job


def test_container_image_from_the_environment_reaches_the_jobs(workdir, tmp_path):
    """ARCHSCALE_CONTAINER=<image> runs the jobs through apptainer (the Snakefile's `container:`,
    the profile's software-deployment-method): the dry-run plans the image's pull. Unset, no
    image. A stand-in `apptainer` answers the version check a dry-run makes (nothing is pulled)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apptainer").write_text('#!/bin/sh\necho "apptainer version 1.3.4"\n')
    (fake / "apptainer").chmod(0o755)
    image = "docker://ghcr.io/example/archscale:test"
    path = f"{fake}{os.pathsep}{env_for_runs()['PATH']}"
    run = snakemake(workdir, "-n", "--profile", "slurm", env={"PATH": path, "ARCHSCALE_CONTAINER": image}, timeout=300)
    assert f"Singularity image {image} will be pulled" in run.output, run.tail()
    plain = snakemake(workdir, "-n", "--profile", "slurm", env={"PATH": path, "ARCHSCALE_CONTAINER": ""}, timeout=300)
    assert "Singularity image" not in plain.output, plain.tail()
