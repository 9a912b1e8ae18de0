"""Rules throughput and cost_model run by Snakemake on a tiny grid (CPU, random weights)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.slow


def _config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["data"]["corpus_dir"] = str(REPO / "resources" / "sample")
    cfg["scales"] = [
        {
            "name": "t30k",
            "n_target": 30000,
            "layers": 2,
            "head_dim": 8,
            "tokens_per_param": 20,
            "grid": [{"d_over_sqrt_n": [0.2, 0.5], "r": [1.0], "gqa": [1]}],
            "architectures": [{"name": "mini", "d_model": 48, "ffn": 72, "heads": 4, "kv_heads": 2}],
        }
    ]
    cfg["search"]["targets"] = []
    cfg["throughput"].update(input_len=16, output_len=8, batch_sizes=[1, 4], warmup=1, repeats=3)
    path = tmp_path / "config" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_throughput_and_cost_model_rules(tmp_path):
    _config(tmp_path)
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}:{os.environ['PATH']}"}
    cmd = [str(SNAKEMAKE), "--cores", "2", "--directory", str(tmp_path), "--snakefile",
           str(REPO / "Snakefile"), "results/throughput/cost_model.json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    records = sorted((tmp_path / "results" / "throughput").glob("t30k-*.json"))
    assert len(records) == 3
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["arch_id"] == path.stem
        assert rec["nvml_available"] is False and rec["nvml_unavailable_reason"]
        assert rec["workload"]["input_len"] == 16 and rec["workload"]["output_len"] == 8
        assert [r["batch_size"] for r in rec["records"]] == [1, 4]
        for r in rec["records"]:
            assert len(r["repeats"]) == 3
            assert r["output_tokens_per_s"] > 0 and r["cv_output_tokens_per_s"] is not None
            assert r["energy_j"] is None and r["power_mean_w"] is None
        assert (tmp_path / "logs" / "throughput" / f"{path.stem}.log").exists()
        assert (tmp_path / "benchmarks" / "throughput" / f"{path.stem}.tsv").exists()

    model = json.loads((tmp_path / "results" / "throughput" / "cost_model.json").read_text())
    dev = model["devices"][model["default_device"]]
    assert dev["jobs"] == 3 and len(dev["points"]) == 6
    assert dev["decode"]["scale"] >= 0 and dev["decode"]["overhead_s"] >= 0
    assert set(dev["spearman"]["by_batch_size"]) == {"1", "4"}

    # Editing hardware knobs (threads, NVML period, whole-node) must not make the measurements stale;
    # editing the workload must.
    cfg_path = tmp_path / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["throughput"].update(threads=2, nvml_interval_s=0.1, exclusive=True)
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(cmd + ["-n"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout
    cfg["throughput"]["repeats"] = 4
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(cmd + ["-n", "--quiet", "rules"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "throughput" in proc.stdout and "cost_model" in proc.stdout, proc.stdout
