"""The loss model of the lifetime search: predicted loss of a shape at (N, D) from the law and a
Chinchilla ``L_opt(N, D)``, and the fewest tokens that meet a loss target."""

from __future__ import annotations

import numpy as np

from ...law.form import u_factor
from ...law.chinchilla import predict_loss as chinchilla_predict
from ...law.laws import Law
from .inputs import ASSUMPTION, LifetimeError


def chinchilla_not_identified(chinchilla: dict | None) -> str | None:
    """Why a fitted Chinchilla part cannot price D (its fit's own warning: N and D collinear, a
    coefficient without effect), or None. Such a fit reproduces the runs' one N-D line and says
    nothing about other budgets: a lifetime optimum read from it would be an artefact."""
    for text in (chinchilla or {}).get("warnings") or []:
        if "collinear" in text or "not identifiable" in text:
            return text.split(":")[0]
    return None


class LossModel:
    """Predicted loss of a shape at (N, D), and the tokens it needs to meet a target."""

    def __init__(self, law: Law, form: str | None = None, level: float = 0.95):
        from ...law.chinchilla import EPOCH_CHINCHILLA

        if not 0 < level < 1:
            raise LifetimeError(f"interval level: {level} must lie in (0, 1)")
        self.law, self.form, self.level = law, form or law.default_form, float(level)
        law._form(self.form)  # an unknown form is a LawError naming the law's forms
        unidentified = chinchilla_not_identified(law.chinchilla)
        if law.chinchilla and "params" in law.chinchilla and not unidentified:
            self.params, self.l_opt_source = dict(law.chinchilla["params"]), f"law '{law.name}' (its Chinchilla part)"
        else:
            self.params = dict(EPOCH_CHINCHILLA)
            why = (f"the Chinchilla part of law '{law.name}' is not identified ({unidentified})" if unidentified
                   else f"law '{law.name}' has no Chinchilla part")
            self.l_opt_source = (f"{ASSUMPTION}: Epoch AI's Chinchilla fit (Besiroglu et al. 2024); {why}, so "
                                 "L_opt(N, D) away from its runs needs one")
        self.samples = law.samples(self.form)
        self.interval_reason = None if self.samples is not None else (
            f"law '{law.name}' carries no bootstrap samples: the point prediction is the constraint")

    def l_opt(self, n, d):
        return chinchilla_predict(self.params, np.asarray(n, float), np.asarray(d, float))

    def affine(self, x, r) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per end (point, low, high): ``(a, b)`` with predicted loss ``a * L_opt + b``."""
        x, r = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(r, float))
        b = np.asarray(self.law.predict(x, r, 0.0, self.form), float)
        a = np.asarray(self.law.predict(x, r, 1.0, self.form), float) - b
        out = {"point": (a, b)}
        if self.samples is None:
            out["low"] = out["high"] = (a, b)
            return out
        s = self.samples
        fa = u_factor(s[:, :3].T[:, :, None], x[None, :])
        fb = u_factor(s[:, 3:].T[:, :, None], r[None, :])
        q = ((1 - self.level) / 2, 1 - (1 - self.level) / 2)
        if self.form == "multiplicative":
            lo, hi = np.nanquantile(fa * fb, q, axis=0)
            out["low"], out["high"] = (lo, np.zeros_like(lo)), (hi, np.zeros_like(hi))
        else:
            lo, hi = np.nanquantile(fa + fb, q, axis=0)
            out["low"], out["high"] = (np.ones_like(lo), lo), (np.ones_like(hi), hi)
        return out

    def tokens_needed(self, n, a, b, target: float) -> np.ndarray:
        """Fewest tokens D with ``a * L_opt(N, D) + b <= target`` (inf where no D reaches it)."""
        p = self.params
        n, a, b = (np.asarray(v, float) for v in (n, a, b))
        with np.errstate(divide="ignore", invalid="ignore"):
            rem = (target - b) / a - p["E"] - p["A"] / n ** p["alpha"]
            d = np.where((a > 0) & (rem > 0), (p["B"] / rem) ** (1.0 / p["beta"]), np.inf)
        return np.maximum(d, 1.0)

    def loss(self, ab: tuple[np.ndarray, np.ndarray], n, d) -> np.ndarray:
        return ab[0] * self.l_opt(n, d) + ab[1]
