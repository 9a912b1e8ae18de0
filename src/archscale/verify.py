"""Finished outputs checked, not trusted (``archscale verify``, and the workflow's check at start-up).

Every finished training run declares ``results/train/<run>/metrics.json``, ``curve.parquet`` and
``final/``; every throughput job ``results/throughput/<arch>.json``. :func:`find_damage` reports each one
that is missing while its siblings exist, truncated or unparseable (JSON, Parquet), or an empty
or incomplete final checkpoint. It also compares each output with the copy the trainer keeps
at completion in ``results/checkpoints/<run>/result/`` (file names and sizes): a copy that
differs marks the output damaged, an intact copy is what :func:`repair` puts back.

:func:`repair` acts on exactly the damaged outputs: it restores one from the kept copy where
that copy is intact (hard link or byte copy with its original time: no job reruns), else it
deletes it, so the next ``snakemake`` run rebuilds exactly that output and what depends on it.
Snakemake only rebuilds what a target needs: a missing ``final/`` is not needed by the default
target, so :attr:`Damage.target` is the file to name on the command line (or to add to the
workflow's targets) to rebuild it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .checkpoint import DESCRIPTION as FINAL_DESCRIPTION

RUN_FILES = ("metrics.json", "curve.parquet")
FINAL = "final"
#: Where the trainer keeps a copy of a finished run's outputs (archscale.train.supersede).
KEPT = Path("checkpoints")
KEPT_RESULT = "result"


@dataclass(frozen=True)
class Damage:
    """One damaged declared output."""

    path: Path
    problem: str
    #: The kept copy that can replace it (None: none, or damaged too).
    kept: Path | None = None

    @property
    def target(self) -> str:
        """The file to ask Snakemake for to rebuild this output."""
        return str(self.path)

    def line(self) -> str:
        fix = f"restorable from {self.kept}" if self.kept else "rebuild: snakemake " + self.target
        return f"{self.path}: {self.problem} ({fix})"


# ---- single outputs ---------------------------------------------------------------------------
def json_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete JSON object, or None."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"truncated or unparseable JSON ({str(exc).splitlines()[0]})"
    if not isinstance(obj, dict) or not obj:
        return f"JSON is not a record (a {type(obj).__name__} without keys)"
    return None


def parquet_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable Parquet file, or None (its footer and schema are read)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return "missing"
    try:
        pq.ParquetFile(path).schema_arrow
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
        return f"truncated or unreadable Parquet ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def _files(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``root``, without the marker Snakemake adds to a
    directory output once its job finished (``.snakemake_timestamp``: the kept copy, written by
    the job, never has it)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".snakemake")}


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete final checkpoint (weights plus ``archscale.json``), or None."""
    if not path.is_dir():
        return "missing" if not path.exists() else "not a directory"
    files = _files(path)
    if not files:
        return "empty final checkpoint"
    if FINAL_DESCRIPTION not in files:
        return f"incomplete final checkpoint (no {FINAL_DESCRIPTION})"
    if (desc := json_problem(path / FINAL_DESCRIPTION)) is not None:
        return f"{FINAL_DESCRIPTION}: {desc}"
    weights = {k: v for k, v in files.items() if k != FINAL_DESCRIPTION}
    if not weights or sum(weights.values()) == 0:
        return "final checkpoint without weights (only archscale.json, or empty files)"
    return None


def _differs_from_kept(path: Path, kept: Path) -> str | None:
    """How ``path`` differs from the kept copy written at completion (names and sizes)."""
    if path.is_dir():
        mine, theirs = _files(path), _files(kept)
        if mine != theirs:
            changed = sorted(set(mine) ^ set(theirs) | {k for k in set(mine) & set(theirs) if mine[k] != theirs[k]})
            return f"differs from the copy kept at completion ({', '.join(changed[:3])})"
        return None
    if path.stat().st_size != kept.stat().st_size:
        return f"{path.stat().st_size} bytes, {kept.stat().st_size} when it was written"
    return None


# ---- a run, a study ---------------------------------------------------------------------------
_CHECKS: dict[str, Callable[[Path], str | None]] = {
    "metrics.json": json_problem,
    "curve.parquet": parquet_problem,
    FINAL: checkpoint_problem,
}


def run_damage(results: Path, run: str) -> list[Damage]:
    """Damaged outputs of one training run; [] for an intact run or one never started (no output)."""
    run_dir = results / "train" / run
    outputs = [run_dir / name for name in (*RUN_FILES, FINAL)]
    if not any(p.exists() for p in outputs):
        return []
    kept_dir = results / KEPT / run / KEPT_RESULT
    out = []
    for path in outputs:
        kept = kept_dir / path.name
        kept_ok = kept.exists() and _CHECKS[path.name](kept) is None
        problem = _CHECKS[path.name](path)
        if problem is None and kept_ok:
            problem = _differs_from_kept(path, kept)
        if problem is not None:
            out.append(Damage(path, problem, kept if kept_ok else None))
    return out


def throughput_damage(results: Path, archs: Iterable[str] | None = None) -> list[Damage]:
    """Truncated or unparseable ``results/throughput/<arch>.json`` (all of them, or ``archs``)."""
    root = results / "throughput"
    paths = [root / f"{a}.json" for a in archs] if archs is not None else sorted(root.glob("*.json"))
    out = []
    for p in paths:
        if p.exists() and (problem := json_problem(p)) is not None:
            out.append(Damage(p, problem))
    return out


def study_runs(results: Path) -> list[str]:
    """Run ids with a directory under ``results/train`` (a study's runs without its config)."""
    root = results / "train"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def find_damage(results: str | Path = "results", runs: Iterable[str] | None = None,
                archs: Iterable[str] | None = None) -> list[Damage]:
    """Every damaged output of the runs (default: every run directory under ``results/train``)
    and of the throughput records (default: every ``results/throughput/*.json``)."""
    results = Path(results)
    out = []
    for run in (study_runs(results) if runs is None else runs):
        out += run_damage(results, run)
    return out + throughput_damage(results, archs)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _restore(kept: Path, path: Path) -> None:
    """Put the kept copy back, keeping its modification time (hard links where possible)."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    _remove(path)
    if kept.is_dir():
        shutil.copytree(kept, path, copy_function=link_or_copy)
        shutil.copystat(kept, path)
    else:
        link_or_copy(kept, path)


def repair(damage: Iterable[Damage], log: Callable[[str], None] = print) -> list[Damage]:
    """Restore each damaged output from its intact kept copy, else delete it; return the ones
    deleted (their :attr:`Damage.target` is what a rerun must rebuild)."""
    deleted = []
    for d in damage:
        if d.kept is not None:
            _restore(d.kept, d.path)
            log(f"restored {d.path} from {d.kept}")
        else:
            _remove(d.path)
            deleted.append(d)
            log(f"deleted {d.path} ({d.problem})")
    return deleted

