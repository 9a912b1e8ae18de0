"""The paper's Figure 2 mechanism at its 1B shapes on CPU: decode at context, ratios to LLaMA-3.2-1B.

    .venv/bin/python bench/bench_fig2.py [--threads 2] [--repeats 5] [--steps 4] [--memory-gib 14]
    .venv/bin/python bench/bench_fig2.py --quick          # smoke test: tiny shapes, seconds

1B shapes (16 layers, head dim 64, vocab 128256, tied), random weights, fp32, archscale's
static-cache decoder, decode at context T (cache filled, no prefill paid; ``--steps`` decode
steps per repeat). Every comparison runs the baseline (LLaMA-3.2-1B) and one candidate
interleaved in one process (A B A B ...), median of ``--repeats`` after one warm-up; the ratio of
median output tokens/s carries a percentile bootstrap interval and a verdict ("faster" only
when its lower bound is above 1).

1. Ablations at batch 32, context 2048: only d varies (f = 4d, h = d/64, GQA 4: r = 4.8 fixed);
   only r varies (d 2048, GQA 4, h in 16..64 with f keeping N about fixed); only GQA varies
   (h 32, GQA 1, 2, 4, 8).
2. LLaMA-3.2-1B, Panda-1B, Surefire-1B (method.md) at batch 8 and 32, context 1024 and 4096.
   The paper reports Surefire +42% over LLaMA-3.2 (vLLM, A100 40GB); the CPU shows its own.

Where the two models and their KV caches exceed ``--memory-gib`` the batch is halved until they
fit (recorded as ``batch_size`` with ``batch_requested``). Load average before/after is in
every comparison and in the file. Output: ``bench/results/fig2.json`` (``--quick``:
``bench/results/fig2-quick.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch

from archscale.arch import Architecture
from archscale.config import schema_default
from archscale.io import write_json
from archscale.model import resolve_runtime
from archscale.throughput.compare import build_decoder, measure_interleaved
from archscale.throughput.nvml import cpu_model
from archscale.ranks import spearman
from archscale.throughput.roofline import decode_roofline_s, measure_device
from archscale.throughput.stats import Estimate

PAPER_SUREFIRE_1B_SPEEDUP = 1.42  # vLLM, A100 40GB, 4096 in / 1024 out (the paper's headline)
V, DH, L = 128256, 64, 16


def one_b(name: str, d: int, f: int, h: int, g: int) -> Architecture:
    return Architecture(d_model=d, ffn=f, layers=L, heads=h, kv_heads=g, head_dim=DH, vocab=V, name=name)


LLAMA = one_b("LLaMA-3.2-1B", 2048, 8192, 32, 8)
PANDA = one_b("Panda-1B", 2560, 4096, 72, 18)
SUREFIRE = one_b("Surefire-1B", 2560, 6144, 36, 4)
ROPE = float(schema_default("model.rope_base"))  # decode time does not depend on it


def ablations() -> dict[str, list[Architecture]]:
    """Candidates of each ablation; LLaMA-3.2-1B (d 2048, h 32, GQA 4) is the baseline and a point of each."""
    d_only = [one_b(f"d{d}", d, 4 * d, d // DH, d // DH // 4) for d in (1536, 2560, 3072)]
    # r only: d 2048, GQA 4; h moves and f compensates so that N stays about LLaMA's
    budget = 3 * 8192 + 2 * DH * 40  # 3f + 2*dh*(h+g) per unit of d, at h=32, g=8
    r_only = []
    for h in (16, 48, 64):
        f = round((budget - 2 * DH * (h + h // 4)) / 3 / 64) * 64
        r_only.append(one_b(f"h{h}-f{f}", 2048, f, h, h // 4))
    gqa_only = [one_b(f"gqa{q}", 2048, 8192, 32, 32 // q) for q in (1, 2, 8)]
    return {"d_only": d_only, "r_only": r_only, "gqa_only": gqa_only}


def shrink(a: Architecture, quick: bool) -> Architecture:
    """``--quick``: the same proportions at a tiny scale (layers 2, d/16, vocab 1024)."""
    if not quick:
        return a
    return dataclasses.replace(a, d_model=a.d_model // 16, ffn=a.ffn // 16, layers=2, vocab=1024,
                               heads=a.heads, head_dim=8)


def bytes_needed(archs: list[Architecture], batch: int, max_seq: int) -> int:
    """fp32 weights and KV caches of the models held together, logits, plus 1 GiB of slack."""
    kv = sum(2 * a.layers * a.kv_heads * a.head_dim * batch * max_seq for a in archs)
    return 4 * (sum(a.params_total for a in archs) + kv) + 4 * batch * max(a.vocab for a in archs) * 4 + (1 << 30)


def fit_batch(archs: list[Architecture], batch: int, max_seq: int, budget: int) -> int:
    while batch > 1 and bytes_needed(archs, batch, max_seq) > budget:
        batch //= 2
    return batch


class Decoders:
    """Built decoders, kept while used (the baseline stays; candidates are freed after use)."""

    def __init__(self, runtime, max_seq: int, seed: int):
        self.runtime, self.max_seq, self.seed, self.built = runtime, max_seq, seed, {}

    def get(self, a: Architecture):
        if a.name not in self.built:
            self.built[a.name] = build_decoder(a.with_network(rope_base=ROPE), self.runtime, self.max_seq, self.seed)
        return self.built[a.name]

    def free(self, keep: str) -> None:
        for name in [n for n in self.built if n != keep]:
            del self.built[name]
        for dec in self.built.values():
            dec.drop_caches()


def compare(decs: Decoders, base: Architecture, cand: Architecture, batch: int, context: int, args) -> dict:
    budget = int(args.memory_gib * 1024**3)
    used = fit_batch([base, cand], batch, context + args.steps, budget)
    t0 = time.perf_counter()
    res = measure_interleaved({base.name: decs.get(base), cand.name: decs.get(cand)},
                              {base.name: base.vocab, cand.name: cand.vocab}, used, 0, args.steps,
                              "decode_at_context", context, args.repeats, warmup=1, seed=args.seed,
                              baseline=base.name)
    decs.free(keep=base.name)
    res.update(batch_requested=batch, wall_s=time.perf_counter() - t0,
               candidate=cand.to_dict(), baseline_arch=base.to_dict())
    vs = res["architectures"][cand.name]["vs_baseline"]
    print(f"  {cand.name} / {base.name} at B={used} T={context}: {Estimate(**vs['ratio']).text('.3f')} "
          f"({vs['verdict']}), load {res['machine_before']['load_average_1m']:.2f} -> "
          f"{res['machine_after']['load_average_1m']:.2f}", file=sys.stderr)
    return res


def ranking(comparisons: list[dict], dev: dict, steps: int) -> dict:
    """How the roofline ranks the measured candidates: its ratio to the baseline against the
    measured ratio, one point per comparison (each at its own batch and context), Spearman.

    Within one setting a calibration ``scale*t + overhead`` is monotone in the roofline time, so
    the calibrated and the plain roofline rank alike; ratios cancel the setting's common terms.
    """
    points = []
    for res in comparisons:
        base, cand = Architecture.from_dict(res["baseline_arch"]), Architecture.from_dict(res["candidate"])
        b, t = res["batch_size"], res["context"]
        roof = decode_roofline_s(base, t, steps, b, dev) / decode_roofline_s(cand, t, steps, b, dev)
        measured = res["architectures"][cand.name]["vs_baseline"]["ratio"]["value"]
        points.append({"candidate": cand.name, "batch_size": b, "context": t,
                       "measured_ratio": measured, "roofline_ratio": roof})
    return {"points": points, "spearman": spearman([p["roofline_ratio"] for p in points],
                                                    [p["measured_ratio"] for p in points])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="decode steps per repeat")
    ap.add_argument("--memory-gib", type=float, default=14.0,
                    help="budget for two models and their caches (24 GiB machines: 14; the OS, the logits and allocator slack need the rest; 20 was OOM-killed at B=32, T=4096)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="smoke test at tiny shapes")
    ap.add_argument("--models-only", action="store_true", help="skip the ablations")
    ap.add_argument("--settings", help="model settings as B:T[,B:T...] (default 8:1024,32:1024,8:4096,32:4096)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    ablation_setting = (4, 64) if q else (32, 2048)
    model_settings = [(2, 32), (4, 64)] if q else [(8, 1024), (32, 1024), (8, 4096), (32, 4096)]
    if args.settings:
        model_settings = [tuple(int(v) for v in bt.split(":")) for bt in args.settings.split(",")]
    max_seq = max(t for _, t in model_settings + [ablation_setting]) + args.steps
    runtime = resolve_runtime(cuda_available=False, te_installed=False)
    decs = Decoders(runtime, max_seq, args.seed)
    base = shrink(LLAMA, q)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    dev = measure_device("cpu")
    out = {"ablations": {}, "models": []}
    path = Path(args.out or f"bench/results/fig2{'-quick' if q else ''}.json")
    partial = path.with_suffix(".partial.json")

    def keep(res: dict) -> dict:  # a kill (memory, time) loses at most the comparison under way
        write_json(partial, {"complete": False, "load_average_start": load_start, **out})
        return res

    b, t = ablation_setting
    for group, cands in ({} if args.models_only else ablations()).items():
        print(f"{group} (B={b}, T={t}):", file=sys.stderr)
        out["ablations"][group] = []
        for c in cands:
            out["ablations"][group].append(compare(decs, base, shrink(c, q), b, t, args))
            keep(out)
    print("LLaMA-3.2-1B, Panda-1B, Surefire-1B:", file=sys.stderr)
    for b, t in model_settings:
        for cand in (PANDA, SUREFIRE):
            out["models"].append(compare(decs, base, shrink(cand, q), b, t, args))
            keep(out)
    abl = [r for rows in out["ablations"].values() for r in rows]
    out["roofline_ranking"] = {"ablations": ranking(abl, dev, args.steps),
                               "models": ranking(out["models"], dev, args.steps)}
    for k, v in out["roofline_ranking"].items():
        rho = v["spearman"]
        print(f"roofline ranking of the {k}: Spearman {rho if rho is None else round(rho, 3)} "
              f"over {len(v['points'])} ratios", file=sys.stderr)
    result = {
        "quick": q,
        "device": dev,
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "engine": "archscale-static (FastDecoder), fp32, random weights, decode_at_context",
        "repeats": args.repeats, "steps_per_repeat": args.steps, "memory_gib": args.memory_gib,
        "paper_surefire_1b_speedup": {"value": PAPER_SUREFIRE_1B_SPEEDUP, "source": "vLLM, A100 40GB, 4096/1024"},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
        **out,
    }
    write_json(path, result)
    partial.unlink(missing_ok=True)
    print(f"wrote {path} in {result['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
