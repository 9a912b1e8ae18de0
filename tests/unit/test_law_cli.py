"""`archscale fit chinchilla|conditional` on CSV and Parquet tables, and a real loss table (Bian et al.)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archscale.cli import main
from archscale.law.chinchilla import fit_chinchilla
from test_law_conditional import synthetic_runs

DATA = Path(__file__).resolve().parents[1] / "data"


def test_fit_chinchilla_cli_reproduces_epoch(capsys):
    code = main([
        "fit", "chinchilla", str(DATA / "chinchilla_svg_extracted_data.csv"), "--n", "Model Size",
        "--flops", "Training FLOP", "--loss", "loss", "--drop-highest", "5", "--objective", "lad",
        "--bootstrap", "20", "--json",
    ])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_points"] == 240 and out["n_starts"] == 4500
    assert out["params"]["A"] == pytest.approx(482.01, abs=0.05)
    assert out["params"]["B"] == pytest.approx(2085.43, abs=0.05)
    assert out["columns"]["d"] == "Training FLOP / (6 Model Size)"


def test_fit_chinchilla_cli_table_output_and_parquet(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(7, 9, 60)
    d = n * 10 ** rng.uniform(0.5, 2, 60)
    df = pd.DataFrame({"n": n, "d": d, "L": 1.9 + 300 / n**0.32 + 900 / d**0.3})
    df.to_parquet(tmp_path / "runs.parquet")
    assert main(["fit", "chinchilla", str(tmp_path / "runs.parquet"), "--n", "n", "--d", "d", "--loss", "L",
                 "--bootstrap", "30", "--output", str(tmp_path / "fit.json")]) == 0
    text = capsys.readouterr().out
    assert "95% interval" in text and "alpha" in text and "4500 starts" in text
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["params"]["E"] == pytest.approx(1.9, rel=0.02)


def test_fit_cli_errors_are_clear(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"n": [1e8, 2e8], "d": [1e9, 2e9], "L": [3.0, 2.9]}).to_csv(csv, index=False)
    assert main(["fit", "chinchilla", str(csv), "--n", "n", "--d", "tokens", "--loss", "L"]) == 2
    assert "table has no column 'tokens' (given by --d)" in capsys.readouterr().err
    assert main(["fit", "chinchilla", str(csv), "--n", "n", "--d", "d", "--loss", "L"]) == 2
    assert "2 points are fewer than the 5 coefficients" in capsys.readouterr().err
    assert main(["fit", "conditional", str(csv)]) == 2
    assert "runs table is missing column(s)" in capsys.readouterr().err
    assert main(["fit", "chinchilla", str(tmp_path / "none.csv"), "--n", "n", "--d", "d", "--loss", "L"]) == 2
    assert "no such table" in capsys.readouterr().err


def test_fit_conditional_cli(tmp_path, capsys):
    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065], seed=11)
    runs = runs.rename(columns={"valid_loss": "val_loss"})  # a column the defaults do not name
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert main(["fit", "conditional", str(tmp_path / "runs.csv"), "--loss", "val_loss", "--bootstrap", "30",
                 "--output", str(tmp_path / "cond.json")]) == 0
    text = capsys.readouterr().out
    assert "multiplicative" in text and "d_over_sqrt_n* = 0.0" in text
    cond = json.loads((tmp_path / "cond.json").read_text())
    assert cond["columns"]["loss"] == "val_loss"
    assert cond["forms"]["additive"]["optimum"]["r"] == pytest.approx(1.03, rel=0.2)


def test_chinchilla_fit_on_bian2025_losses():
    """Real losses of the prior paper of the same authors (20, 40 and 160 tokens per parameter)."""
    df = pd.read_csv(DATA / "bian2025_morph_aspect_ratio_losses.csv")
    fit = fit_chinchilla(df["N_params"], df["D_tokens"], df["loss"], bootstrap=50)
    assert not any("collinear" in w for w in fit.warnings)
    pred = fit.predict(df["N_params"].to_numpy(float), df["D_tokens"].to_numpy(float))
    rel = np.abs(pred / df["loss"].to_numpy() - 1)
    assert np.median(rel) < 0.02
    p = fit.params
    assert 0 < p["alpha"] < 2 and 0 < p["beta"] < 2 and 0 < p["E"] < df["loss"].min()
    for k in p:
        lo, hi = fit.ci[k]
        assert lo <= p[k] <= hi


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_fit_conditional_reads_json_tables_and_reports_the_guards(suffix, tmp_path, capsys):
    # r never varies: the r factor is left out, the fit is flagged, and that reaches stderr and the JSON.
    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065], seed=5,
                          rs=np.array([1.5]), noise=0.002)
    path = tmp_path / f"runs{suffix}"
    runs.to_json(path, orient="records", lines=suffix == ".jsonl")
    assert main(["fit", "conditional", str(path), "--forms", "multiplicative", "--bootstrap", "20", "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["n_runs"] == len(runs) and out["columns"]["loss"] == "valid_loss"
    assert out["status"].startswith("flagged") and out["forms"]["multiplicative"]["optimum"]["r"] is None
    assert "archscale: warning: conditional fit flagged" in cap.err and "r not fitted" in cap.err
    # The text output says "none" for the withheld optimum, and the warning still goes to stderr.
    assert main(["fit", "conditional", str(path), "--forms", "multiplicative", "--bootstrap", "0"]) == 0
    cap = capsys.readouterr()
    assert "r*: none" in cap.out and "r not fitted" in cap.err


def test_validate_prints_both_references_without_snakemake(tmp_path, capsys):
    runs = synthetic_runs("multiplicative", [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065], seed=3)
    runs = runs.rename(columns={"valid_loss": "val_loss"})
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    assert main(["validate", str(path), "--loss", "val_loss", "--forms", "multiplicative", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["task"] for r in rows} == {"80m->145m", "80m+145m->297m", "145m->297m"}
    assert {r["kind"] for r in rows} == {"progressive", "next"}
    ok = [r for r in rows if r["mse"] is not None]
    assert ok and all(0 <= r["mse"] < 1e-3 for r in ok)
    assert main(["validate", str(path), "--loss", "val_loss", "--forms", "multiplicative"]) == 0
    cap = capsys.readouterr()
    assert "MSE emp*" in cap.out and "MSE extr" in cap.out and "optimistic" in cap.out
    # One scale: no cross-scale task, a clear error.
    runs[runs["n_target"] == 80_000_000].to_csv(tmp_path / "one.csv", index=False)
    assert main(["validate", str(tmp_path / "one.csv"), "--loss", "val_loss"]) == 2
    assert "a cross-scale task needs at least two" in capsys.readouterr().err
