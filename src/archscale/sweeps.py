"""One-knob sweeps of the grid: :class:`Sweep` (the knob, the grid entry that declares it and
the values it holds the entry's other knobs at), its key as the plan and runs.parquet store it,
and its name as a reader is shown it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .arch import GridPoint

#: The knobs of a grid sweep, as the sweep's lists name them, and the knob each one moves.
SWEEP_KNOBS = {"d_model": "d_over_sqrt_n", "d_over_sqrt_n": "d_over_sqrt_n", "r": "r", "gqa": "gqa"}


#: The knobs as the config and the paper name them (the report's and the CLI's words).
KNOB_WORDS = {"d_over_sqrt_n": "d/sqrt(N)", "d_model": "d_model", "r": "r", "gqa": "GQA",
              "mlp_attn_ratio": "r"}
#: A sweep key (:attr:`Sweep.key`), or its part after ``@`` (the knob left out), as it may stand in text.
SWEEP_KEY_RE = re.compile(r"(?:(\w+)@)?scales\[(\d+)\]\.grid\[(\d+)\]\|((?:[\w.\-]+=[\w.+\-]+)(?:,[\w.\-]+=[\w.+\-]+)*)?")


@dataclass(frozen=True)
class Sweep:
    """One one-knob sweep of the grid: the knob it moves, the grid entry that declares it
    (``scales[scale_index].grid[grid_index]``) and the values it holds the entry's other knobs at.

    Points of one sweep differ only in ``knob``, so its effect can be read along them without a
    fitted law (archscale.analysis.effects). A full product entry yields one sweep per level of
    its other knobs. :attr:`key` is how the plan and runs.parquet store it (``sweeps`` column,
    ``;``-joined); :meth:`parse` reads it back; :meth:`name` is what a reader is shown.
    """

    knob: str
    scale_index: int
    grid_index: int
    held: tuple[tuple[str, float], ...] = ()

    @property
    def origin(self) -> str:
        return f"scales[{self.scale_index}].grid[{self.grid_index}]"

    @property
    def key(self) -> str:
        """``<knob>@scales[i].grid[k]|<held knob>=<value>,...``."""
        return f"{self.knob}@{self.origin}|" + ",".join(f"{k}={v:g}" for k, v in self.held)

    @classmethod
    def parse(cls, key: str) -> "Sweep":
        m = SWEEP_KEY_RE.fullmatch(str(key).strip())
        if m is None or m.group(1) is None:
            raise ValueError(f"'{key}' is not a sweep key (<knob>@scales[i].grid[k]|<held knobs>)")
        knob, i, k, held = m.groups()
        pairs = [item.partition("=") for item in filter(None, (held or "").split(","))]
        return cls(knob, int(i), int(k), tuple((name, float(value)) for name, _, value in pairs))

    @classmethod
    def parse_cell(cls, cell) -> list["Sweep"]:
        """The sweeps of one ``sweeps`` cell of the plan or runs.parquet (null or "": none)."""
        return [cls.parse(key) for key in (cell if isinstance(cell, str) else "").split(";") if key]

    def name(self, scale: str | None = None, knob: bool = True) -> str:
        """"s100k, r sweep at d/sqrt(N) 0.35": the knob and the held values as the config names
        them; GQA 1 (plain multi-head attention) is left unsaid (``knob=False``: "sweep at ...")."""
        parts = [f"{KNOB_WORDS.get(k, k)} {v:g}" for k, v in self.held if not (k == "gqa" and v == 1)]
        head = f"{KNOB_WORDS.get(self.knob, self.knob)} sweep" if knob else "sweep"
        text = head + (f" at {' and '.join(parts)}" if parts else "")
        return f"{scale}, {text}" if scale else text


def grid_point_sweeps(sweep: dict, point: GridPoint, scale_index: int, grid_index: int) -> list[Sweep]:
    """The one-knob sweeps ``point`` of the grid entry ``sweep`` (``scales[scale_index].grid[grid_index]``)
    belongs to: one for each knob whose list in the entry has several values."""
    values = {"d_model": point.d_model, "d_over_sqrt_n": point.d_over_sqrt_n, "r": point.r, "gqa": point.gqa}
    varied = [k for k in ("d_model", "d_over_sqrt_n", "r", "gqa") if len(sweep.get(k) or []) > 1]
    return [Sweep(SWEEP_KNOBS[k], scale_index, grid_index,
                  tuple((o, float(values[o])) for o in ("d_model", "d_over_sqrt_n", "r", "gqa") if o != k and o in sweep))
            for k in varied]
