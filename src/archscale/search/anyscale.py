"""Search at any scale from any law, without runs at that scale.

:func:`search_at_scale` lists every candidate at the target N with
:func:`~archscale.search.algorithm.enumerate_candidates` (the search's one exhaustive
enumerator), scores them with a :class:`~archscale.law.laws.Law` at the target (N, D) and picks

* **Panda**: the lowest predicted loss;
* **Surefire** (given an efficiency measure, e.g. the calibrated roofline cost model): the
  highest efficiency among the candidates whose predicted loss is within the loss target.

Each pick carries its knobs, the predicted loss (when ``L_opt`` is known: a number, or the
law's Chinchilla part; else only ``L/L_opt``, which ranks the candidates the same way at a
fixed (N, D)) and, when the law carries bootstrap samples of its coefficients, the
probability that its predicted loss is within the loss target.

The loss target (:class:`LossTarget`) is a number, a baseline's observed loss, or a baseline
architecture's predicted loss (then compared on the same scale as the candidates, so it works
without ``L_opt`` too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..arch import Architecture, Scale
from ..law.laws import Law, LawError
from ..law.result import FormFit
from .algorithm import Efficiency, enumerate_candidates
from .targets import SearchError

# A pick whose N is further than this (relative) from the target gets a note (see search_at_scale()).
N_DRIFT_NOTE = 0.01
PICK_FIELDS = ("d_model", "ffn", "heads", "kv_heads", "gqa", "d_over_sqrt_n", "mlp_attn_ratio")


@dataclass(frozen=True)
class LossTarget:
    """A loss target: ``value`` (a loss), or ``baseline`` whose predicted loss is the target."""

    value: float | None = None
    baseline: Architecture | None = None
    source: str = "given"  # given | observed | predicted

    def describe(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source,
                "baseline": None if self.baseline is None else (self.baseline.name or self.baseline.arch_id)}


def score_candidates(archs: list[Architecture], law: Law, l_opt: float | None, form: str | None = None) -> pd.DataFrame:
    """One row per candidate: the knobs, its N, and the predicted loss ratio L/L_opt (and loss when known)."""
    if not archs:
        raise SearchError("no candidate architectures: widen the N tolerance, the d/sqrt(N) window or the GQA range")
    df = pd.DataFrame([
        {"arch_id": a.arch_id, "params_non_embedding": a.params_non_embedding,
         **{k: getattr(a, k) for k in PICK_FIELDS}} for a in archs
    ])
    df["predicted_loss_ratio"], df["predicted_excess"], df["predicted_loss"] = _predict(
        law, df["d_over_sqrt_n"].to_numpy(float), df["mlp_attn_ratio"].to_numpy(float), l_opt, form)
    return df


def _predict(law: Law, x, r, l_opt: float | None, form: str | None):
    """(L/L_opt, L - L_opt, L); the ones a missing L_opt leaves unknown are NaN."""
    lo = 1.0 if l_opt is None else float(l_opt)
    pred = np.asarray(law.predict(x, r, lo, form), float)
    additive = (form or law.default_form) == "additive"
    nan = np.full_like(pred, np.nan)
    if l_opt is None:
        return (nan, pred - lo, nan) if additive else (pred, nan, nan)
    return pred / lo, pred - lo, pred


def _key_col(df: pd.DataFrame) -> str:
    return next(c for c in ("predicted_loss", "predicted_loss_ratio", "predicted_excess") if df[c].notna().all())


def _pick(row: pd.Series) -> dict[str, Any]:
    pick = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in
            ("arch_id", "params_non_embedding", *PICK_FIELDS, "predicted_loss_ratio", "predicted_loss")}
    for k in ("predicted_loss_ratio", "predicted_loss"):
        if pick[k] is not None and not math.isfinite(pick[k]):
            pick[k] = None
    return pick


def search_at_scale(
    law: Law,
    scale: Scale,
    tokens: float,
    *,
    l_opt: float | None = None,
    loss_target: LossTarget | float | None = None,
    efficiency: Efficiency | None = None,
    efficiency_label: str = "predicted output tokens/s",
    form: str | None = None,
    gqa: Iterable[int] | None = None,
    gqa_range: tuple[int, int] = (1, 16),
    x_range: tuple[float, float] = (0.02, 0.3),
) -> dict[str, Any]:
    """Panda and (with ``efficiency``) Surefire at ``scale.n_target`` and ``tokens``.

    ``l_opt``: the reference loss at (N, D); when None, the law's own (its Chinchilla part),
    else the predicted loss is withheld and the picks are made on ``L / L_opt``. Returns
    ``{"panda": {...}, "surefire": {...} | None, "surefire_reason": ..., "candidates": DataFrame,
    "l_opt": ..., "l_opt_source": ..., "loss_target": {...}, "notes": [...]}``.
    """
    if not isinstance(loss_target, LossTarget):
        loss_target = LossTarget(value=None if loss_target is None else float(loss_target))
    notes: list[str] = []
    source = "given"
    if l_opt is None:
        try:
            l_opt, source = law.l_opt(scale.n_target, tokens), f"law '{law.name}'"
        except LawError as exc:
            source = None
            notes.append(f"predicted loss withheld: {exc}")
    archs = enumerate_candidates(scale, gqa=gqa, gqa_range=gqa_range, x_range=x_range)
    df = score_candidates(archs, law, l_opt, form)
    col = _key_col(df)
    if efficiency is not None:
        df["efficiency"] = [float(efficiency(a)) for a in archs]
    threshold, target_desc = _threshold(law, loss_target, l_opt, col, form)
    df["within_target"] = df[col] <= threshold + 1e-12 if threshold is not None else np.nan
    best = df.loc[df[col].idxmin()]
    ties = df[np.isclose(df[col], best[col], rtol=0, atol=1e-12)]
    if len(ties) > 1:
        notes.append(f"{len(ties)} candidates tie on the predicted loss: {list(ties['arch_id'])}")
    picks = {"panda": _pick(best)}
    surefire_reason = None
    if efficiency is None:
        surefire_reason = "no efficiency measure: give a cost model (--cost-model) or measurements"
    elif threshold is None:
        surefire_reason = target_desc
    else:
        ok = df[df["within_target"].astype(bool)]
        if ok.empty:
            surefire_reason = f"no candidate's predicted loss is within the target ({target_desc})"
        else:
            row = ok.sort_values(["efficiency", col], ascending=[False, True], kind="mergesort").iloc[0]
            picks["surefire"] = dict(_pick(row), efficiency=float(row["efficiency"]))
    if efficiency is not None:
        picks["panda"]["efficiency"] = float(best["efficiency"])
    notes += _range_notes(law, scale, df, picks["panda"])
    for role, pick in picks.items():
        pick["probability_within_target"], pick["probability_reason"] = probability_within(
            law, pick["d_over_sqrt_n"], pick["mlp_attn_ratio"], l_opt, loss_target, form)
    return {"panda": picks["panda"], "surefire": picks.get("surefire"), "surefire_reason": surefire_reason,
            "candidates": df, "l_opt": l_opt, "l_opt_source": source, "law": law.name,
            "form": form or law.default_form, "n_candidates": int(len(df)),
            "loss_target": dict(loss_target.describe(), compared_on=col if threshold is not None else None,
                                threshold=threshold, reason=None if threshold is not None else target_desc),
            "efficiency": efficiency_label if efficiency is not None else None, "notes": notes}


def panda(law: Law, scale: Scale, tokens: float, **kwargs) -> dict[str, Any]:
    """Panda only: :func:`search_at_scale` without an efficiency measure."""
    return search_at_scale(law, scale, tokens, **kwargs)


def _threshold(law: Law, target: LossTarget, l_opt: float | None, col: str, form: str | None):
    """The target on the scale the candidates are compared on (``col``), or (None, why)."""
    if target.baseline is not None:
        b = target.baseline
        ratio, excess, loss = (float(v[0]) for v in _predict(
            law, np.array([b.d_over_sqrt_n]), np.array([b.mlp_attn_ratio]), l_opt, form))
        value = {"predicted_loss": loss, "predicted_loss_ratio": ratio, "predicted_excess": excess}[col]
        return value, f"predicted {col} of baseline '{b.name or b.arch_id}'"
    if target.value is None:
        return None, "no loss target given"
    if col != "predicted_loss":
        return None, (f"the loss target {target.value:.4g} is a loss but the predicted loss is unknown (no L_opt at "
                      "this (N, D)): give --l-opt, a law with a Chinchilla part, or a baseline's predicted loss")
    return float(target.value), f"loss {target.value:.4g} ({target.source})"


def _range_notes(law: Law, scale: Scale, df: pd.DataFrame, pick: dict) -> list[str]:
    notes = []
    dev = pick["params_non_embedding"] / scale.n_target - 1.0
    if abs(dev) > N_DRIFT_NOTE:
        notes.append(
            f"Panda's N is {dev:+.1%} off the target {scale.n_target:,}: the law is evaluated at the target "
            "(N, D) and does not see a candidate's N deviation, so a wide n_tolerance favours off-target "
            "architectures whose knobs sit nearer the optimum; tighten n_tolerance"
        )
    if pick["d_over_sqrt_n"] in (df["d_over_sqrt_n"].min(), df["d_over_sqrt_n"].max()):
        notes.append("Panda lies on the edge of the candidate d/sqrt(N) window: widen x_range")
    n_rng = law.range.get("n")
    if n_rng and not n_rng[0] * 0.9 <= scale.n_target <= n_rng[1] * 1.1:
        notes.append(f"extrapolation: target N {scale.n_target:.4g} is outside the N range {n_rng} the law was fitted on")
    for key, field in (("d_over_sqrt_n", "d_over_sqrt_n"), ("r", "mlp_attn_ratio")):
        rng = law.range.get(key)
        if rng and not rng[0] <= pick[field] <= rng[1]:
            notes.append(f"extrapolation: Panda's {key} = {pick[field]:.4g} is outside the fitted range {rng}")
    return notes


def probability_within(law: Law, x: float, r: float, l_opt: float | None, target: LossTarget | float | None,
                       form: str | None = None) -> tuple[float | None, str | None]:
    """Bootstrap probability that the predicted loss at (x, r) is <= the target, or None with why.

    A baseline's predicted loss as the target is recomputed under each bootstrap sample (the
    comparison is paired: the coefficients' uncertainty moves both)."""
    if not isinstance(target, LossTarget):
        target = LossTarget(value=None if target is None else float(target))
    if target.value is None and target.baseline is None:
        return None, "no loss target given"
    if l_opt is None:
        return None, "no reference loss L_opt at this (N, D): the predicted loss is unknown"
    s = law.predict_samples(x, r, l_opt, form)
    if s is None:
        return None, f"law '{law.name}' carries no bootstrap samples of its coefficients"
    if target.baseline is not None:
        bound = law.predict_samples(target.baseline.d_over_sqrt_n, target.baseline.mlp_attn_ratio, l_opt, form)
    else:
        bound = np.full_like(s, float(target.value))
    ok = np.isfinite(s) & np.isfinite(bound)
    if ok.sum() < 20:
        return None, f"only {int(ok.sum())} usable bootstrap samples"
    return float(np.mean(s[ok] <= bound[ok] + 1e-12)), None


