"""Crossovers (the lifetime demand at which one choice overtakes another, with its interval) and
the total cost against demand."""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Mapping

import numpy as np

from ...arch import Architecture
from .costs import optimum_index, total
from .inputs import ROLES, ends, estimate


def crossover(a: dict, b: dict) -> dict[str, Any]:
    """The lifetime demand above which ``b`` is cheaper than ``a`` (choices of :func:`describe`).

    Total cost is ``train + T * per_token``, so they cross at ``(train_b - train_a) / (per_token_a -
    per_token_b)``. The interval is the range of that demand over the ends of both training-cost
    intervals (the law's) and both per-token intervals (the throughput's); an end at which ``b``
    never gets cheaper makes the upper end unbounded (None).
    """
    def parts(c):
        return c["training"]["cost"], c["per_token_cost"]

    (ta, sa), (tb, sb) = parts(a), parts(b)
    dt, ds = tb["value"] - ta["value"], sa["value"] - sb["value"]
    if dt <= 0 and ds >= 0:
        status, value = ("same cost" if dt == 0 and ds == 0 else "always cheaper"), 0.0
    elif dt > 0 and ds > 0:
        status, value = "overtakes", dt / ds
    else:
        status, value = "never cheaper", None
    corners = []
    for t_a, t_b, s_a, s_b in itertools.product(ends(ta), ends(tb), ends(sa), ends(sb)):
        if t_b - t_a <= 0 and s_a - s_b >= 0:
            corners.append(0.0)
        elif s_a - s_b > 0:
            corners.append((t_b - t_a) / (s_a - s_b))
        else:
            corners.append(math.inf)
    lo, hi = min(corners), max(corners)
    return {"from": a["role"], "to": b["role"], "status": status, "demand": value,
            "low": None if math.isinf(lo) else lo, "high": None if math.isinf(hi) else hi,
            "meaning": f"above this lifetime demand {b['role']} costs less than {a['role']}"}


def crossovers(choices: Mapping[str, dict]) -> list[dict[str, Any]]:
    """Every ordered pair where the second is cheaper to serve (the one that can overtake)."""
    out = []
    roles = [r for r in ROLES if choices.get(r) is not None]
    for ra, rb in itertools.combinations(roles, 2):
        a, b = choices[ra], choices[rb]
        if a["arch_id"] == b["arch_id"] and a["tokens"]["value"] == b["tokens"]["value"]:
            continue
        first, second = (a, b) if b["per_token_cost"]["value"] <= a["per_token_cost"]["value"] else (b, a)
        out.append(crossover(first, second))
    return out


def demand_grid(demand: float, points: int = 41, decades: float = 3.0) -> list[float]:
    """Log-spaced demands ``decades`` either side of ``demand`` (from 1e6 tokens when it is 0), plus 0."""
    centre = demand if demand > 0 else 1e9
    return [0.0, *np.geomspace(centre / 10**decades, centre * 10**decades, points).tolist()]


def cost_curve(cols: dict, archs: list[Architecture], fixed: Mapping[str, dict], grid: list[float]) -> dict[str, Any]:
    """Total cost against demand: each fixed choice (a line) and the lifetime optimum re-chosen at
    every demand (its arch id and tokens), with the ends of their intervals."""
    curve: dict[str, Any] = {"demand": list(grid), "choices": {}}
    for role, c in fixed.items():
        t, s = c["training"]["cost"], c["per_token_cost"]
        (tl, th), (sl, sh) = ends(t), ends(s)
        curve["choices"][role] = {"total": [t["value"] + g * s["value"] for g in grid],
                                  "low": [tl + g * sl for g in grid], "high": [th + g * sh for g in grid]}
    opt = {"total": [], "low": [], "high": [], "arch_id": [], "tokens": [], "params_non_embedding": [], "training": [],
           "per_token": []}
    for g in grid:
        i = optimum_index(cols, g)
        tot = total(cols, i, g) if i is not None else estimate(None)
        for k, v in (("total", tot["value"]), ("low", tot["low"]), ("high", tot["high"]),
                     ("arch_id", None if i is None else archs[i].arch_id),
                     ("tokens", None if i is None else float(cols["d"][i])),
                     ("params_non_embedding", None if i is None else archs[i].params_non_embedding),
                     ("training", None if i is None else float(cols["train"][i])),
                     ("per_token", None if i is None else float(cols["per_token"][i]))):
            opt[k].append(v)
    curve["choices"]["lifetime"] = opt
    return curve


def crossover_text(x: Mapping[str, Any], fmt: Callable[[float], str] = "{:.4g}".format) -> str:
    """One line for a :func:`crossover`: where ``to`` overtakes ``from``, with its interval."""
    if x["status"] == "overtakes":
        hi = "unbounded" if x["high"] is None else fmt(x["high"])
        return f"{x['to']} overtakes {x['from']} above {fmt(x['demand'])} tokens [{fmt(x['low'])}, {hi}]"
    verb = {"always cheaper": "costs less than", "never cheaper": "never costs less than"}.get(x["status"], "costs the same as")
    return f"{x['to']} {verb} {x['from']} at every demand"
