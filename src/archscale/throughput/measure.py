"""One batch size measured: warm-up, timed repeats in a mode, medians with intervals, machine state.

Modes (every record names its own):

* ``prefill+decode``: prefill the prompts, then ``output_len - 1`` decode steps (vLLM's
  offline workload). Rates: ``decode = B*(O-1)/decode_s``, ``output = B*O/(prefill_s + decode_s)``.
* ``decode_at_context``: ``output_len`` decode steps from KV length ``context`` with the cache
  filled with arbitrary values (no prefill paid); the prefill of ``input_len`` tokens is timed
  separately in the same repeat (``input_len`` 0: not measured, ``prefill_latency_s`` None). Rates: ``decode = output = B*O/decode_s``.

The machine state (1/5/15-minute load average; on GPU the SM and memory clocks from NVML) is
read before and after the timed repeats, so a reader sees whether anything else ran.
"""

from __future__ import annotations

import os
import time

from . import stats
from .nvml import energy_delta_mj

MODES = ("prefill+decode", "decode_at_context")
RATE_KEYS = ("prefill_latency_s", "decode_s", "decode_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s")


def check_mode(mode: str, context: int | None, input_len: int) -> tuple[str, int | None]:
    """Validate ``throughput.mode``/``throughput.context`` (errors name the key)."""
    if mode not in MODES:
        raise ValueError(f"throughput.mode: '{mode}' is not one of {', '.join(MODES)}")
    if input_len < (0 if mode == "decode_at_context" else 1):
        raise ValueError(f"throughput.input_len must be positive (0 allowed at decode_at_context), got {input_len}")
    if mode == "decode_at_context":
        if context is None:
            context = input_len
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            raise ValueError(f"throughput.context must be a positive integer, got {context!r}")
        return mode, context
    if context is not None:
        raise ValueError("throughput.context is set but throughput.mode is not decode_at_context")
    return mode, None


def machine_state(reader=None) -> dict:
    """Load averages and (with an NVML reader) GPU clocks, read now."""
    one, five, fifteen = os.getloadavg()
    state = {"load_average_1m": one, "load_average_5m": five, "load_average_15m": fifteen}
    if reader is not None:
        s = reader.sample()
        state.update(sm_clock_mhz=s.get("sm_clock_mhz"), mem_clock_mhz=s.get("mem_clock_mhz"),
                     temperature_c=s.get("temperature_c"))
    return state


def repeat_record(mode: str, batch: int, input_len: int, output_len: int, prefill_s: float, decode_s: float) -> dict:
    if mode == "decode_at_context":
        rate = batch * output_len / decode_s if decode_s > 0 else None
        return {"prefill_latency_s": prefill_s, "decode_s": decode_s, "decode_tokens_per_s": rate,
                "output_tokens_per_s": rate, "total_tokens_per_s": None}
    total = prefill_s + decode_s
    return {
        "prefill_latency_s": prefill_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": batch * (output_len - 1) / decode_s if output_len > 1 and decode_s > 0 else None,
        "output_tokens_per_s": batch * output_len / total,
        "total_tokens_per_s": batch * (input_len + output_len) / total,
    }


def run_once(decoder, mode: str, prompts, output_len: int, context: int | None, seed: int = 0):
    """One repeat: ``(prefill_s, decode_s, tokens)``."""
    if mode == "decode_at_context":
        # the prefill of input_len, timed on its own (input_len 0: not measured)
        prefill = decoder.generate(prompts, 1).prefill_s if prompts.shape[1] else None
        gen = decoder.decode_at_context(prompts.shape[0], context, output_len, seed=seed)
        return prefill, gen.decode_s, gen.tokens
    gen = decoder.generate(prompts, output_len)
    return gen.prefill_s, gen.decode_s, gen.tokens


def medians(repeats: list[dict]) -> dict:
    """Median and 95% interval of every rate over the repeats (``None`` where a rate is undefined)."""
    out = {}
    for key in RATE_KEYS:
        values = [r[key] for r in repeats if r.get(key) is not None]
        out[key] = stats.median_interval(values, what=key).to_dict() if values else None
    return out


def measure_batch(decoder, mode: str, prompts, output_len: int, context: int | None, warmup: int, repeats: int,
                  reader=None, energy_mj=None) -> dict:
    """Warm-up, then ``repeats`` timed repeats of one batch size.

    ``energy_mj()`` (an NVML sampler's counter read) gives each repeat's ``energy_j``.
    """
    batch, input_len = prompts.shape
    for _ in range(warmup):
        run_once(decoder, mode, prompts, output_len, context)
    before = machine_state(reader)
    reps = []
    t0 = time.perf_counter()
    for i in range(repeats):
        cpu0 = time.process_time()
        e0 = energy_mj() if energy_mj else None
        prefill_s, decode_s, tokens = run_once(decoder, mode, prompts, output_len, context, seed=i)
        rep = repeat_record(mode, batch, input_len, output_len, prefill_s, decode_s)
        # CPU seconds of this process (all threads): wall time well above cpu_time_s / threads
        # means the job waited for a core.
        rep["cpu_time_s"] = time.process_time() - cpu0
        e1 = energy_mj() if energy_mj else None
        rep["energy_j"] = energy_delta_mj(e0, e1) / 1000.0 if e0 is not None and e1 is not None else None
        reps.append(rep)
    window = time.perf_counter() - t0
    return {
        "batch_size": batch,
        "mode": mode,
        "context": context,
        "input_len": input_len,
        "output_len": output_len,
        "median": medians(reps),
        "repeats": reps,
        "timed_window_s": window,
        "machine_before": before,
        "machine_after": machine_state(reader),
    }
