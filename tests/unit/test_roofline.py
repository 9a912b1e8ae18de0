"""Roofline costs, calibration on measured records and the prediction the search uses."""

import math

import pytest

from archscale.arch import Architecture
from archscale.throughput import roofline

A = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)
GQA1 = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=4, head_dim=8, vocab=512)


def test_decode_step_cost_by_hand():
    n = A.params_non_embedding
    kv = 2 * 2 * 2 * 8 * 2  # 2 (k,v) * layers * kv_heads * head_dim * bytes
    nbytes, flops = roofline.decode_step_cost(A, batch=3, context=10, dtype_bytes=2)
    assert nbytes == (n + 512 * 96) * 2 + 3 * 11 * kv
    assert flops == 3 * (2 * n + 2 * 2 * 11 * 32 + 2 * 512 * 96)


def test_prefill_cost_by_hand():
    n = A.params_non_embedding
    nbytes, flops = roofline.prefill_cost(A, batch=2, input_len=4, dtype_bytes=4)
    assert nbytes == (n + 512 * 96) * 4 + 2 * 4 * (2 * 2 * 2 * 8 * 4)
    assert flops == 2 * (2 * n * 4 + 2 * 32 * 4 * 5) + 2 * 2 * 512 * 96


def test_more_kv_heads_cost_more_decode_bytes():
    b1, _ = roofline.decode_step_cost(A, 8, 1000, 2)
    b2, _ = roofline.decode_step_cost(GQA1, 8, 1000, 2)
    extra_kv_per_token = 2 * 2 * (4 - 2) * 8 * 2  # (k, v) * layers * extra kv heads * dh * bytes
    extra_weights = 2 * (2 * 96 * 8 * (4 - 2)) * 2  # layers * (k, v projections of the extra heads) * bytes
    assert b2 - b1 == 8 * 1001 * extra_kv_per_token + extra_weights


def test_roofline_times_regimes():
    # Memory-bound: a huge peak makes time = bytes / bandwidth.
    p, d = roofline.roofline_times(A, 16, 4, 1, mem_bw=1e9, peak_flops=1e30, dtype_bytes=2)
    expect_d = sum(roofline.decode_step_cost(A, 1, 16 + s - 1, 2)[0] for s in range(1, 4)) / 1e9
    assert d == pytest.approx(expect_d)
    assert p == pytest.approx(roofline.prefill_cost(A, 1, 16, 2)[0] / 1e9)
    # Compute-bound
    p, d = roofline.roofline_times(A, 16, 4, 1, mem_bw=1e30, peak_flops=1e9, dtype_bytes=2)
    assert p == pytest.approx(roofline.prefill_cost(A, 1, 16, 2)[1] / 1e9)
    with pytest.raises(ValueError):
        roofline.roofline_times(A, 16, 4, 1, mem_bw=0, peak_flops=1, dtype_bytes=2)


def test_measure_device_cpu_small():
    dev = roofline.measure_device("cpu", mem_bytes=1 << 22, matmul_n=128, repeats=2)
    assert dev["mem_bw_bytes_per_s"] > 1e8 and dev["matmul_flops_per_s"] > 1e7
    assert dev["dtype_bytes"] == 4


DEV = {"mem_bw_bytes_per_s": 2e9, "matmul_flops_per_s": 5e10, "dtype_bytes": 4}
SCALE_P, OVER_P, SCALE_D, OVER_D, PER_LAYER_D = 2.0, 0.003, 1.5, 0.002, 0.0005


def _job(arch, batches=(1, 8), input_len=64, output_len=32, noise=0.0):
    """A throughput record whose timings follow a known calibration of the roofline."""
    recs = []
    for i, b in enumerate(batches):
        rp, rd = roofline.roofline_times(arch, input_len, output_len, b, DEV["mem_bw_bytes_per_s"],
                                         DEV["matmul_flops_per_s"], 4)
        prefill = SCALE_P * rp + OVER_P
        decode = (SCALE_D * rd + (OVER_D + PER_LAYER_D * arch.layers) * (output_len - 1)) * (1 + noise * (-1) ** i)
        recs.append({"batch_size": b, "input_len": input_len, "output_len": output_len,
                     "prefill_latency_s": prefill, "decode_s": decode,
                     "output_tokens_per_s": b * output_len / (prefill + decode)})
    return {"arch_id": arch.arch_id, "arch": arch.to_dict(), "device_name": "Test CPU", "precision": "fp32",
            "roofline_device": dict(DEV), "records": recs}


ARCHS = [
    Architecture(d_model=d, ffn=f, layers=L, heads=h, kv_heads=g, head_dim=8, vocab=512)
    for d, f, L, h, g in [(32, 80, 2, 7, 7), (64, 36, 2, 4, 4), (88, 24, 2, 3, 3), (96, 144, 2, 4, 2),
                          (128, 256, 4, 8, 8), (256, 512, 4, 8, 2), (512, 1024, 6, 16, 4)]
]


