"""Effects read from the runs against the measured seed noise (archscale.analysis.effects) and the
plan's one-knob sweep memberships they rely on."""

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.effects import knob_effects, seed_noise, sweep_effect, effect_sentences
from archscale.arch import GridPoint
from archscale.plan import sweep_memberships


def _runs(means: dict[float, float], seeds: int, sd: float, knob: str = "d_over_sqrt_n", scale: str = "s1",
          sweep: str = "scales[0].grid[0]|r=1,gqa=1", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    col = "d_over_sqrt_n" if knob == "d_over_sqrt_n" else "mlp_attn_ratio"
    for x, m in means.items():
        noise = rng.standard_normal(seeds)
        noise = (noise - noise.mean()) / (noise.std(ddof=1) if seeds > 1 else 1) * sd if seeds > 1 else noise * 0
        for s in range(seeds):
            rows.append({"arch_id": f"{scale}-{knob}-{x}", "scale": scale, col: x,
                         "d_over_sqrt_n" if col != "d_over_sqrt_n" else "mlp_attn_ratio": 1.0,
                         "valid_loss": m + noise[s], "sweeps": f"{knob}@{sweep}"})
    return pd.DataFrame(rows)


def test_seed_noise_is_the_pooled_within_architecture_sd():
    runs = _runs({0.1: 3.0, 0.2: 2.9, 0.4: 2.95}, seeds=3, sd=0.02)
    n = seed_noise(runs)["s1"]
    assert n.sd == pytest.approx(0.02)
    assert (n.architectures, n.runs, n.dof) == (3, 9, 6)


def test_one_seed_leaves_the_noise_unmeasured_and_nothing_resolved():
    runs = _runs({0.1: 3.3, 0.2: 2.9, 0.4: 3.3}, seeds=1, sd=0.0)
    assert seed_noise(runs)["s1"].sd is None
    (e,) = knob_effects(runs)
    assert e.shape == "interior minimum" and not e.resolved and e.bracket is None
    assert "not measured" in e.sentence()


def test_interior_optimum_resolved_only_beyond_three_sd_on_both_sides():
    # rises of 0.2 and 0.08 against sd 0.02: 10 sd and 4 sd -> resolved, bracket = neighbours
    runs = _runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.02)
    (e,) = knob_effects(runs)
    assert e.shape == "interior minimum" and e.resolved
    assert e.best_x == 0.4 and e.bracket == (0.2, 0.8)
    assert e.rise_low == pytest.approx(0.2) and e.rise_high == pytest.approx(0.08)
    # the same means with sd 0.03: the high side's rise is 2.7 sd -> not resolved
    (e2,) = knob_effects(_runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.03))
    assert e2.shape == "interior minimum" and not e2.resolved
    assert "not resolved" in e2.sentence()


def test_monotone_effect_and_its_resolution():
    (e,) = knob_effects(_runs({0.5: 3.2, 1.0: 3.1, 4.0: 3.0}, seeds=2, sd=0.01, knob="r"))
    assert e.knob == "r" and e.shape == "falls" and e.resolved and e.bracket is None
    (e,) = knob_effects(_runs({0.5: 3.02, 1.0: 3.01, 4.0: 3.0}, seeds=2, sd=0.01, knob="r"))
    assert e.shape == "falls" and not e.resolved


def test_sweeps_are_read_per_scale_and_need_three_architectures():
    a = _runs({0.1: 3.1, 0.2: 3.0, 0.4: 3.05}, seeds=2, sd=0.01, scale="a")
    b = _runs({0.1: 3.1, 0.2: 3.0}, seeds=2, sd=0.01, scale="b")
    explicit = pd.DataFrame([{"arch_id": "named", "scale": "a", "d_over_sqrt_n": 0.3, "mlp_attn_ratio": 4.5,
                              "valid_loss": 2.0, "sweeps": None}])  # an explicit architecture: in no sweep
    effects = knob_effects(pd.concat([a, b, explicit]))
    assert [e.scale for e in effects] == ["a"]
    no_sweeps = a.drop(columns="sweeps")
    assert knob_effects(no_sweeps) == []
    assert any("No one-knob sweep" in s for s in effect_sentences(no_sweeps))


