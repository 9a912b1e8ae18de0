"""Training process entry point: ``python -m archscale.train JOB.json`` (or under torchrun).

Exit codes: 0 finished; 128+signal after a preemption checkpoint (143 SIGTERM, 138 SIGUSR1);
3 diverged (NaN/inf loss); 4 architecture does not fit in memory; 1 any other error.
"""

import os

# Before torch is imported: reproducible MKL reductions (bit-identical CPU runs with fixed threads).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

EXIT_DIVERGED = 3
EXIT_DOES_NOT_FIT = 4


def block_unused_wandb(hardware) -> None:
    """Make ``import wandb`` fail in a job that does not log to W&B (``training.wandb`` unset).

    megatron-core imports wandb, when it is installed, at its own import (for its inference and
    timer logging; it falls back when the import fails): 0.3-1 s of every training job's
    start-up, for nothing archscale uses. ``sys.modules["wandb"] = None`` is Python's way of
    marking a module as absent. A job with W&B tracking imports it as usual.
    """
    import sys

    if not hardware.get("wandb"):
        sys.modules.setdefault("wandb", None)


def main(argv=None) -> int:
    import argparse
    import sys
    import traceback

    parser = argparse.ArgumentParser(prog="python -m archscale.train", description=__doc__)
    parser.add_argument("job", help="job description (JSON) written by archscale.train.launcher")
    args = parser.parse_args(argv)

    import torch

    from ..model import resolve_runtime, setup_runtime
    from .job import TrainJob
    from .loop import ArchitectureDoesNotFit, TrainingDiverged, train
    from .signals import Preempted, Preemption

    # Install the handlers before the slow set-up, so an early signal is not lost.
    pre = Preemption().install()
    job = TrainJob.load(args.job)
    hw = job.hardware
    block_unused_wandb(hw)
    try:
        runtime = resolve_runtime(hw["precision"], hw["transformer_impl"], int(hw["tensor_parallel"]))
        if not runtime.on_gpu:
            torch.set_num_threads(int(hw["threads"]))
            torch.set_num_interop_threads(1)
        setup_runtime(runtime, int(job.recipe["seed"]))
        train(job, runtime, preemption=pre)
        return 0
    except Preempted as exc:
        print(f"[archscale] {job.arch_id}: {exc}", flush=True)
        return exc.exit_code
    except TrainingDiverged as exc:
        print(f"ERROR: training diverged: {exc}", flush=True)
        return EXIT_DIVERGED
    except ArchitectureDoesNotFit as exc:
        print(f"ERROR: {exc}", flush=True)
        return EXIT_DOES_NOT_FIT
    except Exception as exc:  # noqa: BLE001 - report, then fail
        traceback.print_exc()
        print(f"ERROR: training {job.arch_id} failed: {exc}", flush=True, file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # dist_checkpointing spawns a writer process: keep this guard
    raise SystemExit(main())
