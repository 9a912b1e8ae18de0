"""The bad-input corpus (tests/data/bad_inputs.yaml): every row is a config overlay, a config file's
text or a command line, and the one line it must produce. Config rows go through the workflow's
own preflight (archscale.preflight.check_study on config/config.yaml with the overlay merged as
``snakemake --configfile`` merges it); no Snakemake process is started."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from archscale.cli import main
from archscale.config import ConfigError, deep_merge, read_yaml
from archscale.preflight import check_study, preflight

ROOT = Path(__file__).resolve().parents[2]
TABLE = yaml.safe_load((ROOT / "tests" / "data" / "bad_inputs.yaml").read_text())
EXPECTS = ("error", "warning", "ok")


@pytest.fixture(scope="module")
def base_config() -> dict:
    return read_yaml(ROOT / "config" / "config.yaml")


@pytest.fixture(autouse=True)
def in_repo_root():
    """Relative paths of the config (data.corpus_dir, evaluate.include_path) as the workflow sees them."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(cwd)


def rows(kind: str) -> list:
    return [pytest.param(r, id=r["id"]) for r in TABLE if kind in r]


def test_the_table_is_well_formed():
    ids = [r["id"] for r in TABLE]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for r in TABLE:
        assert sum(k in r for k in ("overlay", "text", "argv")) == 1, r["id"]
        assert sum(k in r for k in EXPECTS) == 1, r["id"]
    # the cases the corpus started from are all there
    named = {"mixture-typo-source", "mixture-all-weights-zero", "fit-r-min-above-r-max",
             "fit-forms-without-search-form",
             "global-batch-integral-float", "repeats-integral-float", "seed-float-integral", "lr-absurd",
             "budget-rounds-to-zero", "budget-below-one-batch", "n-target-overflows-int64", "peak-flops-zero",
             "yaml-duplicate-key", "search-base-gqa-not-a-candidate", "report-batch-size-not-measured",
             "eval-task-near-miss-of-a-local-task", "cli-fit-chinchilla-bootstrap-negative",
             "cli-fit-conditional-r-min-negative", "cli-search-tokens-zero", "cli-search-n-tolerance-zero",
             "yaml-syntax-error", "yaml-empty-file", "cli-throughput-threads-zero", "cli-search-l-opt-nan"}
    assert named <= set(ids), sorted(named - set(ids))


@pytest.mark.parametrize("row", rows("overlay"))
def test_config_overlay(base_config, row):
    config = deep_merge(copy.deepcopy(base_config), row["overlay"])
    result = check_study(config, source="overlay.yaml")
    if row.get("ok"):
        assert result.problems == [] and result.warnings == [], (result.problems, result.warnings)
        return
    found = result.problems if "error" in row else result.warnings
    assert any(row.get("error", row.get("warning")) in line for line in found), (
        f"expected {row.get('error', row.get('warning'))!r} among:\n" + "\n".join(result.problems + result.warnings))
    if "warning" in row:
        assert result.problems == [], result.problems


@pytest.mark.parametrize("row", rows("text"))
def test_config_file(tmp_path, row):
    path = tmp_path / "bad.yaml"
    path.write_text(row["text"])
    if row.get("ok"):
        read_yaml(path)
        return
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    message = str(err.value)
    assert str(path) in message and row["error"] in message, message
    assert len(message.splitlines()) == 1, message


@pytest.mark.parametrize("row", rows("argv"))
def test_command_line(capsys, row):
    try:
        code = main(row["argv"])
    except SystemExit as exc:  # argparse's own errors (type conversion) exit 2 too
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert row["error"] in err and "Traceback" not in err, err


def test_every_problem_at_once_with_the_file_named(base_config):
    """One message for a config with several problems, each naming its key and value."""
    overlay = {"fit": {"r_min": 6.0}, "data": {"mixture": {"cod": 1}}, "compute": {"peak_flops": 0},
               "report": {"throughput_batch_size": 3}}
    with pytest.raises(ConfigError) as err:
        preflight(deep_merge(copy.deepcopy(base_config), overlay), source="config/config.yaml + typo.yaml")
    msg = str(err.value)
    assert msg.startswith("config/config.yaml + typo.yaml: configuration cannot run (5 problems)")
    for fragment in ("fit.r_min': 6.0", "data.mixture.cod'", "compute.peak_flops': 0.0",
                     "report.throughput_batch_size': 3", "no weight for sources"):
        assert fragment in msg, msg


def test_warnings_reach_the_workflow_log(base_config):
    lines = []
    preflight(deep_merge(copy.deepcopy(base_config), {"training": {"lr": 1e6}}), notify=lines.append)
    assert any(line.startswith("warning: key 'training.lr'") for line in lines), lines
