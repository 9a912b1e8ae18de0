"""The record readers: typed fields, per-batch figures, errors that name the file and key."""

from __future__ import annotations

import json

import pytest
from helpers.study import throughput_record

from archscale.arch import Architecture
from archscale.records import RecordError, ThroughputRecord, TrainingRecord

ARCH = Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512)


def test_throughput_at_returns_that_batch_figures(tmp_path):
    raw = throughput_record(ARCH, 16, 8, [1, 4])
    path = tmp_path / f"{ARCH.arch_id}.json"
    path.write_text(json.dumps(raw))
    rec = ThroughputRecord.read(path)
    assert rec.arch_id == ARCH.arch_id and rec.batch_sizes == [1, 4] and (rec.input_len, rec.output_len) == (16, 8)
    at4 = rec.at(4)
    assert at4["output_tokens_per_s"] == pytest.approx(raw["records"][1]["output_tokens_per_s"])
    assert at4["energy_j"] is None and at4["peak_memory_bytes"] == 1 << 20
    with pytest.raises(RecordError, match=rf"{path}: no record for batch size 8 \(has \[1, 4\]\)"):
        rec.at(8)


def test_throughput_at_reads_medians_and_the_output_interval():
    raw = throughput_record(ARCH, 16, 8, [1, 4])
    assert raw["records"][1].get("median") is None and ThroughputRecord.from_dict(raw, "r").at(4)["output_tokens_per_s_low"] is None
    est = {"value": 123.0, "low": 110.0, "high": 130.0, "n": 5, "method": "order statistics", "level": 0.95,
           "withheld_reason": None}
    raw["records"][1]["median"] = {"output_tokens_per_s": est, "total_tokens_per_s": None,
                                   "decode_tokens_per_s": dict(est, value=150.0), "prefill_latency_s": None}
    at4 = ThroughputRecord.from_dict(raw, "r").at(4)
    assert at4["output_tokens_per_s"] == 123.0 != raw["records"][1]["output_tokens_per_s"]  # the median, not the mean
    assert (at4["output_tokens_per_s_low"], at4["output_tokens_per_s_high"]) == (110.0, 130.0)
    assert at4["decode_tokens_per_s"] == 150.0
    assert at4["total_tokens_per_s"] is None and at4["prefill_latency_s"] is None  # decode_at_context, no prefill
    raw["records"][1]["median"]["output_tokens_per_s"] = None
    with pytest.raises(RecordError, match=r"r records\[batch_size=4\]: key 'output_tokens_per_s'"):
        ThroughputRecord.from_dict(raw, "r").at(4)


def test_throughput_errors_name_the_record(tmp_path):
    raw = throughput_record(ARCH, 16, 8, [1, 4])
    raw["records"][0]["output_tokens_per_s"] = float("nan")
    rec = ThroughputRecord.from_dict(raw, "live measurement of x")
    assert rec.at(4)["output_tokens_per_s"] > 0
    with pytest.raises(RecordError, match=r"live measurement of x records\[batch_size=1\]: key 'output_tokens_per_s' must be a finite"):
        rec.at(1)
    raw["records"][1]["input_len"] = 32
    with pytest.raises(RecordError, match=r"records\[1\]: input/output lengths differ"):
        ThroughputRecord.from_dict(raw, "r.json")
    with pytest.raises(RecordError, match=f"{tmp_path / 'none.json'}: record is missing"):
        ThroughputRecord.read(tmp_path / "none.json")


def test_training_record_fields_and_errors():
    raw = {
        "arch_id": "a", "arch": ARCH.to_dict(), "tokens_seen": 1000, "valid_loss": 4.0, "final_train_loss": 4.1,
        "steps": 10, "wall_time_s": None, "tokens_per_s": 50.0, "device": "cpu", "precision": "fp32",
        "world_size": 1, "versions": {"torch": "2.0", "megatron_core": "0.1"},
    }
    rec = TrainingRecord.from_dict(raw, "m.json")
    assert rec.tokens_seen == 1000 and rec.mfu is None and rec.recipe is None
    assert rec.versions == {"torch": "2.0", "megatron_core": "0.1", "archscale": None}
    with pytest.raises(RecordError, match="m.json: tokens_seen must be positive"):
        TrainingRecord.from_dict({**raw, "tokens_seen": 0}, "m.json")
    with pytest.raises(RecordError, match="m.json: key 'steps' must be an integer"):
        TrainingRecord.from_dict({**raw, "steps": 1.5}, "m.json")