def test_fit_recovers_known_calibration_and_ranks():
    model = roofline.fit_cost_model([_job(a) for a in ARCHS])
    dev = model["devices"][model["default_device"]]
    assert model["default_device"] == "Test CPU (fp32)"
    assert dev["prefill"]["scale"] == pytest.approx(SCALE_P, rel=1e-6)
    assert dev["prefill"]["overhead_s"] == pytest.approx(OVER_P, rel=1e-6)
    assert dev["decode"]["scale"] == pytest.approx(SCALE_D, rel=1e-6)
    assert dev["decode"]["overhead_s"] == pytest.approx(OVER_D, rel=1e-6)
    assert dev["decode"]["overhead_per_layer_s"] == pytest.approx(PER_LAYER_D, rel=1e-6)
    assert dev["prefill"]["overhead_per_layer_s"] == pytest.approx(0.0, abs=1e-9)
    assert dev["spearman"]["by_batch_size"]["8"]["spearman_calibrated"] == pytest.approx(1.0)
    assert model["spearman"] == pytest.approx(1.0)
    assert dev["mean_abs_rel_error"] < 1e-6
    for a in ARCHS:
        meas = _job(a)["records"][1]["output_tokens_per_s"]
        assert roofline.predict_output_tokens_per_s(model, a, 64, 32, 8) == pytest.approx(meas, rel=1e-6)


def test_fit_with_noise_reports_imperfect_ranking():
    jobs = [_job(a, noise=0.3 * ((-1) ** k)) for k, a in enumerate(ARCHS)]
    model = roofline.fit_cost_model(jobs)
    dev = model["devices"][model["default_device"]]
    assert dev["mean_abs_rel_error"] > 0.01
    rho = dev["spearman"]["all_points"]
    assert rho is not None and -1 <= rho <= 1


def test_predict_unmeasured_architecture_and_errors():
    model = roofline.fit_cost_model([_job(a) for a in ARCHS[:5]])  # depths 2 and 4: per-layer term identifiable
    big = ARCHS[-1]
    tps = roofline.predict_output_tokens_per_s(model, big, 128, 16, 4)
    rp, rd = roofline.roofline_times(big, 128, 16, 4, 2e9, 5e10, 4)
    per_step = OVER_D + PER_LAYER_D * big.layers
    assert tps == pytest.approx(4 * 16 / (SCALE_P * rp + OVER_P + SCALE_D * rd + per_step * 15), rel=1e-6)
    with pytest.raises(KeyError, match="no calibration for device 'H100'"):
        roofline.predict_output_tokens_per_s(model, big, 128, 16, 4, device="H100")
    with pytest.raises(ValueError):
        roofline.predict_output_tokens_per_s(model, big, 0, 16, 4)
    with pytest.raises(ValueError, match="no throughput records"):
        roofline.fit_cost_model([])


def test_spearman_needs_three_points_and_variation():
    from archscale.ranks import spearman

    assert spearman([1, 2], [2, 1]) is None
    assert math.isclose(spearman([1, 2], [2, 1], min_points=2), -1.0)
    assert math.isclose(spearman([1, 2, 3], [3, 2, 1]), -1.0)
    assert spearman([1, 1, 1], [3, 2, 1]) is None and spearman([1, 2, 3], [5, 5, 5]) is None
    assert math.isclose(spearman([1, 2, 3, 4], [1, 3, 2, 4]), 0.8)
    with pytest.raises(ValueError, match="3 values against 2"):
        spearman([1, 2, 3], [1, 2])


def _context_job(arch, batches=(1, 8), context=256, output_len=8):
    """A decode_at_context record (no prefill) with medians that differ from the means."""
    recs = []
    for b in batches:
        rd = roofline.decode_roofline_s(arch, context, output_len, b, DEV)
        decode = SCALE_D * rd + (OVER_D + PER_LAYER_D * arch.layers) * output_len
        rate = b * output_len / decode
        est = lambda v: {"value": v, "low": v * 0.95, "high": v * 1.05, "n": 5}  # noqa: E731
        recs.append({"batch_size": b, "input_len": 0, "output_len": output_len, "mode": "decode_at_context",
                     "context": context, "prefill_latency_s": None, "decode_s": decode * 3,
                     "output_tokens_per_s": rate / 3,  # means spoiled by one slow repeat; the medians are right
                     "median": {"decode_s": est(decode), "output_tokens_per_s": est(rate), "prefill_latency_s": None}})
    return {"arch_id": arch.arch_id, "arch": arch.to_dict(), "device_name": "Test CPU", "precision": "fp32",
            "roofline_device": dict(DEV), "records": recs}


def test_fit_on_decode_at_context_medians():
    model = roofline.fit_cost_model([_context_job(a) for a in ARCHS])
    dev = model["devices"][model["default_device"]]
    assert dev["workload"] == {"mode": "decode_at_context", "context": 256}
    assert dev["prefill"] is None  # input_len 0: prefill not measured
    assert dev["decode"]["scale"] == pytest.approx(SCALE_D, rel=1e-6)
    assert dev["decode"]["overhead_per_layer_s"] == pytest.approx(PER_LAYER_D, rel=1e-6)
    assert model["spearman"] == pytest.approx(1.0)
    for a in ARCHS:
        meas = _context_job(a)["records"][1]["median"]["output_tokens_per_s"]["value"]
        # the search's call (input_len, output_len, batch) predicts in the calibrated mode
        assert roofline.predict_output_tokens_per_s(model, a, 0, 8, 8) == pytest.approx(meas, rel=1e-6)
    with pytest.raises(ValueError, match="prefill was not measured"):
        roofline.predict_output_tokens_per_s(model, ARCHS[0], 64, 8, 8, mode="prefill+decode")
    with pytest.raises(ValueError, match="several modes"):
        roofline.fit_cost_model([_context_job(ARCHS[0]), _job(ARCHS[1])])