def test_sweep_effect_uses_means_over_seeds():
    runs = _runs({1.0: 3.0, 2.0: 2.9, 3.0: 3.0}, seeds=4, sd=0.05, knob="r")
    e = sweep_effect(runs, "s1", "r", "x", seed_noise(runs)["s1"])
    assert [p["n_seeds"] for p in e.points] == [4, 4, 4]
    assert [p["mean"] for p in e.points] == pytest.approx([3.0, 2.9, 3.0])


def test_sweep_memberships_name_the_knob_and_the_values_held():
    sweep = {"d_over_sqrt_n": [0.2, 0.4], "r": [1.0], "gqa": [1]}
    p = GridPoint(r=1.0, gqa=1, d_over_sqrt_n=0.2, origin="scales[0].grid[0]")
    assert sweep_memberships(sweep, p) == ["d_over_sqrt_n@scales[0].grid[0]|r=1,gqa=1"]
    product = {"d_model": [64, 96], "r": [1.0, 4.0], "gqa": [1]}
    q = GridPoint(r=4.0, gqa=1, d_model=96, origin="scales[1].grid[2]")
    assert sweep_memberships(product, q) == ["d_over_sqrt_n@scales[1].grid[2]|r=4,gqa=1",
                                             "r@scales[1].grid[2]|d_model=96,gqa=1"]
    assert sweep_memberships({"d_model": [64], "r": [1.0], "gqa": [1]},
                             GridPoint(r=1.0, gqa=1, d_model=64, origin="o")) == []


def test_effects_table_rows_match_the_effects_and_the_report_renders_them():
    from archscale.analysis.effects import effects_table
    from archscale.report.tables import effects_html

    runs = pd.concat([
        _runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.02),             # resolved interior
        _runs({0.5: 3.2, 1.0: 3.1, 4.0: 3.0}, seeds=2, sd=0.01, knob="r", scale="s2"),     # falls, resolved
        _runs({0.5: 3.02, 1.0: 3.0, 4.0: 3.01}, seeds=2, sd=0.02, knob="r", scale="s3"),   # interior, not resolved
    ], ignore_index=True)
    table = effects_table(runs)
    assert len(table) == 3
    rows = {r["scale"]: r for r in table.to_dict("records")}
    assert rows["s1"]["verdict"] == "interior optimum resolved, in [0.2, 0.8]"
    assert rows["s1"]["rise_low_sd"] == pytest.approx(10.0) and rows["s1"]["rise_high_sd"] == pytest.approx(4.0)
    assert (rows["s1"]["best_at"], rows["s1"]["seeds"], rows["s1"]["architectures"]) == (0.4, "3", 4)
    assert rows["s2"]["verdict"] == "falls, resolved" and rows["s2"]["knob"] == "r"
    assert rows["s2"]["rise_low"] == pytest.approx(0.2) and rows["s2"]["rise_low_sd"] == pytest.approx(20.0)
    assert rows["s2"]["rise_high"] is None or np.isnan(rows["s2"]["rise_high"])  # the best point is the high end
    assert rows["s3"]["verdict"] == "interior minimum not resolved"
    assert rows["s3"]["rise_low_sd"] == pytest.approx(1.0)
    page = effects_html(runs)
    assert page.count("</tr>") == 4 and "interior optimum resolved, in [0.2, 0.8]" in page
    assert "No one-knob sweep" in effects_html(runs.drop(columns="sweeps"))
    assert "seed noise not measured" in effects_table(_runs({0.1: 3.3, 0.2: 2.9, 0.4: 3.3}, seeds=1, sd=0.0))["verdict"].tolist()
