"""``archscale plan --science CONFIG --law LAW --seed-noise S --simulations K``: will this grid find the optima?"""

from __future__ import annotations

import argparse
import json

from ..config import load_layered


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan the science (--science)")
    g.add_argument("--science", action="store_true",
                   help="simulate the study's fits from a prior law: can this grid find the optima?")
    g.add_argument("--law", help="prior law: paper-80m-297m, paper-1b or a conditional.json (default plan.science.law)")
    g.add_argument("--seed-noise", type=float, help="seed noise (SD of the loss; default plan.science.seed_noise)")
    g.add_argument("--seed-noise-from", help="estimate the seed noise from repeated seeds in a runs table")
    g.add_argument("--simulations", type=int, help="simulated studies (default plan.science.simulations)")
    g.add_argument("--suggest", type=int, default=5, help="number of suggested grid points (default 5)")


def cmd_science(args: argparse.Namespace) -> int:
    from ..law.tables import read_table
    from ..science import format_science, science_plan, seed_noise_from_runs
    from ..study import Study

    source = " + ".join(map(str, args.config)) or str(args.base)
    config = load_layered(args.config, base=None if args.no_base else args.base)  # as the workflow layers it
    study = Study.from_config(config, source=source)
    sci = dict(study.config.get("plan", {}).get("science", {}))
    law = args.law or sci.get("law")
    if not law:
        raise SystemExit(f"archscale plan --science: no prior law; pass --law (paper-80m-297m, paper-1b or a "
                         f"conditional.json) or set plan.science.law in {source}")
    noise_info = None
    if args.seed_noise_from:
        try:
            noise_info = seed_noise_from_runs(read_table(args.seed_noise_from), where=str(args.seed_noise_from))
        except ValueError as exc:
            raise SystemExit(f"archscale plan --science: {exc}") from None
        noise = noise_info["seed_noise"]
    else:
        noise = args.seed_noise if args.seed_noise is not None else sci.get("seed_noise")
    if noise is None:
        raise SystemExit("archscale plan --science: no seed noise; pass --seed-noise S, --seed-noise-from RUNS or set "
                         f"plan.science.seed_noise in {source}")
    k = args.simulations if args.simulations is not None else int(sci.get("simulations", 200))
    try:
        res = science_plan(study, law, float(noise), k, int(sci.get("seed", 0)), args.suggest)
    except ValueError as exc:
        raise SystemExit(f"archscale plan --science: {exc}") from None
    if noise_info:
        res["seed_noise_estimate"] = noise_info
        res["notes"].append(f"seed noise {noise_info['seed_noise']:.3g} (95% CI {noise_info['ci95'][0]:.3g}-"
                            f"{noise_info['ci95'][1]:.3g}) from {noise_info['runs']} runs of "
                            f"{noise_info['architectures']} repeated architectures in {args.seed_noise_from}")
    print(json.dumps(res, indent=2) if args.json else format_science(res))
    return 0
