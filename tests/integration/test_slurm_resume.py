"""Preempted, cancelled and timed-out training jobs on a real SLURM controller resume from their
checkpoints, under the policy of profiles/slurm/config.yaml:

* preemption (simulated with `scontrol requeue`, what SLURM does to a preempted job under
  PreemptMode=REQUEUE): SLURM restarts the SAME job; Snakemake keeps waiting, never resubmits;
  the restarted job resumes from results/checkpoints/{arch}/;
* `scancel` mid-run with the workflow stopped (`--retries 0`): running
  `snakemake --profile slurm` again resumes the job from its checkpoint;
* GPU requests: the training job asks for the compute plan's GPU model and count (a fake a100 on
  the test node; the job runs on the CPU there) and SLURM schedules it; a GPU model the cluster
  does not have is rejected at submission.

One small architecture, trained long enough (about half a minute on 2 cores) to be interrupted with a
few checkpoints behind it. Data preparation runs locally first: it is not what is tested here.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from archscale.plan import build_plan
from helpers.workflow import (
    FAST_STATUS,
    SNAKEMAKE,
    copy_workflow,
    env_for_runs,
    merged,
    snakemake,
    squeue_jobs,
    submitted,
    write_config,
)

# Training on the cluster, interrupted and resumed: above the suite's 300 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(1200)]

#: Seconds to wait for a training job to reach a checkpoint (job start-up included).
CHECKPOINT_WAIT = 600


def resume_config(tiny: dict) -> dict:
    """test-tiny.yaml reduced to its first scale (one cosine run per architecture: no horizons,
    no extra seeds), trained long enough to be interrupted, checkpointing often, with one GPU of
    model a100 per training job (the fake GPU of tests/slurm/start.sh)."""
    config = json.loads(json.dumps(tiny))
    scale = config["scales"][0]
    scale["tokens_per_param"] = 15  # ~110 steps of 4,096 tokens: checkpoints every 10
    scale.pop("architectures", None)
    scale.pop("horizons", None)
    for sweep in scale["grid"]:
        sweep.pop("seeds", None)
    config["scales"] = [scale]
    config["training"]["checkpoint_interval"] = 10
    config["training"]["checkpoint_min_s"] = 0  # checkpoint at every interval, however short the run
    config["compute"]["gpus_per_job"] = 1
    config["compute"]["gpu_model"] = "a100"
    config["compute"]["cpus_per_gpu"] = 1  # the test node has 2 cores
    config["search"]["targets"] = []
    return config


@pytest.fixture(scope="module")
def prepared(slurm_cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-resume"))
    tiny = yaml.safe_load((workdir / "config" / "test-tiny.yaml").read_text())
    base = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config = resume_config(merged(base, tiny))
    write_config(workdir, config, "resume.yaml")
    # Targets go first: --configfile takes several values and would swallow a target after it.
    snakemake(workdir, "results/data/manifest.json", "--cores", "2", "--configfile", "config/resume.yaml")
    arch_ids = build_plan(config).ids
    assert len(arch_ids) >= 2, arch_ids
    return workdir, config, arch_ids


def start_training(workdir: Path, arch: str, *extra: str) -> tuple[subprocess.Popen, Path]:
    log = workdir / "test-logs" / f"train-{arch}-{time.time():.0f}.log"
    log.parent.mkdir(exist_ok=True)
    fh = open(log, "w")
    proc = subprocess.Popen(
        [SNAKEMAKE, f"results/train/{arch}/metrics.json", "--profile", "slurm", *FAST_STATUS, "--configfile",
         "config/resume.yaml", *extra],
        cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env_for_runs(cluster=True),
    )
    return proc, log


def latest_checkpoint(workdir: Path, arch: str) -> int | None:
    latest = workdir / "results" / "checkpoints" / arch / "latest"
    if not latest.is_file():
        return None
    name = latest.read_text().strip()
    return int(name.split("_")[-1]) if name else None


def running_train_job(arch: str) -> dict | None:
    for job in squeue_jobs():
        if job["comment"] == f"rule_train_wildcards_{arch}" and job["state"] == "RUNNING":
            return job
    return None


def wait_for_checkpoint(proc: subprocess.Popen, log: Path, workdir: Path, arch: str) -> tuple[dict, int]:
    """The running SLURM job of ``arch`` once it has written a checkpoint."""
    deadline = time.monotonic() + CHECKPOINT_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (exit {proc.returncode}) before a checkpoint:\n{log.read_text()[-4000:]}")
        job = running_train_job(arch)
        step = latest_checkpoint(workdir, arch)
        if job and step:
            return job, step
        time.sleep(1)
    proc.kill()
    pytest.fail(f"no checkpoint of {arch} within {CHECKPOINT_WAIT} s:\n{log.read_text()[-4000:]}")


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def wait_for_state(job_id: str, state: str, timeout: float) -> dict[str, str]:
    """``scontrol show job`` once the job is in ``state`` (a requeued job first completes its
    SIGTERM grace, up to KillWait)."""
    deadline = time.monotonic() + timeout
    while True:
        info = scontrol(job_id)
        if info.get("JobState") == state:
            return info
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} not {state} within {timeout} s: {info.get('JobState')}")
        time.sleep(0.5)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"snakemake did not finish within {timeout} s:\n{log.read_text()[-4000:]}")
    return log.read_text()


def metrics(workdir: Path, arch: str) -> dict:
    return json.loads((workdir / "results" / "train" / arch / "metrics.json").read_text())


def test_preempted_training_job_is_requeued_by_slurm_and_resumes(prepared):
    workdir, config, arch_ids = prepared
    arch = arch_ids[0]
    proc, log = start_training(workdir, arch)
    job, step = wait_for_checkpoint(proc, log, workdir, arch)

    # The profile's GPU request as SLURM granted it: one a100 (fake: the job runs on the CPU).
    info = scontrol(job["id"])
    assert "gpu:a100:1" in info.get("TresPerJob", "") + info.get("TresPerNode", ""), info
    assert info.get("Requeue") == "1", f"training jobs must be requeueable: {info.get('Requeue')}"

    subprocess.run(["scontrol", "requeue", job["id"]], check=True, timeout=30)
    # SLURM holds a requeued batch job for two minutes (Reason=BeginTime); a preempted job on a
    # busy cluster waits for resources anyway. Release the hold: the same job, restarted now.
    held = wait_for_state(job["id"], "PENDING", timeout=120)
    assert int(held.get("Restarts", "0")) >= 1, held
    subprocess.run(["scontrol", "update", f"JobId={job['id']}", "StartTime=now"], check=True, timeout=30)
    output = finish(proc, log)
    assert proc.returncode == 0, output[-4000:]

    # SLURM restarted the same job; Snakemake submitted it once and never resubmitted it.
    assert submitted(output).get("train") == [job["id"]], output[-3000:]
    assert int(scontrol(job["id"]).get("Restarts", "0")) >= 1
    m = metrics(workdir, arch)
    assert m["resumed_from_step"] is not None and m["resumed_from_step"] >= step, m
    assert m["steps"] > m["resumed_from_step"], m
    assert m["device"] and "cuda" not in str(m["device"]).lower(), m  # fake GPU: ran on the CPU


def test_cancelled_training_job_resumes_when_the_workflow_runs_again(prepared):
    workdir, config, arch_ids = prepared
    arch = arch_ids[1]
    proc, log = start_training(workdir, arch, "--retries", "0")
    job, step = wait_for_checkpoint(proc, log, workdir, arch)
    subprocess.run(["scancel", job["id"]], check=True, timeout=30)
    output = finish(proc, log)
    assert proc.returncode != 0, "snakemake should report the cancelled job as failed"
    assert not (workdir / "results" / "train" / arch / "metrics.json").exists(), "a cancelled job left a finished-looking output"

    run = snakemake(workdir, f"results/train/{arch}/metrics.json", "--profile", "slurm", *FAST_STATUS, "--configfile",
                    "config/resume.yaml", timeout=900, cluster=True)
    new_ids = submitted(run.output).get("train", [])
    assert len(new_ids) == 1 and new_ids[0] != job["id"], run.tail()
    m = metrics(workdir, arch)
    assert m["resumed_from_step"] is not None and m["resumed_from_step"] >= step, m
    assert output  # the first run's log is kept in test-logs/ for a post-mortem


def test_gpu_model_the_cluster_lacks_is_rejected_at_submission(prepared):
    workdir, config, arch_ids = prepared
    bad = json.loads(json.dumps(config))
    bad["compute"]["gpu_model"] = "h100"
    write_config(workdir, bad, "resume-h100.yaml")
    run = snakemake(workdir, f"results/train/{arch_ids[-1]}/metrics.json", "--profile", "slurm",
                    *FAST_STATUS, "--configfile", "config/resume-h100.yaml", "--retries", "0", check=False, timeout=300, cluster=True)
    assert run.returncode != 0, run.tail()
    assert "Requested node configuration is not available" in run.output, run.tail()
    assert "--gpus=h100:1" in run.output, run.tail()
