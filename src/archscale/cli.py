"""Command-line interface: the library's arithmetic, plan, fits and search without Snakemake."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .arch import Architecture
from .config import ConfigError, load_config
from .cost import arch_summary
from .plan import build_plan, plan_totals


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(rows: list[dict], columns: list[str], out=sys.stdout) -> None:
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    out.write("  ".join(c.rjust(w) for c, w in zip(columns, widths)) + "\n")
    for row in cells:
        out.write("  ".join(v.rjust(w) for v, w in zip(row, widths)) + "\n")


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
            print(f"{key.ljust(width)}  {_fmt(value)}")
    return 0


PLAN_COLUMNS = [
    "arch_id", "d_model", "heads", "kv_heads", "ffn", "params_non_embedding", "tokens",
    "mlp_attn_ratio", "d_over_sqrt_n", "train_flops", "est_hours",
]


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    plan = build_plan(config)
    rows = plan.rows()
    if args.output:
        import pandas as pd

        from .io import write_parquet

        write_parquet(args.output, pd.DataFrame(rows))
    if args.json:
        print(json.dumps({"architectures": rows, "skipped": plan.skipped, "totals": plan_totals(rows)}, indent=2))
        return 0
    print_table(rows, PLAN_COLUMNS)
    if plan.skipped:
        print(f"\n{len(plan.skipped)} infeasible grid point(s) skipped (model.on_infeasible: skip):")
        for reason in plan.skipped:
            print(f"  - {reason}")
    totals = plan_totals(rows)
    print(
        f"\n{totals['architectures']} architectures, {totals['tokens']:.3e} training tokens, "
        f"{totals['train_flops']:.3e} FLOPs, about {totals['est_device_hours']:,.1f} device-hours "
        f"(peak and MFU from compute.*)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("arch", help="parameter counts, r, d/sqrt(N), KV cache and FLOPs of one architecture")
    p.add_argument("--d-model", type=int, required=True)
    p.add_argument("--ffn", type=int, required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, required=True)
    p.add_argument("--head-dim", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    tie = p.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=True, help="tied output layer (default)")
    tie.add_argument("--untied", dest="tied", action="store_false", help="separate output layer")
    p.add_argument("--context", type=int, default=4096, help="KV length for inference FLOPs (default 4096)")
    p.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp8"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_arch)

    p = sub.add_parser("plan", help="resolve a config's grid and print the compute plan")
    p.add_argument("config", type=Path)
    p.add_argument("--output", type=Path, help="also write the plan as Parquet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    from .search_cli import register_search  # search and report live in their own modules

    register_search(sub)

    from .analysis.cli import register_fit

    register_fit(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"archscale: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"archscale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
