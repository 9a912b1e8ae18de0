"""``archscale search --law LAW ...``: Panda and Surefire at any scale, without runs at that scale.

The law is a named law (``paper-80m-297m``, ``paper-1b``: method.md section 5) or a fit file
(``results/fit/conditional.json``; a ``chinchilla.json`` beside it gives ``L_opt(N, D)``).
Every architecture at the target N is enumerated: ``d_model`` and the MLP width in multiples
of ``--d-multiple``/``--ffn-multiple``, GQA the divisors of each candidate's head count within
``--gqa-range`` (or exactly ``--gqa``), N within ``--n-tolerance`` of ``--n-target``.

Why a tight N tolerance (1% reproduces the paper): the law is evaluated at the target (N, D)
and does not see a candidate's own N, so a wide tolerance lets architectures with a few
percent more parameters win on their knobs alone (the paper's Panda-1B is 0.22% off the
LLaMA-3.2-1B N; with 5% the 80M-297M law picks a 2.9% larger model instead). The search notes
a Panda more than 1% off target.

Loss target (``--loss-target``), used for Surefire and the pick probabilities:
  ``2.85``            a loss value;
  ``NAME`` or ``observed:NAME``  the observed loss of the run named NAME in ``--runs``
                      (its loss column is the fit's mapping, e.g. ``valid_loss``);
  ``predicted:NAME``  the law's predicted loss of that run's architecture (compared with the
                      candidates on the same footing, so it works without L_opt too).
Surefire (highest predicted output tokens/s within the target) needs ``--cost-model``. The
pick probabilities need a law fitted with bootstrap samples (``fit.bootstrap`` > 0) and L_opt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..arch import Architecture, Scale
from ..config import schema_default
from ..io import read_json
from ..law import NAMED_LAWS, load_law
from ..law.tables import read_table
from ..search import SearchError, SearchSettings, cost_model_efficiency
from ..search.anyscale import PICK_FIELDS, LossTarget, search_at_scale
from .table import fmt, print_table

DEFAULT_GQA_RANGE = (1, 16)


def register_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__
    g = p.add_argument_group("search at any scale from a law (--law; no runs at that scale needed)")
    g.add_argument("--law", help="named law (paper-80m-297m, paper-1b) or a conditional.json fit file")
    g.add_argument("--n-target", type=int, help="target non-embedding N")
    g.add_argument("--layers", type=int)
    g.add_argument("--head-dim", type=int)
    g.add_argument("--vocab", type=int)
    tied = g.add_mutually_exclusive_group()
    tied.add_argument("--tied", dest="tied", action="store_true", default=None, help="tied embeddings (default)")
    tied.add_argument("--untied", dest="tied", action="store_false")
    g.add_argument("--gqa-range", type=lambda t: tuple(int(v) for v in t.split(",")), metavar="LO,HI",
                   help=f"GQA candidates (divisors of the head count) without --gqa (default {DEFAULT_GQA_RANGE})")
    g.add_argument("--x-range", type=lambda t: tuple(float(v) for v in t.split(",")), metavar="LO,HI",
                   default=(0.02, 0.3), help="d/sqrt(N) window of the candidates (default 0.02,0.3)")
    g.add_argument("--l-opt", type=float, help="reference loss L_opt at the target (N, D) (default: the law's own)")


def fit_file_of(law: str) -> Path:
    """``--law`` where the Algorithm-1 search (CONFIG or --scale) reads a fit: a fit file; a named law
    has no reference loss L_opt at the runs' scales, so it is refused with the way out."""
    if law in NAMED_LAWS:
        raise SearchError(
            f"--law {law}: a named law has no L_opt at the runs' scales, so the runs-based search cannot use it; "
            "search it at any scale instead (--law with --n-target, --layers, --head-dim, --vocab, --tokens, "
            "and --l-opt for predicted losses)"
        )
    return Path(law)


