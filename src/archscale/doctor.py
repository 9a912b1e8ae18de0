"""``archscale doctor``: is this machine ready for archscale's jobs? One table, a fix per problem.

Checked, in order: Python; torch (version, and the CUDA it was built for); megatron-core
(version from its package metadata, inside the tested range, importable); Transformer Engine;
the NVIDIA driver, the CUDA version it supports and the GPUs it sees (NVML); whether torch's
CUDA build runs on that driver (else the PyTorch wheel index that matches it); then two runs
with the library's own code at the smallest shape: a 2-step training (``python -m
archscale.train``, exactly as the workflow starts one: megatron-core's model, DDP, optimizer,
checkpoint) and a 4-token decode (the static-cache decoder throughput jobs use).

Exit status 0 when nothing failed (warnings allowed), 1 otherwise: a SLURM profile can run it as
the first job on a partition (docs/install.md). Statuses: ``ok``, ``warn`` (works, but read the
fix), ``FAIL`` (a job would fail), ``skip`` (not applicable here, or blocked by a failure above).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .arch import Architecture

#: CUDA versions of PyTorch's wheel indexes (https://download.pytorch.org/whl/cuXYZ). Which torch
#: releases each index holds is PyTorch's choice: the index's torch/ page lists them.
PYTORCH_CUDA_INDEXES = ((11, 8), (12, 1), (12, 4), (12, 6), (12, 8), (12, 9), (13, 0), (13, 2))
PYTORCH_INDEX = "https://download.pytorch.org/whl/{}"
#: The smallest training job of the check: 2 steps of 4 sequences of 32 tokens.
ARCH = Architecture(d_model=64, ffn=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=256, scale="doctor")
SEQ, BATCH, STEPS = 32, 4, 2
RECIPE = {
    "seq_length": SEQ, "global_batch": BATCH, "lr": 0.001, "min_lr_ratio": 0.1, "warmup_fraction": 0.0,
    "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95, "clip_grad": 1.0, "init_std": 0.02,
    "seed": 1, "eval_tokens": BATCH * SEQ, "eval_interval": 0,
}
STATUSES = ("ok", "warn", "FAIL", "skip")


@dataclass
class Check:
    name: str
    status: str
    found: str
    fix: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name}: status {self.status!r} is not one of {STATUSES}")


def cuda_version(text: str | int | None) -> tuple[int, int] | None:
    """``"12.4"`` or NVML's ``12040`` -> ``(12, 4)``; None for None."""
    if text is None:
        return None
    if isinstance(text, int):
        return text // 1000, (text % 1000) // 10
    major, minor = str(text).split(".")[:2]
    return int(major), int(minor)


def wheel_index_for(driver_cuda: tuple[int, int]) -> str | None:
    """PyTorch's wheel index of the newest CUDA the driver runs (CUDA minor-version compatibility
    covers the minors of one major only where the driver is of that major: take the index at or
    below the driver's version). None when the driver is older than every index."""
    fits = [v for v in PYTORCH_CUDA_INDEXES if v <= driver_cuda]
    return PYTORCH_INDEX.format(f"cu{fits[-1][0]}{fits[-1][1]}") if fits else None


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def python_check(version: tuple[int, int, int]) -> Check:
    found = ".".join(map(str, version))
    if not (3, 11) <= version[:2] <= (3, 13):
        return Check("python", "FAIL", found, "archscale needs Python 3.11-3.13 (pyproject.toml requires-python)")
    if version[:2] == (3, 11):
        return Check("python", "ok", f"{found} (megatron-core 0.16 only: 0.17+ needs 3.12)")
    return Check("python", "ok", found)


def torch_check(version: str | None, cuda: str | None, import_error: str | None) -> Check:
    """torch's version and build; the range check needs torch to import (archscale.compat imports it)."""
    if version is None:
        return Check("torch", "FAIL", "not installed", "pip install -e . (torch's tested range is in pyproject.toml)")
    if import_error:
        return Check("torch", "FAIL", f"{version}: import fails: {import_error}",
                     f"pip install --force-reinstall 'torch=={version.split('+')[0]}' from the index of the CUDA row")
    from .compat import TESTED, check_versions

    build = f"CUDA {cuda} build" if cuda else "CPU-only build"
    problems = check_versions({"torch": version, "megatron-core": TESTED["megatron-core"][0]})
    if problems:
        return Check("torch", "FAIL", f"{version} ({build})", problems[0].split("; fix: ", 1)[1])
    return Check("torch", "ok", f"{version} ({build})")


