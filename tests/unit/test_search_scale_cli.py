"""``archscale search --law ...``: the paper's Panda rows from the command
line, Surefire with a cost model, loss targets from a baseline, clear errors."""

from __future__ import annotations

import json

import pytest
from helpers.study import write_study

from archscale.cli import main

# method.md section 2: LLaMA-3.2 N and the paper's Panda rows (d, f, heads/kv heads, GQA).
SCALES = {
    "1B": (["--n-target", "973146112", "--layers", "16", "--head-dim", "64"], 4,
           {"d_model": 2560, "ffn": 4096, "gqa": 4, "heads": 72, "kv_heads": 18}),
    "3B": (["--n-target", "2818747392", "--layers", "28", "--head-dim", "128"], 3,
           {"d_model": 4096, "ffn": 4096, "gqa": 3, "heads": 36, "kv_heads": 12}),
}


@pytest.mark.parametrize("law", ["paper-80m-297m", "paper-1b"])
@pytest.mark.parametrize("size", ["1B", "3B"])
def test_search_command_reproduces_the_papers_panda_rows(law, size, capsys):
    flags, gqa, row = SCALES[size]
    rc = main(["search", "--law", law, *flags, "--vocab", "128256", "--tied", "--tokens", "100e9",
               "--d-multiple", "512", "--ffn-multiple", "512", "--n-tolerance", "0.01", "--gqa", str(gqa), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert {k: out["panda"][k] for k in row} == row
    assert out["panda"]["predicted_loss"] is None and "predicted loss withheld" in captured.err
    assert out["surefire"] is None and "cost model" in out["surefire_reason"]


def test_n_tolerance_is_explained_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    assert "Why a tight N tolerance" in text and "predicted:NAME" in text


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("law-cli")
    write_study(root)
    return root / "results"


def scale_args(results, *extra):
    return ["search", "--law", str(results / "fit/conditional.json"), "--n-target", "100000", "--layers", "2",
            "--head-dim", "8", "--vocab", "512", "--tokens", "1000000", "--d-multiple", "8", "--ffn-multiple", "4",
            "--n-tolerance", "0.05", "--runs", str(results / "runs.parquet"), "--x-range", "0.1,0.6",
            "--gqa-range", "1,4", *extra]


def test_surefire_with_a_cost_model_and_a_baselines_predicted_loss(results, capsys):
    cost = ["--cost-model", str(results / "throughput/cost_model.json"), "--batch-size", "8",
            "--input-len", "64", "--output-len", "32"]
    assert main(scale_args(results, "--loss-target", "predicted:mini-llama", *cost, "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    pa, sf, lt = out["panda"], out["surefire"], out["loss_target"]
    assert lt["source"] == "predicted" and lt["baseline"] == "mini-llama" and lt["compared_on"] == "predicted_loss"
    assert sf is not None and sf["predicted_loss"] <= lt["threshold"] and pa["predicted_loss"] <= sf["predicted_loss"]
    assert sf["efficiency"] >= pa["efficiency"]
    assert 1 <= sf["gqa"] <= 4 and sf["heads"] % sf["kv_heads"] == 0
    assert out["l_opt"] == pytest.approx(4.264911064067352)  # the law's own L_opt table at (1e5, 1e6)
    # The observed loss of the baseline (the fit's loss column) is a looser or tighter target, not the same one.
    assert main(scale_args(results, "--loss-target", "mini-llama", *cost, "--json")) == 0
    obs = json.loads(capsys.readouterr().out)["loss_target"]
    assert obs["source"] == "observed valid_loss of 'mini-llama'" and obs["threshold"] == pytest.approx(3.982505, abs=1e-5)
    # Text output names both picks and why the probabilities are withheld (no bootstrap samples kept).
    assert main(scale_args(results, "--loss-target", "predicted:mini-llama", *cost)) == 0
    text = capsys.readouterr().out
    assert "surefire" in text and "panda" in text and "no bootstrap samples" in text


def test_search_law_errors(results, capsys):
    assert main(scale_args(results, "--loss-target", "nobody")) == 2
    assert "no row named 'nobody'" in capsys.readouterr().err
    assert main(["search", "--law", "paper-1b", "--n-target", "1000"]) == 2
    assert "--law needs --layers, --head-dim, --vocab, --tokens" in capsys.readouterr().err
    assert main(["search", "--law", "no-such-law", "--n-target", "1", "--layers", "1", "--head-dim", "1",
                 "--vocab", "1", "--tokens", "1"]) == 2
    assert "not a named law" in capsys.readouterr().err
    assert main(["search", "--scale", "s1"]) == 2
    assert "--runs, --fit, --cost-model" in capsys.readouterr().err
