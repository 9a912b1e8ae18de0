"""The workflow is snakefmt-formatted and `snakemake --lint` finds nothing."""

from __future__ import annotations

import subprocess

import pytest

from helpers.workflow import BIN, REPO, SNAKEMAKE, env_for_runs

pytestmark = [pytest.mark.integration]


def test_snakefmt_check():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"run `snakefmt Snakefile workflow/`:\n{proc.stdout}{proc.stderr}"


def test_snakemake_lint_is_clean():
    proc = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env_for_runs(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"snakemake --lint:\n{proc.stdout[-6000:]}{proc.stderr[-3000:]}"
