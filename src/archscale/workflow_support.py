"""What the workflow's rule scripts and rule files share: the log context, SLURM time limits, the
throughput rules' core reservation and dry-run detection.

A rule script is ``with rule_logging(snakemake): <call the library>``; the library never imports
the workflow (docs/architecture.md). No torch here: the rule process stays light.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Any, Iterator, TextIO


@contextlib.contextmanager
def rule_logging(snakemake: Any, mode: str = "w") -> Iterator[TextIO]:
    """Send stdout and stderr to the rule's log (``snakemake.log[0]``) for the block; an
    exception is written there with its traceback and re-raised (Snakemake then reports the
    job as failed and names the log). Yields the open log file.
    """
    out, err = sys.stdout, sys.stderr
    with open(snakemake.log[0], mode) as log:
        sys.stdout = sys.stderr = log
        try:
            yield log
        except BaseException:
            traceback.print_exc(file=log)
            log.flush()
            raise
        finally:
            sys.stdout, sys.stderr = out, err


def runtime_string(minutes: float) -> str:
    """A SLURM time limit as a unit string (``"90m"``), as the slurm executor's ``runtime`` takes."""
    whole = int(-(-float(minutes) // 1))  # ceil: never shorten a limit
    if whole < 1:
        raise ValueError(f"runtime must be at least one minute, got {minutes!r}")
    return f"{whole}m"


def isolated_threads(local_exec: bool, cores: int | None, configured: int) -> int:
    """Threads a throughput rule reserves: locally every core of the run (``--cores``), so no
    other job of the workflow runs beside a measurement; on a cluster the configured threads
    (the job asks for a whole node through ``exclusive``). The torch threads of the measurement
    stay ``throughput.threads`` either way (fixed, recorded)."""
    if local_exec and cores:
        return max(int(cores), int(configured))
    return int(configured)


def invoked_as_dry_run(argv: list[str]) -> bool:
    """Whether the command line is a dry-run (``snakemake -n``, ``-np``, ``--dry-run``): Snakemake
    knows it only once its executor is chosen, after the Snakefile is parsed, and what the
    workflow does at parse time (repairing damaged outputs) must not happen in a dry-run."""
    flags = ("-n", "--dry-run", "--dryrun", "--just-print")
    return any(a in flags or (a.startswith("-") and not a.startswith("--") and "n" in a[1:]) for a in argv)
