"""One throughput job: an architecture, a workload, a device -> the record of ``throughput/{arch}.json``.

Per batch size: ``warmup`` untimed generations, then ``repeats`` timed ones (fixed random
prompts, greedy, end of sequence ignored). Per repeat: prefill latency, decode time and the
rates derived from them; the record keeps every repeat, their means, standard deviations and
coefficients of variation. Rates (B = batch, I = input_len, O = output_len):

* ``decode_tokens_per_s = B*(O-1) / decode_s`` (the first token comes out of the prefill);
* ``output_tokens_per_s = B*O / (prefill_s + decode_s)`` (vLLM's output throughput);
* ``total_tokens_per_s = B*(I+O) / (prefill_s + decode_s)`` (vLLM's total: prompt plus output).

NVML (when present) samples the whole timed window of a batch size; energy per repeat comes
from the counter read at repeat boundaries.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from statistics import fmean, stdev
from typing import Any

from ..arch import Architecture
from ..provenance import throughput_versions as _versions
from . import nvml as nvml_mod
from .measure import check_mode, measure_batch
from .roofline import measure_device, roofline_times
from .stats import Estimate

DEFAULT_SEED = 1234


def check_workload(workload: dict, checkpoint: str | None) -> dict:
    """Validate the workload dict (the rule's params: the schema's ``x-identity`` keys of the
    throughput section); errors name the config key. A key the schema gives a null default
    (``context``), and ``mode`` (absent from workloads of older records), take the schema's
    default when absent; every other key must be there."""
    from ..config import schema_default
    from ..study import identity_keys

    keys = identity_keys("throughput")
    optional = {k: schema_default(f"throughput.{k}") for k in ("mode", "context")}
    missing = [k for k in keys if k not in workload and k not in optional]
    if missing:
        raise ValueError(f"throughput workload: missing keys {missing} (config section 'throughput')")
    w = {**{k: v for k, v in optional.items() if k not in workload}, **workload}
    if w["engine"] not in ("megatron", "vllm"):
        raise ValueError(f"throughput.engine: '{w['engine']}' is not one of megatron, vllm")
    if w["weights"] not in ("random", "trained"):
        raise ValueError(f"throughput.weights: '{w['weights']}' is not one of random, trained")
    if w["weights"] == "trained" and not checkpoint:
        raise ValueError("throughput.weights is 'trained' but no checkpoint (results/train/{arch}/final) was given")
    for key in ("output_len", "repeats"):
        if not isinstance(w[key], int) or w[key] < 1:
            raise ValueError(f"throughput.{key} must be a positive integer, got {w[key]!r}")
    if not isinstance(w["input_len"], int) or w["input_len"] < 0:  # 0 only at decode_at_context (check_mode)
        raise ValueError(f"throughput.input_len must be a non-negative integer, got {w['input_len']!r}")
    if not isinstance(w["warmup"], int) or w["warmup"] < 0:
        raise ValueError(f"throughput.warmup must be a non-negative integer, got {w['warmup']!r}")
    bs = w["batch_sizes"]
    if not bs or any(not isinstance(b, int) or b < 1 for b in bs):
        raise ValueError(f"throughput.batch_sizes must be a non-empty list of positive integers, got {bs!r}")
    w["batch_sizes"] = sorted(set(bs))
    return w


def owned_cores(environ=None) -> int:
    """CPU cores this job may run on: its affinity mask (``os.sched_getaffinity``: what a cgroup,
    taskset or SLURM's binding gives it), at most ``SLURM_CPUS_PER_TASK`` inside a SLURM job."""
    environ = os.environ if environ is None else environ
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS has no affinity
        cores = os.cpu_count() or 1
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def load_warning(load_1m: float, threads: int, cores: int | None = None) -> str | None:
    """A warning when the 1-minute load average read before a measurement, rounded to whole
    cores, exceeds the cores its ``threads`` leave free on the machine (``cores``, default
    ``os.cpu_count()``: the load average counts the whole machine's runnable threads).

    Then other processes competed with the measurement for cores: its rates are low and noisy
    (``--threads 2`` on 2 busy cores measured decode 70x below a quiet machine). None otherwise.
    """
    cores = cores or os.cpu_count() or 1
    free = max(0, cores - threads)
    if round(load_1m) <= free:
        return None
    return (f"load average {load_1m:.2f} before the measurement exceeds the {free} of {cores} cores its {threads} "
            "threads leave free: other processes competed for the cores, so these rates are low and noisy; "
            "measure on a quiet machine or with fewer threads")


def _stats(values: list[float]) -> tuple[float, float | None, float | None]:
    mean = fmean(values)
    if len(values) < 2:
        return mean, None, None
    sd = stdev(values)
    return mean, sd, (sd / mean if mean else None)


def summarise_repeats(repeats: list[dict]) -> dict:
    """Means, standard deviations and coefficients of variation over the timed repeats."""
    out = {}
    for key in ("prefill_latency_s", "decode_s", "decode_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s"):
        values = [r[key] for r in repeats if r[key] is not None]
        if not values:
            out[key] = out[f"std_{key}"] = out[f"cv_{key}"] = None
            continue
        out[key], out[f"std_{key}"], out[f"cv_{key}"] = _stats(values)
    return out




def _peak_memory(runtime_on_gpu: bool) -> tuple[int, str]:
    if runtime_on_gpu:
        import torch

        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"


def build_megatron_model(a: Architecture, runtime, max_seq: int, checkpoint: str | None):
    """The model to measure: seeded random weights, or the training stage's final checkpoint.

    The checkpoint is ``results/train/{arch}/final`` as written by
    :func:`archscale.checkpoint.save_final` (dist_checkpointing, key ``model``, plus
    ``archscale.json``); its spec (shape and network settings) must be the job's.
    """
    from ..model import build_model

    if checkpoint is None:
        return build_model(a, runtime, max_sequence_length=max_seq)
    from ..checkpoint import DESCRIPTION, load_final
    from ..io import read_json

    desc_path = os.path.join(checkpoint, DESCRIPTION)
    if not os.path.isfile(desc_path):
        raise FileNotFoundError(
            f"throughput.weights is 'trained' but {checkpoint} is not a final checkpoint of the training "
            "stage (no archscale.json); run the train rule first or set throughput.weights: random"
        )
    trained = Architecture.from_record(read_json(desc_path))
    if trained.arch_id != a.arch_id:
        raise ValueError(f"{desc_path}: checkpoint of {trained.arch_id}, but the job measures {a.arch_id}")
    if trained.network() != a.network():
        raise ValueError(
            f"{desc_path}: trained with {trained.network()}, but the study's model settings are {a.network()}; "
            "re-run the train rule for this architecture"
        )
    model, _ = load_final(checkpoint, runtime)
    return model


def _job_threads(hardware: dict) -> int:
    """Torch threads of the measurement: ``threads``, else every core the job owns."""
    threads = owned_cores() if hardware.get("threads") is None else int(hardware["threads"])
    if threads < 1:
        raise ValueError(f"throughput.threads must be a positive integer, got {hardware['threads']!r}")
    return threads


def _decoder_kind(hardware: dict, w: dict, mode: str) -> str:
    """The megatron inference path (``megatron_engine``); decode_at_context needs the static cache."""
    kind = hardware["megatron_engine"]
    if mode == "decode_at_context":
        if kind not in ("auto", "fast") or w["engine"] != "megatron":
            raise ValueError(
                "throughput.mode decode_at_context runs on archscale's static-cache decoder: set "
                "throughput.engine megatron and megatron_engine auto or fast"
            )
        kind = "fast"
    return kind


def _build_decoder(a: Architecture, w: dict, runtime, kind: str, max_seq: int, seed: int, checkpoint: str | None):
    """The decoder that generates: the static-cache one, megatron's, or vLLM."""
    max_batch = max(w["batch_sizes"])
    if w["engine"] == "megatron":
        from .decoders import make_decoder, resolve_kind

        kind = resolve_kind(kind, runtime)
        if kind == "fast" and w["weights"] == "random":
            # the static-cache decoder on random weights in megatron's layout: no megatron
            # model to build (nor megatron-core to import), seconds per job on CPU
            from .fastdecode import FastDecoder, random_weights

            return FastDecoder(random_weights(a, runtime, seed=seed), runtime, max_seq)
        from ..model import setup_runtime

        setup_runtime(runtime, seed)
        model = build_megatron_model(a, runtime, max_seq, checkpoint if w["weights"] == "trained" else None)
        return make_decoder(kind, model, a, runtime, max_batch, max_seq, seed)
    from .vllm_engine import VllmDecoder

    if w["weights"] == "trained":
        raise ValueError("throughput.engine vllm runs on dummy weights; set throughput.weights: random")
    return VllmDecoder(a, max_batch, max_seq, seed)


def _batch_record(a: Architecture, decoder, w: dict, batch: int, *, mode: str, context: int | None, seed: int,
                  runtime, roof_dev: dict, reader, interval: float, threads: int, max_seq: int) -> dict:
    """Measure one batch size: the timed repeats, their summary, memory, roofline and energy."""
    import torch

    from .engine import random_prompts

    prompts = random_prompts(a.vocab, batch, w["input_len"], seed + batch, runtime.device)
    if runtime.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    sampler = nvml_mod.Sampler(reader, interval) if reader is not None else None
    if sampler:
        sampler.start()
    m = measure_batch(decoder, mode, prompts, w["output_len"], context, w["warmup"], w["repeats"],
                      reader=reader, energy_mj=sampler.energy_mj if sampler else None)
    window = sampler.stop() if sampler else None
    peak, peak_kind = _peak_memory(runtime.on_gpu)
    out_tokens = batch * w["output_len"] * w["repeats"]
    roof = (roof_dev["mem_bw_bytes_per_s"], roof_dev["matmul_flops_per_s"], roof_dev["dtype_bytes"])
    roof_prefill, roof_decode = roofline_times(a, w["input_len"], w["output_len"], batch, *roof)
    if mode == "decode_at_context":  # output_len steps from KV length `context`
        roof_decode = roofline_times(a, context, w["output_len"] + 1, batch, *roof)[1]
    energy = window["energy_j"] if window else None
    return {
        **m,
        **summarise_repeats(m["repeats"]),
        "load_average": m["machine_after"]["load_average_1m"],
        "load_warning": load_warning(m["machine_before"]["load_average_1m"], threads),
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "kv_cache_bytes": 2 * a.layers * a.kv_heads * a.head_dim * roof_dev["dtype_bytes"] * batch * max_seq,
        "roofline_prefill_s": roof_prefill,
        "roofline_decode_s": roof_decode,
        "energy_j": energy,
        "energy_source": window["energy_source"] if window else None,
        "energy_j_per_output_token": energy / out_tokens if energy is not None else None,
        "power_mean_w": window["power_mean_w"] if window else None,
        "power_peak_w": window["power_peak_w"] if window else None,
        "nvml": window,
    }


def _report_batch(a: Architecture, batch: int, mode: str, rec: dict) -> None:
    """One line per batch size on stderr (the rule's log), and the load warning if any."""
    if rec["load_warning"]:
        print(f"{a.arch_id} batch {batch}: warning: {rec['load_warning']}", file=sys.stderr)
    out_med = Estimate(**rec["median"]["output_tokens_per_s"])
    print(
        f"{a.arch_id} batch {batch} ({mode}): prefill {rec['prefill_latency_s'] * 1e3:.2f} ms, output "
        f"{out_med.text('.1f')} tok/s (median, 95% interval), load {rec['machine_before']['load_average_1m']:.2f}"
        f" -> {rec['machine_after']['load_average_1m']:.2f}",
        file=sys.stderr,
    )


def run_job(arch: Architecture | dict, workload: dict, hardware: dict, checkpoint: str | None = None) -> dict:
    """Measure one architecture at every batch size of the workload (the record of docs/pipeline.md).

    ``arch`` is the network spec (:meth:`archscale.study.Study.spec`); a bare shape takes the
    schema's network settings, which a measurement on random weights does not depend on. A
    trained checkpoint brings its own (its ``archscale.json``), which must agree with the spec's.
    """
    from ..config import schema_default
    from ..study import default_spec, hardware_keys

    t_job = time.perf_counter()
    a = arch if isinstance(arch, Architecture) else Architecture.from_dict(arch)
    a = default_spec(a)
    w = check_workload(workload, checkpoint)
    # the schema's defaults for absent knobs, but threads: absent, the job takes its own cores
    defaults = {k: schema_default(f"throughput.{k}") for k in hardware_keys("throughput") if k != "threads"}
    hardware = {**defaults, **hardware}
    seed = int(w.get("seed", DEFAULT_SEED))
    threads = _job_threads(hardware)
    reader, nvml_reason = nvml_mod.open_reader(int(hardware.get("device_index", 0)), bool(hardware["require_nvml"]))
    try:
        import torch

        torch.set_num_threads(threads)
        from ..model import resolve_runtime

        runtime = resolve_runtime(hardware.get("precision", "auto"), hardware.get("transformer_impl", "auto"))
        mode, context = check_mode(w["mode"], w["context"], w["input_len"])
        max_seq = max(w["input_len"], context or 0) + w["output_len"]
        t_setup = time.perf_counter()
        decoder = _build_decoder(a, w, runtime, _decoder_kind(hardware, w, mode), max_seq, seed, checkpoint)
        setup_s = time.perf_counter() - t_setup
        device_name = torch.cuda.get_device_name() if runtime.on_gpu else nvml_mod.cpu_model()
        roof_dev = measure_device(runtime.device, runtime.params_dtype)
        records = []
        for batch in w["batch_sizes"]:
            records.append(_batch_record(a, decoder, w, batch, mode=mode, context=context, seed=seed,
                                         runtime=runtime, roof_dev=roof_dev, reader=reader,
                                         interval=float(hardware["nvml_interval_s"]), threads=threads,
                                         max_seq=max_seq))
            _report_batch(a, batch, mode, records[-1])
        nvml_info = reader.info() if reader is not None else None
    finally:
        if reader is not None:
            reader.close()
    return {
        "arch_id": a.arch_id,
        "arch": a.to_dict(),
        "engine": decoder.name,
        "mode": mode,
        "context": context,
        "weights": w["weights"],
        "checkpoint": checkpoint if w["weights"] == "trained" else None,
        "workload": w,
        "seed": seed,
        "device": runtime.device,
        "device_name": device_name,
        "precision": runtime.precision,
        "threads": threads,
        "nvml_available": reader is not None,
        "nvml_unavailable_reason": nvml_reason,
        "nvml_device": nvml_info,
        "cpu_model": nvml_mod.cpu_model(),
        "roofline_device": roof_dev,
        "versions": _versions(w["engine"]),
        "setup_s": setup_s,
        "wall_time_s": time.perf_counter() - t_job,
        "records": records,
    }
