"""``archscale plan --science CONFIG --law LAW --seed-noise S --simulations K``: will this grid find the optima?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_layered


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan the science (--science)")
    g.add_argument("--science", action="store_true",
                   help="simulate the study's fits from a prior law: can this grid find the optima?")
    g.add_argument("--law", help="prior law: paper-80m-297m, paper-1b or a conditional.json (default plan.science.law)")
    g.add_argument("--seed-noise", type=float, help="seed noise (SD of the loss; default plan.science.seed_noise)")
    g.add_argument("--seed-noise-from", help="estimate the seed noise (per-run sd and the part shared across "
                   "architectures at a seed) from repeated seeds in a runs table")
    g.add_argument("--seed-shared", type=float, help="fraction of the seed-noise variance shared by all "
                   "architectures at a seed, in [0, 1) (default: measured by --seed-noise-from, else 0)")
    g.add_argument("--simulations", type=int, help="simulated studies (default plan.science.simulations)")
    g.add_argument("--suggest", type=int, nargs="?", const=5, default=5,
                   help="number of suggested grid points, or with --from-results of proposed additions (default 5)")
    g.add_argument("--from-results", type=Path, metavar="DIR",
                   help="sequential design: from a finished run's results (DIR/fit/conditional.json, DIR/runs.parquet) "
                        "propose the seeds and grid points that most narrow its unresolved optima per device-hour")
    g.add_argument("--overlay-out", type=Path, metavar="PATH",
                   help="with --from-results: write the proposals as a config overlay (snakemake --configfile "
                        "CONFIG... PATH trains only them)")
    g.add_argument("--budget", type=float, metavar="HOURS", help="with --from-results: device-hours to spend at most")
    g.add_argument("--optimum-width", type=float, default=0.5, metavar="REL",
                   help="with --from-results: a fitted optimum whose 95%% interval is wider than REL times the "
                        "optimum counts as unresolved (default 0.5)")


def cmd_science(args: argparse.Namespace) -> int:
    from ..law.tables import read_table
    from ..science import format_science, science_plan, seed_decomposition
    from ..study import Study

    if args.from_results is not None:
        return cmd_sequential(args)
    if args.overlay_out is not None or args.budget is not None:
        raise SystemExit("archscale plan --science: --overlay-out and --budget need --from-results DIR")
    source = " + ".join(map(str, args.config)) or str(args.base)
    config = load_layered(args.config, base=None if args.no_base else args.base)  # as the workflow layers it
    study = Study.from_config(config, source=source)
    sci = study.science
    law = args.law or sci.get("law")
    if not law:
        raise SystemExit(f"archscale plan --science: no prior law; pass --law (paper-80m-297m, paper-1b or a "
                         f"conditional.json) or set plan.science.law in {source}")
    noise_info = None
    if args.seed_noise_from:
        try:
            noise_info = seed_decomposition(read_table(args.seed_noise_from), where=str(args.seed_noise_from))
        except ValueError as exc:
            raise SystemExit(f"archscale plan --science: {exc}") from None
        noise = noise_info["seed_noise"]
    else:
        noise = args.seed_noise if args.seed_noise is not None else sci.get("seed_noise")
    if noise is None:
        raise SystemExit("archscale plan --science: no seed noise; pass --seed-noise S, --seed-noise-from RUNS or set "
                         f"plan.science.seed_noise in {source}")
    k = args.simulations if args.simulations is not None else int(sci["simulations"])
    try:
        shared = args.seed_shared if args.seed_shared is not None else (noise_info or {}).get("rho", 0.0)
        res = science_plan(study, law, float(noise), k, int(sci["seed"]), args.suggest, float(shared))
    except ValueError as exc:
        raise SystemExit(f"archscale plan --science: {exc}") from None
    if noise_info:
        res["seed_noise_estimate"] = noise_info
        res["notes"].append(f"seed noise {noise_info['seed_noise']:.3g} (95% CI {noise_info['ci95'][0]:.3g}-"
                            f"{noise_info['ci95'][1]:.3g}) from {noise_info['runs']} runs of "
                            f"{noise_info['architectures']} repeated architectures in {args.seed_noise_from}; "
                            + (f"share common to a seed {noise_info['rho']:.2f} [{noise_info['rho_ci95'][0]:.2f}, "
                               f"{noise_info['rho_ci95'][1]:.2f}] ({noise_info['shared_note']})"
                               if noise_info["rho_ci95"] else noise_info["shared_note"]))
    print(json.dumps(res, indent=2) if args.json else format_science(res))
    return 0


def cmd_sequential(args: argparse.Namespace) -> int:
    """``--science --suggest --from-results DIR [--overlay-out PATH]``: close the loop of a finished run."""
    from ..config import ConfigError, layered_files
    from ..io import json_clean
    from ..config import layered_raw
    from ..science.overlay import overlay_yaml
    from ..science.suggest import format_sequential, load_results, sequential_design

    fail = "archscale plan --science --from-results"
    for flag, given in (("--law", args.law), ("--seed-noise", args.seed_noise), ("--seed-noise-from", args.seed_noise_from),
                        ("--seed-shared", args.seed_shared), ("--simulations", args.simulations)):
        if given is not None:
            raise SystemExit(f"{fail}: {flag} does not apply; the law and the paired noise come from "
                             f"{args.from_results}/fit/conditional.json and {args.from_results}/runs.parquet")
    if args.suggest < 1 or (args.budget is not None and not args.budget > 0) or not args.optimum_width > 0:
        raise SystemExit(f"{fail}: --suggest must be >= 1, --budget and --optimum-width > 0 (got {args.suggest}, "
                         f"{args.budget}, {args.optimum_width})")
    base = None if args.no_base else args.base
    files = [str(p) for p in layered_files(args.config, base)]
    try:
        raw = layered_raw(args.config, base)
        law, conditional, runs, noise = load_results(args.from_results)
        res = sequential_design(raw, law, conditional, runs, noise, args.suggest, args.budget, args.optimum_width)
    except (ValueError, ConfigError) as exc:
        raise SystemExit(f"{fail}: {exc}") from None
    if res["overlay"] is not None and args.overlay_out is not None:
        configs = " ".join(str(p) for p in args.config)
        header = [f"archscale sequential design: {len(res['new_runs'])} new training runs, about "
                  f"{res['device_hours']:.3g} device-hours, proposed from {args.from_results}",
                  f"for the config {' + '.join(files)}; it repeats the whole scales list (Snakemake replaces lists)",
                  "with additions only: every existing run keeps its id, only the new runs train.",
                  f"use: snakemake --cores N --configfile {(configs + ' ') if configs else ''}{args.overlay_out}",
                  f"new runs ({len(res['new_runs'])}):"] + [f"  {rid}" for rid in res["new_runs"]]
        args.overlay_out.parent.mkdir(parents=True, exist_ok=True)
        args.overlay_out.write_text(overlay_yaml(res["overlay"], header))
        res["overlay_path"] = str(args.overlay_out)
    if args.json:
        print(json.dumps(json_clean(res), indent=2))
        return 0
    print(format_sequential(res, str(args.from_results)))
    if res["overlay"] is not None:
        print(f"overlay written to {args.overlay_out}" if args.overlay_out is not None else
              "pass --overlay-out PATH to write these proposals as a config overlay")
    return 0
