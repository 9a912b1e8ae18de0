"""What every rule test needs: the default config, a config file in a work directory, a tiny
corpus from the shipped sample, and Snakemake run on the repository's Snakefile."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from archscale.data.corpus import read_documents, write_shard

from .workflow import REPO, SNAKEMAKE, Run, env_for_runs, snakemake

SAMPLE = REPO / "resources" / "sample"


def default_config() -> dict:
    """The embedded default config (config/config.yaml) as a dict to edit."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def write_config(root: Path, cfg: dict, sort_keys: bool = True) -> Path:
    """Write ``cfg`` as ``root/config/config.yaml`` (the file the Snakefile reads); returns its path."""
    path = Path(root) / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=sort_keys))
    return path


def snakemake_env(**extra: str) -> dict[str, str]:
    """The environment of a Snakemake run (:func:`helpers.workflow.env_for_runs`) plus ``extra``."""
    return {**env_for_runs(), **extra}


def snakemake_cmd(root: Path, *args: str, snakefile: Path | None = None) -> list[str]:
    """``snakemake --cores 2`` in ``root`` on the repository's Snakefile (or ``snakefile``), for
    tests that drive the process themselves (signals); others call :func:`run_snakemake`."""
    snakefile = snakefile or REPO / "Snakefile"
    return [str(SNAKEMAKE), "--cores", "2", "--directory", str(root), "--snakefile", str(snakefile), *args]


def run_snakemake(root: Path, *args: str, timeout: int = 900, env: dict[str, str] | None = None,
                  snakefile: Path | None = None) -> Run:
    """The one runner (:func:`helpers.workflow.snakemake`) on the repository's Snakefile (or
    ``snakefile``) with ``root`` as the working directory; the exit code is the caller's to check."""
    return snakemake(Path(root), *args, timeout=timeout, check=False, env=env,
                     snakefile=snakefile or REPO / "Snakefile")


def job_counts(proc: Run) -> dict[str, int]:
    """Jobs a `-n --quiet rules` dry-run would run, from its 'Job stats' table ({} when nothing to do)."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    if not any(line.startswith("Job stats:") for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:")) + 3
    jobs = {}
    for line in lines[start:]:
        name, count = line.split()
        if name == "total":
            return jobs
        jobs[name] = int(count)
    raise AssertionError("\n".join(lines))


def write_corpus(root: Path, sources: dict[str, tuple[int, int]]) -> dict[str, list[dict]]:
    """A Dolma-format corpus under ``root/corpus`` from slices of the shipped sample.

    ``sources`` maps a source to (documents, shards); returns ``{"source/shard": documents}``.
    """
    shards = {}
    for source, (n, n_shards) in sources.items():
        docs = [
            {"id": d.id, "text": d.text[:4000], "source": source, "added": "2026-01-01T00:00:00Z", "metadata": {}}
            for d in itertools.islice(read_documents(SAMPLE / source / f"{source}-0000.json.gz"), n)
        ]
        for k in range(n_shards):
            name = f"{source}-{k:04d}"
            shards[f"{source}/{name}"] = docs[k::n_shards]
            write_shard(Path(root) / "corpus" / source / f"{name}.json.gz", docs[k::n_shards])
    return shards
