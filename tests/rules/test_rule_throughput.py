"""Rules throughput and cost_model run by Snakemake on a tiny grid (CPU, random weights)."""

import json
from pathlib import Path

import pytest
import yaml
from helpers.rules import SAMPLE, default_config, run_snakemake, write_config

pytestmark = pytest.mark.slow


def _config(tmp_path: Path) -> Path:
    cfg = default_config()
    cfg["data"]["corpus_dir"] = str(SAMPLE)
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
    return write_config(tmp_path, cfg)


def test_throughput_and_cost_model_rules(tmp_path):
    _config(tmp_path)
    target = "results/throughput/cost_model.json"
    proc = run_snakemake(tmp_path, target, timeout=300)
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
        # the rule logs the record next to the training curves (TensorBoard is on by default)
        assert any((tmp_path / "results" / "train" / path.stem / "tb" / "throughput").glob("events.out.tfevents.*"))
        assert rec["mode"] == "decode_at_context" and rec["context"] == 1024  # the embedded default's workload

    model = json.loads((tmp_path / "results" / "throughput" / "cost_model.json").read_text())
    dev = model["devices"][model["default_device"]]
    assert dev["jobs"] == 3 and len(dev["points"]) == 6
    assert dev["decode"]["scale"] >= 0 and dev["decode"]["overhead_s"] >= 0
    assert set(dev["spearman"]["by_batch_size"]) == {"1", "4"}

    # Editing hardware knobs (threads, NVML period, whole-node) must not make the measurements stale;
    # editing the workload must.
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    cfg["throughput"].update(threads=2, nvml_interval_s=0.1, exclusive=True)
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path, target, "-n", timeout=120)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout
    cfg["throughput"]["repeats"] = 4
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path, target, "-n", "--quiet", "rules", timeout=120)
    assert proc.returncode == 0
    assert "throughput" in proc.stdout and "cost_model" in proc.stdout, proc.stdout
