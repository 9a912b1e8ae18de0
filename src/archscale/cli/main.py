"""The ``archscale`` parser: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..throughput import command as throughput
from . import arch, fit, plan, search, validate

SUBCOMMANDS = (arch, plan, search, fit, validate, throughput)
DESCRIPTION = "Command-line interface: the library's arithmetic, plan, fits and search without Snakemake."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscale", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
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
