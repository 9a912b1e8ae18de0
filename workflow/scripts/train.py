"""Train one architecture: launch `python -m archscale.train` (or torchrun for several GPUs).

The training process is a child of this script: it is the __main__ of its own interpreter, as
megatron's dist_checkpointing writer process needs, whatever way Snakemake runs this script.
Signals received here (SLURM's SIGTERM/SIGUSR1) are forwarded to it; it checkpoints and exits
non-zero, so no declared output appears.
"""

import sys

from archscale.train.launcher import job_from_snakemake, launch

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    gpus = int(getattr(snakemake.resources, "gpu", 0) or 0)
    code = launch(job_from_snakemake(snakemake), gpus, stdout=log)
    if code != 0:
        print(f"[archscale] training process exited with code {code}", flush=True)
sys.exit(code)
