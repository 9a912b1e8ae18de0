"""Multi-horizon runs against separate cosine runs, through the workflow itself.

For one architecture of the embedded default's kind (N about 50k, d/sqrt(N) 0.35, r 1) at
several seeds, this trains, with the workflow on the shipped sample:

* separate cosine runs to each token budget D in HORIZONS (one scale per budget, same N), and
* one warmup-stable-decay run per seed whose decay branches end at the same budgets
  (``horizons:``), the stable phase shared;

and reports, per budget, the validation loss of both (mean over seeds, the paired difference
branch - cosine with its 95% t interval), and the compute of each way: tokens trained and the
summed training time of the jobs (from their metrics.json).

    .venv/bin/python bench/bench_horizons.py [--seeds 1234 1 2] [--horizons 5 10 20] [--cores 2]

Writes bench/results/horizons.json (load averages before and after in it). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

import pandas as pd  # noqa: E402

from archscale.analysis.paired import difference  # noqa: E402

N_TARGET = 50_000
FILES = ["Snakefile", "workflow", "config", "profiles", "resources", "src", "environment.yml", "pyproject.toml"]


def scale(name: str, tokens_per_param: float, seeds: list[int], horizons: list[float] | None) -> dict:
    entry = {"name": name, "n_target": N_TARGET, "layers": 2, "head_dim": 8, "tokens_per_param": tokens_per_param,
             "seeds": seeds, "grid": [{"d_over_sqrt_n": [0.35], "r": [1.0], "gqa": [1]}]}
    if horizons:
        entry["horizons"] = horizons
    return entry


def run_study(root: Path, scales: list[dict], cores: int) -> list[dict]:
    root.mkdir(parents=True)
    for name in FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    overlay = {"scales": scales, "search": {"targets": []}}
    (root / "config" / "bench.yaml").write_text(yaml.safe_dump(overlay))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # up to the runs table (throughput of the one architecture: seconds); `--until train` stops
    # short of the chained decay branches (Snakemake's "out of jobs ready" with a rule that
    # depends on itself)
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--cores", str(cores), "--until", "aggregate",
           "--configfile", "config/bench.yaml"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        failed = [log.read_text()[-20000:] for log in sorted((root / "logs" / "train").glob("*.log"))
                  if "exited with code" in log.read_text()]
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:] + "\n" + "\n".join(failed[:1]))
    out = []
    for path in sorted((root / "results" / "train").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        out.append({"run": path.parent.name, "seed": m["recipe"]["seed"], "tokens": m["tokens_budget"],
                    "valid_loss": m["valid_loss"], "train_time_s": m["train_time_s"], "steps": m["steps"],
                    "branch_step": m.get("branch_step"), "resumed_from_step": m.get("resumed_from_step")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1234, 1, 2])
    ap.add_argument("--horizons", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-horizons-") as tmp:
        cosine = run_study(Path(tmp) / "cosine", [scale(f"c{int(h * 10)}", h, args.seeds, None) for h in args.horizons],
                           args.cores)
        wsd = run_study(Path(tmp) / "wsd", [scale("w", max(args.horizons), args.seeds, args.horizons)], args.cores)
    rows = []
    for h in args.horizons:
        tokens = int(round(h * N_TARGET))
        c = {r["seed"]: r for r in cosine if r["tokens"] == tokens}
        w = {r["seed"]: r for r in wsd if r["tokens"] == tokens}
        seeds = sorted(set(c) & set(w))
        d = difference(pd.Series({s: w[s]["valid_loss"] for s in seeds}), pd.Series({s: c[s]["valid_loss"] for s in seeds}),
                       method="paired")
        diff = {"estimate": d.estimate, "ci95": d.ci, "se": d.se, "method": d.method, "seeds": d.n}
        rows.append({"tokens_per_param": h, "tokens": tokens, "seeds": seeds,
                     "cosine_loss": [c[s]["valid_loss"] for s in seeds], "wsd_loss": [w[s]["valid_loss"] for s in seeds],
                     "wsd_minus_cosine": diff})
    compute = {
        "cosine": {"steps_trained": sum(r["steps"] for r in cosine), "train_time_s": sum(r["train_time_s"] for r in cosine)},
        # a branch continued from the kept stable phase carries the trunk's time: count each trunk once
        "wsd": {"steps_trained": sum(r["steps"] - (r["resumed_from_step"] or 0) for r in wsd)},
    }
    result = {"rows": rows, "compute": compute, "cosine_runs": cosine, "wsd_runs": wsd, "seconds": time.perf_counter() - t0,
              "load_before": load_before, "load_after": os.getloadavg(), "cores": args.cores}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "horizons.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"rows": rows, "compute": compute, "load": [load_before, result["load_after"]]}, indent=2, default=str))


if __name__ == "__main__":
    main()
