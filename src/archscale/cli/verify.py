"""``archscale verify``: find damaged outputs of finished runs (and repair them with ``--fix``).

The library is :mod:`archscale.verify`; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..verify import find_damage, repair
from .plan import add_layering_arguments


def _ids(args: argparse.Namespace) -> tuple[list[str] | None, list[str] | None]:
    """(run ids, arch ids) of the study's plan when config files are given, else (None, None):
    every run directory and throughput record under --results is checked."""
    if not args.config:
        return None, None
    from ..config import load_layered
    from ..preflight import preflight

    config = load_layered(args.config, base=None if args.no_base else args.base)
    plan = preflight(config, source=" + ".join(map(str, args.config)), notify=lambda line: None).plan
    return list(plan.train_ids), list(plan.ids)


def cmd_verify(args: argparse.Namespace) -> int:
    runs, archs = _ids(args)
    damage = find_damage(args.results, runs=runs, archs=archs)
    if args.json:
        print(json.dumps([{"path": str(d.path), "problem": d.problem, "kept": d.kept and str(d.kept)}
                          for d in damage], indent=2))
    else:
        for d in damage:
            print(d.line())
        if not damage:
            print(f"archscale verify: every finished output under {args.results} is intact")
    if not damage:
        return 0
    if not args.fix:
        print(f"archscale verify: {len(damage)} damaged output(s); --fix restores or deletes exactly these",
              file=sys.stderr)
        return 1
    deleted = repair(damage, log=lambda line: print(f"archscale verify: {line}", file=sys.stderr))
    if deleted:
        print("archscale verify: rebuild them with: snakemake " + " ".join(d.target for d in deleted), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("verify", help="check finished runs' outputs (metrics, curve, final checkpoint, "
                                      "throughput records) and repair the damaged ones")
    p.add_argument("config", type=Path, nargs="*",
                   help="study config files (as snakemake --configfile): check the plan's runs; "
                        "default every run under --results")
    add_layering_arguments(p)
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default results)")
    p.add_argument("--fix", action="store_true",
                   help="restore each damaged output from the copy kept at completion, else delete it so the "
                        "next snakemake run rebuilds exactly it")
    p.add_argument("--json", action="store_true", help="print the damage as JSON")
    p.set_defaults(func=cmd_verify)
