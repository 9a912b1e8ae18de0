"""Conditional laws usable anywhere a fit is: the paper's published coefficient sets or a fit file.

:func:`load_law` is the one entry point: a name of :data:`NAMED_LAWS` (``paper-80m-297m``,
``paper-1b``) or the path of a ``conditional.json`` written by ``archscale fit conditional`` /
the workflow. A :class:`Law` predicts loss, reports its optima (guarded: only interior optima
inside the range the law was fitted on), the range it was fitted on, a reference loss
``L_opt(N, D)`` where it has one (a Chinchilla part, or the empirical table of its own runs),
and bootstrap samples of its coefficients when the fit kept them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .form import FORMS, optimum as factor_optimum, predict_loss, u_factor
from .chinchilla import predict_loss as chinchilla_predict
from .result import FormFit, Optimum, read_forms

# method.md section 5 (Bian et al. 2025), multiplicative form. The paper does not publish the
# d/sqrt(N) range of its runs, so the fitted range of that knob is unknown (None).
NAMED_LAWS: dict[str, dict[str, Any]] = {
    "paper-80m-297m": {
        "source": "Bian et al. 2025 (arXiv 2510.18245), fit on 80M+145M+297M (method.md section 5)",
        "forms": {"multiplicative": {"form": "multiplicative", "a": [2.697, 0.0974, 0.0078],
                                      "b": [0.3870, 0.0063, 0.0065]}},
        "range": {"n": [80e6, 297e6], "r": [0.5, 5.0], "d_over_sqrt_n": None},
        "quoted_optimum": {"d_over_sqrt_n": 0.080, "r": 1.03},
    },
    "paper-1b": {
        "source": "Bian et al. 2025 (arXiv 2510.18245), fit on 1B only (method.md section 5)",
        "forms": {"multiplicative": {"form": "multiplicative", "a": [2.319, 0.238, 0.0176],
                                      "b": [0.5104, 0.0051, 0.0062]}},
        "range": {"n": [1e9, 1e9], "r": [0.5, 5.0], "d_over_sqrt_n": None},
        "quoted_optimum": {"d_over_sqrt_n": 0.074, "r": 1.22},
    },
}


class LawError(ValueError):
    """A law that cannot be loaded or cannot answer (e.g. no reference loss at that scale)."""


@dataclass
class Law:
    """A conditional law: its fitted (or published) forms with their intervals, guarded optima
    and bootstrap samples, the range it was fitted on, its reference loss and its provenance.

    The one law object of archscale: the search, the science planner, the report and the CLI
    all read a fit through it. ``forms``: one :class:`~archscale.law.result.FormFit` per fitted
    form (a conditional.json ``forms`` dict given here is read with
    :func:`~archscale.law.result.read_forms`). ``fit`` is the conditional.json object it was
    read from (empty for a published law): the provenance, its top-level fields (``r_range``,
    ``n_points``, ``status``, ...) and the source of :meth:`fit_reference_loss`.
    """

    name: str
    source: str
    forms: dict[str, FormFit]
    range: dict[str, list[float] | None]
    chinchilla: dict | None = None
    l_opt_table: dict[tuple[int, int], float] = field(default_factory=dict)
    status: str = "ok"
    #: the fit's column mapping (keys of ``conditional.DEFAULT_COLUMNS``); empty for a named law
    columns: dict[str, str] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.forms = read_forms(self.forms)

    def column(self, key: str) -> str:
        """The runs-table column of ``key`` (n, d, loss, x, r, ...): the fit's mapping, else the default."""
        from .conditional import DEFAULT_COLUMNS

        return self.columns.get(key) or DEFAULT_COLUMNS[key]

    @property
    def fitted_forms(self) -> list[str]:
        """The forms with coefficients, in :data:`~archscale.law.form.FORMS` order."""
        return [f for f in FORMS if f in self.forms]

    @property
    def default_form(self) -> str:
        return "multiplicative" if "multiplicative" in self.forms else next(iter(self.forms))

    def _form(self, form: str | None) -> FormFit:
        form = form or self.default_form
        if form not in self.forms:
            raise LawError(f"law '{self.name}' has no {form} form; it has {sorted(self.forms)}")
        return self.forms[form]

    def predict(self, d_over_sqrt_n, r, l_opt, form: str | None = None):
        """Predicted loss (broadcasts)."""
        return predict_loss(self._form(form), d_over_sqrt_n, r, l_opt)

    def predict_forms(self, d_over_sqrt_n: float, r: float, l_opt: float) -> dict[str, float]:
        """Predicted loss of one point under every fitted form."""
        return {f: float(self.predict(d_over_sqrt_n, r, l_opt, f)) for f in self.fitted_forms}

    def samples(self, form: str | None = None) -> np.ndarray | None:
        """Bootstrap samples of the coefficients, rows ``a0 a1 a2 b0 b1 b2`` (None when not kept)."""
        s = self._form(form).samples
        return None if not s else np.asarray(s, float)

    def predict_samples(self, d_over_sqrt_n: float, r: float, l_opt: float, form: str | None = None):
        """Predicted loss under every bootstrap sample of the coefficients (None when not kept)."""
        s = self.samples(form)
        if s is None:
            return None
        form = form or self.default_form
        fa, fb = u_factor(s[:, :3].T, d_over_sqrt_n), u_factor(s[:, 3:].T, r)
        return fa * fb * l_opt if form == "multiplicative" else l_opt + fa + fb

    def optimum(self, form: str | None = None) -> Optimum:
        """Optima of both knobs: the fit's guarded optima, or ``c2/c1`` checked against the fitted range."""
        f = self._form(form)
        if f.optimum is not None:
            return f.optimum
        out: dict[str, Any] = {}
        for key, c in (("d_over_sqrt_n", f.a), ("r", f.b)):
            val, why = factor_optimum(c[1], c[2], key)
            rng = self.range.get(key)
            if val is not None and rng is not None and not rng[0] <= val <= rng[1]:
                val, why = None, f"no interior optimum: {key} = {c[2] / c[1]:.4g} lies outside the fitted range {rng}"
            elif val is not None and rng is None:
                why = f"the {key} range of the runs behind this law is not published: the optimum is not range-checked"
            out[key], out[f"{key}_ci"], out[f"{key}_reason"] = val, None, why
        out["interval_method"] = "none: published point coefficients"
        return Optimum.from_dict(out)

    def l_opt(self, n: float, d: float) -> float:
        """Reference loss at (N, D): the Chinchilla part, else the law's own empirical table (N within 10%)."""
        if self.chinchilla:
            return float(chinchilla_predict(self.chinchilla["params"], n, d))
        for (kn, kd), v in self.l_opt_table.items():
            if abs(math.log(kd / d)) <= 0.01 and abs(math.log(kn / n)) <= math.log1p(0.10):
                return v
        raise LawError(
            f"law '{self.name}' has no reference loss at N = {n:.4g}, D = {d:.4g}: it has no Chinchilla part"
            + (f" and its runs cover (N, D) {sorted(self.l_opt_table)}" if self.l_opt_table else "")
            + "; give L_opt as a number (--l-opt) or a law fitted with the chinchilla reference"
        )

    def fit_reference_loss(self, n: float, d: float) -> float:
        """``L_opt(N, D)`` exactly as the fit used it: its stored Chinchilla fit (chinchilla
        reference) or its stored table of lowest observed losses (nearest N within 10%)."""
        from .conditional import reference_loss

        if not self.fit:
            raise LawError(f"law '{self.name}' is not a fit: it has no reference loss of its own")
        try:
            return float(reference_loss(self.fit, n, d))
        except ValueError as exc:
            raise LawError(str(exc)) from None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "forms": sorted(self.forms), "range": self.range,
                "status": self.status, "has_chinchilla": bool(self.chinchilla),
                "has_samples": self.samples() is not None if self.default_form in self.forms else False}


