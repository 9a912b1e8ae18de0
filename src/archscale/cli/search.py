"""``archscale search``: Algorithm 1 from a runs table and a fit, without Snakemake.

Two ways to name the target:

* ``archscale search CONFIG --runs runs.parquet --fit conditional.json --cost-model cost.json``
  searches every target of the config's ``search.targets`` (or ``--target NAME``);
* ``archscale search --runs runs.parquet --fit conditional.json --cost-model cost.json --scale 1b
  --loss-target llama-3.2-1b`` takes the scale (N, layers, head dim, vocabulary, tokens) and the
  baseline from the rows of the runs table, for a table produced elsewhere;
* ``archscale search --law paper-80m-297m --n-target N --layers L --head-dim H --vocab V --tokens D
  ...`` searches any scale from any law without runs there (see the law group below and
  archscale.cli.search_scale).

Efficiency is the calibrated cost model's predicted output tokens/s; the GQA walk uses the
same prediction (``--measure predicted``) or live measurements (``--measure run``, through
:func:`archscale.throughput.run_job`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..arch import Architecture
from ..config import ConfigError, schema_default
from ..io import read_json, write_json, write_parquet
from ..study import Study
from ..search import (
    FORMS,
    SearchError,
    SearchSettings,
    cost_model_efficiency,
    law_from_fit,
    run_search,
    throughput_at,
)
from . import search_lifetime, search_scale
from .search_inputs import _read_runs, _settings, read_inputs, target_from_runs  # noqa: F401 (re-exported)
from ..search.anyscale import attach_probabilities
from .table import print_table

PARETO_COLUMNS = [
    "arch_id", "d_model", "heads", "kv_heads", "ffn", "gqa", "d_over_sqrt_n", "mlp_attn_ratio", "loss",
    "pred_output_tokens_per_s", "within_target",
]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def register(sub) -> None:
    p = sub.add_parser(
        "search",
        help="Panda / Surefire search (Algorithm 1) from a runs table and a conditional fit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", type=Path, help="study config whose search.targets to run (optional)")
    p.add_argument("--runs", type=Path, help="runs table (results/runs.parquet or your own; required without --law)")
    p.add_argument("--fit", type=Path, help="conditional fit (results/fit/conditional.json; required without --law)")
    p.add_argument("--cost-model", type=Path,
                   help="calibrated cost model (results/throughput/cost_model.json; required without --law)")
    p.add_argument("--target", action="append", help="with CONFIG: only these targets (repeatable)")
    g = p.add_argument_group("target without a config (taken from the runs table)")
    g.add_argument("--scale", help="scale name in the runs table's 'scale' column")
    g.add_argument("--tokens", type=lambda v: int(float(v)), help="training tokens D (default: the scale's runs)")
    g.add_argument("--loss-target", help="a loss value, or the name of a run at that scale (its 'name' column); "
                   "with --law also observed:NAME or predicted:NAME")
    g.add_argument("--gqa", type=_ints, help="GQA candidates, comma-separated (default: "
                   f"{schema_default('search.targets[].gqa_candidates')}; with --law: every divisor in --gqa-range)")
    g.add_argument("--base-gqa", type=int, help="start of the GQA walk (default 4 if listed, else the smallest)")
    for flag in ("d_multiple", "ffn_multiple", "n_tolerance", "r_tolerance"):
        kind = int if flag.endswith("multiple") else float
        g.add_argument("--" + flag.replace("_", "-"), type=kind, default=schema_default(f"model.{flag}"),
                       help=f"default model.{flag} of the schema ({schema_default(f'model.{flag}')})")
    s = p.add_argument_group("search settings (override the config's)")
    s.add_argument("--form", choices=FORMS)
    s.add_argument("--d-over-sqrt-n", type=_floats, help="comma-separated grid (default: fine grid over the fitted range)")
    s.add_argument("--r", type=_floats, help="comma-separated grid (default: fine grid over the fitted range)")
    s.add_argument("--grid-points", type=int)
    s.add_argument("--top-k", type=int, help="candidates walked over GQA")
    s.add_argument("--loss-target-source", choices=["predicted", "observed"])
    s.add_argument("--input-len", type=int)
    s.add_argument("--output-len", type=int)
    s.add_argument("--batch-size", type=int)
    p.add_argument("--measure", choices=["predicted", "run"], default="predicted",
                   help="throughput in the GQA walk: the cost model, or live runs (archscale.throughput.run_job)")
    p.add_argument("--threads", type=int, default=1, help="with --measure run: CPU threads")
    p.add_argument("--output-dir", type=Path, help="write <dir>/<target>/result.json and pareto.parquet")
    p.add_argument("--rows", type=int, default=15, help="Pareto rows to print (default 15)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    search_scale.register_arguments(p)
    search_lifetime.register_arguments(p)
    p.set_defaults(func=cmd_search)


def _live_measure(args: argparse.Namespace, config: dict | None, settings: SearchSettings):
    from ..throughput import run_job

    workload = dict((config or {}).get("throughput", {}))
    workload.update(weights="random", input_len=settings.input_len, output_len=settings.output_len,
                    batch_sizes=[settings.batch_size])
    workload.setdefault("engine", "megatron")
    workload.setdefault("warmup", 1)
    workload.setdefault("repeats", 3)
    hardware = {"threads": args.threads, "require_nvml": False}

    from ..study import default_spec, study_of

    spec = study_of(config).spec if config else default_spec

    def measure(arch: Architecture) -> float:
        record = run_job(spec(arch), workload, hardware, None)
        return throughput_at(record, settings.batch_size, f"live measurement of {arch.arch_id}")

    return measure


def cmd_search(args: argparse.Namespace) -> int:
    if args.lifetime_tokens is not None:
        return search_lifetime.cmd_lifetime(args)
    if args.law and not (args.config or args.scale):
        return search_scale.cmd_search_law(args)
    if args.law:  # with CONFIG or --scale the law is the fit the Algorithm-1 search reads
        if args.fit:
            raise SearchError("give the fit once: --fit FILE or --law FILE")
        args.fit = search_scale.fit_file_of(args.law)
    config, runs, conditional = read_inputs(args, SearchError)
    cost_model = read_json(args.cost_model)
    settings = _settings(args, config)
    if config:
        targets = Study.from_config(config).search_targets
        if args.target:
            unknown = set(args.target) - set(targets)
            if unknown:
                raise ConfigError(f"--target {sorted(unknown)}: not in search.targets {sorted(targets)}")
            targets = {k: v for k, v in targets.items() if k in args.target}
        if not targets:
            raise ConfigError(f"{args.config}: search.targets is empty; add a target or use --scale")
    else:
        if not args.scale:
            raise SearchError("give a CONFIG with search.targets, or --scale NAME to search a scale of the runs table")
        targets = {args.scale: target_from_runs(args, runs)}
    law = law_from_fit(conditional, str(args.fit))
    efficiency = cost_model_efficiency(cost_model, settings.input_len, settings.output_len, settings.batch_size)
    measure, label = None, "cost model (predicted)"
    if args.measure == "run":
        measure, label = _live_measure(args, config, settings), "measured (archscale.throughput.run_job)"
    out = {}
    for name, target in targets.items():
        result, pareto = run_search(target, settings, law, efficiency, runs, measure=measure, measured_label=label)
        attach_probabilities(result, {settings.form: law.forms[settings.form]}, name=str(args.fit))
        if args.output_dir:
            write_json(args.output_dir / name / "result.json", result)
            write_parquet(args.output_dir / name / "pareto.parquet", pareto)
        out[name] = (result, pareto)
    if args.json:
        print(json.dumps({
            n: dict(r, pareto_front=p[p["pareto"]][PARETO_COLUMNS].to_dict("records")) for n, (r, p) in out.items()
        }, indent=2, default=_json_default))
        return 0
    for name, (result, pareto) in out.items():
        print_result(result, pareto, rows=args.rows)
    return 0


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(type(obj).__name__)


def print_result(result: dict, pareto: pd.DataFrame, rows: int = 15, out=None) -> None:
    out = out or sys.stdout
    lt = result["loss_target"]
    target_txt = "none" if lt["value"] is None else f"{lt['value']:.4f} ({lt['source']}{', ' + lt.get('baseline_name', '') if lt.get('baseline') else ''})"
    g = result["grid"]
    out.write(
        f"\n== target {result['target']}: scale {result['scale']}, N={result['n_target']:,}, D={result['tokens']:,}, "
        f"form {result['form']}\n"
        f"   grid ({g['source']}): {g['points']} points at GQA {g['gqa']}, {g['infeasible']} infeasible, "
        f"{g['architectures']} architectures, {g['within_target']} within the loss target {target_txt}\n"
        f"   throughput: output tokens/s at batch {result['batch_size']}, {result['input_len']} in / "
        f"{result['output_len']} out, {result['throughput_source']}\n\n"
    )
    picks = []
    for role in ("baseline", "panda", "surefire"):
        e = result.get(role)
        if e is None:
            continue
        picks.append({
            "pick": role, "arch_id": e["arch_id"], "d/sqrtN": e["d_over_sqrt_n"], "r": e["mlp_attn_ratio"], "gqa": e["gqa"],
            "loss": e["loss"], "P(within target)": e.get("probability_within_target"),
            "pred tok/s": e["pred_output_tokens_per_s"],
            "measured tok/s": e.get("measured_output_tokens_per_s", float("nan")),
        })
    print_table(picks, list(picks[0]), out=out)
    if result.get("note"):
        out.write(f"\n   note: {result['note']}\n")
    for w in result["gqa_walks"]:
        path = " -> ".join(f"{s['gqa']}:{s['throughput']:.4g}" + ("(stop)" if "stop" in s["status"] else "") for s in w["steps"])
        out.write(f"   GQA walk from {w['base_arch_id']}: {path}\n")
    front = pareto[pareto["pareto"]][PARETO_COLUMNS].head(rows)
    out.write(f"\n   Pareto front (predicted loss vs predicted throughput), {int(pareto['pareto'].sum())} architectures:\n")
    print_table(front.to_dict("records"), PARETO_COLUMNS, out=out)