def megatron_check(version: str | None, import_error: str | None) -> Check:
    from .compat import REQUIREMENTS, TESTED, check_versions

    spec = f"megatron-core{REQUIREMENTS['megatron-core']}"
    if version is None:
        return Check("megatron-core", "FAIL", "not installed", f"pip install '{spec}'")
    problems = check_versions({"torch": TESTED["torch"][0], "megatron-core": version})
    if problems:
        return Check("megatron-core", "FAIL", version, problems[0].split("; fix: ", 1)[1])
    if import_error:
        return Check("megatron-core", "FAIL", f"{version}: import fails: {import_error}", _import_fix(version, import_error))
    return Check("megatron-core", "ok", f"{version} (tested {TESTED['megatron-core'][0]} to {TESTED['megatron-core'][1]})")


def _import_fix(version: str, error: str) -> str:
    """The fix of a failed ``import megatron.core``: what the error names."""
    missing = re.search(r"No module named '([\w.]+)'", error)
    if missing and not missing.group(1).startswith("megatron"):
        return f"pip install {missing.group(1).split('.')[0]} (megatron-core {version} imports it)"
    if "transformer_engine" in error:
        return ("Transformer Engine does not match this torch/CUDA: pip install --no-build-isolation "
                "transformer_engine[pytorch] for it, or pip uninstall transformer_engine (archscale runs without)")
    return f"pip install --force-reinstall --no-deps 'megatron-core=={version}'"


def te_check(version: str | None, gpus: int) -> Check:
    if version:
        return Check("transformer-engine", "ok", version)
    if gpus:
        return Check("transformer-engine", "warn", "not installed (GPU jobs use megatron's local layers: slower)",
                     "use an NGC PyTorch container, or pip install --no-build-isolation transformer_engine[pytorch]")
    return Check("transformer-engine", "skip", "not installed (not used on CPU)")


def cuda_match_check(torch_cuda: str | None, driver: dict) -> Check:
    """Whether torch's CUDA build runs on the driver, and which wheel index matches when not."""
    gpus, driver_cuda = driver.get("gpus", []), cuda_version(driver.get("cuda"))
    if not gpus:
        return Check("torch CUDA vs driver", "skip", "no GPU seen: CPU jobs only")
    index = wheel_index_for(driver_cuda) if driver_cuda else None
    from .compat import REQUIREMENTS

    reinstall = (f"pip install --force-reinstall 'torch{REQUIREMENTS['torch']}' --index-url {index}" if index
                 else "update the NVIDIA driver")
    if torch_cuda is None:
        return Check("torch CUDA vs driver", "FAIL", "torch is a CPU-only build on a GPU machine", reinstall)
    if driver_cuda is not None and cuda_version(torch_cuda) > driver_cuda:
        return Check("torch CUDA vs driver", "FAIL",
                     f"torch built for CUDA {torch_cuda}; the driver supports CUDA {driver['cuda']} at most", reinstall)
    return Check("torch CUDA vs driver", "ok", f"CUDA {torch_cuda} build on a CUDA {driver['cuda']} driver")


def read_driver() -> dict:
    """Driver version, the newest CUDA it supports and the GPUs, from NVML; ``error`` when it cannot."""
    try:
        import pynvml
    except ImportError:
        return {"error": "nvidia-ml-py is not installed", "gpus": []}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"error": f"NVML unavailable ({exc}): no energy or clock readings", "gpus": []}
    try:
        text = pynvml.nvmlSystemGetDriverVersion()
        count = pynvml.nvmlDeviceGetCount()
        gpus = []
        for i in range(count):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            gpus.append(name.decode() if isinstance(name, bytes) else name)
        cuda = cuda_version(pynvml.nvmlSystemGetCudaDriverVersion())
        return {"driver": text.decode() if isinstance(text, bytes) else text, "cuda": "%d.%d" % cuda, "gpus": gpus}
    finally:
        pynvml.nvmlShutdown()


