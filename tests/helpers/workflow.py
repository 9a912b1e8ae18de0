"""The one Snakemake runner of the tests, and what reads its output.

* :func:`copy_workflow`: a user's checkout (Snakefile, workflow, config, ...) in a temp directory;
* :func:`snakemake`: ``snakemake ARGS`` in a directory as a user types it (or on another
  Snakefile, for the rule-level tests), output merged into one log under ``test-logs/``;
* dry-run parsing (:func:`parse_jobs`, :func:`job_stats`, :func:`nothing_to_do`);
* what the SLURM controller says about the jobs (:func:`squeue_jobs`, :func:`slurm_status`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: The tiny study every test that needs a finished workflow reads (tests/conftest.py).
TINY_CONFIG = "config/test-tiny.yaml"
SNAKEMAKE = str(BIN / "snakemake")
#: What a user's checkout holds that a run needs (results/, logs/, .snakemake/ are NOT copied).
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "resources", "src", "environment.yml",
                  "pyproject.toml", "slurm"]


def env_for_runs(cluster: bool = False) -> dict[str, str]:
    """The environment of a Snakemake run of the tests.

    ``cluster=False`` (every run but the SLURM integration tests') points SLURM_CONF at an empty
    file: such a run never talks to SLURM, and the SLURM executor plugin runs `scontrol show
    config` whenever Snakemake loads it, which waits up to 10 s on a machine that has SLURM's
    client tools but no reachable controller (CI before its cluster starts, a laptop with a
    stopped one). With an empty config scontrol fails at once and the plugin falls back to its
    default, as it does where SLURM is not installed.
    """
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # A user's own SBATCH_* settings must not leak into the test cluster's submissions.
    for var in ("SBATCH_PARTITION", "SBATCH_ACCOUNT", "SNAKEMAKE_PROFILE"):
        env.pop(var, None)
    if not cluster:
        env["SLURM_CONF"] = os.devnull
    return env


def copy_workflow(dest: Path) -> Path:
    """Copy the repository's workflow (as a user's checkout would hold it) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def load_config(workdir: Path, name: str = "config/config.yaml") -> dict:
    return yaml.safe_load((workdir / name).read_text())


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` as Snakemake merges --configfile (dicts deep, lists replaced)."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def write_config(workdir: Path, config: dict, name: str) -> Path:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Run:
    args: list[str]
    returncode: int
    output: str
    seconds: float
    log: Path

    @property
    def stdout(self) -> str:
        """The merged output (stdout and stderr of Snakemake share one log)."""
        return self.output

    stderr = stdout

    def tail(self, n: int = 6000) -> str:
        return f"$ snakemake {' '.join(self.args)}  (exit {self.returncode}, {self.seconds:.0f} s, log {self.log})\n" + self.output[-n:]


_counter = iter(range(10**6))


def snakemake(workdir: Path, *args: str, timeout: float = 900, check: bool = True,
              env: dict[str, str] | None = None, snakefile: Path | None = None, cluster: bool = False) -> Run:
    """Run ``snakemake ARGS`` with ``workdir`` as the current directory (as a user would).

    ``cluster``: the run submits to the SLURM test cluster (:func:`env_for_runs`).
    ``snakefile``: run another Snakefile on ``workdir`` (``--snakefile ... --directory workdir``,
    two cores), as the rule-level tests do with the repository's."""
    workdir = Path(workdir)
    logdir = workdir / "test-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{next(_counter):03d}.log"
    if snakefile is not None:
        args = ("--cores", "2", "--directory", str(workdir), "--snakefile", str(snakefile), *args)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env={**env_for_runs(cluster), **(env or {})}, timeout=timeout)
    run = Run(list(args), proc.returncode, log.read_text(), time.perf_counter() - start, log)
    if check and run.returncode != 0:
        pytest.fail(f"snakemake failed:\n{run.tail()}\n{failed_job_logs(workdir, run.output)}")
    return run


def failed_job_logs(workdir: Path, output: str, limit: int = 3000) -> str:
    """The logs Snakemake names for failed jobs, for the assertion message."""
    texts = []
    for m in re.finditer(r"(?:Logfile|log:?)\s+(\S+\.log)", output):
        path = Path(m.group(1))
        path = path if path.is_absolute() else workdir / path
        if path.is_file():
            texts.append(f"--- {path}\n{path.read_text()[-limit:]}")
    return "\n".join(dict.fromkeys(texts))


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    resources: dict[str, str] = field(default_factory=dict)


JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\s*$")


def parse_jobs(output: str) -> list[Job]:
    """Jobs listed by a (dry-)run: each ``rule NAME:`` block with its wildcards and reason."""
    jobs: list[Job] = []
    for line in output.splitlines():
        m = JOB_HEADER.match(line)
        if m:
            jobs.append(Job(m.group(1)))
            continue
        if not jobs:
            continue
        s = line.strip()
        if s.startswith("wildcards:"):
            for item in s[len("wildcards:"):].split(","):
                key, _, value = item.strip().partition("=")
                jobs[-1].wildcards[key] = value
        elif s.startswith("reason:"):
            jobs[-1].reason = s[len("reason:"):].strip()
        elif s.startswith("resources:"):
            for item in s[len("resources:"):].split(", "):
                key, _, value = item.strip().partition("=")
                jobs[-1].resources[key] = value
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """The ``Job stats:`` table of a (dry-)run as {rule: count} (without the total)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                m = re.match(r"^(\w+)\s+(\d+)$", row.strip())
                if not m:
                    break
                if m.group(1) == "total":
                    break
                counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
            break
    return counts


def nothing_to_do(output: str) -> bool:
    return "Nothing to be done" in output


def output_mtimes(workdir: Path) -> dict[str, float]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime
            for p in (workdir / "results").rglob("*") if p.is_file()}


def squeue_jobs() -> list[dict[str, str]]:
    """All jobs the controller still knows (finished ones for MinJobAge): id, name, state, comment."""
    proc = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%j|%T|%k|%b|%l"],
                          capture_output=True, text=True, timeout=30, check=True)
    keys = ["id", "name", "state", "comment", "tres", "timelimit"]
    return [dict(zip(keys, line.split("|"))) for line in proc.stdout.splitlines() if line.strip()]


def slurm_run_ids(output: str) -> list[str]:
    return re.findall(r"SLURM run ID: (\S+)", output)


def submitted(output: str) -> dict[str, list[str]]:
    """{rule: [SLURM job ids]} of the jobs a snakemake --profile slurm run submitted."""
    ids: dict[str, list[str]] = {}
    for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", output):
        ids.setdefault(m.group(2), []).append(m.group(1))
    return ids


# ---- the local SLURM cluster ----------------------------------------------------------------
#: Added to `snakemake --profile slurm` by the SLURM tests: the test cluster answers status
#: queries at once, so the first check 2 s after a submission instead of the profile's 10 s (the
#: plugin adds 10 s per check that finds nothing finished and starts over after one that does).
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "2")


def slurm_status() -> str | None:
    """None when a cluster answers with an idle/mixed/allocated node, else why not."""
    if shutil.which("sinfo") is None:
        return "SLURM client tools are not installed (sinfo missing)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t %G"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no slurmctld answers"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[:200]}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "mixed", "allocated") for s in states[:1]):
        return f"no usable node (sinfo: {proc.stdout.strip()!r})"
    return None
