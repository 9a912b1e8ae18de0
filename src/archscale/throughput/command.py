"""``archscale throughput``: measure one architecture (or two, interleaved) without Snakemake.

The architecture flags are those of ``archscale arch``. ``--context T`` measures decode at KV
length T (cache filled, no prefill paid; prefill of ``--input-len`` timed separately);
without it, prefill then decode. ``--compare KEY=VALUE[,KEY=VALUE...]`` is a second
architecture given as changes to the first (for example ``--compare kv_heads=1,ffn=512``);
the two are measured interleaved and the ratio of median output tokens/s (second / first)
is printed with its bootstrap interval and verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..arch import Architecture

ARCH_FIELDS = ("d_model", "ffn", "layers", "heads", "kv_heads", "head_dim", "vocab")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


def _threads(text: str) -> int:
    """``--threads N``: a positive number of torch threads (argparse reports the flag and value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of torch threads, got '{text}' (leave --threads out to use the cores "
            "this job owns)"
        )
    return value


def parse_changes(text: str) -> dict:
    """``"kv_heads=1,ffn=512"`` -> ``{"kv_heads": 1, "ffn": 512}`` (keys of ``archscale arch``)."""
    changes = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in ARCH_FIELDS + ("tied",):
            raise ValueError(f"--compare: '{item}' is not KEY=VALUE with KEY one of {', '.join(ARCH_FIELDS)}, tied")
        if key == "tied":
            if value not in ("true", "false"):
                raise ValueError(f"--compare: tied must be true or false, got '{value}'")
            changes[key] = value == "true"
        else:
            try:
                changes[key] = int(value)
            except ValueError:
                raise ValueError(f"--compare: {key} must be an integer, got '{value}'") from None
    if not changes:
        raise ValueError("--compare: no changes given (for example --compare kv_heads=1)")
    return changes


def architectures(args: argparse.Namespace) -> tuple[dict[str, Architecture], str | None]:
    first = Architecture(**{k: getattr(args, k) for k in ARCH_FIELDS}, tied=args.tied)
    if not args.compare:
        return {"A": first}, None
    return {"A": first, "B": dataclasses.replace(first, **parse_changes(args.compare))}, "A"


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("throughput", help="measure decode throughput of one architecture (or two, interleaved)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key in ARCH_FIELDS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, required=True)
    tie = p.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=True, help="tied output layer (default)")
    tie.add_argument("--untied", dest="tied", action="store_false", help="separate output layer")
    p.add_argument("--batch-size", type=_ints, default=[1], help="B[,B...] (default 1)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--context", type=int, help="decode at KV length T (no prefill paid)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per architecture (>= 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=_threads,
                   help="torch threads (default: the cores this job owns: its CPU affinity, at most "
                        "SLURM_CPUS_PER_TASK); more than the free cores oversubscribes them")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--rope-base", type=float, default=None,
                   help="RoPE base (default: the schema's model.rope_base; throughput does not depend on it)")
    p.add_argument("--compare", help="second architecture as changes to the first, e.g. kv_heads=1,ffn=512")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
    return p


def format_result(result: dict) -> str:
    """Human-readable lines: per batch size, per architecture, median output tokens/s [95%], prefill, mode."""
    from .stats import Estimate

    lines = []
    for r in result["results"]:
        mode = r["mode"] + (f" T={r['context']}" if r["context"] else "")
        lines.append(f"batch {r['batch_size']} ({mode}, load {r['machine_before']['load_average_1m']:.2f}"
                     f" -> {r['machine_after']['load_average_1m']:.2f}):")
        if r.get("load_warning"):
            lines.append(f"  warning: {r['load_warning']}")
        for name, res in r["architectures"].items():
            out = Estimate(**res["median"]["output_tokens_per_s"])
            pre = res["median"]["prefill_latency_s"]
            pre = f"prefill {pre['value'] * 1e3:.2f} ms" if pre else "prefill not measured"
            lines.append(f"  {name}: {out.text('.1f')} output tok/s; {pre}")
            vs = res.get("vs_baseline")
            if vs:
                ratio = Estimate(**vs["ratio"])
                lines.append(f"  {name}/{vs['baseline']}: {ratio.text('.3f')} -> {vs['verdict']}")
    return "\n".join(lines)


def rope_base(args: argparse.Namespace) -> float:
    """``--rope-base``, else the schema's ``model.rope_base`` (the one place defaults live)."""
    if args.rope_base is not None:
        return args.rope_base
    from ..config import schema_default

    return float(schema_default("model.rope_base"))


def run(args: argparse.Namespace) -> int:
    from .compare import measure

    from .job import load_warning, owned_cores

    archs, baseline = architectures(args)
    archs = {name: arch.with_network(rope_base=rope_base(args)) for name, arch in archs.items()}
    threads = args.threads or owned_cores()
    result = measure(archs, args.batch_size, args.input_len, args.output_len, args.context, args.repeats,
                     args.warmup, threads, args.seed, baseline)
    for r in result["results"]:
        r["load_warning"] = load_warning(r["machine_before"]["load_average_1m"], result["threads"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, a in archs.items():
            print(f"{name}: {a.arch_id}", file=sys.stderr)
        print(format_result(result))
    return 0
