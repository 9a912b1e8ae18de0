"""Effects of the knobs read from the runs themselves, against the measured seed noise.

No law is fitted here. The seed noise of a scale is the pooled within-architecture standard
deviation of validation loss over the architectures trained at several seeds. A knob's effect
is read along each one-knob sweep of the grid (the plan's ``sweeps`` memberships: points that
differ only in that knob): per architecture the mean loss over its seeds; the best point; and
the rise toward the sweep's lower and upper ends. An interior optimum is *resolved* when the
best point is not at an end and the loss rises by more than ``k`` (default 3) times the seed
noise on both sides; the optimum then lies between the best point's neighbours (the grid
bracket, reported as its interval). A monotone effect is resolved when the two ends differ by
more than ``k`` times the noise. Anything else is reported as not resolved, with the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Loss differences count as resolved beyond this many seed standard deviations.
RESOLVE_SIGMAS = 3.0
#: Columns of the runs table that hold each knob's value.
KNOB_COLUMNS = {"d_over_sqrt_n": "d_over_sqrt_n", "r": "mlp_attn_ratio"}
KNOB_LABELS = {"d_over_sqrt_n": "d/sqrt(N)", "r": "r"}


@dataclass(frozen=True)
class SeedNoise:
    """Pooled within-architecture standard deviation of validation loss at one scale."""

    scale: str
    sd: float | None  # None: no architecture at this scale has two seeds
    architectures: int  # architectures with >= 2 seeds
    runs: int
    dof: int
    ci95: tuple[float, float] | None = None  # chi-square 95% interval of sd


@dataclass(frozen=True)
class SweepEffect:
    """One knob along one one-knob sweep at one scale."""

    scale: str
    knob: str
    sweep: str
    points: list[dict]  # per architecture, by knob value: arch_id, x, mean, n_seeds
    best_x: float
    best_loss: float
    rise_low: float | None  # max mean loss below best_x minus the best (None: best is the lowest x)
    rise_high: float | None
    noise_sd: float | None
    shape: str  # "interior minimum", "falls", "rises", "flat"
    resolved: bool
    bracket: tuple[float, float] | None  # the optimum lies between the best point's neighbours

    def to_dict(self) -> dict:
        return asdict(self)

    def seeds_text(self) -> str:
        """Seeds per architecture along the sweep: "3", or "2-3" where they differ."""
        seeds = sorted({p["n_seeds"] for p in self.points})
        return f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"

    def verdict(self) -> str:
        """The sweep's verdict in a few words (the table's column; :meth:`sentence` spells it out)."""
        if self.noise_sd is None:
            return "seed noise not measured"
        if self.shape == "interior minimum":
            if self.resolved:
                return f"interior optimum resolved, in [{self.bracket[0]:.3g}, {self.bracket[1]:.3g}]"
            return "interior minimum not resolved"
        return f"{self.shape}, resolved" if self.resolved else "not resolved"

    def row(self) -> dict:
        """One row of :func:`effects_table` (rises in loss and in seed-noise sd)."""
        def in_sd(v):
            return None if v is None or not self.noise_sd else v / self.noise_sd
        return {
            "scale": self.scale, "knob": KNOB_LABELS.get(self.knob, self.knob), "sweep": self.sweep,
            "from": self.points[0]["x"], "to": self.points[-1]["x"], "architectures": len(self.points),
            "seeds": self.seeds_text(),
            "best_at": self.best_x, "best_mean_loss": self.best_loss,
            "rise_low": self.rise_low, "rise_low_sd": in_sd(self.rise_low),
            "rise_high": self.rise_high, "rise_high_sd": in_sd(self.rise_high),
            "seed_noise_sd": self.noise_sd, "verdict": self.verdict(),
        }

    def sentence(self, k: float = RESOLVE_SIGMAS) -> str:
        label = KNOB_LABELS.get(self.knob, self.knob)
        xs = f"{label} {self.points[0]['x']:.3g} to {self.points[-1]['x']:.3g} ({len(self.points)} architectures)"
        head = f"{self.scale}, {label} along {self.sweep} ({xs}, {self.seeds_text()} seed(s) each): "
        if self.noise_sd is None:
            return head + (f"lowest mean loss {self.best_loss:.3f} at {label} = {self.best_x:.3g}; the seed noise "
                           "was not measured at this scale (one seed per architecture), so no difference is resolved.")
        def rise(v):
            return "none (the best point is at this end)" if v is None else f"{v:+.3f} ({v / self.noise_sd:.1f} sd)"
        body = (f"lowest mean loss {self.best_loss:.3f} at {label} = {self.best_x:.3g}; rise toward the low end "
                f"{rise(self.rise_low)}, toward the high end {rise(self.rise_high)}; seed noise sd "
                f"{self.noise_sd:.3f}. ")
        if self.shape == "interior minimum":
            if self.resolved:
                verdict = (f"Interior optimum resolved (both rises exceed {k:g} sd): it lies in "
                           f"[{self.bracket[0]:.3g}, {self.bracket[1]:.3g}] (the best point's grid neighbours).")
            else:
                verdict = f"An interior minimum is not resolved: a rise of {k:g} sd or more on both sides is needed."
        elif self.resolved:
            verdict = f"Loss {self.shape} with {label} beyond {k:g} sd across the sweep; no interior optimum inside it."
        else:
            verdict = f"No difference across the sweep exceeds {k:g} sd: the effect is not resolved."
        return head + body + verdict


def seed_noise(runs: pd.DataFrame, value: str = "valid_loss") -> dict[str, SeedNoise]:
    """Per scale: the pooled sample standard deviation of ``value`` within architectures
    (archscale.science.noise.seed_noise_from_runs, the one estimator)."""
    from ..science.noise import seed_noise_from_runs

    out = {}
    runs = runs[np.isfinite(runs[value].astype(float))]
    for scale, sub in runs.groupby("scale", sort=True):
        try:
            est = seed_noise_from_runs(sub, where=f"scale {scale}", loss=value, group="arch_id")
        except ValueError:
            out[str(scale)] = SeedNoise(str(scale), None, 0, 0, 0)
            continue
        out[str(scale)] = SeedNoise(str(scale), est["seed_noise"], est["architectures"], est["runs"], est["dof"],
                                    tuple(est["ci95"]))
    return out


def _sweep_groups(runs: pd.DataFrame, knob: str) -> dict[tuple[str, str], list[str]]:
    """(scale, sweep membership) -> arch ids, for memberships of ``knob``."""
    groups: dict[tuple[str, str], set[str]] = {}
    if "sweeps" not in runs:
        return {}
    for arch, scale, sweeps in runs[["arch_id", "scale", "sweeps"]].drop_duplicates("arch_id").itertuples(index=False):
        for m in (sweeps if isinstance(sweeps, str) else "").split(";"):  # null (NaN): no grid sweep
            if m.startswith(f"{knob}@"):
                groups.setdefault((str(scale), m.split("@", 1)[1]), set()).add(arch)
    return {k: sorted(v) for k, v in groups.items()}


def sweep_effect(sub: pd.DataFrame, scale: str, knob: str, sweep: str, noise: SeedNoise | None,
                 k: float = RESOLVE_SIGMAS, value: str = "valid_loss") -> SweepEffect:
    """The effect of ``knob`` over the runs ``sub`` (one sweep at one scale; several seeds each)."""
    col = KNOB_COLUMNS[knob]
    per = sub.groupby("arch_id").agg(x=(col, "first"), mean=(value, "mean"), n_seeds=(value, "size"))
    per = per.reset_index().sort_values("x").reset_index(drop=True)
    i = int(per["mean"].to_numpy().argmin())
    best = float(per["mean"].iloc[i])
    rise_low = float(per["mean"].iloc[:i].max() - best) if i > 0 else None
    rise_high = float(per["mean"].iloc[i + 1:].max() - best) if i < len(per) - 1 else None
    sd = noise.sd if noise else None
    if rise_low is not None and rise_high is not None:
        shape = "interior minimum"
        resolved = sd is not None and min(rise_low, rise_high) > k * sd
    else:
        ends = float(per["mean"].iloc[-1] - per["mean"].iloc[0])
        shape = "falls" if ends < 0 else ("rises" if ends > 0 else "flat")
        resolved = sd is not None and abs(ends) > k * sd
    bracket = None
    if shape == "interior minimum" and resolved:
        bracket = (float(per["x"].iloc[i - 1]), float(per["x"].iloc[i + 1]))
    points = [{"arch_id": a, "x": float(x), "mean": float(m), "n_seeds": int(n)}
              for a, x, m, n in per[["arch_id", "x", "mean", "n_seeds"]].itertuples(index=False)]
    return SweepEffect(scale, knob, sweep, points, float(per["x"].iloc[i]), best, rise_low, rise_high, sd,
                       shape, bool(resolved), bracket)


def knob_effects(runs: pd.DataFrame, k: float = RESOLVE_SIGMAS, value: str = "valid_loss") -> list[SweepEffect]:
    """Every sweep of d/sqrt(N) and of r with at least three architectures, per scale."""
    runs = runs[np.isfinite(runs[value].astype(float))]
    noise = seed_noise(runs, value)
    out = []
    for knob in KNOB_COLUMNS:
        for (scale, sweep), archs in sorted(_sweep_groups(runs, knob).items()):
            sub = runs[runs["arch_id"].isin(archs)]
            if sub["arch_id"].nunique() >= 3:
                out.append(sweep_effect(sub, scale, knob, sweep, noise.get(scale), k, value))
    return out


def effects_table(runs: pd.DataFrame, k: float = RESOLVE_SIGMAS, value: str = "valid_loss") -> pd.DataFrame:
    """Every sweep's effect as a table (one row per sweep; :meth:`SweepEffect.row`)."""
    if not len(runs) or value not in runs:
        return pd.DataFrame()
    return pd.DataFrame([e.row() for e in knob_effects(runs, k, value)])


def effect_sentences(runs: pd.DataFrame, k: float = RESOLVE_SIGMAS) -> list[str]:
    """The seed noise per scale and every sweep's effect, in words (see the module doc)."""
    if not len(runs) or "valid_loss" not in runs:
        return []
    out = []
    for n in seed_noise(runs).values():
        if n.sd is None:
            out.append(f"{n.scale}: seed noise not measured (no architecture trained at two or more seeds).")
        else:
            out.append(f"{n.scale}: seed noise sd {n.sd:.3f} [{n.ci95[0]:.3f}, {n.ci95[1]:.3f}] of validation loss "
                       f"(95% interval; pooled over {n.architectures} architectures, {n.runs} runs, {n.dof} degrees "
                       "of freedom).")
    effects = knob_effects(runs, k)
    if not effects:
        out.append("No one-knob sweep of three or more architectures (the runs table has no sweep memberships, or "
                   "every sweep is shorter): effects are read from the fitted law only.")
    out += [e.sentence(k) for e in effects]
    return out
