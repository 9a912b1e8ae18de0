"""The workflow end to end on a real SLURM controller, through the command of the README, typed
at the root of a checkout:

    snakemake --profile slurm --configfile config/test-tiny.yaml

with a shorter first status check (FAST_STATUS). The Snakefile's local rules run on the submit
host; every other job is a SLURM job. (`./slurm` is the link to profiles/slurm/ that Snakemake's profile lookup finds.) Needs the
single-node cluster of tests/slurm/start.sh; skipped, saying why, without one (a failure under
ARCHSCALE_REQUIRE_SLURM=1, as in .ci/run).
"""

from __future__ import annotations

import re

import pytest
import yaml

from helpers.workflow import (
    FAST_STATUS,
    copy_workflow,
    job_stats,
    nothing_to_do,
    parse_jobs,
    slurm_run_ids,
    snakemake,
    squeue_jobs,
    submitted,
)

# The whole tiny study through the SLURM profile: its own timeout, above the suite's 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(2400)]

CONFIG = "config/test-tiny.yaml"


def local_rules(workdir) -> set[str]:
    """The rules the Snakefile's `localrules:` block keeps on the submit host."""
    text = (workdir / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, flags=re.M)
    assert block, "no localrules block in the Snakefile"
    return set(re.findall(r"\w+", block.group(1)))


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-e2e"))
    # What the run will do, from the same command as a dry-run (job counts per rule).
    plan = snakemake(workdir, "--profile", "slurm", "--configfile", CONFIG, "-n", cluster=True)
    run = snakemake(workdir, "--profile", "slurm", *FAST_STATUS, "--configfile", CONFIG, timeout=2400,
                    cluster=True)
    return workdir, plan, run


def test_profile_is_found_at_the_repository_root(slurm_run):
    _, _, run = slurm_run
    assert "Using profiles slurm" in run.output, run.tail()
    assert len(slurm_run_ids(run.output)) == 1, "the SLURM executor did not start"


def test_every_job_ran_as_a_slurm_job_and_finished(slurm_run):
    workdir, plan, run = slurm_run
    local = set(re.findall(r"^local(?:rule|checkpoint) (\w+):", run.output, flags=re.M))
    planned = job_stats(plan.output)
    # The Snakefile's local rules (summaries of a second or two) ran on the submit host, and
    # nothing else did.
    assert local == local_rules(workdir) & (set(planned) | {"all"}), f"jobs ran outside SLURM: {local}"
    expected = {rule: n for rule, n in planned.items() if rule not in local}
    assert expected.get("train", 0) >= 2, plan.tail()
    ids = submitted(run.output)
    # Every other job the dry-run listed (the search's throughput_candidates included) was
    # submitted to SLURM, as many times as listed, and nothing else.
    for rule, count in expected.items():
        assert len(ids.get(rule, [])) == count, f"{rule}: planned {count}, submitted {ids.get(rule)}\n{run.tail()}"
    assert set(ids) == set(expected), ids
    # The controller saw all of them, under this run's job name, and each one COMPLETED.
    run_id = slurm_run_ids(run.output)[0]
    known = {j["id"]: j for j in squeue_jobs()}
    for rule, job_ids in ids.items():
        for job_id in job_ids:
            assert job_id in known, f"SLURM job {job_id} ({rule}) unknown to squeue"
            assert known[job_id]["name"] == run_id
            assert known[job_id]["state"] == "COMPLETED", known[job_id]
            assert known[job_id]["comment"].startswith(f"rule_{rule}"), known[job_id]


def test_results_of_the_slurm_run(slurm_run):
    workdir, _, _ = slurm_run
    config = yaml.safe_load((workdir / CONFIG).read_text())
    out = workdir / "results"
    for path in ("plan/plan.parquet", "runs.parquet", "fit/conditional.json", "report/index.json"):
        assert (out / path).is_file(), f"results/{path} missing after the SLURM run"
    for target in config["search"]["targets"]:
        assert (out / "search" / target["name"] / "result.json").is_file()
    import pandas as pd

    runs = pd.read_parquet(out / "runs.parquet")
    plan = pd.read_parquet(out / "plan" / "plan.parquet")
    assert set(runs["arch_id"]) == set(plan["arch_id"])
    # one row per training job: every seed and horizon branch (typed columns, not parsed ids)
    from archscale.plan import build_plan
    from helpers.workflow import load_config, merged

    planned = build_plan(merged(load_config(workdir), config)).train_runs
    assert sorted(runs["run_id"]) == sorted(planned)
    assert {(r.run_id, int(r.seed), int(r.tokens)) for r in runs.itertuples()} == \
        {(k, t.seed, t.tokens) for k, t in planned.items()}
    assert runs["valid_loss"].notna().all() and (runs["valid_loss"] > 0).all()


def test_rerun_with_nothing_to_do_submits_nothing(slurm_run):
    workdir, _, _ = slurm_run
    run = snakemake(workdir, "--profile", "slurm", *FAST_STATUS, "--configfile", CONFIG, cluster=True)
    assert nothing_to_do(run.output), run.tail()
    assert parse_jobs(run.output) == [] and submitted(run.output) == {}, run.tail()
