"""``archscale fit ...``: the law fits on any table of runs, without Snakemake.

Tables: CSV, Parquet, JSON lines (``.jsonl``) or JSON records (``.json``), read by
:func:`archscale.law.tables.read_table`. The guards' warnings (identifiability, conditioning,
captured numerical warnings) go to stderr and stay in the JSON (``warnings``, ``status``).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..io import write_json
from ..law.chinchilla import OBJECTIVES, PARAMS, FitError, fit_chinchilla
from ..law.conditional import DEFAULT_COLUMNS, FORMS, fit_conditional
from ..law.laws import Law, law_from_conditional
from ..law.result import KNOBS, FormFit
from ..law.tables import read_table
from .table import fmt


def _column(df, name: str, flag: str):
    if name not in df.columns:
        raise FitError(f"table has no column '{name}' (given by {flag}); columns: {sorted(map(str, df.columns))}")
    return df[name].to_numpy(dtype=float)


def _fmt(v) -> str:
    return fmt(v, sci_at=1e5)


def cmd_fit_chinchilla(args: argparse.Namespace) -> int:
    df = read_table(args.table)
    n = _column(df, args.n, "--n")
    loss = _column(df, args.loss, "--loss")
    if args.flops:
        d = _column(df, args.flops, "--flops") / (6.0 * n)
    else:
        d = _column(df, args.d, "--d")
    if args.drop_highest:
        if args.drop_highest >= loss.size:
            raise FitError(f"--drop-highest {args.drop_highest}: the table has only {loss.size} rows")
        keep = loss < np.sort(loss)[-args.drop_highest]
        n, d, loss = n[keep], d[keep], loss[keep]
    fit = fit_chinchilla(
        n, d, loss, objective=args.objective, delta=args.delta, bootstrap=args.bootstrap, seed=args.seed
    )
    out = fit.to_dict()
    out["columns"] = {"n": args.n, "d": args.d if not args.flops else f"{args.flops} / (6 {args.n})", "loss": args.loss}
    if args.output:
        write_json(args.output, out)
    for w in fit.warnings:
        print(f"archscale: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    delta = f", delta {fit.delta:g}" if fit.delta else ""
    print(
        f"Chinchilla fit L = E + A/N^alpha + B/D^beta ({fit.objective}{delta}) on {fit.n_points} points, "
        f"{fit.n_starts} starts, {fit.bootstrap_converged}/{fit.bootstrap} bootstrap refits, {fit.elapsed_s:.1f} s"
    )
    level = int(round(100 * fit.ci_level))
    print(f"{'param':>6}  {'estimate':>11}  {'se':>9}  {level}% interval")
    for k in PARAMS:
        ci = fit.ci.get(k)
        ci_txt = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-"
        print(f"{k:>6}  {_fmt(fit.params[k]):>11}  {_fmt(fit.se.get(k)):>9}  {ci_txt}")
    return 0


def cmd_fit_conditional(args: argparse.Namespace) -> int:
    df = read_table(args.table)
    out = fit_conditional(
        df,
        reference=args.reference,
        r_range=(args.r_min, args.r_max),
        forms=args.forms,
        bootstrap=args.bootstrap,
        seed=args.seed,
        columns=columns_of(args),
    )
    if args.output:
        write_json(args.output, out)
    law = law_from_conditional(out, str(args.output or args.table))
    report_guards(law)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(
        f"conditional law on {out['n_points']} of {out['n_runs']} runs (r in [{out['r_range'][0]:g}, "
        f"{out['r_range'][1]:g}]), reference L_opt: {out['reference']}"
    )
    for note in out.get("notes") or []:
        print(f"note: {note}")
    chin = out.get("chinchilla")
    if chin:
        print("chinchilla reference: " + ", ".join(
            f"{k} {_fmt(chin['params'][k])} [{_fmt(chin['ci'][k][0])}, {_fmt(chin['ci'][k][1])}]"
            if (chin.get("ci") or {}).get(k) else f"{k} {_fmt(chin['params'][k])}"
            for k in PARAMS))
    for form, f in law.forms.items():
        print_form(form, f)
    return 0


def print_form(form: str, f: FormFit) -> None:
    """One fitted form in words: coefficients with their errors and intervals, the optima, the metrics."""
    print(f"\n{form} ({f.method}; {f.normalisation})")
    for name in ("a", "b"):
        se = getattr(f, f"{name}_se") or [None] * 3
        ci = getattr(f, f"{name}_ci") or [None] * 3
        for i in range(3):
            c = ci[i]
            ci_txt = f"[{_fmt(c[0])}, {_fmt(c[1])}]" if c else "-"
            print(f"  {name}{i} = {_fmt(getattr(f, name)[i]):>10}  se {_fmt(se[i]):>9}  {ci_txt}")
    for key in KNOBS:
        opt = f.optimum.knob(key)
        if opt.value is None:
            print(f"  {key}*: none ({opt.reason})")
        else:
            c = opt.interval
            ci_txt = f" [{_fmt(c[0])}, {_fmt(c[1])}]" if c else ""
            print(f"  {key}* = {_fmt(opt.value)}{ci_txt}")
    print(f"  in-sample MSE {_fmt(f.mse)}, Spearman {_fmt(f.spearman)}")


COLUMN_FLAGS = (
    ("--n", "n", "non-embedding parameters N"),
    ("--d", "d", "training tokens D"),
    ("--loss", "loss", "loss"),
    ("--x", "x", "d_model / sqrt(N)"),
    ("--r", "r", "MLP-to-attention ratio r"),
    ("--group-n", "group_n", "nominal N of a run's scale (L_opt is per group; falls back to --n)"),
    ("--group-d", "group_d", "tokens of a run's scale (falls back to --d)"),
)


def add_column_args(parser) -> None:
    """The runs-table column flags (the fit's mapping; defaults law.conditional.DEFAULT_COLUMNS)."""
    for flag, key, what in COLUMN_FLAGS:
        parser.add_argument(flag, default=None, help=f"column of {what} (default {DEFAULT_COLUMNS[key]})")


def columns_of(args: argparse.Namespace) -> dict[str, str]:
    """The column mapping the flags give (only the ones set; the rest fall back to the defaults)."""
    return {key: getattr(args, key) for _, key, _ in COLUMN_FLAGS if getattr(args, key)}


def report_guards(law: Law, stream=None) -> None:
    """The guards' verdicts of a conditional fit on stderr: the overall status, each form's warnings."""
    stream = stream or sys.stderr
    if law.status != "ok":
        print(f"archscale: warning: conditional fit {law.status}", file=stream)
    for form, f in law.forms.items():
        for w in f.warnings or ():
            print(f"archscale: warning: {form}: {w}", file=stream)
    for w in (law.fit.get("chinchilla") or {}).get("warnings") or []:
        print(f"archscale: warning: chinchilla reference: {w}", file=stream)


def register(sub) -> None:
    """Add ``archscale fit chinchilla|conditional`` to the top-level sub-parsers."""
    p = sub.add_parser("fit", help="fit the Chinchilla or the conditional law on a table of runs (CSV, Parquet, JSON lines, JSON)")
    fsub = p.add_subparsers(dest="fit_command", required=True)

    c = fsub.add_parser("chinchilla", help="E + A/N^alpha + B/D^beta, Hoffmann et al.'s fit with bootstrap intervals")
    c.add_argument("table", help="table with one row per run (.csv, .parquet, .jsonl or .json records)")
    c.add_argument("--n", required=True, help="column of parameter counts N")
    dgroup = c.add_mutually_exclusive_group(required=True)
    dgroup.add_argument("--d", help="column of training tokens D")
    dgroup.add_argument("--flops", help="column of training FLOPs; D = FLOPs / (6 N)")
    c.add_argument("--loss", required=True, help="column of losses L")
    c.add_argument("--objective", choices=OBJECTIVES, default="huber", help="huber (default), squared (LM) or lad")
    c.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log-loss residuals (1e-3)")
    c.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for intervals (200)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--drop-highest", type=int, default=0, metavar="K", help="drop the K highest losses (Epoch: 5)")
    c.add_argument("--output", help="also write the fit as JSON to this file")
    c.add_argument("--json", action="store_true", help="print the fit as JSON")
    c.set_defaults(func=cmd_fit_chinchilla)

    k = fsub.add_parser("conditional", help="the architecture-conditional law (multiplicative and additive forms)")
    k.add_argument("table", help="runs table (results/runs.parquet, or .csv/.parquet/.jsonl/.json with the columns below)")
    add_column_args(k)
    k.add_argument("--reference", choices=["empirical", "chinchilla"], default="empirical")
    k.add_argument("--r-min", type=float, default=0.5)
    k.add_argument("--r-max", type=float, default=5.0)
    k.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    k.add_argument("--bootstrap", type=int, default=200)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--output", help="also write conditional.json to this file")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_fit_conditional)
