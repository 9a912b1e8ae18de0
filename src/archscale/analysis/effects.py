"""Effects of the knobs read from the runs themselves: differences of mean loss with intervals.

No law is fitted here. A knob's effect is read along each one-knob sweep of the grid (the
plan's ``sweeps`` memberships: points that differ only in that knob), at one token budget
(the largest budget every point of the sweep has, when the runs carry several per run in a
``tokens`` column). Per architecture the mean loss over its seeds; the best point (lowest
mean); and the differences of mean loss that carry the verdict, each with a 95% interval
(:mod:`archscale.analysis.paired`: paired t at matched seeds, Welch t when the seeds differ, a
bootstrap over seeds from 20 seeds on; none with one seed):

* the rise toward each end: the end's mean loss minus the best point's;
* the ends' difference: the last point's mean loss minus the first's.

An interior optimum (best point not an end) is *resolved* when both rises are resolved; a
monotone effect (best point at an end) when the ends' difference is. A sweep can make ``P - 1``
claims (``P`` points), so its claim is Bonferroni-corrected by ``P - 1``; the sweeps read
together (every sweep of the runs table) are corrected by Holm's step-down method, so the
chance that any sweep without an effect is called resolved is at most 5%. The corrected
interval is the interval at the level the verdict used. A resolved interior optimum lies
between the best point's grid neighbours (the grid bracket). The per-run seed sd (pooled within
architectures over the sweep's points) is shown beside the differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from ..sweeps import Sweep
from .paired import LEVEL, Difference, difference, holm, holm_levels

#: Columns of the runs table that hold each knob's value.
KNOB_COLUMNS = {"d_over_sqrt_n": "d_over_sqrt_n", "r": "mlp_attn_ratio"}
KNOB_LABELS = {"d_over_sqrt_n": "d/sqrt(N)", "r": "r"}
#: Column of a run's token budget (several rows per run when a run yields several budgets).
BUDGET_COLUMN = "tokens"
CORRECTION = "Holm across the sweeps read together, Bonferroni over each sweep's P - 1 possible claims"


@dataclass(frozen=True)
class SeedNoise:
    """Seed noise of validation loss at one scale (and token budget): the pooled
    within-architecture sd and the part of it shared by all architectures at a seed."""

    scale: str
    sd: float | None  # None: no architecture at this scale has two seeds
    architectures: int  # architectures with >= 2 seeds
    runs: int
    dof: int
    ci95: tuple[float, float] | None = None  # chi-square 95% interval of sd
    tokens: float | None = None
    rho: float | None = None  # share of the per-run variance common to all architectures at a seed
    rho_ci95: tuple[float, float] | None = None
    shared_note: str | None = None


@dataclass(frozen=True)
class SweepEffect:
    """One knob along one one-knob sweep at one scale and token budget."""

    scale: str
    knob: str
    sweep: str
    points: list[dict]  # per architecture, by knob value: arch_id, x, mean, n_seeds
    best_x: float
    best_loss: float
    rise_low: Difference | None  # first point minus the best (None: the best is the first point)
    rise_high: Difference | None  # last point minus the best
    ends: Difference  # last point minus the first
    noise_sd: float | None  # per-run sd pooled within the sweep's architectures (None: one seed each)
    shape: str  # "interior minimum", "falls", "rises", "flat"
    resolved: bool
    bracket: tuple[float, float] | None  # the optimum lies between the best point's neighbours
    tokens: float | None = None
    p_claim: float | None = None  # p of the sweep's claim, Bonferroni over its P - 1 claims
    p_adjusted: float | None = None  # ... and Holm across the family
    family: int = 1
    corrected_level: float | None = None  # level of the intervals the verdict used

    def to_dict(self) -> dict:
        out = asdict(self)
        for k in ("rise_low", "rise_high", "ends"):
            out[k] = getattr(self, k).to_dict() if getattr(self, k) is not None else None
        return out

    def seeds_text(self) -> str:
        """Seeds per architecture along the sweep: "3", or "2-3" where they differ."""
        seeds = sorted({p["n_seeds"] for p in self.points})
        return f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"

    @property
    def measured(self) -> bool:
        return self.p_claim is not None

    def method(self) -> str:
        d = self.rise_low or self.rise_high or self.ends
        return d.describe()

    def verdict(self) -> str:
        """The sweep's verdict in a few words (the table's column; :meth:`sentence` spells it out)."""
        if not self.measured:
            return "no interval: one seed per architecture"
        if self.shape == "interior minimum":
            if self.resolved:
                return f"interior optimum resolved, in [{self.bracket[0]:.3g}, {self.bracket[1]:.3g}]"
            return "interior minimum not resolved"
        return f"{self.shape}, resolved" if self.resolved else "not resolved"

    def _corrected(self, d: Difference | None):
        return None if d is None or self.corrected_level is None else d.interval(self.corrected_level)

    def row(self) -> dict:
        """One row of :func:`effects_table`: each difference with its 95% and corrected intervals."""
        out = {"scale": self.scale, "knob": KNOB_LABELS.get(self.knob, self.knob),
               "sweep": Sweep.parse(f"{self.knob}@{self.sweep}").name(),
               "tokens": self.tokens, "from": self.points[0]["x"], "to": self.points[-1]["x"],
               "architectures": len(self.points), "seeds": self.seeds_text(), "best_at": self.best_x,
               "best_mean_loss": self.best_loss}
        for key in ("rise_low", "rise_high", "ends"):
            d = getattr(self, key)
            out[key] = None if d is None else d.estimate
            out[f"{key}_ci95"] = None if d is None else d.ci
            out[f"{key}_ci_corrected"] = self._corrected(d)
        out.update({"per_run_sd": self.noise_sd, "method": self.method(), "p_adjusted": self.p_adjusted,
                    "corrected_level": self.corrected_level, "verdict": self.verdict(),
                    "correction": f"{CORRECTION} ({self.family} sweep(s))" if self.measured else None})
        return out

    def sweep_name(self) -> str:
        """The sweep as the config names it: "s100k, r sweep at d/sqrt(N) 0.2"."""
        return Sweep.parse(f"{self.knob}@{self.sweep}").name(self.scale)

    def sentence(self) -> str:
        label = KNOB_LABELS.get(self.knob, self.knob)
        xs = f"{label} {self.points[0]['x']:.3g} to {self.points[-1]['x']:.3g} ({len(self.points)} architectures)"
        at = f", at {self.tokens:.3g} tokens" if self.tokens is not None else ""
        head = f"{self.sweep_name()} ({xs}, {self.seeds_text()} seed(s) each{at}): "
        if not self.measured:
            return head + (f"lowest mean loss {self.best_loss:.3f} at {label} = {self.best_x:.3g}; with one seed per "
                           "architecture no difference has an interval, so nothing is resolved.")
        def rise(d):
            return "none (the best point is at this end)" if d is None else f"{d.text()}"
        body = (f"lowest mean loss {self.best_loss:.3f} at {label} = {self.best_x:.3g}; rise toward the low end "
                f"{rise(self.rise_low)}, toward the high end {rise(self.rise_high)}; ends {self.ends.text()} "
                f"(differences of mean loss, 95% intervals, {self.method()}; per-run sd {self.noise_sd:.3f}). ")
        lv = f"{100 * self.corrected_level:.3g}%"
        corr = f"at the corrected level {lv} ({CORRECTION}; {self.family} sweep(s); adjusted p {self.p_adjusted:.3g})"
        if self.shape == "interior minimum":
            if self.resolved:
                verdict = (f"Interior optimum resolved (both rises' intervals exclude 0 {corr}): it lies in "
                           f"[{self.bracket[0]:.3g}, {self.bracket[1]:.3g}] (the best point's grid neighbours).")
            else:
                verdict = f"An interior minimum is not resolved: both rises' intervals must exclude 0 {corr}."
        elif self.resolved:
            verdict = f"Loss {self.shape} with {label}: the ends' interval excludes 0 {corr}; no interior optimum inside it."
        else:
            verdict = f"The ends' difference is not resolved {corr}: the effect is not resolved."
        return head + body + verdict


def _budgets(runs: pd.DataFrame) -> pd.Series:
    return runs[BUDGET_COLUMN].astype(float) if BUDGET_COLUMN in runs else pd.Series(np.nan, index=runs.index)


def seed_noise(runs: pd.DataFrame, value: str = "valid_loss") -> dict[str, SeedNoise]:
    """Per scale (and token budget, where a scale has several): the pooled within-architecture sd
    and its seed-shared part (archscale.analysis.noise.seed_decomposition, the one estimator).
    Keys: the scale, or "scale at T tokens" when the scale has several budgets."""
    from .noise import seed_decomposition

    out = {}
    runs = runs[np.isfinite(runs[value].astype(float))].assign(_budget=_budgets)
    for scale, sub in runs.groupby("scale", sort=True):
        several = sub["_budget"].nunique() > 1
        for budget, part in (sub.groupby("_budget", sort=True) if several else [(sub["_budget"].iloc[0], sub)]):
            key = f"{scale} at {budget:.3g} tokens" if several else str(scale)
            tokens = None if pd.isna(budget) else float(budget)
            try:
                est = seed_decomposition(part.drop(columns="_budget"), where=f"scale {scale}", loss=value,
                                         group="arch_id", blocks=())
            except ValueError:
                out[key] = SeedNoise(str(scale), None, 0, 0, 0, tokens=tokens)
                continue
            out[key] = SeedNoise(str(scale), est["seed_noise"], est["architectures"], est["runs"], est["dof"],
                                 tuple(est["ci95"]), tokens, est["rho"] if est["shared"] is not None else None,
                                 tuple(est["rho_ci95"]) if est["rho_ci95"] else None, est.get("shared_note"))
    return out


def _sweep_groups(runs: pd.DataFrame, knob: str) -> dict[tuple[str, str], list[str]]:
    """(scale, sweep membership) -> arch ids, for memberships of ``knob``."""
    groups: dict[tuple[str, str], set[str]] = {}
    if "sweeps" not in runs:
        return {}
    for arch, scale, sweeps in runs[["arch_id", "scale", "sweeps"]].drop_duplicates("arch_id").itertuples(index=False):
        for m in Sweep.parse_cell(sweeps):  # null (NaN): no grid sweep
            if m.knob == knob:
                groups.setdefault((str(scale), m.key.split("@", 1)[1]), set()).add(arch)
    return {k: sorted(v) for k, v in groups.items()}


def at_common_budget(sub: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """The rows of ``sub`` at the largest token budget every architecture of it has (and that budget)."""
    if BUDGET_COLUMN not in sub or sub[BUDGET_COLUMN].isna().all():
        return sub, None
    have = sub.groupby("arch_id")[BUDGET_COLUMN].apply(lambda v: set(v.dropna().astype(float)))
    common = set.intersection(*have)
    if not common:
        raise ValueError(f"runs table: the architectures {sorted(have.index)[:4]} of one sweep share no token budget "
                         f"('{BUDGET_COLUMN}' column); effects are read at one budget")
    budget = max(common)
    return sub[sub[BUDGET_COLUMN].astype(float) == budget], budget


def _per_seed(sub: pd.DataFrame, arch: str, value: str) -> pd.Series:
    rows = sub[sub["arch_id"] == arch]
    key = "seed" if "seed" in rows and rows["seed"].notna().all() else None
    if key is None:  # no seed column: rows are unmatched draws
        return pd.Series(rows[value].to_numpy(float), index=[f"{arch}#{i}" for i in range(len(rows))])
    return rows.groupby("seed")[value].mean()


def _pooled_sd(sub: pd.DataFrame, value: str) -> float | None:
    g = sub.groupby("arch_id")[value]
    dof = int((g.size() - 1).clip(lower=0).sum())
    return float(np.sqrt(g.apply(lambda v: np.sum((v - v.mean()) ** 2)).sum() / dof)) if dof else None


def sweep_effect(sub: pd.DataFrame, scale: str, knob: str, sweep: str, noise: SeedNoise | None = None,
                 level: float = LEVEL, value: str = "valid_loss") -> SweepEffect:
    """The effect of ``knob`` over the runs ``sub`` (one sweep at one scale), read alone (a family of
    one; :func:`knob_effects` corrects several together). ``noise`` is not needed (kept for callers)."""
    sub, budget = at_common_budget(sub)
    col = KNOB_COLUMNS[knob]
    per = sub.groupby("arch_id").agg(x=(col, "first"), mean=(value, "mean"), n_seeds=(value, "size"))
    per = per.reset_index().sort_values("x").reset_index(drop=True)
    i, last = int(per["mean"].to_numpy().argmin()), len(per) - 1
    seeds = {a: _per_seed(sub, a, value) for a in per["arch_id"]}
    first_a, best_a, last_a = per["arch_id"].iloc[0], per["arch_id"].iloc[i], per["arch_id"].iloc[-1]
    rise_low = difference(seeds[first_a], seeds[best_a], level) if i > 0 else None
    rise_high = difference(seeds[last_a], seeds[best_a], level) if i < last else None
    ends = difference(seeds[last_a], seeds[first_a], level)
    interior = 0 < i < last
    tested = [rise_low, rise_high] if interior else [ends]
    p_claim = None
    if all(d.p is not None for d in tested):
        p_claim = float(min(1.0, last * max(d.p for d in tested)))  # Bonferroni over the P - 1 claims
    shape = "interior minimum" if interior else ("falls" if ends.estimate < 0 else "rises" if ends.estimate > 0 else "flat")
    points = [{"arch_id": a, "x": float(x), "mean": float(m), "n_seeds": int(n)}
              for a, x, m, n in per[["arch_id", "x", "mean", "n_seeds"]].itertuples(index=False)]
    eff = SweepEffect(scale, knob, sweep, points, float(per["x"].iloc[i]), float(per["mean"].iloc[i]), rise_low,
                      rise_high, ends, _pooled_sd(sub, value), shape, False, None, budget, p_claim)
    return corrected([eff], level)[0]


def corrected(effects: list[SweepEffect], level: float = LEVEL) -> list[SweepEffect]:
    """The effects with Holm's correction across them applied to their claims (verdicts, brackets)."""
    p = np.array([np.nan if e.p_claim is None else e.p_claim for e in effects], float)
    if not np.any(np.isfinite(p)):
        return effects
    adj, lv = holm(p), holm_levels(p, level)
    fam = int(np.sum(np.isfinite(p)))
    out = []
    for e, pa, lvl in zip(effects, adj, lv):
        if e.p_claim is None:
            out.append(e)
            continue
        res = bool(pa <= 1 - level)
        i = [pt["x"] for pt in e.points].index(e.best_x)
        bracket = (e.points[i - 1]["x"], e.points[i + 1]["x"]) if res and e.shape == "interior minimum" else None
        within = 1 - (1 - float(lvl)) / (len(e.points) - 1)  # and Bonferroni over the sweep's own claims
        out.append(replace(e, resolved=res, bracket=bracket, p_adjusted=float(pa), family=fam, corrected_level=within))
    return out


