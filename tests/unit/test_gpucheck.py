"""The CPU-independent parts of bench/gpu_check.sh (bench/gpu_check.py): jobs, workload and the
energy checks."""

import importlib.util
from pathlib import Path

import pytest

from archscale.throughput.job import check_workload

_SPEC = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py")
gpucheck = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpucheck)


def _record(jpt=0.01, mean=200.0, peak=300.0, limit=700.0, nvml=True):
    return {"arch_id": "a", "nvml_available": nvml, "nvml_unavailable_reason": None if nvml else "no NVML",
            "nvml_device": {"power_limit_w": limit}, "engine": "megatron-dynamic", "precision": "bf16",
            "device_name": "GPU", "versions": {"torch": "x"},
            "records": [{"batch_size": 1, "mode": "prefill+decode", "median": {}, "energy_j_per_output_token": jpt,
                         "power_mean_w": mean, "power_peak_w": peak, "energy_source": "counter"}]}


def test_energy_checks():
    assert gpucheck.energy_checks(_record()) == []
    assert "not > 0" in gpucheck.energy_checks(_record(jpt=0.0))[0]
    assert "not > 0" in gpucheck.energy_checks(_record(jpt=None))[0]
    assert "above the card's limit" in gpucheck.energy_checks(_record(peak=800.0))[0]
    assert any("NVML unavailable" in f for f in gpucheck.energy_checks(_record(nvml=False)))


def test_summary_ok_only_when_every_check_passes():
    ok = gpucheck.summarise([{"valid_loss": 3.0, "wall_s": 5, "precision": "bf16"}] * 2, [_record(), _record()],
                            {"dir": "x"}, 60.0)
    assert ok["ok"] and ok["failures"] == [] and len(ok["architectures"]) == 2
    assert ok["architectures"][0]["batches"][0]["energy_j_per_output_token"] == 0.01
    bad = gpucheck.summarise([{}] * 2, [_record(), _record(jpt=0)], None, 60.0)
    assert not bad["ok"] and "export failed" in bad["failures"]


def test_jobs_and_workload_are_valid(tmp_path: Path):
    assert len({a.arch_id for a in gpucheck.ARCHS}) == 2
    job = gpucheck.train_job(gpucheck.ARCHS[0], tmp_path, tmp_path / "manifest.json")
    assert job.hardware["precision"] == "bf16" and job.steps == 200
    assert check_workload(gpucheck.workload(), job.final)["weights"] == "trained"


def test_run_refuses_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine")
    with pytest.raises(RuntimeError, match="needs a GPU"):
        gpucheck.run(tmp_path)
