"""The training stage: one megatron-core training job per architecture.

* :mod:`.job` - the job description (identity from the rule's params, hardware knobs from config)
* :mod:`.launcher` - builds the command (``python -m archscale.train`` or ``torchrun``) and runs it
  with signal forwarding; the only part the Snakemake script imports (no torch)
* :mod:`.loop` - the training loop (megatron-core DDP, optimizer, scheduler, schedule)
* :mod:`.checkpointing` - resumable checkpoints and the final checkpoint
* :mod:`.signals` - SIGTERM/SIGUSR1 -> checkpoint and exit
* :mod:`.metrics` - throughput, MFU, versions, progress lines, the loss curve
"""
