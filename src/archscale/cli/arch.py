"""``archscale arch``: parameter counts, r, d/sqrt(N), KV cache and FLOPs of one architecture."""

from __future__ import annotations

import argparse
import json

from ..arch import Architecture
from ..cost import arch_summary
from .table import fmt


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a size, a count or a context length)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def cmd_arch(args: argparse.Namespace) -> int:
    arch = Architecture(
        d_model=args.d_model, ffn=args.ffn, layers=args.layers, heads=args.heads,
        kv_heads=args.kv_heads, head_dim=args.head_dim, vocab=args.vocab, tied=args.tied,
    )
    summary = arch_summary(arch, args.context, args.kv_dtype)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            print(f"{key.ljust(width)}  {fmt(value)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("arch", help="parameter counts, r, d/sqrt(N), KV cache and FLOPs of one architecture")
    p.add_argument("--d-model", type=positive_int, required=True)
    p.add_argument("--ffn", type=positive_int, required=True)
    p.add_argument("--layers", type=positive_int, required=True)
    p.add_argument("--heads", type=positive_int, required=True)
    p.add_argument("--kv-heads", type=positive_int, required=True)
    p.add_argument("--head-dim", type=positive_int, required=True)
    p.add_argument("--vocab", type=positive_int, required=True)
    tie = p.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=True, help="tied output layer (default)")
    tie.add_argument("--untied", dest="tied", action="store_false", help="separate output layer")
    p.add_argument("--context", type=positive_int, default=4096, help="KV length for inference FLOPs (default 4096)")
    p.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp8"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_arch)
