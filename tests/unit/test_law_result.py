"""The typed law result: FormFit reads every form dict fit_form writes (and the named laws') and
writes it back unchanged; unknown keys are kept; a missing required key is a clear error."""

import copy
import dataclasses
import json

import numpy as np
import pytest

from archscale.law import LawError, load_law
from archscale.law.calibration import fit_form
from archscale.law.form import predict_loss, u_factor
from archscale.law.laws import NAMED_LAWS, Law, law_from_conditional
from archscale.law.result import (
    FormFit,
    FormFitError,
    KnobFactor,
    KnobOptimum,
    Optimum,
    read_forms,
)

A, B = [2.697, 0.0974, 0.0078], [0.3870, 0.0063, 0.0065]


def _points(r_values=(0.6, 1.0, 2.0, 4.0), seed=0):
    x = np.repeat([0.04, 0.07, 0.1, 0.14, 0.2], len(r_values))
    r = np.tile(r_values, 5)
    l_opt = np.full(x.size, 3.0)
    rng = np.random.default_rng(seed)
    loss = u_factor(A, x) * u_factor(B, r) * l_opt * (1 + rng.normal(0, 0.002, x.size))
    return x, r, loss, l_opt


FITS = {
    "multiplicative, bootstrap, samples": lambda: fit_form("multiplicative", *_points(), bootstrap=30, keep_samples=True),
    "multiplicative, no bootstrap": lambda: fit_form("multiplicative", *_points(), bootstrap=0),
    "additive": lambda: fit_form("additive", *_points()),
    "r not fitted (two values)": lambda: fit_form("multiplicative", *_points((1.0, 2.0)), bootstrap=20),
    "additive, r not fitted": lambda: fit_form("additive", *_points((1.0, 2.0))),
}


@pytest.mark.parametrize("case", FITS)
def test_round_trip_of_every_fit_form_dict(case):
    d = FITS[case]()
    f = FormFit.from_dict(d)
    back = f.to_dict()
    assert back == d and list(back) == list(d)
    assert json.dumps(back) == json.dumps(d)  # same keys, same order, nulls kept
    assert list(back["optimum"]) == list(d["optimum"])
    # ... and through JSON, as conditional.json is read back.
    j = json.loads(json.dumps(d))
    assert FormFit.from_dict(j).to_dict() == j
    # The typed fields are the dict's values.
    assert f.form == d["form"] and list(f.a) == d["a"] and list(f.b) == d["b"]
    assert f.status == d["status"] and list(f.warnings) == d["warnings"] and f.mse == d["mse"]
    for knob in ("d_over_sqrt_n", "r"):
        opt = f.optimum.knob(knob)
        assert opt.value == d["optimum"][knob] and opt.reason == d["optimum"][f"{knob}_reason"]
        assert (None if opt.interval is None else list(opt.interval)) == d["optimum"][f"{knob}_ci"]
        assert f.factors[knob].fitted == d["factors"][knob]["fitted"]
        assert list(f.factors[knob].range) == d["factors"][knob]["range"]
    assert f.optimum.interval_method == d["optimum"]["interval_method"]
    assert (f.samples is not None) == ("samples" in d)


def test_typed_fields_of_a_fit():
    d = FITS["r not fitted (two values)"]()
    f = FormFit.from_dict(d)
    assert f.factors["r"] == KnobFactor(fitted=False, reason=d["factors"]["r"]["reason"], range=(1.0, 2.0))
    assert f.optimum.r.value is None and "distinct" in f.optimum.r.reason
    assert f.coefficients("d_over_sqrt_n") == f.a and f.coefficients("r") == f.b
    assert f.bootstrap == 20 and f.bootstrap_unit == "point" and f.n_points == 10
    assert f.extra == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = (1.0, 0.0, 0.0)
    with pytest.raises(KeyError, match="unknown knob"):
        f.optimum.knob("gqa")
    s = FormFit.from_dict(FITS["multiplicative, bootstrap, samples"]())
    assert np.asarray(s.samples).shape[1] == 6 and s.optimum.r.interior_fraction is not None


@pytest.mark.parametrize("name", NAMED_LAWS)
def test_round_trip_of_the_named_laws(name):
    for form, d in NAMED_LAWS[name]["forms"].items():
        f = FormFit.from_dict(d, form=form)
        assert f.to_dict() == d and list(f.to_dict()) == list(d)
        assert f.optimum is None and f.factors is None and f.samples is None and f.warnings is None
    assert isinstance(load_law(name).forms["multiplicative"], FormFit)