def _from_named(name: str) -> Law:
    spec = NAMED_LAWS[name]
    return Law(name=name, source=spec["source"], forms=read_forms(spec["forms"]), range=dict(spec["range"]))


def _fitted_forms(obj: dict, name: str) -> dict[str, FormFit]:
    """The fitted forms of a conditional.json object, read (a LawError names what is wrong)."""
    bad = [f for f in obj.get("forms") or {} if f not in FORMS]
    if bad:
        raise LawError(f"{name}: unknown form(s) {bad}")
    try:
        forms = read_forms(obj.get("forms") or {})
    except ValueError as exc:
        raise LawError(f"{name}: {exc}") from None
    if not forms:
        raise LawError(f"{name}: not a conditional fit (no fitted form under 'forms'); "
                       "expected results/fit/conditional.json")
    return forms


def _factor_range(factors: dict, knob: str) -> list[float] | None:
    f = factors.get(knob)
    return None if f is None or f.range is None else list(f.range)


def law_from_conditional(obj: dict, name: str, chinchilla: dict | None = None) -> Law:
    """A law from a conditional.json object (and, optionally, the chinchilla.json next to it)."""
    from .conditional import l_opt_table

    forms = _fitted_forms(obj, name)
    factors = next(iter(forms.values())).factors or {}
    rng = {"r": list(obj.get("r_range") or []) or None, "d_over_sqrt_n": _factor_range(factors, "d_over_sqrt_n")}
    if "r" in factors:
        rng["r"] = _factor_range(factors, "r")
    table = l_opt_table(obj.get("l_opt") or [])
    if table:
        ns = [n for n, _ in table]
        rng["n"] = [float(min(ns)), float(max(ns))]
    chin = obj.get("chinchilla") or (chinchilla if chinchilla and chinchilla.get("fitted", True) and
                                      "params" in chinchilla else None)
    return Law(name=name, source=f"fit file {name}", forms=forms, range=rng, chinchilla=chin,
               l_opt_table=table, status=obj.get("status", "ok"), columns=dict(obj.get("columns") or {}),
               fit=obj)


def load_law(name_or_path) -> Law:
    """A law by name (:data:`NAMED_LAWS`) or from a conditional.json path (a chinchilla.json beside it is used)."""
    key = str(name_or_path)
    if key in NAMED_LAWS:
        return _from_named(key)
    path = Path(key)
    if not path.is_file():
        raise LawError(f"law '{key}': not a named law ({', '.join(NAMED_LAWS)}) and no such file")
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LawError(f"law file {path}: cannot read JSON ({exc})") from exc
    chin = None
    side = path.with_name("chinchilla.json")
    if side.is_file() and side != path:
        try:
            chin = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise LawError(f"law file {side}: cannot read JSON ({exc})") from exc
    return law_from_conditional(obj, str(path), chin)
