"""``archscale search ... --lifetime-tokens T``: the cheapest (N, D, shape) over training plus serving.

For each target, the architecture (N, shape) and training tokens D that meet the loss target at
the lowest total cost for a lifetime demand of T output tokens (archscale.search.lifetime), with
the split (training, serving, energy), intervals, where each cost comes from, and the demand at
which the baseline, Panda, Surefire and that pick overtake one another. The deployment is the
search's workload (--batch-size, --input-len, --output-len) plus --context; the law is --law (any
scale) or --fit (CONFIG / --scale, whose Algorithm-1 picks are the compared choices).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..arch import Scale
from ..config import ConfigError, load_config, schema_default, section_defaults
from ..cost import PEAK_FLOPS
from ..io import read_json, write_json
from ..search.lifetime import (
    LifetimeError,
    Serving,
    check_demand,
    crossover_text,
    lifetime_for_target,
    lifetime_search,
    read_records,
    settings_from_config,
)
from .table import fmt, print_table

LIFETIME_KEYS = ("tokens", "price_per_gpu_hour", "energy_price_per_kwh", "mfu", "gpu_model", "batch_size",
                 "input_len", "output_len", "context", "max_latency_ms", "n_factors", "x_range", "level")
#: flag (argparse dest) -> search.lifetime key it overrides
FLAGS = {"lifetime_tokens": "tokens", "price_per_gpu_hour": "price_per_gpu_hour",
         "energy_price_per_kwh": "energy_price_per_kwh", "mfu": "mfu", "gpu_model": "gpu_model",
         "batch_size": "batch_size", "input_len": "input_len", "output_len": "output_len", "context": "context",
         "max_latency_ms": "max_latency_ms", "n_factors": "n_factors"}


def register_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lifetime cost (--lifetime-tokens; deployment: --batch-size, --input-len, --output-len)")
    g.add_argument("--lifetime-tokens", type=float, metavar="T",
                   help="lifetime serving demand in output tokens: minimise training + serving cost over N, D, shape")
    g.add_argument("--price-per-gpu-hour", type=float,
                   help=f"training and serving (default {schema_default('search.lifetime.price_per_gpu_hour')}: GPU-hours)")
    g.add_argument("--energy-price-per-kwh", type=float, help="price of NVML-measured energy (default: not priced)")
    g.add_argument("--mfu", type=float, help="training MFU (default: the config's compute.mfu, else "
                   f"{schema_default('compute.mfu')})")
    g.add_argument("--gpu-model", choices=sorted(PEAK_FLOPS), help="training device (peak FLOP/s; default compute's)")
    g.add_argument("--peak-flops", type=float, help="training device peak FLOP/s (overrides --gpu-model)")
    g.add_argument("--seq-length", type=int, help="training sequence length (default training.seq_length)")
    g.add_argument("--context", type=int, help="deployment KV context: decode at that context (default: the "
                   "throughput workload's)")
    g.add_argument("--max-latency-ms", type=float, help="only shapes whose batch-1 ms per output token at the "
                   "context is at most this")
    g.add_argument("--n-factors", type=lambda t: [float(v) for v in t.split(",") if v.strip()], metavar="F,F,...",
                   help="N of the candidates: the target N times these (default 0.25-4 in quarter octaves)")
    g.add_argument("--throughput-dir", type=Path, help="measured throughput/{arch}.json records (default: the "
                   "cost model's directory); a record at the deployment wins over the cost model")


def _config(args: argparse.Namespace) -> dict:
    """The config (or the schema's defaults) with the lifetime flags applied."""
    if args.config:
        config = load_config(args.config)
    else:
        config = {s: section_defaults(s) for s in ("throughput", "compute", "training")}
        config["search"] = {"batch_size": None,
                            "lifetime": {k: schema_default(f"search.lifetime.{k}") for k in LIFETIME_KEYS}}
    lt = config["search"]["lifetime"]
    for dest, key in FLAGS.items():
        if getattr(args, dest, None) is not None:
            lt[key] = getattr(args, dest)
    if args.peak_flops is not None:
        config["compute"]["peak_flops"], lt["gpu_model"] = args.peak_flops, None
    if args.seq_length is not None:
        config["training"]["seq_length"] = args.seq_length
    return config


def _settings(args: argparse.Namespace):
    settings = settings_from_config(_config(args))
    given = {"price_per_gpu_hour": "price_per_gpu_hour", "mfu": "mfu", "peak_flops": "peak_flops",
             "seq_length": "seq_length", "energy_price_per_kwh": "energy_price_per_kwh"}
    where = "config" if args.config else "schema default"
    sources = []
    for dest, key in given.items():
        flag = "--" + dest.replace("_", "-")
        if getattr(args, dest, None) is not None or (key == "peak_flops" and args.gpu_model):
            sources.append((key, f"assumption: {flag if key != 'peak_flops' or args.peak_flops else '--gpu-model'}"))
        else:
            sources.append((key, f"assumption: {dict(settings.prices.sources)[key].replace('config', where)}"))
    return replace(settings, prices=replace(settings.prices, sources=tuple(sources)))


def _records(args: argparse.Namespace) -> dict:
    folder = args.throughput_dir or (args.cost_model.parent if args.cost_model else None)
    if folder is None:
        return {}
    if args.throughput_dir is not None and not folder.is_dir():
        raise LifetimeError(f"--throughput-dir {folder}: no such directory")
    return read_records(p for p in sorted(folder.glob("*.json")) if p.name != "cost_model.json")


def cmd_lifetime(args: argparse.Namespace) -> int:
    check_demand(args.lifetime_tokens, "--lifetime-tokens")
    settings = _settings(args)
    cost_model = read_json(args.cost_model) if args.cost_model else None
    records = _records(args)
    if args.law and not (args.config or args.scale):
        out = {"law": _law_target(args, settings, cost_model, records)}
    else:
        out = _config_targets(args, settings, cost_model, records)
    if args.output_dir:
        for name, res in out.items():
            write_json(args.output_dir / name / "lifetime.json", res)
    if args.json:
        print(json.dumps(out, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        return 0
    for res in out.values():
        print_lifetime(res)
    return 0


def _law_target(args, settings, cost_model, records) -> dict:
    from ..law import load_law
    from ..law.tables import read_table
    from .search_scale import DEFAULT_GQA_RANGE, _loss_target

    missing = [f for f, v in (("--n-target", args.n_target), ("--layers", args.layers), ("--head-dim", args.head_dim),
                               ("--vocab", args.vocab), ("--tokens", args.tokens)) if v is None]
    if missing:
        raise LifetimeError(f"--law with --lifetime-tokens needs {', '.join(missing)}")
    if args.l_opt is not None:
        raise LifetimeError("--l-opt: the lifetime search varies N and D, so it needs L_opt(N, D) from the law "
                            "(its Chinchilla part, else Epoch AI's fit), not one number")
    law = load_law(args.law)
    scale = Scale(name=f"n{args.n_target}", n_target=args.n_target, layers=args.layers, head_dim=args.head_dim,
                  vocab=args.vocab, tied=True if args.tied is None else args.tied, d_multiple=args.d_multiple,
                  ffn_multiple=args.ffn_multiple, n_tolerance=args.n_tolerance, r_tolerance=args.r_tolerance)
    runs = read_table(args.runs) if args.runs else None
    target = _loss_target(args.loss_target, law, runs, args.runs)
    res = lifetime_search(
        law, scale, args.tokens, settings.tokens, Serving(settings.deployment, cost_model, records, settings.level),
        settings.prices, loss_target=target, form=args.form, n_factors=settings.n_factors, gqa=args.gqa,
        gqa_range=tuple(args.gqa_range or DEFAULT_GQA_RANGE), x_range=tuple(args.x_range),
        max_latency_ms=settings.max_latency_ms, level=settings.level)
    res["target"] = scale.name
    return res


def _config_targets(args, settings, cost_model, records) -> dict:
    """CONFIG or --scale: Algorithm 1 per target, then the lifetime search with its picks."""
    from ..law import load_law
    from ..search import cost_model_efficiency, law_from_fit, run_search
    from ..search.algorithm import fitted_ranges
    from ..study import Study
    from .search_inputs import _settings as search_settings, read_inputs, target_from_runs

    config, runs, conditional = read_inputs(args, LifetimeError)
    s = search_settings(args, config)
    if config:
        targets = Study.from_config(config).search_targets
        unknown = set(args.target or []) - set(targets)
        if unknown:
            raise ConfigError(f"--target {sorted(unknown)}: not in search.targets {sorted(targets)}")
        targets = {k: v for k, v in targets.items() if not args.target or k in args.target}
    elif args.scale:
        targets = {args.scale: target_from_runs(args, runs)}
    else:
        raise LifetimeError("give a CONFIG with search.targets, --scale NAME, or --law LAW")
    law_model, law = law_from_fit(conditional, str(args.fit)), load_law(args.fit)
    efficiency = cost_model_efficiency(cost_model, s.input_len, s.output_len, s.batch_size)
    x_range = fitted_ranges(conditional, runs)[0]
    out = {}
    for name, target in targets.items():
        result, _ = run_search(target, s, law_model, efficiency, runs)
        out[name] = lifetime_for_target(target, settings, law, cost_model, records, result, x_range=x_range,
                                        form=s.form)
    return out


def _interval(e: dict | None) -> str:
    if e is None or e.get("value") is None:
        return "-"
    if e.get("low") is None or e.get("high") is None or fmt(e["low"]) == fmt(e["high"]) == fmt(e["value"]):
        return fmt(e["value"])
    return f"{fmt(e['value'])} [{fmt(e['low'])}, {fmt(e['high'])}]"


def print_lifetime(res: dict, out=None) -> None:
    """The lifetime-optimal pick and the compared choices of one target, as text."""
    out = out or sys.stdout
    d, p, lt = res["deployment"], res["prices"], res["loss_target"]
    ctx = f", decode at context {d['context']}" if d["context"] else ""
    out.write(
        f"\n== lifetime cost, target {res.get('target')}: demand {fmt(res['demand_tokens'])} output tokens; deployment "
        f"batch {d['batch_size']}, {d['input_len']} in / {d['output_len']} out{ctx}\n"
        f"   loss target {fmt(lt['threshold'])} ({lt['source']}); law {res['law']} ({res['form']}), intervals "
        f"{res['interval']['level']:.0%}\n"
        f"   training: MFU {p['mfu']:g} ({p['sources']['mfu']}) of {p['peak_flops']:.4g} FLOP/s, seq {p['seq_length']}; "
        f"price per GPU-hour {fmt(p['train_price_per_gpu_hour'])} ({p['sources']['price_per_gpu_hour']})\n"
        f"   {res['n_feasible']} of {res['n_candidates']} candidates (N x {min(res['n_factors']):g}-"
        f"{max(res['n_factors']):g}) meet the target" + (f" within {res['max_latency_ms']:g} ms/token at batch 1"
                                                          if res["max_latency_ms"] else "") + "\n\n")
    rows = []
    for role, c in res["choices"].items():
        rows.append({"choice": role, "arch_id": c["arch_id"], "N": c["params_non_embedding"], "D": c["tokens"]["value"],
                     "D/N": c["tokens_per_param"], "loss": _interval(c["predicted_loss"]),
                     "training": _interval(c["training"]["cost"]), "serving": _interval(c["serving"]["cost"]),
                     "energy": _interval(c["energy"]["cost"]) if c["energy"]["j_per_output_token"] else "not measured",
                     "total": _interval(c["total"]), "tok/s": _interval(c["serving"]["output_tokens_per_s"]),
                     "serving source": c["serving"]["cost"]["source"],
                     "ms/token (B=1)": _interval(c["latency_ms"])})
    cols = [k for k in rows[0] if k != "ms/token (B=1)" or res["max_latency_ms"]]
    print_table(rows, cols, out=out)
    opt = res["optimum"]
    out.write(f"\n   lifetime optimum: {opt['arch_id']} (N {fmt(opt['params_non_embedding'])}, D {fmt(opt['tokens']['value'])}, "
              f"d/sqrt(N) {opt['d_over_sqrt_n']:.4g}, r {opt['mlp_attn_ratio']:.4g}, GQA {opt['gqa']}): total "
              f"{_interval(opt['total'])} = training {fmt(opt['training']['cost']['value'])} + serving "
              f"{fmt(opt['serving']['cost']['value'])} + energy {fmt(opt['energy']['cost']['value'])}\n")
    for x in res["crossovers"]:
        out.write(f"   {crossover_text(x, fmt)}\n")
    for note in res["notes"]:
        out.write(f"   note: {note}\n")
