"""Inference throughput and energy per architecture, and the roofline cost model.

``run_job`` measures one architecture (``throughput/{arch}.json``); ``roofline`` predicts the
throughput of architectures that were never measured. Importing this package is cheap: torch
and megatron-core are imported when a job runs.
"""

from .job import run_job

__all__ = ["run_job"]
