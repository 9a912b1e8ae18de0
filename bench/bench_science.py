"""Time the science plan: config/paper.yaml (216 architectures), K simulated studies.

Target: 200 simulations in under a minute on 2 cores. Times the simulation (every scale set and
form, the validation Spearman, the search's picks) and the suggestions separately. Writes
bench/results/science.json with wall and CPU (process) time and the load average, because this
machine's 2 cores are shared: numbers from a loaded machine say so.

    .venv/bin/python bench/bench_science.py [--simulations 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
from pathlib import Path

import numpy as np

from archscale.config import load_config
from archscale.law import load_law
from archscale.science import simulate_study, suggest
from archscale.study import Study

from timing import timed  # noqa: E402 (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    ap.add_argument("--law", default="paper-80m-297m")
    ap.add_argument("--seed-noise", type=float, default=0.01)
    ap.add_argument("--simulations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "science.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    law = load_law(args.law)
    load0 = os.getloadavg()
    (_, t_plan) = timed(lambda: Study.from_config(copy.deepcopy(cfg)).plan, 1)
    study = Study.from_config(copy.deepcopy(cfg))
    study.plan  # resolve once: the simulation's own time is measured below
    res, t_sim = timed(lambda: simulate_study(study, law, args.seed_noise, args.simulations), args.repeats)
    _, t_sug = timed(lambda: suggest(study, law, args.seed_noise), args.repeats)
    out = {
        "config": args.config, "law": args.law, "seed_noise": args.seed_noise, "simulations": args.simulations,
        "architectures": res["architectures"], "scale_sets": len(res["scale_sets"]),
        "resolve_plan": t_plan, "simulate": t_sim, "suggest": t_sug,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
        "target": "simulate + suggest under 60 s wall on 2 cores",
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
