"""``archscale search`` on fixture records: from a config, and from a runs table alone."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.study import REPO, write_study

from archscale.cli import main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    st = write_study(root)
    st["root"] = root
    return st


def paths(root):
    r = root / "results"
    return ["--runs", str(r / "runs.parquet"), "--fit", str(r / "fit/conditional.json"),
            "--cost-model", str(r / "throughput/cost_model.json")]


def test_search_from_config_prints_json_and_writes_outputs(study, capsys, tmp_path):
    rc = main(["search", str(REPO / "config/config.yaml"), *paths(study["root"]), "--json", "--output-dir", str(tmp_path)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    res = out["s100k-default"]
    assert res["panda"]["scale"] == "s100k" and res["surefire"] is not None
    assert res["baseline"]["name"] == "mini-llama"
    # Panda minimises the predicted loss over the whole enumeration; the front starts at it.
    assert res["pareto_front"][0]["arch_id"] == res["panda"]["arch_id"]
    assert res["surefire"]["loss"] <= res["loss_target"]["value"]
    assert res["throughput_source"] == "cost model (predicted)"
    written = json.loads((tmp_path / "s100k-default/result.json").read_text())
    assert written["panda"]["arch_id"] == res["panda"]["arch_id"]
    pareto = pd.read_parquet(tmp_path / "s100k-default/pareto.parquet")
    assert pareto["is_panda"].sum() == 1 and len(pareto) == res["grid"]["architectures"]


def test_search_from_a_runs_table_without_config(study, capsys):
    rc = main(["search", *paths(study["root"]), "--scale", "s100k", "--loss-target", "mini-llama",
               "--gqa", "1,2,4", "--d-multiple", "8", "--ffn-multiple", "4", "--r-tolerance", "0.35",
               "--batch-size", "8", "--input-len", "64", "--output-len", "32"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "== target s100k: scale s100k, N=100,000" in text
    for word in ("baseline", "panda", "surefire", "Pareto front", "GQA walk from"):
        assert word in text


def test_search_cli_errors_are_clear(study, capsys):
    assert main(["search", *paths(study["root"]), "--scale", "s7"]) == 2
    assert "no run of scale 's7'" in capsys.readouterr().err
    assert main(["search", *paths(study["root"])]) == 2
    assert "--scale" in capsys.readouterr().err
    assert main(["search", str(REPO / "config/config.yaml"), *paths(study["root"]), "--target", "nope"]) == 2
    assert "not in search.targets" in capsys.readouterr().err
    # A scale that cannot hold any architecture on the grid: the message names it and the fix.
    assert main(["search", *paths(study["root"]), "--scale", "s30k", "--loss-target", "4.0", "--d-multiple", "8",
                 "--ffn-multiple", "4", "--d-over-sqrt-n", "3,4", "--r", "1,2", "--tokens", "600000"]) == 2
    err = capsys.readouterr().err
    assert "no valid architecture at scale 's30k'" in err and "search.d_over_sqrt_n" in err
