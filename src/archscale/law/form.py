"""The conditional law's equations: the calibration factor ``c0 + c1 ln(v) + c2/v``, the two
forms' predicted loss (multiplicative ``f(d/sqrt(N)) g(r) L_opt``, additive ``L_opt + f + g``), the
multiplicative normalisation and a factor's optimum. Fitting them is :mod:`.calibration`."""

from __future__ import annotations

import numpy as np

from .result import FormFit

FORMS = ("multiplicative", "additive")


def u_factor(c, x):
    """``c0 + c1 ln(x) + c2 / x`` (numpy-broadcasting)."""
    x = np.asarray(x, dtype=float)
    return c[0] + c[1] * np.log(x) + c[2] / x


def predict_loss(form_fit: FormFit, d_over_sqrt_n, r, l_opt):
    """Predicted loss of one fitted form (a conditional.json form dict: read it with
    :meth:`FormFit.from_dict <archscale.law.result.FormFit.from_dict>` first); broadcasts."""
    if not isinstance(form_fit, FormFit):
        raise TypeError(f"predict_loss takes a FormFit, got {type(form_fit).__name__}; read a conditional.json "
                        "form with FormFit.from_dict")
    return form_loss(form_fit.form, form_fit.a, form_fit.b, d_over_sqrt_n, r, l_opt)


def form_loss(form: str, a, b, d_over_sqrt_n, r, l_opt):
    """Predicted loss of ``form`` with coefficients ``a``, ``b`` (numpy-broadcasting)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    l_opt = np.asarray(l_opt, dtype=float)
    if form == "multiplicative":
        return u_factor(a, d_over_sqrt_n) * u_factor(b, r) * l_opt
    if form == "additive":
        return l_opt + u_factor(a, d_over_sqrt_n) + u_factor(b, r)
    raise ValueError(f"unknown conditional form '{form}'; expected one of {FORMS}")


def normalise_multiplicative(a, b) -> tuple[list[float], list[float]]:
    """Rescale (a, b) so that the r-factor is 1 at r = 1; predictions and optima are unchanged."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    k = b[0] + b[2]
    if k == 0:
        raise ValueError("b0 + b2 = 0: the r-factor vanishes at r = 1 and cannot be normalised")
    return (a * k).tolist(), (b / k).tolist()


def optimum(c1: float, c2: float, name: str = "x") -> tuple[float | None, str | None]:
    """Minimiser of ``c0 + c1 ln(v) + c2/v`` over v > 0: ``c2/c1`` or ``None`` with the reason."""
    if c1 > 0 and c2 > 0:
        return c2 / c1, None
    if c1 <= 0 and c2 > 0:
        return None, f"no interior optimum: loss still falling at the largest {name} (c1 = {c1:.3g} <= 0)"
    if c1 > 0 and c2 <= 0:
        return None, f"no interior optimum: loss still falling toward the smallest {name} (c2 = {c2:.3g} <= 0)"
    return None, f"no interior optimum: the stationary point of {name} is a maximum (c1 = {c1:.3g}, c2 = {c2:.3g})"


def extended_ratio(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """c2/c1 where it is a minimum; +inf where loss falls forever; 0 where it rises; nan for a maximum."""
    out = np.full(c1.shape, np.nan)
    ok = (c1 > 0) & (c2 > 0)
    out[ok] = c2[ok] / c1[ok]
    out[(c1 <= 0) & (c2 > 0)] = np.inf
    out[(c1 > 0) & (c2 <= 0)] = 0.0
    return out
