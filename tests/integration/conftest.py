"""Fixtures of the integration tests (helpers in workflow_helpers.py).

* ``default_run`` (session): ONE complete run of the embedded default DAG, shared by every test
  that needs a finished workflow (the partial-rerun tests are dry-runs / no-op runs on top of it).
* ``slurm_cluster``: the single-node cluster of ``tests/slurm/start.sh``. Tests that need it are
  marked ``@pytest.mark.slurm`` and SKIP, saying why, when no cluster answers; with
  ``ARCHSCALE_REQUIRE_SLURM=1`` (set by ``.ci/run``) a missing cluster is a failure instead.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflow_helpers import Run, copy_workflow, load_config, slurm_status, snakemake

#: The complete local run of the embedded default: a safety net against a hang, not a benchmark.
DEFAULT_RUN_TIMEOUT = int(os.environ.get("ARCHSCALE_DEFAULT_RUN_TIMEOUT", "1800"))


# ---- the one complete run of the embedded default ------------------------------------------
@dataclass
class DefaultRun:
    workdir: Path
    config: dict
    run: Run

    def config_copy(self) -> dict:
        return copy.deepcopy(self.config)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> DefaultRun:
    """The embedded default DAG run once, end to end, locally (profiles/default), in a temp copy."""
    workdir = copy_workflow(tmp_path_factory.mktemp("default-run"))
    run = snakemake(workdir, timeout=DEFAULT_RUN_TIMEOUT)
    return DefaultRun(workdir, load_config(workdir), run)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    reason = slurm_status()
    if reason is None:
        return
    message = f"no SLURM cluster reachable ({reason}); start one with `sudo bash tests/slurm/start.sh`"
    if os.environ.get("ARCHSCALE_REQUIRE_SLURM") == "1":
        pytest.fail(f"ARCHSCALE_REQUIRE_SLURM=1 but {message}")
    pytest.skip(message)


