"""archscale.verify: damaged outputs of finished runs are found, restored from the copy kept at
completion where it is intact, else deleted so that a rerun rebuilds exactly them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from archscale.cli import main
from archscale.verify import find_damage, repair, run_damage

RUN = "s30k-L2-d64-h8g1x8-f128"


def finished_run(results: Path, run: str = RUN, keep: bool = True) -> Path:
    """A finished run's declared outputs and (``keep``) the trainer's kept copy (hard links)."""
    d = results / "train" / run
    (d / "final").mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"arch_id": run, "val_loss": 4.2}))
    pd.DataFrame({"step": [1, 2], "loss": [5.0, 4.5]}).to_parquet(d / "curve.parquet")
    (d / "final" / "archscale.json").write_text(json.dumps({"arch": {}, "rope_base": 500000}))
    (d / "final" / "__0_0.distcp").write_bytes(b"\x01" * 4096)
    (d / "final" / ".metadata").write_bytes(b"\x02" * 128)
    if keep:
        kept = results / "checkpoints" / run / "result"
        kept.mkdir(parents=True)
        for name in ("metrics.json", "curve.parquet"):
            os.link(d / name, kept / name)
        shutil.copytree(d / "final", kept / "final", copy_function=os.link)
    throughput = results / "throughput"
    throughput.mkdir(exist_ok=True)
    (throughput / f"{run}.json").write_text(json.dumps({"arch_id": run, "batch_sizes": [1]}))
    return d


def truncate(path: Path, keep: int = 10) -> None:
    """Replace ``path`` by its first bytes (a new file: a hard-linked copy stays whole)."""
    data = path.read_bytes()[:keep]
    path.unlink()
    path.write_bytes(data)


def test_intact_and_unstarted_runs_have_no_damage(tmp_path):
    d = finished_run(tmp_path)
    # the marker Snakemake adds to a finished directory output is not in the kept copy: no damage
    (d / "final" / ".snakemake_timestamp").write_text("")
    assert find_damage(tmp_path) == []
    assert run_damage(tmp_path, "never-started") == []


@pytest.mark.parametrize("name,problem", [("metrics.json", "truncated or unparseable JSON"),
                                          ("curve.parquet", "truncated or unreadable Parquet")])
def test_truncated_outputs_are_found_and_restored_from_the_kept_copy(tmp_path, name, problem):
    d = finished_run(tmp_path)
    good = (tmp_path / "checkpoints" / RUN / "result" / name).read_bytes()
    truncate(d / name)
    [damage] = find_damage(tmp_path)
    assert damage.path == d / name and problem in damage.problem and damage.kept is not None
    assert repair([damage], log=lambda line: None) == []
    assert (d / name).read_bytes() == good and find_damage(tmp_path) == []


def test_a_deleted_final_checkpoint_is_found_and_restored_with_its_times(tmp_path):
    d = finished_run(tmp_path)
    mtime = (d / "final" / "__0_0.distcp").stat().st_mtime_ns
    shutil.rmtree(d / "final")
    [damage] = find_damage(tmp_path)
    assert damage.path == d / "final" and damage.problem == "missing"
    repair([damage], log=lambda line: None)
    assert (d / "final" / "__0_0.distcp").stat().st_mtime_ns == mtime and find_damage(tmp_path) == []


@pytest.mark.parametrize("damage_it,problem", [
    (lambda f: [p.unlink() for p in f.iterdir()], "empty final checkpoint"),
    (lambda f: (f / "archscale.json").unlink(), "no archscale.json"),
    (lambda f: truncate(f / "archscale.json", 5), "archscale.json: truncated"),
    (lambda f: truncate(f / "__0_0.distcp", 100), "differs from the copy kept at completion (__0_0.distcp)"),
])
def test_damaged_final_checkpoints(tmp_path, damage_it, problem):
    d = finished_run(tmp_path)
    damage_it(d / "final")
    [damage] = find_damage(tmp_path)
    assert problem in damage.problem, damage.problem


def test_without_a_kept_copy_the_damaged_output_is_deleted_and_named_for_the_rerun(tmp_path):
    d = finished_run(tmp_path, keep=False)
    truncate(d / "metrics.json")
    (d / "final" / "__0_0.distcp").unlink()
    (d / "final" / ".metadata").unlink()
    damage = find_damage(tmp_path)
    assert {x.path.name for x in damage} == {"metrics.json", "final"} and all(x.kept is None for x in damage)
    deleted = repair(damage, log=lambda line: None)
    assert {x.target for x in deleted} == {str(d / "metrics.json"), str(d / "final")}
    assert not (d / "metrics.json").exists() and not (d / "final").exists() and (d / "curve.parquet").exists()


def test_a_truncated_throughput_record_is_found_and_deleted(tmp_path):
    finished_run(tmp_path)
    record = tmp_path / "throughput" / f"{RUN}.json"
    truncate(record)
    [damage] = find_damage(tmp_path)
    assert damage.path == record and "JSON" in damage.problem
    repair([damage], log=lambda line: None)
    assert not record.exists()


def test_cli_reports_then_fixes(tmp_path, capsys):
    d = finished_run(tmp_path, keep=False)
    truncate(d / "curve.parquet")
    assert main(["verify", "--results", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "curve.parquet: truncated or unreadable Parquet" in out.out and "--fix" in out.err
    assert main(["verify", "--results", str(tmp_path), "--fix"]) == 0
    assert f"snakemake {d / 'curve.parquet'}" in capsys.readouterr().err
    # until the rerun rebuilds it, the deleted output is reported as missing
    assert main(["verify", "--results", str(tmp_path)]) == 1
    assert "curve.parquet: missing" in capsys.readouterr().out
    pd.DataFrame({"step": [1]}).to_parquet(d / "curve.parquet")  # what the rerun writes
    assert main(["verify", "--results", str(tmp_path)]) == 0


@pytest.mark.parametrize("argv,dry", [
    (["-n"], True), (["--cores", "2", "-np"], True), (["--dry-run"], True), (["--dryrun", "x"], True),
    (["--cores", "2"], False), (["--configfile", "config/test-tiny.yaml"], False), ([], False),
])
def test_the_workflow_repairs_nothing_in_a_dry_run(argv, dry):
    from archscale.workflow_support import invoked_as_dry_run

    assert invoked_as_dry_run(argv) is dry
