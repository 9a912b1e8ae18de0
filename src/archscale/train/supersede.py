"""Superseded results: a change of a job's identity never destroys a trained result.

When the identity of an architecture's job changes (recipe, budget, shape: a new
``fingerprint.json`` digest), Snakemake deletes the job's declared outputs (``metrics.json``,
``curve.parquet``, ``final/``) and re-runs it. The trainer then finds checkpoints of another
identity in ``results/checkpoints/{arch}/``. Instead of removing them it moves the whole directory
aside, with one atomic rename, to ``results/superseded/{arch}/{old digest}/``. Since Snakemake
has deleted the declared outputs already, a finished run keeps a copy of them inside its
checkpoint directory (``result/``, hard links where possible: :func:`keep_result`), so the
directory moved aside holds the full old result.

If the old identity is run again (a config change reverted), its directory is moved back
(:func:`restore`): the job resumes from its checkpoints, and a finished one gets its outputs
back byte for byte from ``result/`` (:func:`restore_result`) without training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..io import atomic_path, read_json

FINGERPRINT = "fingerprint.json"
RESULT = "result"
JOB = "job.json"  # written by the launcher for the job now starting: it stays with that job
SUPERSEDED = "superseded"
RESULT_FILES = ("metrics.json", "curve.parquet")
RESULT_DIR = "final"


def superseded_root(checkpoint_dir: str | Path) -> Path:
    """``results/checkpoints/{arch}`` -> ``results/superseded/{arch}``."""
    root = Path(checkpoint_dir)
    return root.parent.parent / SUPERSEDED / root.name


def digest(fingerprint: dict[str, Any]) -> str:
    d = fingerprint.get("digest")
    if isinstance(d, str) and d and "/" not in d and not d.startswith("."):
        return d
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def _worth_keeping(root: Path, has_checkpoints: bool) -> bool:
    return has_checkpoints or (root / RESULT / "metrics.json").exists()


def _free_name(parent: Path, name: str) -> Path:
    dest, n = parent / name, 1
    while dest.exists():
        n += 1
        dest = parent / f"{name}.{n}"
    return dest


def move_aside(root: str | Path, old: dict[str, Any], has_checkpoints: bool, log: Callable[[str], None],
               superseded: str | Path | None = None) -> Path | None:
    """Move ``root`` (checkpoints of the identity ``old``) to ``superseded/{digest}`` with one
    rename and recreate it empty (keeping ``job.json``, the job now starting). Nothing worth
    keeping (no complete checkpoint, no result): only the stale fingerprint is dropped.
    Returns where the old directory went, or None."""
    root = Path(root)
    if not _worth_keeping(root, has_checkpoints):
        (root / FINGERPRINT).unlink(missing_ok=True)
        return None
    parent = Path(superseded) if superseded is not None else superseded_root(root)
    parent.mkdir(parents=True, exist_ok=True)
    dest = _free_name(parent, digest(old))
    os.rename(root, dest)  # atomic: the old result is either here or there, whole
    root.mkdir()
    if (dest / JOB).exists():
        os.replace(dest / JOB, root / JOB)
    finished = " and its finished result" if (dest / RESULT / "metrics.json").exists() else ""
    log(f"[archscale] {root}: checkpoints{finished} belong to a different recipe/budget "
        f"(identity {digest(old)}); moved aside to {dest} (kept; restored if that identity runs again)")
    return dest


def restore(root: str | Path, fingerprint: dict[str, Any], log: Callable[[str], None],
            superseded: str | Path | None = None, *, latest_step: Callable[[Path], int | None]) -> Path | None:
    """If an earlier directory of this identity was moved aside, move it back onto ``root``
    (which holds no checkpoint) and return where it came from. ``latest_step`` ranks several
    candidates by their newest checkpoint (``checkpointing.latest_step``, passed in by the caller
    so that this module stays below checkpointing)."""
    root = Path(root)
    parent = Path(superseded) if superseded is not None else superseded_root(root)
    name = digest(fingerprint)
    if not parent.is_dir():
        return None
    want = json.loads(json.dumps(fingerprint, sort_keys=True))
    candidates = [p for p in sorted(parent.iterdir())
                  if p.is_dir() and (p.name == name or p.name.startswith(name + "."))
                  and (p / FINGERPRINT).exists() and read_json(p / FINGERPRINT) == want]
    if not candidates:
        return None
    # the most complete one: a finished result first, then the newest checkpoint
    src = max(candidates, key=lambda p: ((p / RESULT / "metrics.json").exists(), latest_step(p) or -1))
    if root.exists():
        others = [p.name for p in root.iterdir() if p.name not in (JOB, "latest") and not p.name.endswith(".tmp")]
        if others:  # not ours to replace (say, a result/ left without its fingerprint)
            log(f"[archscale] {root}: not restoring {src} over {sorted(others)}; move them away to restore it")
            return None
        if (root / JOB).exists():
            os.replace(root / JOB, src / JOB)
        shutil.rmtree(root)  # no checkpoint in it (checked by the caller): only debris
    os.rename(src, root)
    log(f"[archscale] {root}: restored the checkpoints of this identity ({name}) from {src}")
    return src


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=_link_or_copy)


def keep_result(root: str | Path, metrics: str | Path, curve: str | Path, final: str | Path) -> Path:
    """Keep a copy of a finished run's declared outputs in ``root/result/`` (hard links where the
    file system allows: no extra space), replacing an older copy atomically."""
    root = Path(root)
    staged = root / f".{RESULT}.partial"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for name, src in zip(RESULT_FILES, (metrics, curve)):
        _link_or_copy(Path(src), staged / name)
    _copy_tree(Path(final), staged / RESULT_DIR)
    target = root / RESULT
    if target.exists():
        old = root / f".{RESULT}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, target)
    return target


def restore_result(root: str | Path, metrics: str | Path, curve: str | Path, final: str | Path) -> dict | None:
    """Put the outputs kept in ``root/result/`` back in place (``final`` and the curve first,
    ``metrics`` last, each atomically); return the metrics record, or None if none was kept."""
    kept = Path(root) / RESULT
    if not (kept / "metrics.json").exists():
        return None
    final = Path(final)
    staged = final.with_name("." + final.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    _copy_tree(kept / RESULT_DIR, staged)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    for name, dst in zip(reversed(RESULT_FILES), (curve, metrics)):
        with atomic_path(dst) as tmp:
            tmp.unlink()
            _link_or_copy(kept / name, tmp)
    return read_json(metrics)
