"""Issue 2 acceptance: the paper's grid dry-runs on a laptop and lists every training job."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.workflow import job_stats

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.mark.integration
def test_paper_config_dry_run_lists_every_training_job():
    start = time.perf_counter()
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--quiet", "rules", "--configfile", "config/paper.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_stats(proc.stdout + proc.stderr)
    assert counts.get("train", 0) > 200, counts
    assert counts["train"] == counts["throughput"]
    # one tokenize job per shard of the corpus
    assert counts["tokenize"] == len(list((ROOT / "resources" / "sample").glob("*/*.json.gz")))
    # The time is reported, not asserted (benchmarks measure; see bench/bench_dryrun.py).
    print(f"paper dry-run: {elapsed:.1f} s, {counts['train']} training jobs")


@pytest.mark.integration
def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "scales:\n  - name: s30k\n    n_target: 30000\n    layers: 2\n    head_dim: 8\n"
        "    grid:\n      - d_over_sqrt_n: [5.0]\n        r: [1.0]\n        gqa: [1]\n"
    )
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--configfile", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "grid point d_over_sqrt_n=5.0" in proc.stdout + proc.stderr
