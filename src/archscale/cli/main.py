"""The ``archscale`` parser: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys

from .. import doctor
from ..config import ConfigError
from ..preflight import cli_problems
from ..throughput import command as throughput
from . import arch, fit, plan, search, validate, verify

SUBCOMMANDS = (arch, plan, search, fit, validate, throughput, verify, doctor)
DESCRIPTION = "Command-line interface: the library's arithmetic, plan, fits and search without Snakemake."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscale", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if problems := cli_problems(args):  # every bad numeric flag, one line each, before the command
        command = " ".join(filter(None, (args.command, getattr(args, "fit_command", None))))
        for line in problems:
            print(f"archscale {command}: error: {line}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"archscale: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"archscale: error: {exc}", file=sys.stderr)
        return 2
