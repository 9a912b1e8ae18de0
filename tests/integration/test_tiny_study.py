"""Tests on ONE complete run of the tiny study (tests/conftest.py: tiny_study). They share one
module so that pytest-xdist (--dist loadfile) runs them on one worker and the study runs once.

Partial reruns:
(a) adding one grid point schedules exactly that architecture's training and throughput jobs plus
    the jobs that summarise all runs (plan table, cost model, aggregate, fit, search, report);
    adding a token horizon schedules exactly the new decay branches;
(b) editing a key that does not affect a job re-runs nothing else: the report title re-runs only
    the report, a hardware-only knob re-runs nothing, and replacing one grid point does not
    re-run its neighbours in the same sweep;
(c) a run with nothing to do does nothing, and exits quickly (its time is printed here and
    measured by bench/bench_dryrun.py, not asserted).

Faults on the finished study:
* a config with ``training.lr: .nan`` fails at validation, before any job, and loses nothing
  (every metrics.json, curve and checkpoint file byte-identical, nothing moved aside);
* kill: SIGKILL of snakemake mid-training, ``snakemake --unlock``, rerun: the orphaned trainer
  stops by itself, one trainer at a time, no process left behind, bit-identical losses. This
  test changes the study (it deletes and retrains one run), so it works on a copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from archscale.plan import build_plan
from helpers.workflow import (
    SNAKEMAKE,
    TINY_CONFIG,
    env_for_runs,
    job_stats,
    nothing_to_do,
    output_mtimes,
    parse_jobs,
    snakemake,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

#: Per-architecture rules: a change of one grid point may schedule them for that point only.
PER_ARCH = {"train", "throughput"}
#: Rules that read every run (or the plan): any change of the grid legitimately re-runs them.
SUMMARY = {"plan", "cost_model", "aggregate", "fit", "search_candidates", "throughput_candidates", "search_select",
           "search_lifetime",
           "report"}
#: Data preparation never depends on the grid.
DATA = {"tokenizer", "tokenize", "data_manifest"}


def arch_of(job, config: dict) -> str | None:
    """The architecture of a per-architecture job: training jobs are per run (the plan's typed
    runs name their architecture), throughput jobs per architecture."""
    if "run" in job.wildcards:
        return build_plan(config).train_run(job.wildcards["run"]).arch_id
    return job.wildcards.get("arch")


def plan_ids(config: dict) -> set[str]:
    return set(build_plan(config).ids)


def dry_run(study, config: dict, name: str):
    """A dry-run of ``config`` (a complete config: it replaces every key of the study's)."""
    path = write_config(study.workdir, config, name)
    run = snakemake(study.workdir, "-n", "--configfile", str(path.relative_to(study.workdir)))
    # `all` (the local target rule) is listed whenever anything below it re-runs: not a job.
    return run, [j for j in parse_jobs(run.output) if j.rule != "all"]


def added_point(config: dict) -> tuple[dict, str]:
    """The study's config plus one new feasible d_over_sqrt_n in the first sweep of a scale, and
    the id of the one architecture it adds."""
    before = plan_ids(config)
    for scale_index, scale in enumerate(config["scales"]):
        sweep = scale["grid"][0]
        for value in (0.27, 0.3, 0.4, 0.45, 0.25, 0.42):
            if value in sweep["d_over_sqrt_n"]:
                continue
            cand = default_copy(config)
            cand["scales"][scale_index]["grid"][0]["d_over_sqrt_n"] = sweep["d_over_sqrt_n"] + [value]
            try:
                new = plan_ids(cand) - before
            except Exception:  # noqa: BLE001 - infeasible point: try the next value
                continue
            if len(new) == 1 and before <= plan_ids(cand):
                return cand, new.pop()
    pytest.fail("found no single feasible grid point to add to the study's config")


def default_copy(config: dict) -> dict:
    return copy.deepcopy(config)


def test_tiny_study_completed(tiny_study):
    out = tiny_study.workdir / "results"
    for path in ("plan/plan.parquet", "runs.parquet", "fit/conditional.json", "report/index.json"):
        assert (out / path).is_file(), f"the default run did not produce results/{path}"
    trained = {p.parent.name for p in out.glob("train/*/metrics.json")}
    assert len(trained) > len(plan_ids(tiny_study.config_copy())), "the tiny study trains several seeds"
    assert trained == set(build_plan(tiny_study.config_copy()).train_ids)


def test_a_adding_one_grid_point_schedules_only_its_jobs_and_the_summaries(tiny_study):
    config, new_arch = added_point(tiny_study.config_copy())
    run, jobs = dry_run(tiny_study, config, "added-point.yaml")
    rules = {j.rule for j in jobs}
    per_arch = {(j.rule, arch_of(j, default_copy(config))) for j in jobs if j.rule in PER_ARCH}
    assert per_arch == {("train", new_arch), ("throughput", new_arch)}, run.tail()
    assert not rules & DATA, f"data jobs re-scheduled: {rules & DATA}\n{run.tail()}"
    assert rules - PER_ARCH <= SUMMARY, f"unexpected jobs {rules - PER_ARCH - SUMMARY}\n{run.tail()}"
    # The summaries that read every run must be among them.
    assert {"aggregate", "fit", "report"} <= rules, run.tail()
    assert rules & {"search_candidates", "search_select"}, run.tail()
    counts = job_stats(run.output)
    branches = len(build_plan(default_copy(config))[new_arch].run_ids)  # one per seed and horizon
    assert counts["train"] == branches and counts["throughput"] == 1, counts


def test_a_adding_a_horizon_trains_only_its_branches(tiny_study):
    """A longer token horizon continues each run's kept stable phase: only the new decay
    branches train (one per architecture and seed of the scale), nothing that exists reruns."""
    config = tiny_study.config_copy()
    (index,) = [i for i, s in enumerate(config["scales"]) if s.get("horizons")]
    before = build_plan(default_copy(config)).train_runs
    config["scales"][index]["horizons"] = config["scales"][index]["horizons"] + [7.5]
    after = build_plan(default_copy(config)).train_runs
    new = set(after) - set(before)
    assert set(before) <= set(after) and new
    assert {after[r].tokens for r in new} == {int(7.5 * config["scales"][index]["n_target"])}
    run, jobs = dry_run(tiny_study, config, "added-horizon.yaml")
    assert {j.wildcards["run"] for j in jobs if j.rule == "train"} == new, run.tail()
    rules = {j.rule for j in jobs}
    assert not rules & (DATA | {"throughput"}), run.tail()
    assert rules - {"train"} <= SUMMARY, run.tail()


def test_b_report_title_reruns_only_the_report(tiny_study):
    config = tiny_study.config_copy()
    config["report"]["title"] = config["report"].get("title", "") + " (edited)"
    run, jobs = dry_run(tiny_study, config, "title.yaml")
    assert [j.rule for j in jobs] == ["report"], run.tail()


def test_b_hardware_knob_reruns_nothing(tiny_study):
    config = tiny_study.config_copy()
    # Threads and micro-batch are hardware knobs: kept out of every job's identity.
    config["training"]["threads"] = int(config["training"].get("threads", 1)) + 1
    config["training"]["micro_batch"] = max(1, int(config["training"]["global_batch"]) // 2)
    run, jobs = dry_run(tiny_study, config, "hardware.yaml")
    assert jobs == [] and nothing_to_do(run.output), run.tail()


def test_b_replacing_a_grid_point_does_not_rerun_its_neighbours(tiny_study):
    config = tiny_study.config_copy()
    before = plan_ids(config)
    # Replace the last r of the second sweep of the first scale; the other points of that sweep
    # (its neighbours) must not re-run.
    sweep = config["scales"][0]["grid"][1]
    for value in (3.0, 2.5, 3.5, 1.5):
        trial = default_copy(config)
        trial["scales"][0]["grid"][1]["r"] = sweep["r"][:-1] + [value]
        try:
            after = plan_ids(trial)
        except Exception:  # noqa: BLE001 - infeasible: try the next value
            continue
        if len(after - before) == 1:
            break
    else:
        pytest.fail("found no feasible replacement of a grid point")
    new_arch = (after - before).pop()
    run, jobs = dry_run(tiny_study, trial, "replaced.yaml")
    trained = {arch_of(j, default_copy(trial)) for j in jobs if j.rule == "train"}
    assert trained == {new_arch}, run.tail()
    assert {j.wildcards["arch"] for j in jobs if j.rule == "throughput"} == {new_arch}, run.tail()
    assert not {j.rule for j in jobs} & DATA, run.tail()


def test_c_nothing_to_do_exits_without_running_anything(tiny_study):
    before = output_mtimes(tiny_study.workdir)
    start = time.perf_counter()
    run = tiny_study.snakemake()  # the same command as the complete run
    seconds = time.perf_counter() - start
    assert nothing_to_do(run.output), run.tail()
    assert parse_jobs(run.output) == [], run.tail()
    assert output_mtimes(tiny_study.workdir) == before, "a no-op run touched results/"
    print(f"no-op run of the complete tiny study: {seconds:.1f} s")


def test_c_updating_the_rule_scripts_reruns_nothing(tiny_copy):
    """An update of archscale (a `git pull` that rewrites every rule script: newer, different
    files) re-runs no finished job: a job's identity is its params, not its script's code
    (profiles/default: rerun-triggers without `code`)."""
    for script in (tiny_copy.workdir / "workflow" / "scripts").glob("*.py"):
        script.write_text(script.read_text() + "\n# updated\n")
    run = tiny_copy.snakemake("-n")
    assert nothing_to_do(run.output) and parse_jobs(run.output) == [], run.tail()


# ---- faults on the finished study ---------------------------------------------------------
def digests(workdir: Path, *dirs: str) -> dict[str, str]:
    """sha256 of every file under ``dirs`` (relative paths as keys)."""
    out = {}
    for d in dirs:
        for p in sorted((workdir / d).rglob("*")):
            if p.is_file() and not p.name.endswith(".lock"):
                out[str(p.relative_to(workdir))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def arch_ids(workdir: Path) -> list[str]:
    return sorted(p.parent.name for p in (workdir / "results" / "train").glob("*/metrics.json"))


def test_nan_learning_rate_fails_at_validation_and_loses_nothing(tiny_study):
    workdir = tiny_study.workdir
    runs = arch_ids(workdir)
    assert runs == sorted(build_plan(tiny_study.config_copy()).train_ids)
    before = digests(workdir, "results/train", "results/checkpoints")
    assert sum(k.startswith("results/train/") and k.endswith("/metrics.json") for k in before) == len(runs)
    nan = workdir / "config" / "nan-lr.yaml"
    nan.write_text("training:\n  lr: .nan\n  global_batch: 30\n")
    for extra in (("-n",), ()):
        run = tiny_study.snakemake("--until", "train", *extra, configfiles=(str(nan),), check=False)
        assert run.returncode != 0, run.tail()
        # one message, every problem with its key path, before any job
        assert "training.lr" in run.output and "not a finite number" in run.output, run.tail()
        assert "training.micro_batch" in run.output and "does not divide" in run.output, run.tail()
        assert "rule train:" not in run.output and "localrule train:" not in run.output, run.tail()
    assert digests(workdir, "results/train", "results/checkpoints") == before
    assert not (workdir / "results" / "superseded").exists()


def _trainers(workdir: Path) -> list[psutil.Process]:
    """Training processes (python -m archscale.train) of ``workdir``, not their own helpers."""
    found = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline", "cwd"]):
        argv = p.info["cmdline"] or []
        if argv[1:3] == ["-m", "archscale.train"] and p.info["cwd"] and Path(p.info["cwd"]) == workdir:
            found.append(p)
    pids = {p.pid for p in found}
    return [p for p in found if p.info["ppid"] not in pids]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigkill_of_snakemake_unlock_rerun(tiny_copy):
    workdir = tiny_copy.workdir
    arch = arch_ids(workdir)[-1]
    reference = json.loads((workdir / "results" / "train" / arch / "metrics.json").read_text())
    ref_curve = pq.read_table(workdir / "results" / "train" / arch / "curve.parquet").to_pandas()
    # retrain that architecture from scratch, with a checkpoint every 10 steps (a hardware knob:
    # not part of its identity, so the result must be the reference's bit for bit)
    for sub in ("results/train", "results/checkpoints"):
        for p in sorted((workdir / sub).glob(f"{arch}*")):
            subprocess.run(["rm", "-rf", str(p)], check=True)
    knobs = workdir / "config" / "kill.yaml"
    knobs.write_text("training:\n  checkpoint_interval: 10\n  checkpoint_min_s: 0\n")
    target = f"results/train/{arch}/metrics.json"
    # the target before --configfile, which takes every value that follows it
    args = [SNAKEMAKE, "--cores", "2", target, "--configfile", TINY_CONFIG, str(knobs)]
    ckpt = workdir / "results" / "checkpoints" / arch
    with open(workdir / "test-logs" / "kill-first.log", "w") as log:
        proc = subprocess.Popen(args, cwd=workdir, env=env_for_runs(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        deadline = time.time() + 900
        while time.time() < deadline and not (ckpt / "latest").exists():
            assert proc.poll() is None, (workdir / "test-logs" / "kill-first.log").read_text()[-3000:]
            time.sleep(0.2)
        assert (ckpt / "latest").exists(), "no checkpoint within 900 s"
        below = psutil.Process(proc.pid).children(recursive=True)
        assert _trainers(workdir), [" ".join(p.cmdline()) for p in below]
        proc.send_signal(signal.SIGKILL)  # snakemake alone: its job processes are re-parented
        proc.wait(timeout=60)
    # the orphaned launcher notices and stops its trainer; nothing below snakemake survives
    deadline = time.time() + 120
    while time.time() < deadline and _alive(below):
        time.sleep(0.5)
    left = _alive(below)
    for p in left:
        p.kill()
    assert not left, [(p.pid, " ".join(p.cmdline())) for p in left]
    assert not (workdir / target).exists()

    snakemake(workdir, "--unlock", "--configfile", TINY_CONFIG, str(knobs))
    with open(workdir / "test-logs" / "kill-rerun.log", "w") as log:
        rerun = subprocess.Popen(args, cwd=workdir, env=env_for_runs(), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        most = 0
        descendants: set[psutil.Process] = set()
        while rerun.poll() is None:
            most = max(most, len(_trainers(workdir)))
            try:
                descendants.update(psutil.Process(rerun.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    text = (workdir / "test-logs" / "kill-rerun.log").read_text()
    assert rerun.returncode == 0, text[-4000:]
    assert most == 1
    time.sleep(2)
    assert not _alive(list(descendants)), [" ".join(p.cmdline()) for p in _alive(list(descendants))]
    got = json.loads((workdir / target).read_text())
    assert got["resumed_from_step"] is not None and got["resumed_from_step"] >= 10
    for key in ("valid_loss", "final_train_loss", "last_step_loss", "steps", "tokens_seen"):
        assert got[key] == reference[key], key
    curve = pq.read_table(workdir / "results" / "train" / arch / "curve.parquet").to_pandas()
    assert curve["loss"].tolist() == ref_curve["loss"].tolist()
    assert curve["step"].tolist() == ref_curve["step"].tolist()
