"""A change of a job's identity never destroys a trained result: checkpoints and the kept copy of
the outputs are moved aside to results/superseded/{arch}/{digest}/ and moved back when that
identity runs again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from test_train import make_job, manifest, run_job  # noqa: F401 - manifest is a fixture

from archscale.train import checkpointing as ckpt
from archscale.train import supersede


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (byte-identity of a whole tree)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fake_run(root: Path, fp: dict, steps=(10, 20), result: bool = True) -> None:
    """A checkpoint directory as a finished trainer leaves it (contents are arbitrary bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    for s in steps:
        (root / ckpt.iter_name(s)).mkdir()
        (root / ckpt.iter_name(s) / "metadata.json").write_text(json.dumps({"step": s}))
        (root / ckpt.iter_name(s) / "shard.distcp").write_bytes(os.urandom(64))
    (root / ckpt.LATEST).write_text(ckpt.iter_name(steps[-1]) + "\n")
    (root / "fingerprint.json").write_text(json.dumps(fp, indent=2, sort_keys=True) + "\n")
    if result:
        out = root.parent.parent / "train" / root.name
        (out / "final").mkdir(parents=True, exist_ok=True)
        (out / "final" / "weights.distcp").write_bytes(os.urandom(128))
        (out / "metrics.json").write_text(json.dumps({"valid_loss": 4.6, "fp": fp["digest"]}))
        (out / "curve.parquet").write_bytes(os.urandom(32))
        supersede.keep_result(root, out / "metrics.json", out / "curve.parquet", out / "final")


def test_identity_change_moves_the_directory_aside_whole_and_back(tmp_path):
    root = tmp_path / "results" / "checkpoints" / "a1"
    A, B = {"digest": "aaaa", "lr": 0.01}, {"digest": "bbbb", "lr": 0.02}
    fake_run(root, A)
    (root / "job.json").write_text('{"job": "B"}')  # the launcher wrote the new job's file
    before = tree_digest(root)
    messages = []
    assert ckpt.check_fingerprint(root, B, log=messages.append) is None
    aside = tmp_path / "results" / "superseded" / "a1" / "aaaa"
    after = tree_digest(aside)
    assert after == {k: v for k, v in before.items() if k != "job.json"}  # byte-identical, result included
    assert "result/metrics.json" in after and "result/final/weights.distcp" in after
    assert (root / "job.json").read_text() == '{"job": "B"}'  # stays with the job now starting
    assert sorted(p.name for p in root.iterdir()) == ["fingerprint.json", "job.json"]
    (msg,) = messages
    assert "different recipe/budget" in msg and str(aside) in msg and "finished result" in msg

    # B gets checkpoints; going back to A swaps: B aside, A restored (resumable, result kept)
    fake_run(root, {**B}, steps=(5,), result=False)
    assert ckpt.check_fingerprint(root, A, log=messages.append) == str(aside)
    assert tree_digest(root) == {**{k: v for k, v in before.items() if k != "job.json"},
                                 "job.json": tree_digest(root)["job.json"]}
    assert ckpt.latest_step(root) == 20 and not aside.exists()
    assert ckpt.latest_step(tmp_path / "results" / "superseded" / "a1" / "bbbb") == 5
    assert "restored the checkpoints" in messages[-1]


def test_nothing_to_keep_is_not_set_aside_and_names_do_not_collide(tmp_path):
    root = tmp_path / "results" / "checkpoints" / "a1"
    A, B = {"digest": "aaaa"}, {"digest": "bbbb"}
    root.mkdir(parents=True)
    (root / "fingerprint.json").write_text(json.dumps(A))  # a run that failed before any checkpoint
    (root / "iter_0000010.tmp").mkdir()  # and a half-written one
    messages = []
    ckpt.check_fingerprint(root, B, log=messages.append)
    assert not (tmp_path / "results" / "superseded").exists() and messages == []
    assert not (root / "iter_0000010.tmp").exists()
    # the same old identity superseded twice: the second copy gets a new name, nothing overwritten
    shutil.rmtree(root)
    fake_run(root, A, result=False)
    ckpt.check_fingerprint(root, B)
    shutil.rmtree(root)
    fake_run(root, A, steps=(30,), result=False)
    ckpt.check_fingerprint(root, B)
    parent = tmp_path / "results" / "superseded" / "a1"
    assert sorted(p.name for p in parent.iterdir()) == ["aaaa", "aaaa.2"]
    assert ckpt.latest_step(parent / "aaaa.2") == 30
    # restore picks the most advanced copy, and never over files it does not know
    (root / "result").mkdir()
    messages = []
    assert ckpt.check_fingerprint(root, A, log=messages.append) is None and "not restoring" in messages[0]
    (root / "result").rmdir()
    (root / "fingerprint.json").unlink()
    assert ckpt.check_fingerprint(root, A) == str(parent / "aaaa.2")


def test_keep_and_restore_result_byte_identical(tmp_path):
    root = tmp_path / "results" / "checkpoints" / "a1"
    fake_run(root, {"digest": "aaaa"})
    out = tmp_path / "results" / "train" / "a1"
    original = tree_digest(out)
    assert tree_digest(root / "result") == original
    shutil.rmtree(out)  # what Snakemake does before re-running the job
    record = supersede.restore_result(root, out / "metrics.json", out / "curve.parquet", out / "final")
    assert record == {"valid_loss": 4.6, "fp": "aaaa"} and tree_digest(out) == original
    assert supersede.restore_result(tmp_path / "none", out / "m", out / "c", out / "f") is None
    # a second keep replaces the copy atomically
    (out / "metrics.json").unlink()
    (out / "metrics.json").write_text('{"valid_loss": 4.5}')
    supersede.keep_result(root, out / "metrics.json", out / "curve.parquet", out / "final")
    assert json.loads((root / "result" / "metrics.json").read_text()) == {"valid_loss": 4.5}
    assert not list(root.glob(".result*"))


def declared(digests: dict) -> dict:
    """The digests of a job's declared outputs (live-logging directories left out)."""
    return {k: v for k, v in digests.items() if not k.startswith(("tb/", "wandb/"))}


@pytest.mark.slow
def test_invalid_recipe_after_a_finished_run_loses_nothing(tmp_path, manifest):
    """An invalid recipe (`lr: .nan`) after a finished run: Snakemake deletes the outputs and the trainer
    fails; the finished run's results survive."""
    def job_at(**changes):
        job = make_job(tmp_path, manifest, tokens=30 * 512, **changes)
        out = tmp_path / "results" / "train" / "a1"
        return dataclasses.replace(job, checkpoint_dir=str(tmp_path / "results" / "checkpoints" / "a1"),
                                   metrics=str(out / "metrics.json"), curve=str(out / "curve.parquet"),
                                   final=str(out / "final"))

    good = job_at()
    code, out = run_job(good)
    assert code == 0, out[-3000:]
    # the declared outputs (metrics.json, curve.parquet, final/); tb/ holds TensorBoard logs, not outputs
    outputs = declared(tree_digest(Path(good.metrics).parent))
    checkpoints = tree_digest(Path(good.checkpoint_dir))
    shutil.rmtree(Path(good.metrics).parent)  # Snakemake deletes the outputs of the changed job

    bad = job_at(recipe={"lr": float("nan")})
    code, out = run_job(bad)
    assert code != 0
    aside = tmp_path / "results" / "superseded" / "a1" / good.fingerprint()["digest"]
    assert "moved aside to" in out and str(aside) in out
    got = {k: v for k, v in tree_digest(aside).items() if k != "job.json"}
    want = {k: v for k, v in checkpoints.items() if k != "job.json"}
    assert got == want, (sorted(set(got) ^ set(want)), [k for k in got if k in want and got[k] != want[k]])
    assert {k[len("result/"):]: v for k, v in tree_digest(aside).items() if k.startswith("result/")} == outputs

    code, out = run_job(good)  # the config is fixed: the old result comes back as it was
    assert code == 0, out[-3000:]
    assert "restored" in out and "step 1/" not in out  # no training
    assert declared(tree_digest(Path(good.metrics).parent)) == outputs
    assert not aside.exists() and ckpt.latest_step(good.checkpoint_dir) == 30
