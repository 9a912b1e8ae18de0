"""``archscale validate TABLE``: the law's cross-scale validation table, without Snakemake.

Every task (progressive: fit on the smaller scales, predict the next; next: fit on one scale,
predict the next) reports MSE and Spearman under both references: the held-out scale's own
lowest loss as L_opt (the paper's choice, flagged optimistic) and an L_opt extrapolated from a
Chinchilla law fitted on the training scales (withheld, with the reason, where that law is not
identifiable). A task the guards flag says so in its status; those statuses also go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..io import write_parquet
from ..law.conditional import FORMS
from ..law.tables import read_table
from ..law.validation import KINDS, format_validation, validate_table
from .fit import add_column_args, columns_of


def register(sub) -> None:
    p = sub.add_parser("validate", help="cross-scale validation table of the conditional law (both references)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="runs table (.parquet, .csv, .jsonl or .json records)")
    add_column_args(p)
    p.add_argument("--reference", choices=["empirical", "chinchilla"], default="empirical",
                   help="reference whose status leads each row (both are always reported)")
    p.add_argument("--r-min", type=float, default=0.5)
    p.add_argument("--r-max", type=float, default=5.0)
    p.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="task forms (default both)")
    p.add_argument("--output", help="also write the table as Parquet to this file")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    df = read_table(args.table)
    table = validate_table(df, columns_of(args), r_range=(args.r_min, args.r_max), forms=args.forms,
                           kinds=args.kinds, reference=args.reference)
    if args.output:
        write_parquet(args.output, table)
    for r in table.to_dict("records"):
        if r["status"] != "ok":
            print(f"archscale: warning: validation {r['task']} ({r['kind']}, {r['form']}): {r['status']}", file=sys.stderr)
    if args.json:
        print(json.dumps(table.to_dict("records"), indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        return 0
    print(format_validation(table))
    return 0
