"""Rule-level: search_candidates -> throughput_candidates (interleaved) -> search_select, and report.

The upstream records (plan, runs, fits, throughput of the grid, cost model, loss curves) are
fixtures written from the stage contracts, so the rules run without training; the search's
throughput jobs are real (megatron-core on CPU, tiny shapes, short workload).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers.rules import REPO, default_config, run_snakemake, write_config
from helpers.study import write_study

pytestmark = pytest.mark.slow

SEARCH_RULES = ["search_candidates", "throughput_candidates", "search_select"]


def make_workdir(tmp: Path, **search) -> Path:
    for item in ("Snakefile", "workflow", "config", "environment.yml"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / item)
    shard = tmp / "resources" / "sample" / "books" / "part-0.json.gz"
    shard.parent.mkdir(parents=True)
    with gzip.open(shard, "wt") as f:
        for i in range(4):
            f.write(json.dumps({"id": str(i), "text": "a tiny document", "source": "books"}) + "\n")
    config = default_config()
    config["data"]["corpus_dir"] = "resources/sample"
    # A short workload and a small walk keep the real throughput job to a few seconds; five
    # interleaved rounds are the fewest that give the ratios an interval.
    config["throughput"].update(input_len=16, output_len=8, batch_sizes=[1, 4], warmup=0, repeats=5)
    config["search"]["measure_top_k"] = 1
    config["search"]["targets"][0]["gqa_candidates"] = [1, 2]
    config["search"].update(search)
    write_study(tmp, write_config(tmp, config, sort_keys=False))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_snakemake(workdir, *args, snakefile=workdir / "Snakefile", timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("wf"))
    target = "results/search/s100k-default/result.json"
    snakemake(work, "--allowed-rules", *SEARCH_RULES, "--", target)
    return work


def test_search_rules_pick_panda_and_surefire_from_measured_throughput(searched):
    work = searched
    cands = json.loads((work / "results/search/s100k-default/candidates.json").read_text())
    result = json.loads((work / "results/search/s100k-default/result.json").read_text())
    rec = json.loads((work / "results/search/s100k-default/throughput.json").read_text())
    # Every architecture listed was measured in the one throughput_candidates job, interleaved.
    assert sorted(rec["architectures"]) == sorted(m["arch_id"] for m in cands["measure"])
    assert {"baseline", "panda", "walk"} <= {r for m in cands["measure"] for r in m["roles"]}
    assert rec["weights"] == "random" and rec["device"] == "cpu" and rec["batch_size"] == 4
    assert rec["repeats"] == 5 and rec["machine_before"]["load_average_1m"] >= 0
    for res in rec["architectures"].values():
        assert len(res["repeats"]) == 5 and all(r["output_tokens_per_s"] > 0 for r in res["repeats"])
        assert res["median"]["output_tokens_per_s"]["low"] is not None
    assert (work / "logs/search/s100k-default/throughput.log").exists()

    # The picks: Panda has the lowest predicted loss; Surefire is the fastest measured walk
    # point within the loss target, from records at the search's batch size (the largest, 4).
    space = pd.read_parquet(work / "results/search/s100k-default/space.parquet")
    assert result["panda"]["arch_id"] == space.loc[space["loss"].idxmin(), "arch_id"]
    assert result["baseline"]["name"] == "mini-llama"
    assert result["batch_size"] == 4 and result["throughput_source"].startswith("measured interleaved")
    sure = result["surefire"]
    assert sure is not None and sure["loss"] <= result["loss_target"]["value"]
    walk = result["gqa_walks"][0]
    assert [s["gqa"] for s in walk["steps"]][0] == 1
    # Steps are taken only when resolved faster; the walk's choice is the last kept step.
    assert all(s["verdict"] in ("faster", "not resolved", "slower") for s in walk["steps"][1:])
    assert all(s["ratio"]["n"] == 5 for s in walk["steps"][1:])
    assert sure["arch_id"] == walk["best"]["arch_id"]
    assert sure["measured_output_tokens_per_s"] == rec["architectures"][sure["arch_id"]]["median"]["output_tokens_per_s"]["value"]
    verdict = result["surefire_verdict"]
    assert verdict["verdict"] in ("faster", "not resolved", "slower", "same architecture")
    assert verdict["kept"] in (sure["arch_id"], result["baseline"]["arch_id"])
    if verdict["verdict"] != "faster":
        assert verdict["kept"] == result["baseline"]["arch_id"]
    pareto = pd.read_parquet(work / "results/search/s100k-default/pareto.parquet")
    assert len(pareto) == result["grid"]["architectures"] and pareto["pareto"].any()
    assert pareto.loc[pareto["is_panda"], "arch_id"].tolist() == [result["panda"]["arch_id"]]


def test_report_rule_and_html_report(searched):
    work = searched
    snakemake(work, "--allowed-rules", "report", "--", "results/report/index.json")
    index = json.loads((work / "results/report/index.json").read_text())
    names = {i["name"] for i in index["items"]}
    assert {"loss_vs_d", "loss_vs_r", "throughput", "pareto", "validation", "loss_curves", "plan", "chosen", "findings"} <= names
    for item in index["items"]:
        assert (work / item["path"]).stat().st_size > 500, item
    result = json.loads((work / "results/search/s100k-default/result.json").read_text())
    assert index["searches"][0]["surefire"] == result["surefire"]["arch_id"]
    findings_html = (work / "results/report/findings.html").read_text()
    assert "tiny models" in findings_html
    # The validation table under both references (own L_opt flagged optimistic) and the guards' verdicts.
    assert "Validation table (both references)" in findings_html and "optimistic" in findings_html
    assert "Effects against seed noise (no fitted law)" in index["findings"]
    # The answer first: the picks with their measured speed against the baseline, its interval from the
    # search's interleaved rounds (results/search/<target>/throughput.json) and the verdict.
    assert "id='answer'" in findings_html and findings_html.index("id='answer'") < findings_html.index("Figures")
    sure = next(r for r in index["answer"] if r["role"] == "surefire")
    if sure["arch_id"] != result["baseline"]["arch_id"]:
        assert sure["speed_low"] is not None and sure["speed_verdict"] in ("faster", "not resolved", "slower")
    assert "Conditional fit status:" in findings_html and "Fit verdicts (identifiability guards)" in index["findings"]
    assert index["validation_table"] and "MSE (L_opt extrapolated)" in index["validation_table"][0]
    # The picks carry the bootstrap probability of meeting the target, or why it is withheld.
    for role in ("panda", "surefire"):
        pick = result[role]
        assert pick["probability_within_target"] is not None or pick["probability_reason"]
    assert index["searches"][0]["probability_within_target"]["panda"] == result["panda"]["probability_within_target"]
    if result["surefire_verdict"]["ratio"] is not None:  # Surefire / baseline with its interval and verdict
        assert "bootstrap interval" in findings_html and result["surefire_verdict"]["verdict"] in findings_html
    snakemake(work, "--report", "results/report.html")
    html = (work / "results/report.html").read_text(errors="replace")
    assert len(html) > 50_000 and "loss_vs_d.png" in html and "Chosen architectures" not in html[:100]


def test_scale_without_valid_architecture_fails_before_any_job(tmp_path):
    work = make_workdir(tmp_path, d_over_sqrt_n=[4.0, 5.0], r=[1.0])
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "search target 's100k-default': no valid architecture at scale 's100k'" in out
    assert "search.d_over_sqrt_n" in out
