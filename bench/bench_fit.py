"""Time the law fits: the full-start-grid Chinchilla fit (4,500 starts) on Epoch AI's extracted
Chinchilla data and on a few hundred synthetic runs, and the conditional law on synthetic runs.

Writes bench/results/fit.json. Wall and CPU (process) time are both recorded, with the load
average, because this machine's 2 cores are shared.

    .venv/bin/python bench/bench_fit.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from archscale.law.chinchilla import fit_chinchilla, load_chinchilla_anchor
from archscale.law.conditional import fit_conditional, u_factor

from timing import timed  # noqa: E402 (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / "tests" / "data" / "chinchilla_svg_extracted_data.csv"
EPOCH = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def synthetic_chinchilla(n_points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = {"E": 1.9, "A": 300.0, "B": 900.0, "alpha": 0.32, "beta": 0.3}
    n = 10 ** rng.uniform(7, 10, n_points)
    d = n * 10 ** rng.uniform(0.5, 2.5, n_points)
    loss = (truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]) * np.exp(
        rng.normal(0, 0.005, n_points)
    )
    return n, d, loss, truth


def synthetic_conditional(n_runs: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]
    scales = [8e7, 1.45e8, 2.97e8]
    rows = []
    for i in range(n_runs):
        n = scales[i % 3]
        x, r = 10 ** rng.uniform(-1.5, -0.6), 10 ** rng.uniform(-0.3, 0.7)
        lo = 1.8 + 400 / n**0.34 + 1500 / (100 * n) ** 0.36
        rows.append({"arch_id": f"run{i}", "n_target": n, "params_non_embedding": n, "D": 100 * n, "tokens": 100 * n,
                     "d_over_sqrt_n": x, "mlp_attn_ratio": r,
                     "valid_loss": u_factor(a, x) * u_factor(b, r) * lo + rng.normal(0, 0.003)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "fit.json"))
    args = ap.parse_args()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "loadavg_start": os.getloadavg()}, "chinchilla": {}, "conditional": {}}
    n, d, loss = load_chinchilla_anchor(ANCHOR)
    for objective in ("huber", "lad", "squared"):
        for boot in (0, 200):
            fit, t = timed(lambda: fit_chinchilla(n, d, loss, objective=objective, bootstrap=boot), args.repeats)
            out["chinchilla"][f"anchor_{objective}_bootstrap{boot}"] = {
                **t, "points": int(n.size), "starts": fit.n_starts, "params": fit.params,
                "se": fit.se if boot else None,
            }
            print(objective, boot, t, fit.params, flush=True)
    out["chinchilla"]["epoch_published"] = EPOCH
    for size in (300, 600):
        sn, sd, sl, truth = synthetic_chinchilla(size)
        fit, t = timed(lambda: fit_chinchilla(sn, sd, sl, bootstrap=200), args.repeats)
        out["chinchilla"][f"synthetic_{size}_huber_bootstrap200"] = {**t, "points": size, "params": fit.params,
                                                                      "truth": truth}
        print("synthetic", size, t, flush=True)
    runs = synthetic_conditional(300)
    res, t = timed(lambda: fit_conditional(runs, bootstrap=200), args.repeats)
    out["conditional"]["synthetic_300_both_forms_bootstrap200"] = {
        **t, "points": res["n_points"],
        "optimum": {f: res["forms"][f]["optimum"] for f in res["forms"]},
    }
    print("conditional", t, flush=True)
    out["machine"]["loadavg_end"] = os.getloadavg()
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
