"""Measure architectures without Snakemake: one alone, or several interleaved with ratios to a baseline.

The library core of ``archscale throughput`` and of ``bench/bench_fig2.py``. Random weights
(throughput does not depend on the values), archscale's static-cache decoder
(:class:`~archscale.throughput.fastdecode.FastDecoder`), modes of :mod:`.measure`. Several
architectures at one batch size are measured in rounds A B C A B C ... (:func:`.stats.interleave`),
so drift and background load hit all of them; each candidate's ratio of median output
tokens/s to the baseline's carries a bootstrap interval and a verdict.
"""

from __future__ import annotations

import time

from ..arch import Architecture
from . import stats
from .measure import check_mode, machine_state, medians, repeat_record, run_once


def build_decoder(arch: Architecture, runtime, max_seq: int, seed: int):
    """:class:`FastDecoder` of the spec ``arch`` on seeded random weights (no megatron model is built)."""
    from .fastdecode import FastDecoder, random_weights

    return FastDecoder(random_weights(arch, runtime, seed=seed), runtime, max_seq)


def measure_interleaved(
    decoders: dict[str, object],
    vocab: dict[str, int],
    batch: int,
    input_len: int,
    output_len: int,
    mode: str,
    context: int | None,
    repeats: int,
    warmup: int = 1,
    seed: int = 1234,
    baseline: str | None = None,
    clock=time.perf_counter,
) -> dict:
    """Every decoder at one batch size, interleaved; medians with intervals; ratios to ``baseline``."""
    from .engine import random_prompts

    if repeats < stats.MIN_REPEATS:
        raise ValueError(f"--repeats must be at least {stats.MIN_REPEATS} for a 95% interval, got {repeats}")
    mode, context = check_mode(mode, context, input_len)
    prompts = {n: random_prompts(vocab[n], batch, input_len, seed + batch) for n in decoders}
    counter = iter(range(10**9))

    def arm(name):
        def call():
            prefill_s, decode_s, _ = run_once(decoders[name], mode, prompts[name], output_len, context,
                                              seed=next(counter))
            return repeat_record(mode, batch, input_len, output_len, prefill_s, decode_s)

        return call

    before = machine_state()
    runs = stats.interleave({n: arm(n) for n in decoders}, repeats, warmup, clock=clock)
    after = machine_state()
    out = {"batch_size": batch, "input_len": input_len, "output_len": output_len, "mode": mode,
           "context": context, "repeats": repeats, "machine_before": before, "machine_after": after,
           "architectures": {}}
    for name, rows in runs.items():
        reps = [r["result"] for r in rows]
        out["architectures"][name] = {"median": medians(reps), "repeats": reps}
    if baseline is not None:
        base = [r["output_tokens_per_s"] for r in out["architectures"][baseline]["repeats"]]
        for name, res in out["architectures"].items():
            if name != baseline:
                rates = [r["output_tokens_per_s"] for r in res["repeats"]]
                res["vs_baseline"] = {"baseline": baseline, **stats.compare_rates(rates, base)}
    return out


def measure(
    archs: dict[str, Architecture],
    batch_sizes: list[int],
    input_len: int,
    output_len: int,
    context: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    seed: int = 1234,
    baseline: str | None = None,
) -> dict:
    """Build every architecture (specs, random weights) and measure them per batch size, interleaved."""
    import torch

    from ..model import resolve_runtime
    from ..study import default_spec

    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"--batch-size must be positive integers, got {batch_sizes}")
    if input_len < 0 or output_len < 1:
        raise ValueError(f"--input-len must be >= 0 and --output-len positive, got {input_len}, {output_len}")
    if threads is not None:
        torch.set_num_threads(threads)
    mode = "decode_at_context" if context is not None else "prefill+decode"
    runtime = resolve_runtime("auto", "auto")
    max_seq = max(input_len, context or 0) + output_len
    t0 = time.perf_counter()
    archs = {n: default_spec(a) for n, a in archs.items()}
    decoders = {n: build_decoder(a, runtime, max_seq, seed) for n, a in archs.items()}
    setup_s = time.perf_counter() - t0
    results = [
        measure_interleaved(decoders, {n: a.vocab for n, a in archs.items()}, b, input_len, output_len, mode,
                            context, repeats, warmup, seed, baseline)
        for b in sorted(set(batch_sizes))
    ]
    return {
        "architectures": {n: a.to_dict() for n, a in archs.items()},
        "baseline": baseline,
        "engine": "archscale-static",
        "weights": "random",
        "device": runtime.device,
        "precision": runtime.precision,
        "threads": torch.get_num_threads(),
        **next(iter(archs.values())).network(),
        "setup_s": setup_s,
        "results": results,
    }
