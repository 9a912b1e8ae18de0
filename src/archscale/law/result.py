"""One fitted form of the conditional law, typed: :class:`FormFit` (conditional.json ``forms[form]``).

:func:`~archscale.law.calibration.fit_form` writes a form as a JSON dict; the published coefficient
sets of :data:`~archscale.law.laws.NAMED_LAWS` are the same dict with only ``form``, ``a`` and
``b``. :meth:`FormFit.from_dict` reads either and :meth:`FormFit.to_dict` writes it back unchanged
(``FormFit.from_dict(d).to_dict() == d``, the same keys in the same order, nulls included):

* ``form``, ``a`` and ``b`` are required (``form`` may come from the key under ``forms``), a
  missing one is a :class:`FormFitError` naming it; every other field is optional (None when
  the dict has no such key) -- a published law has none of them;
* the guarded optimum is an :class:`Optimum` (one :class:`KnobOptimum` per knob: value,
  interval, reason, bootstrap interior fraction; and the interval method), the fitted knobs are
  ``factors``: one :class:`KnobFactor` (fitted, reason, range) per knob;
* keys this version does not know are kept in ``extra`` (and written back), so that a file
  written by another archscale stays readable; ``key_order`` remembers the keys read, so that
  a key present with a null value is written back as null and the order is the file's.

JSON lists are held as tuples (the objects are frozen); :meth:`to_dict` gives lists again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

KNOBS = ("d_over_sqrt_n", "r")
#: The coefficient vector (``FormFit`` field) of each knob's factor ``c0 + c1 ln(v) + c2/v``.
KNOB_COEFFICIENTS = {"d_over_sqrt_n": "a", "r": "b"}
#: Per-knob keys of ``optimum``: ``<knob><suffix>`` -> :class:`KnobOptimum` field.
OPTIMUM_SUFFIXES = {"": "value", "_ci": "interval", "_reason": "reason", "_interior_fraction": "interior_fraction"}
#: The keys of a form, in the order :func:`~archscale.law.calibration.fit_form` writes them.
FORM_KEYS = ("form", "n_points", "ci_level", "factors", "method", "normalisation", "a", "b", "bootstrap",
             "bootstrap_unit", "bootstrap_converged", "a_se", "b_se", "a_ci", "b_ci", "optimum", "mse", "spearman",
             "warnings", "status", "samples")


class FormFitError(ValueError):
    """A fitted form that cannot be read: a required key missing or a malformed value."""


def _frozen(v):
    """A JSON value with its lists as tuples (recursively)."""
    return tuple(_frozen(x) for x in v) if isinstance(v, list) else v


def _json(v):
    """The JSON value of a frozen one: tuples as lists (recursively)."""
    return [_json(x) for x in v] if isinstance(v, tuple) else v


def _unknown(d: Any, known, required, where: str) -> dict[str, Any]:
    """The keys of ``d`` outside ``known`` (copied); a clear error when ``d`` is not a mapping or
    lacks a ``required`` key."""
    if not isinstance(d, Mapping):
        raise FormFitError(f"{where}: expected a mapping, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    if missing:
        raise FormFitError(f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)}")
    known = set(known)
    return {k: copy.deepcopy(v) for k, v in d.items() if k not in known}


def _emit(values: dict[str, Any], obj) -> dict[str, Any]:
    """The JSON dict of ``obj`` from its known ``values`` (JSON order): the keys it was read with
    (``key_order``, nulls kept), then the other known keys that hold a value, then its extra keys."""
    order = [k for k in obj.key_order if k in values or k in obj.extra]
    order += [k for k, v in values.items() if k not in order and v is not None and v != []]
    order += [k for k in obj.extra if k not in order]
    return {k: copy.deepcopy(obj.extra[k]) if k in obj.extra else values[k] for k in order}


@dataclass(frozen=True)
class KnobFactor:
    """``factors[knob]``: whether the knob's factor was fitted (three distinct values at least),
    why not (``reason``), and the knob's range ``(min, max)`` among the fitted points."""

    fitted: bool
    reason: str | None = None
    range: tuple[float, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "factors") -> KnobFactor:
        extra = _unknown(d, ("fitted", "reason", "range"), ("fitted",), where)
        return cls(fitted=d["fitted"], reason=d.get("reason"), range=_frozen(d.get("range")), extra=extra,
                   key_order=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        return _emit({"fitted": self.fitted, "reason": self.reason, "range": _json(self.range)}, self)


@dataclass(frozen=True)
class KnobOptimum:
    """One knob's guarded optimum: the value (None when withheld), its interval, the reason it is
    withheld (or has no interval), and the bootstrap's fraction of interior optima."""

    value: float | None = None
    interval: tuple[float | None, float | None] | None = None
    reason: str | None = None
    interior_fraction: float | None = None


@dataclass(frozen=True)
class Optimum:
    """``optimum`` of a form: one :class:`KnobOptimum` per knob and how the intervals were made."""

    d_over_sqrt_n: KnobOptimum = field(default_factory=KnobOptimum)
    r: KnobOptimum = field(default_factory=KnobOptimum)
    interval_method: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def knob(self, name: str) -> KnobOptimum:
        """The optimum of knob ``name`` (``d_over_sqrt_n`` or ``r``)."""
        if name not in KNOBS:
            raise KeyError(f"unknown knob '{name}'; expected one of {KNOBS}")
        return getattr(self, name)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "optimum") -> Optimum:
        known = [k + s for k in KNOBS for s in OPTIMUM_SUFFIXES] + ["interval_method"]
        extra = _unknown(d, known, (), where)
        knobs = {k: KnobOptimum(**{f: _frozen(d.get(k + s)) for s, f in OPTIMUM_SUFFIXES.items()}) for k in KNOBS}
        return cls(**knobs, interval_method=d.get("interval_method"), extra=extra, key_order=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        values = {k + s: _json(getattr(self.knob(k), f)) for k in KNOBS for s, f in OPTIMUM_SUFFIXES.items()}
        values["interval_method"] = self.interval_method
        return _emit(values, self)


def _coefficients(d: Mapping[str, Any], key: str, where: str) -> tuple[float, float, float]:
    c = d[key]
    if not isinstance(c, (list, tuple)) or len(c) != 3 or not all(
            isinstance(v, Real) and not isinstance(v, bool) for v in c):
        raise FormFitError(f"{where}: '{key}' must be three numbers (c0, c1, c2), got {c!r}")
    return tuple(c)


@dataclass(frozen=True)
class FormFit:
    """One fitted (or published) form of the conditional law: conditional.json ``forms[form]``.

    ``a``, ``b``: the coefficients ``(c0, c1, c2)`` of the d/sqrt(N) and r factors; ``a_se``,
    ``b_se``, ``a_ci``, ``b_ci``: their standard errors and intervals; ``optimum``: the guarded
    optima; ``factors``: which knobs were fitted; ``samples``: the bootstrap coefficient samples
    (rows ``a0 a1 a2 b0 b1 b2``) when the fit kept them. Every field but ``form``, ``a`` and
    ``b`` is optional. See the module docstring for the round trip.
    """

    form: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    n_points: int | None = None
    ci_level: float | None = None
    factors: Mapping[str, KnobFactor] | None = None
    method: str | None = None
    normalisation: str | None = None
    bootstrap: int | None = None
    bootstrap_unit: str | None = None
    bootstrap_converged: int | None = None
    a_se: tuple[float | None, ...] | None = None
    b_se: tuple[float | None, ...] | None = None
    a_ci: tuple[tuple[float | None, float | None] | None, ...] | None = None
    b_ci: tuple[tuple[float | None, float | None] | None, ...] | None = None
    optimum: Optimum | None = None
    mse: float | None = None
    spearman: float | None = None
    warnings: tuple[str, ...] | None = None
    status: str | None = None
    samples: tuple[tuple[float, ...], ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def coefficients(self, knob: str) -> tuple[float, float, float]:
        """The coefficients of one knob's factor: ``a`` (d/sqrt(N)) or ``b`` (r)."""
        return getattr(self, KNOB_COEFFICIENTS[knob])

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], form: str | None = None) -> FormFit:
        """Read a form dict; ``form``: its key under ``forms`` (the name when the dict has no
        ``form`` key; a dict naming another form is an error)."""
        name = d.get("form", form) if isinstance(d, Mapping) else form
        where = f"conditional fit, form '{name}'" if name else "conditional fit form"
        extra = _unknown(d, FORM_KEYS, ("a", "b") if form else ("form", "a", "b"), where)
        if form is not None and name != form:
            raise FormFitError(f"{where}: it is stored under forms.{form}; the key and 'form' must agree")
        values: dict[str, Any] = {k: _frozen(d.get(k)) for k in FORM_KEYS if k not in ("factors", "optimum")}
        values.update(form=name, a=_coefficients(d, "a", where), b=_coefficients(d, "b", where))
        if d.get("factors") is not None:
            factors = _unknown(d["factors"], (), (), f"{where}: factors")
            values["factors"] = {k: KnobFactor.from_dict(v, f"{where}: factors.{k}") for k, v in factors.items()}
        if d.get("optimum") is not None:
            values["optimum"] = Optimum.from_dict(d["optimum"], f"{where}: optimum")
        return cls(**values, extra=extra, key_order=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        """The JSON dict (conditional.json ``forms[form]``); see the module docstring."""
        values = {k: _json(getattr(self, k)) for k in FORM_KEYS}
        if self.factors is not None:
            values["factors"] = {k: v.to_dict() for k, v in self.factors.items()}
        if self.optimum is not None:
            values["optimum"] = self.optimum.to_dict()
        return _emit(values, self)


def read_forms(forms: Mapping[str, Any]) -> dict[str, FormFit]:
    """conditional.json ``forms`` as one :class:`FormFit` per fitted form (an empty entry is a form
    that was not fitted and is left out; a :class:`FormFit` is taken as it is)."""
    out = {}
    for name, f in forms.items():
        if isinstance(f, FormFit):
            if f.form != name:
                raise FormFitError(f"conditional fit, form '{f.form}': it is stored under forms.{name}")
            out[name] = f
        elif f:
            out[name] = FormFit.from_dict(f, form=name)
    return out
