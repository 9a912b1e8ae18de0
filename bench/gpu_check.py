"""GPU readiness check (``bench/gpu_check.sh``): train two tiny architectures in bf16 on one GPU,
measure their throughput with megatron-core's dynamic engine and NVML energy, export one, write
one JSON.

    python bench/gpu_check.py --out bench/results/gpu_check.json [--workdir DIR]

It drives the whole pipeline (training, throughput, export), so it lives beside the benchmarks,
above every stage of the library, not inside one of them.

The checks that decide ``ok`` (:func:`energy_checks`): every batch size has energy per output
token > 0 from the NVML counter, and mean and peak power within the card's enforced limit.
The pure parts (jobs, workload, checks, the JSON) are tested on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from archscale.arch import Architecture

VOCAB = 300
EOD = "<|endoftext|>"
ARCHS = (
    Architecture(d_model=128, ffn=384, layers=2, heads=4, kv_heads=1, head_dim=32, vocab=VOCAB, scale="gpu",
                 name="gpu-a"),
    Architecture(d_model=128, ffn=256, layers=2, heads=8, kv_heads=8, head_dim=16, vocab=VOCAB, scale="gpu",
                 name="gpu-b"),
)
RECIPE = {
    "seq_length": 128, "global_batch": 32, "lr": 0.003, "min_lr_ratio": 0.1, "warmup_fraction": 0.05,
    "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95, "clip_grad": 1.0, "init_std": 0.02,
    "seed": 7, "eval_tokens": 8192, "eval_interval": 0,
}
TRAIN_TOKENS = 200 * 32 * 128  # 200 steps


def spec(arch: Architecture) -> Architecture:
    """``arch`` with the schema's network settings (throughput and the check do not depend on them)."""
    from archscale.study import default_spec

    return default_spec(arch)


def train_job(arch: Architecture, workdir: Path, manifest: Path):
    from archscale.train.job import TrainJob

    root = workdir / arch.arch_id
    return TrainJob(
        arch=spec(arch), budget={"tokens": TRAIN_TOKENS, "scale": arch.scale, "n_target": arch.params_non_embedding},
        recipe=RECIPE, manifest=str(manifest), checkpoint_dir=str(root / "ckpt"), metrics=str(root / "metrics.json"),
        curve=str(root / "curve.parquet"), final=str(root / "final"),
        hardware={"micro_batch": 32, "threads": 1, "precision": "bf16", "checkpoint_interval": 1000},
    )


def workload() -> dict:
    """Long enough windows for the NVML counter (it updates about every 10 ms)."""
    return {"engine": "megatron", "weights": "trained", "input_len": 128, "output_len": 256, "batch_sizes": [1, 32],
            "warmup": 1, "repeats": 5}


HARDWARE = {"threads": 1, "require_nvml": True, "nvml_interval_s": 0.02, "megatron_engine": "dynamic",
            "precision": "bf16"}


def energy_checks(record: dict) -> list[str]:
    """Failures of one throughput record (empty: passed)."""
    fails = []
    limit = (record.get("nvml_device") or {}).get("power_limit_w")
    if not record.get("nvml_available"):
        fails.append(f"{record.get('arch_id')}: NVML unavailable ({record.get('nvml_unavailable_reason')})")
    for r in record.get("records", []):
        where = f"{record.get('arch_id')} batch {r.get('batch_size')}"
        jpt = r.get("energy_j_per_output_token")
        if jpt is None or not jpt > 0:
            fails.append(f"{where}: energy per output token {jpt!r} is not > 0")
        for key in ("power_mean_w", "power_peak_w"):
            w = r.get(key)
            if w is None or not w > 0:
                fails.append(f"{where}: {key} {w!r} is not > 0")
            elif limit is not None and w > limit * 1.05:  # averaged readings may overshoot briefly
                fails.append(f"{where}: {key} {w:.1f} W above the card's limit {limit:.1f} W")
    return fails


def summarise(trained: list[dict], throughput: list[dict], export: dict | None, wall_s: float) -> dict:
    """The JSON of the check: per architecture the training loss, medians, energy; all failures."""
    fails = [f for rec in throughput for f in energy_checks(rec)]
    if export is None:
        fails.append("export failed")
    rows = []
    for t, rec in zip(trained, throughput):
        rows.append({
            "arch_id": rec["arch_id"], "final_valid_loss": t.get("valid_loss"), "train_s": t.get("wall_s"),
            "train_precision": t.get("precision"),
            "engine": rec["engine"], "precision": rec["precision"], "device_name": rec["device_name"],
            "batches": [{k: r.get(k) for k in ("batch_size", "mode", "median", "energy_j_per_output_token",
                                               "power_mean_w", "power_peak_w", "energy_source", "machine_before",
                                               "machine_after")} for r in rec["records"]],
        })
    return {"ok": not fails, "failures": fails, "architectures": rows, "nvml_device": throughput[0]["nvml_device"]
            if throughput else None, "versions": throughput[0].get("versions") if throughput else None,
            "export": export, "wall_s": wall_s}


def run(workdir: Path) -> dict:
    import torch

    from archscale.data.dataset import write_synthetic_manifest
    from archscale.data.tokenizer import train_bpe
    from archscale.export import export_checkpoint
    from archscale.io import read_json, write_json
    from archscale.throughput.job import run_job
    from archscale.train import launcher

    if not torch.cuda.is_available():
        raise RuntimeError("gpu_check needs a GPU (torch.cuda.is_available() is False)")
    t0 = time.perf_counter()
    manifest = write_synthetic_manifest(workdir / "data", vocab_size=VOCAB, train_tokens=2 * TRAIN_TOKENS, seed=1)
    trained, throughput = [], []
    for arch in ARCHS:
        job = train_job(arch, workdir, manifest)
        t = time.perf_counter()
        rc = launcher.launch(job, gpus=1)
        if rc:
            raise RuntimeError(f"training {arch.arch_id} failed with exit code {rc} (see {job.checkpoint_dir})")
        metrics = read_json(job.metrics)
        trained.append({"valid_loss": metrics.get("valid_loss"), "precision": metrics.get("precision"),
                        "wall_s": time.perf_counter() - t})
        throughput.append(run_job(spec(arch), workload(), HARDWARE, checkpoint=job.final))
    tok = train_bpe(["The quick brown fox jumps over the lazy dog. " * 3, "def f(x):\n    return x + 1\n"] * 20,
                    VOCAB, EOD)
    tok_file, meta = workdir / "tokenizer.json", workdir / "tokenizer.meta.json"
    tok.save(str(tok_file))
    write_json(meta, {"vocab_size": VOCAB, "eod_id": tok.token_to_id(EOD), "eod_token": EOD})
    try:
        export = export_checkpoint(train_job(ARCHS[0], workdir, manifest).final, workdir / "export",
                                   tokenizer_file=tok_file, tokenizer_meta_file=meta)
    except Exception as exc:  # reported in the JSON, not hidden
        print(f"gpu_check: export failed: {exc}", file=sys.stderr)
        export = None
    return summarise(trained, throughput, export, time.perf_counter() - t0)


def main(argv=None) -> int:
    from archscale.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/gpu_check.json")
    ap.add_argument("--workdir", help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(args.workdir or tmp))
    write_json(args.out, result)
    print(f"gpu_check: {'ok' if result['ok'] else 'FAILED'} -> {args.out}", file=sys.stderr)
    for f in result["failures"]:
        print(f"  {f}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