def _loss_target(spec: str | None, law, runs: pd.DataFrame | None, path) -> LossTarget:
    if spec is None:
        return LossTarget()
    try:
        return LossTarget(value=float(spec))
    except ValueError:
        pass
    kind, _, name = spec.partition(":") if ":" in spec else ("observed", "", spec)
    if kind not in ("observed", "predicted"):
        raise SearchError(f"--loss-target '{spec}': use a number, NAME, observed:NAME or predicted:NAME")
    if runs is None:
        raise SearchError(f"--loss-target '{spec}' names a baseline: give --runs with a row whose 'name' is {name}")
    rows = runs[runs["name"] == name] if "name" in runs else runs.iloc[0:0]
    if rows.empty:
        raise SearchError(f"--loss-target '{spec}': no row named '{name}' in {path} ('name' column)")
    b = rows.iloc[0]
    if kind == "observed":
        col = law.column("loss")
        if col not in rows:
            raise SearchError(f"{path}: no loss column '{col}' (the fit's mapping) for the observed loss of '{name}'")
        return LossTarget(value=float(b[col]), source=f"observed {col} of '{name}'")
    need = ("d_model", "ffn", "layers", "heads", "kv_heads", "head_dim", "vocab")
    missing = [c for c in need if c not in rows]
    if missing:
        raise SearchError(f"{path}: row '{name}' lacks {missing} to rebuild its architecture")
    arch = Architecture(**{c: int(b[c]) for c in need}, tied=bool(b.get("tied", True)), name=name)
    return LossTarget(baseline=arch, source="predicted")


def cmd_search_law(args: argparse.Namespace) -> int:
    missing = [f for f, v in (("--n-target", args.n_target), ("--layers", args.layers), ("--head-dim", args.head_dim),
                               ("--vocab", args.vocab), ("--tokens", args.tokens)) if v is None]
    if missing:
        raise SearchError(f"--law needs {', '.join(missing)}")
    law = load_law(args.law)
    scale = Scale(name=f"n{args.n_target}", n_target=args.n_target, layers=args.layers, head_dim=args.head_dim,
                  vocab=args.vocab, tied=True if args.tied is None else args.tied,
                  d_multiple=args.d_multiple, ffn_multiple=args.ffn_multiple,
                  n_tolerance=args.n_tolerance, r_tolerance=args.r_tolerance)
    runs = read_table(args.runs) if args.runs else None
    target = _loss_target(args.loss_target, law, runs, args.runs)
    efficiency, label = None, None
    if args.cost_model:
        s = SearchSettings()
        s = SearchSettings(input_len=args.input_len or s.input_len, output_len=args.output_len or s.output_len,
                           batch_size=args.batch_size or s.batch_size)
        efficiency = cost_model_efficiency(read_json(args.cost_model), s.input_len, s.output_len, s.batch_size)
        label = f"cost model {args.cost_model}: output tokens/s at batch {s.batch_size}, {s.input_len} in / {s.output_len} out"
    res = search_at_scale(
        law, scale, args.tokens, l_opt=args.l_opt, loss_target=target, efficiency=efficiency,
        efficiency_label=label or "", form=args.form, gqa=args.gqa,
        gqa_range=tuple(args.gqa_range or DEFAULT_GQA_RANGE), x_range=tuple(args.x_range),
    )
    for note in res["notes"]:
        print(f"archscale: note: {note}", file=sys.stderr)
    if args.json:
        out = {k: v for k, v in res.items() if k != "candidates"}
        out["law_status"] = law.status
        print(json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        return 0
    print_picks(res, law)
    return 0


def print_picks(res: dict, law, out=None) -> None:
    out = out or sys.stdout
    lt = res["loss_target"]
    out.write(f"law {res['law']} ({res['form']}; status {law.status}), {res['n_candidates']} candidates; "
              f"L_opt {fmt(res['l_opt'])} ({res['l_opt_source'] or 'unknown: predicted loss withheld'})\n")
    target_txt = lt["reason"] or f"{lt['compared_on']} <= {fmt(lt['threshold'])} ({lt['source']})"
    out.write(f"loss target: {target_txt}\n")
    if res["efficiency"]:
        out.write(f"efficiency: {res['efficiency']}\n")
    cols = ["pick", *PICK_FIELDS, "predicted_loss_ratio", "predicted_loss", "P(within target)"]
    if res["efficiency"]:
        cols.insert(-1, "efficiency")
    rows = []
    for role in ("panda", "surefire"):
        p = res.get(role)
        if p is not None:
            rows.append({"pick": role, **p, "P(within target)": p["probability_within_target"]})
    print_table(rows, cols, out=out)
    for role in ("panda", "surefire"):
        p = res.get(role)
        if p is not None and p["probability_reason"]:
            out.write(f"   {role}: probability withheld: {p['probability_reason']}\n")
    if res["surefire"] is None:
        out.write(f"   surefire: none ({res['surefire_reason']})\n")