def driver_checks(driver: dict, torch_sees: int) -> list[Check]:
    if "error" in driver:
        reason = driver["error"]
        fix = None if "nvidia-ml-py" not in reason else "pip install nvidia-ml-py (energy is not measured without it)"
        nvml = Check("NVML", "warn" if fix else "skip", reason, fix)
        return [Check("driver and GPUs", "skip", "no NVIDIA driver (a CPU machine; in a container on a GPU node: "
                      "apptainer --nv or docker --gpus all)"), nvml]
    names = ", ".join(sorted(set(driver["gpus"]))) or "none"
    found = f"driver {driver['driver']} (CUDA {driver['cuda']}), {len(driver['gpus'])} GPU(s): {names}"
    status, fix = "ok", None
    if driver["gpus"] and torch_sees == 0:
        status, fix = "FAIL", "torch sees no GPU: check CUDA_VISIBLE_DEVICES and the CUDA row below"
    return [Check("driver and GPUs", status, f"{found}; torch sees {torch_sees}", fix),
            Check("NVML", "ok", "energy and clocks readable")]


def _spec():
    """The checks' architecture with the schema's network settings."""
    from .study import default_spec

    return default_spec(ARCH)


def _error_line(output: str) -> str:
    """The line of a failed job's output that names the error (else its last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or line.startswith("ERROR")]
    return (named or lines or ["no output"])[-1][:300]


def training_check(gpus: int, timeout_s: float = 300.0, verbose: bool = False) -> Check:
    """2 steps of the smallest model through ``python -m archscale.train``, as the workflow runs it."""
    from .data.dataset import write_synthetic_manifest
    from .train import launcher
    from .train.job import TrainJob

    name = f"{STEPS}-step training"
    with tempfile.TemporaryDirectory(prefix="archscale-doctor-") as tmp:
        root = Path(tmp)
        tokens = STEPS * BATCH * SEQ
        manifest = write_synthetic_manifest(root / "data", vocab_size=ARCH.vocab, train_tokens=8 * tokens,
                                            valid_tokens=4 * tokens, seed=1)
        job = TrainJob(
            arch=_spec(), budget={"tokens": tokens, "scale": ARCH.scale, "n_target": ARCH.params_non_embedding},
            recipe=RECIPE, manifest=str(manifest), checkpoint_dir=str(root / "ckpt"),
            metrics=str(root / "metrics.json"), curve=str(root / "curve.parquet"), final=str(root / "final"),
            hardware={"micro_batch": BATCH, "threads": 1, "checkpoint_interval": 1000},
        )
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(launcher.command(launcher.write_job(job), 1), capture_output=True, text=True,
                                  env=launcher.environment(threads=1, gpus=gpus), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Check(name, "FAIL", f"no result after {timeout_s:.0f} s", "run it alone: is the machine loaded?")
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            if verbose:
                print(proc.stdout + proc.stderr, file=sys.stderr)
            return Check(name, "FAIL", f"exit {proc.returncode}: {_error_line(proc.stdout + proc.stderr)}",
                         "if torch or megatron-core is outside the tested range, install one inside it; else "
                         "archscale doctor --verbose prints the job's output")
        metrics = json.loads((root / "metrics.json").read_text())
    where = "GPU" if gpus else "CPU"
    return Check(name, "ok", f"loss {metrics['final_train_loss']:.3f} after {metrics['steps']} steps on {where}, "
                             f"{wall:.1f} s with start-up")


def decode_check() -> Check:
    """4 tokens from the static-cache decoder of throughput jobs, on random weights of the smallest model."""
    from .model import resolve_runtime
    from .throughput.engine import random_prompts
    from .throughput.fastdecode import FastDecoder, random_weights

    runtime = resolve_runtime()
    decoder = FastDecoder(random_weights(_spec(), runtime, seed=1), runtime, max_seq=SEQ)
    gen = decoder.generate(random_prompts(ARCH.vocab, 1, 8, seed=1, device=runtime.device), 4)
    tokens = gen.tokens.tolist()[0]
    if len(tokens) != 4 or not all(0 <= t < ARCH.vocab for t in tokens):
        return Check("4-token decode", "FAIL", f"generated {tokens}", "archscale doctor --verbose; report it")
    return Check("4-token decode", "ok", f"4 tokens in {gen.total_s * 1e3:.1f} ms ({runtime.device}, {runtime.precision})")


def _import_error(module: str) -> str | None:
    """None when ``module`` imports, else the error in one line (on CPU megatron-core the CPU way)."""
    import warnings

    try:
        with warnings.catch_warnings():  # megatron's "Transformer Engine and Apex are not installed"
            warnings.simplefilter("ignore")
            _import(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return None


def _import(module: str) -> None:
    if module == "megatron.core":
        import torch

        if not torch.cuda.is_available():
            from .compat import import_megatron

            import_megatron()
    __import__(module)


def run_checks(runs: bool = True, verbose: bool = False) -> list[Check]:
    """Every check of the table, in order; ``runs`` False leaves out the training and decode runs."""
    checks = [python_check(tuple(sys.version_info[:3]))]
    torch_error = _import_error("torch")
    torch_cuda, torch_sees = None, 0
    if torch_error is None:
        import torch

        torch_cuda = torch.version.cuda
        torch_sees = torch.cuda.device_count() if torch.cuda.is_available() else 0
    checks.append(torch_check(installed_version("torch"), torch_cuda, torch_error))
    if torch_error is None:
        checks.append(megatron_check(installed_version("megatron-core"), _import_error("megatron.core")))
    else:
        checks.append(Check("megatron-core", "skip", f"{installed_version('megatron-core')}: needs torch"))
    driver = read_driver()
    checks.append(te_check(installed_version("transformer-engine"), len(driver.get("gpus", []))))
    checks += driver_checks(driver, torch_sees)
    checks.append(cuda_match_check(torch_cuda, driver))
    if not runs:
        return checks
    blocked = [c.name for c in checks if c.status == "FAIL"]
    why = f"blocked by: {', '.join(blocked)}"
    train_name = f"{STEPS}-step training"
    if blocked:
        checks.append(Check(train_name, "skip", why))
    else:
        checks.append(_guarded(train_name, lambda: training_check(gpus=1 if torch_sees else 0, verbose=verbose)))
    if torch_error is None and "torch CUDA vs driver" not in blocked:  # the decoder needs torch only
        checks.append(_guarded("4-token decode", decode_check))
    else:
        checks.append(Check("4-token decode", "skip", why))
    return checks


def _guarded(name: str, run) -> Check:
    """``run()``'s check, or a FAIL row naming the exception it raised (its traceback on stderr)."""
    import traceback

    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - the failure is the finding
        traceback.print_exc()
        return Check(name, "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                     "the traceback above says where; if torch or megatron-core is outside the tested range, "
                     "install one inside it")