def test_unknown_keys_are_kept_and_written_back():
    d = copy.deepcopy(FITS["additive"]())
    d["fitted_by"] = {"version": "9.9"}
    d["optimum"]["gqa"] = 4
    d["factors"]["r"]["note"] = "from a newer archscale"
    f = FormFit.from_dict(d)
    assert f.extra == {"fitted_by": {"version": "9.9"}} and f.optimum.extra == {"gqa": 4}
    assert f.factors["r"].extra == {"note": "from a newer archscale"}
    assert f.to_dict() == d and list(f.to_dict()) == list(d)
    # The extra values are copies: changing what to_dict gives changes nothing in the frozen object.
    f.to_dict()["fitted_by"]["version"] = "0"
    assert f.extra["fitted_by"]["version"] == "9.9"


@pytest.mark.parametrize("key", ["a", "b", "form"])
def test_a_missing_required_key_is_named(key):
    d = {"form": "multiplicative", "a": A, "b": B}
    del d[key]
    with pytest.raises(FormFitError, match=f"missing required key\\(s\\) '{key}'"):
        FormFit.from_dict(d)


def test_malformed_forms_are_clear_errors():
    with pytest.raises(FormFitError, match="factors.r: missing required key\\(s\\) 'fitted'"):
        FormFit.from_dict({"form": "additive", "a": A, "b": B, "factors": {"r": {"range": [1, 2]}}})
    with pytest.raises(FormFitError, match="'a' must be three numbers"):
        FormFit.from_dict({"form": "additive", "a": [1.0, 2.0], "b": B})
    with pytest.raises(FormFitError, match="optimum: expected a mapping"):
        FormFit.from_dict({"form": "additive", "a": A, "b": B, "optimum": [0.1, 1.0]})
    with pytest.raises(FormFitError, match="stored under forms.additive"):
        FormFit.from_dict({"form": "multiplicative", "a": A, "b": B}, form="additive")
    # The form's name may come from its key under 'forms' (the dict then has no 'form' key).
    assert FormFit.from_dict({"a": A, "b": B}, form="additive").form == "additive"


def test_the_law_reads_its_forms_once_and_names_a_bad_one():
    d = FITS["multiplicative, bootstrap, samples"]()
    cond = {"r_range": [0.5, 5.0], "forms": {"multiplicative": d, "additive": {}}, "l_opt": []}
    law = law_from_conditional(cond, "conditional.json")
    assert list(law.forms) == ["multiplicative"] and law.forms["multiplicative"].to_dict() == d
    assert law.range["r"] == [0.6, 4.0] and law.range["d_over_sqrt_n"] == [0.04, 0.2]
    assert law.optimum() is law.forms["multiplicative"].optimum
    assert float(law.predict(0.08, 1.2, 3.0)) == float(predict_loss(law.forms["multiplicative"], 0.08, 1.2, 3.0))
    bad = {"forms": {"multiplicative": {k: v for k, v in d.items() if k != "b"}}}
    with pytest.raises(LawError, match="conditional.json: conditional fit, form 'multiplicative': .*'b'"):
        law_from_conditional(bad, "conditional.json")
    with pytest.raises(LawError, match="no fitted form"):
        law_from_conditional({"forms": {"additive": {}}}, "conditional.json")
    # A law built by hand from the dicts of conditional.json reads them the same way.
    hand = Law(name="hand", source="hand", forms={"multiplicative": d}, range={})
    assert hand.forms == law.forms and hand.samples().shape == (30, 6)
    assert read_forms({"multiplicative": hand.forms["multiplicative"]}) == hand.forms


def test_a_form_built_in_code_writes_only_what_it_holds():
    f = FormFit("multiplicative", (1.0, 0.1, 0.01), (0.99, 0.01, 0.01),
                optimum=Optimum(r=KnobOptimum(value=1.0, interval=(0.9, 1.1))))
    assert f.to_dict() == {"form": "multiplicative", "a": [1.0, 0.1, 0.01], "b": [0.99, 0.01, 0.01],
                           "optimum": {"r": 1.0, "r_ci": [0.9, 1.1]}}
    assert FormFit.from_dict(f.to_dict()) == f


def test_a_key_present_with_null_is_written_back_as_null():
    d = {"form": "additive", "a": A, "b": B, "spearman": None, "warnings": None, "optimum": {"r": None, "r_ci": None}}
    f = FormFit.from_dict(d)
    assert f.spearman is None and f.warnings is None and f.optimum.r == KnobOptimum()
    assert f.to_dict() == d and list(f.to_dict()) == list(d)
