"""Fixtures shared by the unit, rule-level and integration tests.

* ``default_config``: the embedded default config (config/config.yaml) as a dict to edit.
* ``tiny_study`` (session): ONE complete run of the tiny study (``snakemake --cores 2
  --configfile config/test-tiny.yaml`` in a temp copy of the workflow, every rule of the DAG),
  shared by every test that needs a finished workflow (tests/integration/test_tiny_study.py:
  partial reruns, config faults, the kill-and-unlock test on its own copy, ``tiny_copy``). The embedded default itself is run end
  to end by ``make run`` in CI, as a user runs it, not by the tests.
* ``slurm_cluster``: the single-node cluster of ``tests/slurm/start.sh``. Tests that need it are
  marked ``@pytest.mark.slurm`` and SKIP, saying why, when no cluster answers; with
  ``ARCHSCALE_REQUIRE_SLURM=1`` (set by ``.ci/run``) a missing cluster is a failure instead.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile``) a session fixture is built
once per worker: the tests that read the tiny study live in one file
(tests/integration/test_tiny_study.py), so they run on one worker and the study runs once.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.rules import default_config as _default_config
from helpers.workflow import TINY_CONFIG, Run, copy_workflow, load_config, merged, slurm_status, snakemake

#: The complete run of the tiny study: a safety net against a hang, not a benchmark.
TINY_RUN_TIMEOUT = int(os.environ.get("ARCHSCALE_TINY_RUN_TIMEOUT", "900"))


@pytest.fixture
def default_config() -> dict:
    return _default_config()


@dataclass
class TinyStudy:
    """A finished run of config/test-tiny.yaml (layered on config/config.yaml, as ``--configfile``
    layers it) in ``workdir``."""

    workdir: Path
    config: dict  # the merged config the run used
    run: Run

    def config_copy(self) -> dict:
        return copy.deepcopy(self.config)

    def snakemake(self, *args: str, configfiles: tuple[str, ...] = (), **kwargs) -> Run:
        """``snakemake --cores 2 ARGS --configfile config/test-tiny.yaml CONFIGFILES`` in the study's
        directory (--configfile last: it takes every value that follows it)."""
        return snakemake(self.workdir, "--cores", "2", *args, "--configfile", TINY_CONFIG, *configfiles, **kwargs)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> TinyStudy:
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny-study"))
    run = snakemake(workdir, "--cores", "2", "--configfile", TINY_CONFIG, timeout=TINY_RUN_TIMEOUT)
    config = merged(load_config(workdir), load_config(workdir, TINY_CONFIG))
    return TinyStudy(workdir, config, run)


@pytest.fixture
def tiny_copy(tiny_study, tmp_path) -> TinyStudy:
    """A private copy of the finished tiny study (results, logs, Snakemake's records, mtimes
    kept), for a test that changes it."""
    dest = tmp_path / "tiny-copy"
    shutil.copytree(tiny_study.workdir, dest, symlinks=True)
    return TinyStudy(dest, tiny_study.config_copy(), tiny_study.run)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    reason = slurm_status()
    if reason is None:
        return
    message = f"no SLURM cluster reachable ({reason}); start one with `sudo bash tests/slurm/start.sh`"
    if os.environ.get("ARCHSCALE_REQUIRE_SLURM") == "1":
        pytest.fail(f"ARCHSCALE_REQUIRE_SLURM=1 but {message}")
    pytest.skip(message)
