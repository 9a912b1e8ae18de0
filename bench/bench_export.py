"""Export cost on CPU: wall time and peak memory of archscale.export for a model of ~100M parameters.

    .venv/bin/python bench/bench_export.py [--out bench/results/export.json]

Runs in a fresh process per measurement (peak RSS is per process): build the megatron-core model
(fp32), save it as a final checkpoint (dist_checkpointing, the training stage's save_final),
then time ``export_checkpoint`` (load, map, write safetensors + tokenizer, and the logit check
that loads the export back with transformers). Reports the peak resident memory of the export
process relative to the fp32 size of the model: the basis of ``export.mem_mb`` in
config/paper.yaml.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = dict(d_model=768, ffn=2048, layers=12, heads=12, kv_heads=4, head_dim=64, vocab=32000, tied=False, scale="b")


def _save(tmp: Path) -> dict:
    from types import SimpleNamespace

    from archscale.arch import Architecture
    from archscale.io import write_json
    from archscale.model import build_model, resolve_runtime, setup_runtime
    from archscale.checkpoint import save_final

    rt = resolve_runtime("fp32", "local", cuda_available=False)
    setup_runtime(rt, 0)
    arch = Architecture(**ARCH)
    model = build_model(arch, rt, 128, rope_base=500000.0)
    save_final(tmp / "final", SimpleNamespace(module=model), {"arch": arch.to_dict(), "arch_id": arch.arch_id,
                                                              "seq_length": 128, "rope_base": 500000.0,
                                                              "precision": "fp32"})
    write_json(tmp / "meta.json", {"vocab_size": 512, "eod_id": 0, "eod_token": "<|endoftext|>"})
    return {"arch_id": arch.arch_id, "params_total": arch.params_total}


def _export(tmp: Path, verify: bool) -> dict:
    from archscale.export import export_checkpoint

    t0 = time.perf_counter()
    rec = export_checkpoint(tmp / "final", tmp / f"hf-{verify}", tokenizer_file=tmp / "tokenizer.json",
                            tokenizer_meta_file=tmp / "meta.json", verify=verify)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"verify": verify, "wall_s": wall, "peak_rss_bytes": peak,
            "max_abs_logit_diff": (rec.get("verify") or {}).get("max_abs_logit_diff"),
            "safetensors_bytes": (tmp / f"hf-{verify}" / "model.safetensors").stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "export.json"))
    ap.add_argument("--child", nargs=2, metavar=("STEP", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        step, tmp = args.child[0], Path(args.child[1])
        if step == "save":
            import itertools

            from archscale.data.corpus import read_documents
            from archscale.data.tokenizer import train_bpe

            docs = itertools.islice(read_documents(ROOT / "resources" / "sample" / "plays" / "plays-0000.json.gz"), 20)
            tok = train_bpe([d.text for d in docs], 512, "<|endoftext|>")
            tok.save(str(tmp / "tokenizer.json"))
            out = _save(tmp)
        else:
            out = _export(tmp, verify=step == "verify")
        print("RESULT " + json.dumps(out))
        return

    import tempfile

    def child(step: str, tmp: str) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--child", step, tmp], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])

    with tempfile.TemporaryDirectory() as tmp:
        model = child("save", tmp)
        runs = [child("noverify", tmp), child("verify", tmp)]
    fp32_bytes = 4 * model["params_total"]
    for r in runs:
        r["peak_rss_over_fp32_model"] = r["peak_rss_bytes"] / fp32_bytes
    result = {"model": {**ARCH, **model, "fp32_bytes": fp32_bytes}, "runs": runs,
              "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
