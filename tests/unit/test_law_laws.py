"""Named laws and laws loaded from a fit file: one loader, the paper's optima, the fitted range."""

import json

import numpy as np
import pytest

from archscale.law import LawError, load_law
from archscale.law.conditional import fit_conditional, predict_loss
from archscale.law.result import FormFit
from test_law_conditional import PAPER_1B, PAPER_SMALL, SCALES, synthetic_runs


@pytest.mark.parametrize("name, paper", [("paper-80m-297m", PAPER_SMALL), ("paper-1b", PAPER_1B)])
def test_named_laws_are_the_papers_and_give_its_optima(name, paper):
    law = load_law(name)
    f = law.forms["multiplicative"]
    assert list(f.a) == paper["a"] and list(f.b) == paper["b"]
    opt = law.optimum()
    # method.md: 0.080 / 1.03 (80M-297M) and 0.074 / 1.22 (1B only).
    assert round(opt.d_over_sqrt_n.value, 3) == paper["x"] and round(opt.r.value, 2) == paper["r"]
    assert "not published" in opt.d_over_sqrt_n.reason  # the d/sqrt(N) range is unknown
    assert opt.to_dict()["d_over_sqrt_n_ci"] is None and opt.interval_method.startswith("none")
    assert law.range["r"] == [0.5, 5.0]
    assert law.predict(paper["x"], paper["r"], 2.8) == pytest.approx(
        predict_loss(FormFit("multiplicative", paper["a"], paper["b"]), paper["x"], paper["r"], 2.8))
    assert law.samples() is None
    with pytest.raises(LawError, match="no reference loss at N = 1e.09.*--l-opt"):
        law.l_opt(1e9, 1e11)


def test_law_from_a_fit_file(tmp_path):
    runs = synthetic_runs("multiplicative", PAPER_SMALL["a"], PAPER_SMALL["b"], seed=21)
    cond = fit_conditional(runs, bootstrap=30, seed=0)
    path = tmp_path / "conditional.json"
    path.write_text(json.dumps(cond))
    law = load_law(path)
    assert law.default_form == "multiplicative" and set(law.forms) == {"multiplicative", "additive"}
    assert law.optimum().to_dict() == cond["forms"]["multiplicative"]["optimum"]
    assert law.range["r"][0] >= 0.5 and law.range["r"][1] <= 5.0
    assert law.range["n"] == [float(SCALES[0][1]), float(SCALES[-1][1])]
    n, d = SCALES[1][1], 100 * SCALES[1][1]
    assert law.l_opt(n, d) == pytest.approx(runs[runs["n_target"] == n]["valid_loss"].min())
    s = law.samples()
    assert s.shape == (30, 6)
    boot = law.predict_samples(0.08, 1.0, 3.0)
    assert boot.shape == (30,) and abs(np.median(boot) - law.predict(0.08, 1.0, 3.0)) < 0.01
    # A Chinchilla fit beside it gives the law a reference loss at unseen scales.
    (tmp_path / "chinchilla.json").write_text(json.dumps(
        {"fitted": True, "params": {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.36}}))
    assert load_law(path).l_opt(1e9, 1e11) == pytest.approx(1.8 + 400 / 1e9**0.34 + 1500 / 1e11**0.36)


def test_unknown_law_is_a_clear_error(tmp_path):
    with pytest.raises(LawError, match="not a named law \\(paper-80m-297m, paper-1b\\)"):
        load_law("paper-7b")
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(LawError, match="cannot read JSON"):
        load_law(bad)
    bad.write_text(json.dumps({"params": {}}))
    with pytest.raises(LawError, match="not a conditional fit"):
        load_law(bad)
