"""Dry-runs of the workflow in a copy of the checkout: the paper's grid plans every training job on
a laptop, and configs that cannot run fail before any job, naming file, key and position."""

import time

import pytest

from helpers.workflow import REPO, copy_workflow, job_stats, snakemake

pytestmark = [pytest.mark.integration]


def test_paper_config_dry_run_lists_every_training_job(tmp_path):
    workdir = copy_workflow(tmp_path / "paper")
    start = time.perf_counter()
    run = snakemake(workdir, "-n", "--quiet", "rules", "--configfile", "config/paper.yaml", timeout=300)
    elapsed = time.perf_counter() - start
    counts = job_stats(run.output)
    assert counts.get("train", 0) > 200, counts
    assert counts["train"] == counts["throughput"]
    # one tokenize job per shard of the corpus
    assert counts["tokenize"] == len(list((REPO / "resources" / "sample").glob("*/*.json.gz")))
    # The time is reported, not asserted (benchmarks measure; see bench/bench_dryrun.py).
    print(f"paper dry-run: {elapsed:.1f} s, {counts['train']} training jobs")


def test_bad_config_fails_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "bad")
    bad = workdir / "config" / "bad.yaml"
    bad.write_text(
        "scales:\n  - name: s30k\n    n_target: 30000\n    layers: 2\n    head_dim: 8\n"
        "    grid:\n      - d_over_sqrt_n: [5.0]\n        r: [1.0]\n        gqa: [1]\n"
    )
    run = snakemake(workdir, "-n", "--configfile", "config/bad.yaml", check=False, timeout=120)
    assert run.returncode != 0
    assert "grid point d_over_sqrt_n=5.0" in run.output, run.tail()


def test_yaml_syntax_error_names_file_line_and_column_under_snakemake(tmp_path):
    workdir = copy_workflow(tmp_path / "yaml")
    config = workdir / "config" / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 0.003\n", "  lr: [0.003\n", 1))
    run = snakemake(workdir, "-n", check=False)
    assert run.returncode != 0
    assert "config/config.yaml, line " in run.output and ", column " in run.output, run.tail()
    assert "YAML syntax error" in run.output
