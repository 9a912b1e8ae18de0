"""What a sequential design narrows: a finished study's results, the one-knob sweeps whose interior
minimum is unresolved (:class:`SweepTarget`: its rises and what more seeds or points do to their
intervals) and the fitted optima that are withheld or wide."""

from __future__ import annotations

import numpy as np

from ...law.laws import Law
from ...law.result import Optimum
from ...sweeps import Sweep
from ..fits import KNOBS
from .design import LawDesign


#: Columns of runs.parquet the sequential design reads.
RESULTS_COLUMNS = ("run_id", "arch_id", "seed", "scale", "sweeps", "tokens", "n_target", "d_over_sqrt_n",
                   "mlp_attn_ratio", "valid_loss")


def load_results(results) -> tuple[Law, dict, "pd.DataFrame", dict]:
    """(the fitted law, conditional.json, runs.parquet, the paired seed noise) of a results
    directory; ValueError naming the file and what is missing."""
    import json
    from pathlib import Path

    import pandas as pd

    from ...law.laws import LawError, load_law
    from ...analysis.noise import seed_decomposition

    results = Path(results)
    cpath, rpath = results / "fit" / "conditional.json", results / "runs.parquet"
    for path, what in ((cpath, "the fitted law (the workflow's fit stage writes it)"),
                       (rpath, "the runs table (the workflow's aggregate stage writes it)")):
        if not path.is_file():
            raise ValueError(f"--from-results {results}: {path} does not exist; it holds {what}. Point "
                             "--from-results at the results directory of a finished run")
    try:
        law = load_law(cpath)
        conditional = json.loads(cpath.read_text())
    except (LawError, ValueError) as exc:
        raise ValueError(f"{cpath}: {exc}") from None
    runs = pd.read_parquet(rpath)
    missing = [c for c in RESULTS_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(f"{rpath}: missing column(s) {missing}; the sequential design needs {list(RESULTS_COLUMNS)}")
    if runs["seed"].isna().all():
        raise ValueError(f"{rpath}: the 'seed' column is empty: runs without seeds give no paired noise and no "
                         "interval; train each sweep at two or more seeds (scales[].seeds)")
    noise = seed_decomposition(runs, where=str(rpath))
    return law, conditional, runs, noise


def _t_half(n: int, level: float) -> float:
    """Half-width of a t interval of a mean of ``n`` paired differences, per unit sd."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) / np.sqrt(n)) if n >= 2 else np.inf


class SweepTarget:
    """An interior minimum of a one-knob sweep that the effects stage does not resolve, and what
    added seeds and points would do to its rises (end minus best; the claim needs both)."""

    def __init__(self, effect, scale_index: int, grid_index: int, key: str, family: int, paired_sd: float, ends):
        self.effect, self.scale_index, self.grid_index, self.key = effect, scale_index, grid_index, key
        self.membership = f"{effect.knob}@{effect.sweep}"  # the plan's sweep membership of its points
        rises = {"low": effect.rise_low, "high": effect.rise_high}
        self.n0 = max(d.n for d in rises.values())
        self.P0 = self.P = len(effect.points)
        self.measured = effect.measured
        # the sweep's share of the family-wise 5% (Holm's level times its P - 1 claims)
        self.alpha = (1 - effect.corrected_level) * (self.P0 - 1) if self.measured else (1 - 0.95) / family
        self.paired_sd = paired_sd
        self.est = {s: d.estimate for s, d in rises.items()}
        self.h0 = {s: (d.interval(effect.corrected_level)[1] - d.interval(effect.corrected_level)[0]) / 2
                   if self.measured else np.inf for s, d in rises.items()}
        self.end = dict(ends)  # side -> (x, r, l_opt) of the sweep's end architecture
        self.n, self.extended = self.n0, set()

    @property
    def label(self) -> str:
        """The sweep as the config names it: "s100k, r sweep at d/sqrt(N) 0.2"."""
        return self.effect.sweep_name()

    def level(self, P: int | None = None) -> float:
        return 1 - self.alpha / ((P or self.P) - 1)

    def half(self, side: str, n: int | None = None, P: int | None = None) -> float:
        n, lv = n or self.n, self.level(P)
        if self.measured:
            return self.h0[side] * _t_half(n, lv) / _t_half(self.n0, self.level(self.P0))
        return _t_half(n, lv) * self.paired_sd

    def width(self, n=None, P=None, est=None) -> float:
        """The rises' interval half-width relative to the rise (max over the two; < 1: resolved)."""
        est = est or self.est
        return max((self.half(s, n, P) / est[s]) if est[s] > 0 else np.inf for s in est)

    def interval(self, n=None, P=None, est=None) -> dict:
        """The limiting rise with its interval (at the sweep's corrected level)."""
        est = est or self.est
        side = max(est, key=lambda s: (self.half(s, n, P) / est[s]) if est[s] > 0 else np.inf)
        h = self.half(side, n, P)
        return {"rise": side, "estimate": est[side], "ci": None if not np.isfinite(h) else
                [est[side] - h, est[side] + h], "level": self.level(P)}


def relative_gain(before: float, after: float) -> float:
    """How much narrower ``after`` is than ``before`` (1: from unbounded to bounded; 0: still unbounded)."""
    if not np.isfinite(after):
        return 0.0
    return 1.0 if not np.isfinite(before) else 1.0 - after / before


def sweep_targets(effects, config: dict, runs, law: Law, lopt, paired_sd: float) -> list[SweepTarget]:
    """Interior minima the effects table does not resolve, each mapped to its grid sweep."""
    out = []
    for e in effects:
        if e.shape != "interior minimum" or e.resolved:
            continue
        sweep_of = Sweep.parse(f"{e.knob}@{e.sweep}")
        i, k = sweep_of.scale_index, sweep_of.grid_index
        if i >= len(config["scales"]) or config["scales"][i]["name"] != e.scale \
                or k >= len(config["scales"][i].get("grid") or []):
            raise ValueError(f"runs.parquet: sweep '{e.sweep}' at scale '{e.scale}' is not a grid sweep of the "
                             "config; pass the config the results were trained with")
        sweep = config["scales"][i]["grid"][k]
        key = "r" if e.knob == "r" else ("d_model" if "d_model" in sweep else "d_over_sqrt_n")
        ends = {}
        for side, pt in (("low", e.points[0]), ("high", e.points[-1])):
            row = runs[runs["arch_id"] == pt["arch_id"]].iloc[0]
            ends[side] = (float(row["d_over_sqrt_n"]), float(row["mlp_attn_ratio"]),
                          lopt(row["n_target"], e.tokens if e.tokens is not None else row["tokens"]))
        t = SweepTarget(e, i, k, key, len(effects), paired_sd, ends)
        out.append(t)
    return out


def law_targets(law: Law, design: LawDesign, width: float) -> tuple[list[dict], list[str]]:
    """The fitted optima that are unresolved: withheld (no interval, or one leaving the range) or
    wider than ``width`` times the optimum; and a note for each knob that is not a target."""
    from ...analysis.effects import KNOB_LABELS

    opt = law.forms[design.form].optimum or Optimum()
    targets, notes = [], []
    for knob, (i1, i2) in KNOBS.items():
        label = KNOB_LABELS[knob]
        if knob not in design.grads:
            notes.append(f"fitted {label}*: the law has no interior minimum of {label} (c1 = {design.P[i1]:.3g}, "
                         f"c2 = {design.P[i2]:.3g}); there is no optimum interval to narrow")
            continue
        k = opt.knob(knob)
        val, ci, why = k.value, k.interval, k.reason
        point = float(design.P[i2] / design.P[i1])
        ci = list(ci) if ci and None not in ci else None
        if val is not None and ci is not None and ci[1] - ci[0] <= width * val:
            notes.append(f"fitted {label}* = {val:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]: resolved (interval within "
                         f"{width:.0%} of the optimum)")
            continue
        targets.append({"knob": knob, "label": f"fitted {label}*", "point": point, "ci": ci,
                        "reason": why or f"95% interval wider than {width:.0%} of the optimum"})
    return targets, notes


def law_interval(target: dict, sd_now: float, sd_after: float) -> list[float] | None:
    """The fit's interval narrowed by the linearised ratio of sds (asymmetric bounds kept); where
    the fit withheld it, the linearised 95% interval."""
    v = target["point"]
    if not np.isfinite(sd_after):
        return None
    if target["ci"] is None or not np.isfinite(sd_now):
        return [v - 1.96 * sd_after, v + 1.96 * sd_after]
    f = sd_after / sd_now
    return [v - (v - target["ci"][0]) * f, v + (target["ci"][1] - v) * f]