def format_table(checks: list[Check]) -> str:
    """The checks as an aligned table, then one numbered fix per problem."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  status  found", f"{'-' * width}  ------  {'-' * 5}"]
    fixes = []
    for c in checks:
        mark = f" [{len(fixes) + 1}]" if c.fix else ""
        if c.fix:
            fixes.append(c.fix)
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.found}{mark}")
    failed = sum(c.status == "FAIL" for c in checks)
    lines.append("")
    lines.append(f"{failed} problem(s) a job would fail on" if failed else "ready: nothing a job would fail on")
    lines += [f"  [{i}] {fix}" for i, fix in enumerate(fixes, 1)]
    return "\n".join(lines)


def keep_installed(installed: dict[str, str | None] | None = None) -> list[str]:
    """Constraints that keep an environment's own torch and megatron-core (``name==version``).

    For installing archscale into an environment that has them (an NGC container): pip may not
    replace either, so it downloads neither, and stops rather than install another torch. Raises
    ValueError naming the package, its version, the tested range and the fix when one is outside
    the range. ``installed``: distribution -> version (None: absent); default: package metadata.
    """
    if installed is None:
        installed = {name: installed_version(name) for name in ("torch", "megatron-core")}
    present = {name: v for name, v in installed.items() if v is not None}
    if "torch" not in present:
        return []  # nothing to keep: pip installs both from pyproject.toml's ranges
    from .compat import check_versions  # imports torch

    problems = [p for p in check_versions(installed) if " is not installed" not in p]
    if problems:
        raise ValueError("refusing to install archscale into this environment, which pip would change: "
                         + "; ".join(problems))
    return [f"{name}=={version}" for name, version in present.items()]


def main_keep_installed() -> int:
    """``tools/install-into-env``: print :func:`keep_installed`'s constraints, or the refusal (exit 1)."""
    try:
        lines = keep_installed()
    except ValueError as exc:
        print(f"archscale: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    for line in lines:
        print(f"keeping {line.replace('==', ' ')} (in archscale's tested range)", file=sys.stderr)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("doctor", help="check this machine for archscale's jobs (versions, GPUs, a 2-step "
                              "training, a 4-token decode)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-runs", action="store_true", help="versions, driver and GPUs only (no training, no decode)")
    p.add_argument("--verbose", action="store_true", help="print a failed training job's whole output")
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    checks = run_checks(runs=not args.no_runs, verbose=args.verbose)
    if args.json:
        print(json.dumps({"python": platform.python_version(), "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(format_table(checks))
    return 1 if any(c.status == "FAIL" for c in checks) else 0
