"""Decode throughput on CPU: archscale (FastDecoder: static KV cache over megatron-core's weights) vs transformers' generate.

    .venv/bin/python bench/bench_decode.py [--threads 2] [--repeats 5] [--out bench/results/decode.json]

Same architecture, same weights (archscale's megatron model converted to LlamaForCausalLM, so
both engines generate the same greedy tokens: checked), fp32, same prompts, end of sequence
ignored. transformers runs ``generate(..., cache_implementation="static")``. Per engine and
batch size: prefill latency (a generation of one token), decode tokens/s
(``B*(O-1) / (t_full - t_prefill)``), output tokens/s (``B*O / t_full``); median of
``--repeats`` after one warm-up. The memory-bandwidth roofline of the same run (copy bandwidth
and matmul FLOP/s measured here, archscale.throughput.roofline) gives the ideal decode tokens/s.
Goals: mini-llama at batch 1 >= 2,000 output tokens/s on 2 cores
(``goal_2000_output_tokens_per_s``); llama-25m at batch 1 and 8 at least transformers' decode
tokens/s. Load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from archscale.arch import Architecture
from archscale.io import write_json
from archscale.config import schema_default
from archscale.model import build_model, resolve_runtime, setup_runtime
from archscale.throughput.engine import random_prompts
from archscale.throughput.fastdecode import FastDecoder, model_weights
from archscale.export import megatron_to_hf_state_dict
from archscale.throughput.hf_config import hf_llama_model
from archscale.throughput.nvml import cpu_model
from archscale.throughput.roofline import measure_device, roofline_times

ROPE = float(schema_default("model.rope_base"))

ARCHS = {
    # the embedded default's LLaMA-like point (overhead-bound: 2 layers, d=96)
    "mini-llama": Architecture(d_model=96, ffn=144, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=512,
                               scale="s100k", name="mini-llama"),
    # a small LLaMA-3.2-style model (memory-bound on CPU): 8 layers, d=512, GQA 4, 32k vocab
    "llama-25m": Architecture(d_model=512, ffn=1536, layers=8, heads=8, kv_heads=2, head_dim=64, vocab=32000,
                              name="llama-25m"),
}


def timed_interleaved(engines: dict, repeats: int) -> dict:
    """Median seconds of each engine's (one-token, full) generations, alternating engines per repeat.

    Alternating keeps a shared machine's contention from favouring one engine.
    """
    times = {name: {"one": [], "full": [], "full_cpu": []} for name in engines}
    for name, (one, full) in engines.items():  # warm-up
        one(), full()
    for _ in range(repeats):
        for name, (one, full) in engines.items():
            for kind, fn in (("one", one), ("full", full)):
                c, t = time.process_time(), time.perf_counter()
                fn()
                times[name][kind].append(time.perf_counter() - t)
                if kind == "full":
                    times[name]["full_cpu"].append(time.process_time() - c)
    return times


def bench_arch(arch: Architecture, input_len: int, output_len: int, batches, repeats: int, device: dict) -> dict:
    runtime = resolve_runtime(cuda_available=False, te_installed=False)
    torch.manual_seed(0)
    mcore = build_model(arch, runtime, max_sequence_length=input_len + output_len, rope_base=ROPE).eval()
    hf = hf_llama_model(arch.with_network(rope_base=ROPE), dtype="float32",
                        max_position_embeddings=input_len + output_len)
    hf.load_state_dict(megatron_to_hf_state_dict(mcore.state_dict(), arch), strict=False)
    dec = FastDecoder(model_weights(mcore), runtime, input_len + output_len)
    rows = []
    for b in batches:
        prompts = random_prompts(arch.vocab, b, input_len, seed=b)

        def hf_gen(n):
            with torch.inference_mode():
                return hf.generate(prompts, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                   cache_implementation="static", pad_token_id=0)[:, input_len:]

        same = torch.equal(dec.generate(prompts, output_len).tokens, hf_gen(output_len))
        engines = {
            "archscale": (lambda: dec.generate(prompts, 1), lambda: dec.generate(prompts, output_len)),
            "transformers_static_cache": (lambda: hf_gen(1), lambda: hf_gen(output_len)),
        }
        row = {"batch_size": b, "same_tokens": same}
        times = timed_interleaved(engines, repeats)
        for name in engines:
            t1, tf = statistics.median(times[name]["one"]), statistics.median(times[name]["full"])
            all_full = times[name]["full"]
            row[name] = {
                "prefill_s": t1,
                "full_s": tf,
                "full_s_repeats": all_full,
                "full_cpu_s": statistics.median(times[name]["full_cpu"]),
                "decode_tokens_per_s": b * (output_len - 1) / (tf - t1),
                "output_tokens_per_s": b * output_len / tf,
            }
        rp, rd = roofline_times(arch, input_len, output_len, b, device["mem_bw_bytes_per_s"],
                                device["matmul_flops_per_s"], device["dtype_bytes"])
        row["roofline"] = {"prefill_s": rp, "decode_tokens_per_s": b * (output_len - 1) / rd,
                           "output_tokens_per_s": b * output_len / (rp + rd)}
        row["archscale_over_transformers_decode"] = (
            row["archscale"]["decode_tokens_per_s"] / row["transformers_static_cache"]["decode_tokens_per_s"]
        )
        row["archscale_fraction_of_roofline_decode"] = (
            row["archscale"]["decode_tokens_per_s"] / row["roofline"]["decode_tokens_per_s"]
        )
        if arch.name == "mini-llama" and b == 1:
            row["goal_2000_output_tokens_per_s"] = row["archscale"]["output_tokens_per_s"] >= 2000
        rows.append(row)
        print(f"{arch.label()} B={b}: archscale {row['archscale']['decode_tokens_per_s']:.0f} tok/s, "
              f"transformers {row['transformers_static_cache']['decode_tokens_per_s']:.0f} tok/s, roofline "
              f"{row['roofline']['decode_tokens_per_s']:.0f} tok/s, same tokens {same}", file=sys.stderr)
    return {"arch": arch.to_dict(), "input_len": input_len, "output_len": output_len, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--out", default="bench/results/decode.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup_runtime(resolve_runtime(cuda_available=False, te_installed=False), 0)
    device = measure_device("cpu", torch.float32)
    print(f"device: {device['mem_bw_bytes_per_s'] / 1e9:.1f} GB/s copy, "
          f"{device['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s fp32 matmul, {args.threads} threads", file=sys.stderr)
    import transformers

    result = {
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "load_average_start": os.getloadavg(),
        "device": device,
        "repeats": args.repeats,
        "cases": [bench_arch(ARCHS[name], args.input_len, args.output_len, args.batch_sizes, args.repeats, device)
                  for name in args.archs],
    }
    result["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