def attach_probabilities(result: dict[str, Any], forms: dict[str, FormFit | dict], name: str = "fit") -> dict[str, Any]:
    """Algorithm 1's result (:func:`~archscale.search.selection.select`): add to Panda, Surefire and the
    baseline the bootstrap probability that their predicted loss is within the loss target.

    ``forms``: the fit's forms (:class:`~archscale.law.result.FormFit`, or the dicts of conditional.json
    ``forms`` as candidates.json ``law_forms`` holds them, with their ``samples``). A baseline's
    predicted loss as the target is compared per bootstrap sample (paired). In place; returns it.
    """
    law = Law(name=name, source=name, forms=dict(forms), range={})
    lt = result.get("loss_target") or {}
    base = result.get("baseline")
    if lt.get("value") is None:
        target = LossTarget()
    elif base is not None and str(lt.get("source", "")).startswith("predicted"):
        target = LossTarget(baseline=Architecture(**{k: base[k] for k in (
            "d_model", "ffn", "layers", "heads", "kv_heads", "head_dim", "vocab", "tied")}), source="predicted")
    else:
        target = LossTarget(value=float(lt["value"]), source=str(lt.get("source")))
    for role in ("panda", "surefire", "baseline"):
        pick = result.get(role)
        if pick is not None:
            pick["probability_within_target"], pick["probability_reason"] = probability_within(
                law, pick["d_over_sqrt_n"], pick["mlp_attn_ratio"], result.get("l_opt"), target, result.get("form"))
    return result


def predicted_loss_of(law: Law, arch: Architecture, l_opt: float, form: str | None = None) -> float:
    """The law's predicted loss of one architecture (e.g. a named baseline, as a loss target)."""
    return float(law.predict(arch.d_over_sqrt_n, arch.mlp_attn_ratio, l_opt, form))
