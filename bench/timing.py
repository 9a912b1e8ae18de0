"""Helpers shared by the bench scripts (run as ``python bench/<name>.py``, so this folder is on
``sys.path``): repeated in-process timing with wall and CPU time."""

from __future__ import annotations

import time

import numpy as np


def timed(fn, repeats: int):
    """``fn()`` run ``repeats`` times: its last result and the wall/CPU time figures."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return out, {"wall_s_min": min(walls), "wall_s_median": float(np.median(walls)), "cpu_s_min": min(cpus),
                 "repeats": repeats}
