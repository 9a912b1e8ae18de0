"""One training record (metrics.json) and one throughput record, from the formats documented in
docs/pipeline.md (the train and throughput stages write them in parallel)."""

from __future__ import annotations

BATCH_SIZES = [1, 8]


def metrics_record(row: dict, loss: float) -> dict:
    return {
        "arch_id": row["arch_id"], "scale": row["scale"],
        "arch": {k: row[k] for k in ("layers", "d_model", "heads", "kv_heads", "head_dim", "ffn", "vocab", "tied")},
        "tokens_budget": row["tokens"], "tokens_seen": row["steps"] * 32 * 128, "steps": row["steps"],
        "final_train_loss": loss + 0.05, "valid_loss": loss, "wall_time_s": 21.5, "tokens_per_s": 30000.0,
        "achieved_flops_per_s": 2.0e9, "mfu": None, "device": "cpu", "precision": "fp32", "world_size": 1,
        "versions": {"torch": "2.13.0", "megatron_core": "0.16.1", "archscale": "0.1.0"},
        "resumed_from_step": None, "recipe": {"lr": 0.003, "seed": 1234},
    }


def throughput_record(arch_id: str, speed: float, batch_sizes=BATCH_SIZES) -> dict:
    records = []
    for b in batch_sizes:
        records.append({
            "batch_size": b, "input_len": 64, "output_len": 32, "prefill_latency_s": 0.01 * b,
            "decode_tokens_per_s": speed * b * 1.1, "output_tokens_per_s": speed * b,
            "total_tokens_per_s": speed * b * 3, "repeats": [{"output_tokens_per_s": speed * b}] * 3,
            "cv_output_tokens_per_s": 0.02, "peak_memory_bytes": 1_000_000 * b, "energy_j": None,
            "energy_j_per_output_token": None, "power_mean_w": None, "power_peak_w": None,
        })
    return {"arch_id": arch_id, "arch": {}, "engine": "megatron", "weights": "random", "device": "cpu",
            "device_name": "cpu", "nvml_available": False, "cpu_model": "Test CPU", "records": records}
