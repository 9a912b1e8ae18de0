"""Dry-run time of large grids: the paper config and a generated grid of 2,000 architectures.

    .venv/bin/python bench/bench_dryrun.py [--repeats 2] [--sizes 2000] [--out bench/results/dryrun.json]

Each case runs in a fresh temporary copy of the workflow (nothing done yet: the worst case, every
job planned), as a user types it: `snakemake -n --configfile CONFIG` (the full per-job listing)
and `snakemake -n --quiet rules --configfile CONFIG` (the job-count table only). Reported: wall
time of each repeat, the number of jobs and architectures, the machine. Goal: a 2,000-
architecture grid dry-runs in under 2 minutes on 2 cores.

The generated grid takes the paper config's scales 80M..1B and lists 2,000 distinct feasible
grid points (d/sqrt(N), r, GQA), each as its own one-point sweep, resolved by archscale's planner
exactly as a user's grid would be.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from archscale.plan import build_plan  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
COPY = ["Snakefile", "workflow", "config", "profiles", "resources", "src", "environment.yml", "pyproject.toml"]


def copy_workflow(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def generated_grid(paper: dict, size: int) -> dict:
    """The paper config (its named baselines and search targets kept) whose scales 80M..1B hold
    distinct feasible one-point sweeps, ``size`` architectures in all."""
    config = copy.deepcopy(paper)
    config.setdefault("model", {})["on_infeasible"] = "error"
    swept = [s for s in config["scales"] if "grid" in s]
    for s in swept:
        s["grid"] = []
    base = {**config, "scales": [s for s in config["scales"] if s.get("architectures")]}
    seen = set(build_plan(base).ids)
    xs = [round(0.03 + 0.0025 * i, 4) for i in range(45)]          # d/sqrt(N) 0.03 .. 0.14
    rs = [round(0.5 + 0.125 * i, 3) for i in range(37)]             # r 0.5 .. 5.0
    candidates = {s["name"]: itertools.product(xs, rs, [1, 2, 4, 8]) for s in swept}
    while len(seen) < size and candidates:
        for s in swept:  # round-robin: every scale gets a share of the grid
            if s["name"] not in candidates or len(seen) >= size:
                continue
            probe = {**config, "scales": [{**s, "grid": [], "architectures": []}]}
            for x, r, g in candidates[s["name"]]:
                point = {"d_over_sqrt_n": [x], "r": [r], "gqa": [g]}
                probe["scales"][0]["grid"] = [point]
                try:
                    arch_id = build_plan(probe).ids[0]
                except Exception:  # noqa: BLE001 - infeasible at this scale: next point
                    continue
                if arch_id not in seen:
                    seen.add(arch_id)
                    s["grid"].append(point)
                    break
            else:
                del candidates[s["name"]]
    config["scales"] = [s for s in config["scales"] if s.get("grid") or s.get("architectures")]
    n = len(build_plan(config).ids)
    if n != size:
        raise SystemExit(f"generated grid has {n} architectures, wanted {size}")
    return config


def job_stats(output: str) -> dict[str, int]:
    counts, rows = {}, output.splitlines()
    for i, line in enumerate(rows):
        if line.strip() == "Job stats:":
            for row in rows[i + 3:]:
                m = re.match(r"^(\w+)\s+(\d+)$", row.strip())
                if not m:
                    break
                counts[m.group(1)] = int(m.group(2))
            break
    return counts


def dry_run(workdir: Path, config: Path, quiet: bool) -> tuple[float, dict[str, int]]:
    args = [SNAKEMAKE, "-n", "--configfile", str(config)] + (["--quiet", "rules"] if quiet else [])
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return seconds, job_stats(proc.stdout + proc.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="*", default=[2000], help="generated grid sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dryrun.json")
    args = ap.parse_args()

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="archscale-bench-") as tmp:
        workdir = Path(tmp)
        copy_workflow(workdir)
        cases = [("paper", workdir / "config" / "paper.yaml")]
        for size in args.sizes:
            t0 = time.perf_counter()
            cfg = generated_grid(paper, size)
            path = workdir / "config" / f"grid{size}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            print(f"generated grid{size} in {time.perf_counter() - t0:.1f} s", flush=True)
            cases.append((f"grid{size}", path))
        for name, path in cases:
            architectures = len(build_plan(yaml.safe_load(path.read_text())).ids)
            for quiet in (False, True):
                times, stats = [], {}
                for _ in range(args.repeats):
                    seconds, stats = dry_run(workdir, path.relative_to(workdir), quiet)
                    times.append(round(seconds, 2))
                mode = "snakemake -n --quiet rules" if quiet else "snakemake -n"
                row = {"case": name, "command": f"{mode} --configfile config/{path.name}",
                       "architectures": architectures, "jobs": stats.get("total"),
                       "train_jobs": stats.get("train"), "seconds": times, "best_s": min(times)}
                results.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "benchmark": "dry-run time (fresh working directory: every job planned)",
        "goal": "2,000 architectures under 120 s on 2 cores",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    # Other work on the machine inflates the times: the 1-min load average.
                    "loadavg_1min_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)]},
        "snakemake": subprocess.run([SNAKEMAKE, "--version"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