def knob_effects(runs: pd.DataFrame, level: float = LEVEL, value: str = "valid_loss") -> list[SweepEffect]:
    """Every sweep of d/sqrt(N) and of r with at least three architectures, per scale, corrected together."""
    runs = runs[np.isfinite(runs[value].astype(float))]
    out = []
    for knob in KNOB_COLUMNS:
        for (scale, sweep), archs in sorted(_sweep_groups(runs, knob).items()):
            sub = runs[runs["arch_id"].isin(archs)]
            if sub["arch_id"].nunique() >= 3:
                out.append(sweep_effect(sub, scale, knob, sweep, None, level, value))
    return corrected(out, level)


def effects_table(runs: pd.DataFrame, level: float = LEVEL, value: str = "valid_loss") -> pd.DataFrame:
    """Every sweep's effect as a table (one row per sweep; :meth:`SweepEffect.row`)."""
    if not len(runs) or value not in runs:
        return pd.DataFrame()
    return pd.DataFrame([e.row() for e in knob_effects(runs, level, value)])


def noise_sentence(n: SeedNoise) -> str:
    at = f" at {n.tokens:.3g} tokens" if n.tokens is not None else ""
    if n.sd is None:
        return f"{n.scale}{at}: seed noise not measured (no architecture trained at two or more seeds)."
    out = (f"{n.scale}{at}: per-run seed sd {n.sd:.3f} [{n.ci95[0]:.3f}, {n.ci95[1]:.3f}] of validation loss (95% "
           f"interval; pooled over {n.architectures} architectures, {n.runs} runs, {n.dof} degrees of freedom)")
    if n.rho is None:
        return out + "; the part shared across architectures at a seed is not measured (no two architectures at two common seeds)."
    return out + (f"; share common to all architectures at a seed {n.rho:.2f} [{n.rho_ci95[0]:.2f}, {n.rho_ci95[1]:.2f}] "
                  "(two-way ANOVA; pairing at matched seeds removes that share from a difference's variance).")


def effect_sentences(runs: pd.DataFrame, level: float = LEVEL) -> list[str]:
    """The seed noise per scale and every sweep's effect, in words (see the module doc)."""
    if not len(runs) or "valid_loss" not in runs:
        return []
    out = [noise_sentence(n) for n in seed_noise(runs).values()]
    effects = knob_effects(runs, level)
    if not effects:
        out.append("No one-knob sweep of three or more architectures (the runs table has no sweep memberships, or "
                   "every sweep is shorter): effects are read from the fitted law only.")
    elif any(e.measured for e in effects):
        out.append(f"Verdicts: {CORRECTION}; {sum(e.measured for e in effects)} sweep(s) read together, "
                   f"family-wise level {1 - level:.0%}.")
    out += [e.sentence() for e in effects]
    return out
