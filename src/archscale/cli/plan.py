"""``archscale plan``: resolve a config's grid and print the compute plan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import WORKFLOW_CONFIG, load_layered
from ..plan import plan_totals
from ..preflight import preflight
from .science import add_arguments as add_science_arguments
from .science import cmd_science
from .table import print_table


PLAN_COLUMNS = [
    "arch_id", "d_model", "heads", "kv_heads", "ffn", "params_non_embedding", "tokens",
    "mlp_attn_ratio", "d_over_sqrt_n", "train_flops", "est_hours", "seeds",
]


def cmd_plan(args: argparse.Namespace) -> int:
    if args.science:
        return cmd_science(args)
    if args.from_results is not None or args.overlay_out is not None:
        raise SystemExit("archscale plan: --from-results and --overlay-out belong to the science plan; use "
                         "archscale plan CONFIG... --science --suggest --from-results DIR --overlay-out PATH")
    config = load_layered(args.config, base=None if args.no_base else args.base)
    plan = preflight(config, source=" + ".join(map(str, args.config)) or str(args.base), notify=lambda line: None).plan
    rows = plan.rows()
    if args.output:
        import pandas as pd

        from ..io import write_parquet

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
        f"\n{totals['architectures']} architectures ({totals['training_runs']} training jobs with their seeds and horizons), "
        f"{totals['tokens']:.3e} training tokens, "
        f"{totals['train_flops']:.3e} FLOPs, about {totals['est_device_hours']:,.1f} device-hours "
        f"(peak and MFU from compute.*)"
    )
    return 0


def add_layering_arguments(p: argparse.ArgumentParser) -> None:
    """--base / --no-base: the workflow's own config under the given files (one loader for all CLIs)."""
    p.add_argument("--base", type=Path, default=WORKFLOW_CONFIG,
                   help=f"the workflow's config the files are layered on, as the Snakefile's configfile "
                        f"(default {WORKFLOW_CONFIG}, when it exists)")
    p.add_argument("--no-base", action="store_true", help="read only the given files (no base config)")


def register(sub) -> None:
    p = sub.add_parser("plan", help="resolve a config's grid and print the compute plan")
    p.add_argument("config", type=Path, nargs="*",
                   help="config files layered in order on top of --base, as snakemake --configfile does")
    add_layering_arguments(p)
    p.add_argument("--output", type=Path, help="also write the plan as Parquet")
    p.add_argument("--json", action="store_true")
    add_science_arguments(p)
    p.set_defaults(func=cmd_plan)
