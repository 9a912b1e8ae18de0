"""run_job on CPU: the record of docs/pipeline.md, NVML flagged absent, repeats and their spread."""

import json

import pytest

from archscale.arch import Architecture
from archscale.throughput import job, measure, run_job
from archscale.throughput.nvml import NvmlUnavailable, open_reader

ROPE = 500000.0
ARCH = Architecture(d_model=32, ffn=80, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=256, scale="t")
WORKLOAD = {"engine": "megatron", "weights": "random", "input_len": 8, "output_len": 5, "batch_sizes": [2, 1],
            "warmup": 1, "repeats": 3}
HW = {"threads": 1, "require_nvml": False, "nvml_interval_s": 0.05}


def _no_nvml():
    reader, _ = open_reader()
    if reader is not None:
        reader.close()
        pytest.skip("NVML present on this machine")


def test_run_job_record_on_cpu():
    _no_nvml()
    rec = run_job(ARCH.to_dict(), WORKLOAD, HW)
    json.dumps(rec)  # serialisable as it stands
    assert rec["arch_id"] == ARCH.arch_id and rec["arch"]["gqa"] == 2
    assert rec["engine"] == "archscale-static" and rec["device"] == "cpu" and rec["precision"] == "fp32"
    assert rec["nvml_available"] is False and "NVML" in rec["nvml_unavailable_reason"]
    assert rec["nvml_device"] is None and rec["cpu_model"]
    assert rec["roofline_device"]["mem_bw_bytes_per_s"] > 0
    assert [r["batch_size"] for r in rec["records"]] == [1, 2]
    for r in rec["records"]:
        b = r["batch_size"]
        assert len(r["repeats"]) == 3
        for rep in r["repeats"]:
            total = rep["prefill_latency_s"] + rep["decode_s"]
            assert rep["output_tokens_per_s"] == pytest.approx(b * 5 / total)
            assert rep["total_tokens_per_s"] == pytest.approx(b * 13 / total)
            assert rep["decode_tokens_per_s"] == pytest.approx(b * 4 / rep["decode_s"])
            assert rep["energy_j"] is None
            assert rep["cpu_time_s"] > 0
        mean = sum(x["output_tokens_per_s"] for x in r["repeats"]) / 3
        assert r["output_tokens_per_s"] == pytest.approx(mean)
        assert r["cv_output_tokens_per_s"] == pytest.approx(r["std_output_tokens_per_s"] / mean)
        assert r["cv_output_tokens_per_s"] >= 0
        for key in ("energy_j", "energy_j_per_output_token", "power_mean_w", "power_peak_w", "nvml"):
            assert r[key] is None
        assert r["peak_memory_bytes"] > 0 and r["peak_memory_kind"] == "process_max_rss"
        assert r["roofline_decode_s"] > 0


def test_require_nvml_fails_clearly_without_nvml():
    _no_nvml()
    with pytest.raises(NvmlUnavailable, match="require_nvml"):
        run_job(ARCH.to_dict(), WORKLOAD, {**HW, "require_nvml": True})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"engine": "tgi"}, "throughput.engine"),
        ({"weights": "trained"}, "no checkpoint"),
        ({"batch_sizes": []}, "batch_sizes"),
        ({"repeats": 0}, "throughput.repeats"),
        ({"warmup": -1}, "throughput.warmup"),
    ],
)
def test_bad_workload_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        job.check_workload({**WORKLOAD, **change}, None)


def test_missing_workload_key_is_named():
    w = dict(WORKLOAD)
    del w["repeats"]
    with pytest.raises(ValueError, match="repeats"):
        job.check_workload(w, None)


def test_summarise_repeats_by_hand():
    reps = [measure.repeat_record("prefill+decode", 2, 10, 5, 0.1, 0.4),
            measure.repeat_record("prefill+decode", 2, 10, 5, 0.1, 0.9)]
    assert reps[0]["output_tokens_per_s"] == pytest.approx(20.0)
    assert reps[1]["output_tokens_per_s"] == pytest.approx(10.0)
    out = job.summarise_repeats(reps)
    assert out["output_tokens_per_s"] == pytest.approx(15.0)
    assert out["std_output_tokens_per_s"] == pytest.approx(7.0710678)
    assert out["cv_output_tokens_per_s"] == pytest.approx(7.0710678 / 15.0)
    single = job.summarise_repeats(reps[:1])
    assert single["cv_output_tokens_per_s"] is None


def test_trained_checkpoint_is_loaded(tmp_path):
    """weights: trained loads results/train/{arch}/final as the training stage writes it."""
    import types

    import torch

    pytest.importorskip("megatron.core")
    from archscale.model import build_model, resolve_runtime, setup_runtime
    from archscale.checkpoint import save_final

    runtime = resolve_runtime(cuda_available=False, te_installed=False)
    setup_runtime(runtime, 99)
    trained = build_model(ARCH, runtime, max_sequence_length=32, rope_base=ROPE, init_std=0.3)
    final = tmp_path / "final"
    save_final(final, types.SimpleNamespace(module=trained), {"arch": ARCH.to_dict(), "seq_length": 32, "rope_base": ROPE})

    loaded = job.build_megatron_model(ARCH.with_network(rope_base=ROPE), runtime, 13, str(final))
    ref = trained.state_dict()
    got = loaded.state_dict()
    weights = [k for k in ref if torch.is_tensor(ref[k]) and not k.endswith("_extra_state")]
    assert weights and all(torch.equal(ref[k], got[k]) for k in weights)
    fresh = job.build_megatron_model(ARCH.with_network(rope_base=ROPE), runtime, 13, None)
    assert not all(torch.equal(ref[k], fresh.state_dict()[k]) for k in weights)

    rec = run_job(ARCH.to_dict(), {**WORKLOAD, "weights": "trained", "batch_sizes": [1], "repeats": 2}, HW,
                  checkpoint=str(final))
    assert rec["weights"] == "trained" and rec["checkpoint"] == str(final)

    other = Architecture(d_model=32, ffn=80, layers=2, heads=4, kv_heads=4, head_dim=8, vocab=256, scale="t")
    with pytest.raises(ValueError, match="checkpoint of t-L2-d32-h4g2"):
        job.build_megatron_model(other.with_network(rope_base=ROPE), runtime, 13, str(final))
    with pytest.raises(FileNotFoundError, match="not a final checkpoint"):
        job.build_megatron_model(ARCH.with_network(rope_base=ROPE), runtime, 13, str(tmp_path))


