"""Config overlays that add training runs to a finished study (sequential design).

An overlay is a config fragment layered last, ``snakemake --configfile CONFIG... OVERLAY``.
Snakemake merges config files as :func:`archscale.config.deep_merge` does: mappings key by
key, lists replaced whole. An overlay that adds runs therefore repeats the study's whole
``scales`` list (from the layered config as written, before schema defaults) with additions
only, so every existing run keeps its id (:func:`archscale.plan.run_id`: the base seed's run
is the arch id, seed ``s`` is ``<arch_id>-s<s>``) and only the added runs are new jobs.

An :class:`Action` is one addition: a seed appended to a grid sweep's seeds (the scale's seeds,
or ``training.seed``, when the sweep has none, so the sweep's existing runs stay), a value
appended to a sweep's knob list, or a new one-point sweep at a scale. :func:`plan_diff` is the
check: the plan of the config with the actions keeps every planned run and lists the new ones.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..config import deep_merge
from ..plan import Plan, TrainRun, build_plan


@dataclass(frozen=True)
class Action:
    """One addition to the grid. ``kind``: ``seed`` (``value`` appended to the seeds of
    ``scales[scale_index].grid[grid_index]``), ``extend`` (``value`` appended to that sweep's
    ``key`` list) or ``point`` (``point``, a new sweep entry, appended to the scale's grid)."""

    kind: str
    scale_index: int
    grid_index: int | None = None
    key: str | None = None
    value: Any = None
    point: dict | None = field(default=None, compare=False)
    label: str = ""

    def where(self) -> str:
        if self.grid_index is None:
            return f"scales[{self.scale_index}].grid[+]"
        return f"scales[{self.scale_index}].grid[{self.grid_index}]"


def sweep_seeds(config: dict, scale_index: int, grid_index: int) -> list[int]:
    """The seeds a grid sweep trains with (its own, else its scale's, else ``training.seed``)."""
    scale = config["scales"][scale_index]
    sweep = scale["grid"][grid_index]
    base = int((config.get("training") or {}).get("seed", 1234))
    return [int(s) for s in (sweep.get("seeds") or scale.get("seeds") or [base])]


def next_seed(config: dict, scale_index: int, grid_index: int) -> int:
    """The smallest positive seed the sweep does not train with yet (and not ``training.seed``):
    sweeps of one scale get the same new seeds, so their shared architectures train them once
    and the new runs stay paired across the sweeps."""
    used = set(sweep_seeds(config, scale_index, grid_index)) | {int((config.get("training") or {}).get("seed", 1234))}
    s = 1
    while s in used:
        s += 1
    return s


def apply(config: dict, action: Action) -> dict:
    """A copy of ``config`` (raw or validated) with ``action`` applied."""
    out = copy.deepcopy(config)
    scale = out["scales"][action.scale_index]
    if action.kind == "point":
        scale.setdefault("grid", []).append(copy.deepcopy(action.point))
        return out
    sweep = scale["grid"][action.grid_index]
    if action.kind == "seed":
        sweep["seeds"] = sweep_seeds(out, action.scale_index, action.grid_index) + [int(action.value)]
    elif action.kind == "extend":
        sweep[action.key] = list(sweep[action.key]) + [action.value]
    else:
        raise ValueError(f"unknown action kind '{action.kind}'")
    return out


def overlay_of(config: dict) -> dict:
    """The overlay that turns the layered config into ``config``: its whole ``scales`` list."""
    return {"scales": copy.deepcopy(config["scales"])}


def plan_of(config: dict) -> Plan:
    """The plan of a config (validated on a copy: the raw config keeps no schema defaults)."""
    return build_plan(copy.deepcopy(config))


def plan_diff(old: Plan, new: Plan, where: str = "overlay") -> list[TrainRun]:
    """The training runs of ``new`` that ``old`` lacks; ValueError if ``new`` drops or renames any
    run of ``old`` (an overlay must only add)."""
    before, after = old.train_runs, new.train_runs
    lost = sorted(set(before) - set(after))
    if lost:
        raise ValueError(f"{where}: the layered config would drop or rename {len(lost)} planned run(s), e.g. "
                         f"{lost[:3]}; an overlay may only add runs")
    # the train job's identity (the rule's params: architecture, budget; its seed and tokens)
    changed = [rid for rid in before if after[rid] != before[rid] or old.budget(rid) != new.budget(rid)
               or old.runs[before[rid].arch_id].arch.to_dict() != new.runs[after[rid].arch_id].arch.to_dict()]
    if changed:
        raise ValueError(f"{where}: run(s) {changed[:3]} would change (architecture, seed, tokens or budget) "
                         "and train again")
    return [r for rid, r in after.items() if rid not in before]


def runs_cost(plan: Plan, runs: list[TrainRun]) -> float:
    """Estimated device-hours of ``runs``: each (architecture, seed) trains once, all its
    horizons included (the plan's per-seed estimate, ``est_device_hours``)."""
    pairs = {(r.arch_id, r.seed) for r in runs}
    hours = {a: plan.runs[a].row(plan.compute)["est_device_hours"] for a in {a for a, _ in pairs}}
    return float(sum(hours[a] for a, _ in pairs))


def check_overlay(raw: dict, overlay: dict, expected: set[str]) -> list[TrainRun]:
    """Layer ``overlay`` on ``raw`` as Snakemake does, validate, and check that the plan keeps every
    run and adds exactly ``expected`` run ids; returns the new runs."""
    new = plan_diff(plan_of(raw), plan_of(deep_merge(raw, overlay)))
    got = {r.run_id for r in new}
    if got != expected:
        raise ValueError(f"overlay: adds {sorted(got - expected)[:5]} and misses {sorted(expected - got)[:5]} "
                         "against the proposals (an internal inconsistency; please report it)")
    return new


def overlay_yaml(overlay: dict, header: list[str]) -> str:
    """The overlay as YAML, ``header`` lines as comments above it."""
    body = yaml.safe_dump(overlay, sort_keys=False, default_flow_style=None, width=100)
    return "".join(f"# {h}\n" if h else "#\n" for h in header) + body