def test_run_job_records_medians_intervals_mode_and_machine_state():
    _no_nvml()
    rec = run_job(ARCH.to_dict(), {**WORKLOAD, "batch_sizes": [2], "repeats": 5}, HW)
    assert rec["engine"] == "archscale-static" and rec["mode"] == "prefill+decode" and rec["threads"] == 1
    (r,) = rec["records"]
    assert r["mode"] == "prefill+decode" and r["context"] is None
    med = r["median"]["output_tokens_per_s"]
    values = sorted(x["output_tokens_per_s"] for x in r["repeats"])
    assert med["value"] == values[2] and med["n"] == 5
    assert (med["low"], med["high"]) == (values[0], values[-1])  # n = 5: the range (93.75%)
    for key in ("machine_before", "machine_after"):
        assert set(r[key]) == {"load_average_1m", "load_average_5m", "load_average_15m"}


def test_run_job_decode_at_context():
    _no_nvml()
    w = {**WORKLOAD, "batch_sizes": [2], "mode": "decode_at_context", "context": 40, "output_len": 4}
    rec = run_job(ARCH.to_dict(), w, HW)
    assert rec["mode"] == "decode_at_context" and rec["context"] == 40
    (r,) = rec["records"]
    assert r["mode"] == "decode_at_context" and r["context"] == 40
    for rep in r["repeats"]:
        assert rep["decode_tokens_per_s"] == pytest.approx(2 * 4 / rep["decode_s"])
        assert rep["output_tokens_per_s"] == rep["decode_tokens_per_s"] and rep["prefill_latency_s"] > 0
    with pytest.raises(ValueError, match="throughput.mode"):
        run_job(ARCH.to_dict(), {**w, "mode": "context"}, HW)
    with pytest.raises(ValueError, match="decode_at_context runs on"):
        run_job(ARCH.to_dict(), w, {**HW, "megatron_engine": "static"})


def test_random_weights_on_the_fast_decoder_never_import_megatron():
    """A throughput job on random weights measures archscale's decoder on weights drawn in
    megatron's layout: megatron-core is not imported (seconds of every CPU job), and the record
    is the same kind of record."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from archscale.throughput import run_job\n"
        f"rec = run_job({ARCH.to_dict()!r}, {WORKLOAD!r}, {HW!r})\n"
        "print(json.dumps({'engine': rec['engine'], 'n': len(rec['records']),\n"
        "                  'megatron': sorted(m for m in sys.modules if m.startswith('megatron'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"engine": "archscale-static", "n": 2, "megatron": []}


def test_owned_cores_are_the_affinity_capped_by_slurm(monkeypatch):
    monkeypatch.setattr(job.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert job.owned_cores({}) == 4
    assert job.owned_cores({"SLURM_CPUS_PER_TASK": "2"}) == 2
    assert job.owned_cores({"SLURM_CPUS_PER_TASK": "16"}) == 4  # the mask is what it may run on
    assert job.owned_cores({"SLURM_CPUS_PER_TASK": ""}) == 4


def test_load_warning_when_the_load_exceeds_the_free_cores():
    assert job.load_warning(0.3, threads=2, cores=2) is None  # quiet: rounds to 0 busy cores
    assert job.load_warning(1.4, threads=1, cores=2) is None  # one busy core, one free
    busy = job.load_warning(2.1, threads=2, cores=2)  # the oversubscribed case: 2 threads on 2 busy cores
    assert busy.startswith("load average 2.10 before the measurement exceeds the 0 of 2 cores its 2 threads")
    assert "low and noisy" in busy
    assert job.load_warning(3.6, threads=4, cores=8) is None and job.load_warning(4.6, threads=4, cores=8)


def test_run_job_threads_default_and_load_warning_in_the_record(monkeypatch):
    _no_nvml()
    monkeypatch.setattr(job, "owned_cores", lambda: 1)
    monkeypatch.setattr(measure, "machine_state", lambda reader=None: {
        "load_average_1m": 1e3, "load_average_5m": 0.0, "load_average_15m": 0.0})
    hw = {k: v for k, v in HW.items() if k != "threads"}
    rec = run_job(ARCH.to_dict(), {**WORKLOAD, "batch_sizes": [1], "repeats": 2}, hw)
    assert rec["threads"] == 1
    (r,) = rec["records"]
    assert r["load_warning"].startswith("load average 1000.00 before the measurement exceeds")
    with pytest.raises(ValueError, match="throughput.threads must be a positive integer, got 0"):
        run_job(ARCH.to_dict(), WORKLOAD, {**HW, "threads": 0})
