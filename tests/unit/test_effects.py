"""Effects read from the runs as differences of mean loss with intervals (archscale.analysis.effects)
and the plan's one-knob sweep memberships they rely on."""

import numpy as np
import pandas as pd
import pytest

from archscale.analysis.effects import effect_sentences, knob_effects, seed_noise, sweep_effect
from archscale.arch import GridPoint
from archscale.sweeps import Sweep, grid_point_sweeps


def _runs(means: dict[float, float], seeds: int, sd: float, knob: str = "d_over_sqrt_n", scale: str = "s1",
          sweep: str = "scales[0].grid[0]|r=1,gqa=1", seed: int = 0, shared: float = 0.0,
          tokens: float | None = None) -> pd.DataFrame:
    """Runs of one sweep: loss = mean + a seed effect shared by every architecture (sd ``shared``) +
    a per-run residual (standardised to sample sd ``sd`` per architecture, so the numbers are exact)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(seeds) * shared
    rows = []
    col = "d_over_sqrt_n" if knob == "d_over_sqrt_n" else "mlp_attn_ratio"
    other = "mlp_attn_ratio" if col == "d_over_sqrt_n" else "d_over_sqrt_n"
    for x, m in means.items():
        noise = rng.standard_normal(seeds)
        noise = (noise - noise.mean()) / noise.std(ddof=1) * sd if seeds > 1 else noise * 0
        for s in range(seeds):
            row = {"arch_id": f"{scale}-{knob}-{x}", "scale": scale, col: x, other: 1.0, "seed": 1000 + s,
                   "valid_loss": m + u[s] + noise[s], "sweeps": f"{knob}@{sweep}"}
            if tokens is not None:
                row["tokens"] = tokens
            rows.append(row)
    return pd.DataFrame(rows)


def test_seed_noise_is_the_pooled_within_architecture_sd_and_its_shared_part():
    runs = _runs({0.1: 3.0, 0.2: 2.9, 0.4: 2.95}, seeds=3, sd=0.02)
    n = seed_noise(runs)["s1"]
    assert n.sd == pytest.approx(0.02)
    assert (n.architectures, n.runs, n.dof) == (3, 9, 6)
    big = _runs({0.1: 3.0, 0.2: 2.9, 0.4: 2.95}, seeds=8, sd=0.005, shared=0.05, seed=3)
    n = seed_noise(big)["s1"]
    assert n.rho > 0.8 and n.rho_ci95[0] > 0.5  # most of the per-run variance is common to the seed
    assert "share common to all architectures at a seed" in effect_sentences(big)[0]


def test_one_seed_leaves_the_noise_unmeasured_and_nothing_resolved():
    runs = _runs({0.1: 3.3, 0.2: 2.9, 0.4: 3.3}, seeds=1, sd=0.0)
    assert seed_noise(runs)["s1"].sd is None
    (e,) = knob_effects(runs)
    assert e.shape == "interior minimum" and not e.resolved and e.bracket is None
    assert e.rise_low.ci is None and e.p_claim is None
    assert e.verdict() == "no interval: one seed per architecture"
    assert "nothing is resolved" in e.sentence()


def test_interior_optimum_resolved_by_the_intervals_of_both_rises():
    # rises 0.2 and 0.08 with per-run sd 0.01 at 3 matched seeds: both paired intervals exclude 0
    runs = _runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.01)
    (e,) = knob_effects(runs)
    assert e.shape == "interior minimum" and e.resolved
    assert e.best_x == 0.4 and e.bracket == (0.2, 0.8)
    assert e.rise_low.estimate == pytest.approx(0.2) and e.rise_high.estimate == pytest.approx(0.08)
    assert e.rise_low.method == "paired t" and e.rise_low.n == 3
    assert e.rise_high.ci[0] > 0 and e.rise_high.interval(e.corrected_level)[0] > 0
    assert e.corrected_level == pytest.approx(1 - 0.05 / 3)  # Bonferroni over the 3 claims of a 4-point sweep
    # the same means with sd 0.05: the high side's corrected interval reaches 0 -> not resolved
    (e2,) = knob_effects(_runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.05))
    assert e2.shape == "interior minimum" and not e2.resolved
    assert e2.rise_high.interval(e2.corrected_level)[0] < 0
    assert "not resolved" in e2.sentence()


def test_pairing_at_matched_seeds_removes_the_shared_seed_noise():
    # a seed effect 10x the residual, shared by every architecture: paired differences see only the residual
    runs = _runs({1.0: 3.05, 2.0: 3.0, 4.0: 3.05}, seeds=4, sd=0.005, knob="r", shared=0.05, seed=1)
    (paired,) = knob_effects(runs)
    (welch,) = knob_effects(runs.drop(columns="seed"))
    assert paired.rise_low.method == "paired t" and welch.rise_low.method == "Welch t"
    assert paired.rise_low.se < welch.rise_low.se / 3
    assert paired.resolved and not welch.resolved
    assert paired.rise_low.estimate == pytest.approx(welch.rise_low.estimate)


def test_monotone_effect_and_its_resolution():
    (e,) = knob_effects(_runs({0.5: 3.2, 1.0: 3.1, 4.0: 3.0}, seeds=3, sd=0.01, knob="r"))
    assert e.knob == "r" and e.shape == "falls" and e.resolved and e.bracket is None
    assert e.ends.estimate == pytest.approx(-0.2) and e.ends.ci[1] < 0
    (e,) = knob_effects(_runs({0.5: 3.02, 1.0: 3.01, 4.0: 3.0}, seeds=3, sd=0.02, knob="r"))
    assert e.shape == "falls" and not e.resolved


def test_several_sweeps_are_corrected_together_by_holm():
    one = _runs({0.5: 3.1, 1.0: 3.0, 4.0: 3.1}, seeds=3, sd=0.02, knob="r", seed=5)
    (alone,) = knob_effects(one)
    assert alone.family == 1 and alone.p_adjusted == pytest.approx(alone.p_claim)
    nulls = [_runs({0.5: 3.0, 1.0: 3.0, 4.0: 3.0}, seeds=3, sd=0.02, knob="r", scale=f"n{i}", seed=10 + i)
             for i in range(5)]
    family = knob_effects(pd.concat([one, *nulls], ignore_index=True))
    e = next(f for f in family if f.scale == "s1")
    assert e.family == 6 and e.p_adjusted >= e.p_claim
    assert e.corrected_level > alone.corrected_level  # a larger family: wider corrected intervals
    if alone.resolved and e.p_adjusted > 0.05:
        assert not e.resolved
    assert any("Holm" in s for s in effect_sentences(pd.concat([one, *nulls])))


def test_effects_are_read_at_the_largest_budget_every_point_has():
    short = _runs({0.1: 3.3, 0.2: 3.2, 0.4: 3.25}, seeds=3, sd=0.01, tokens=1e6)
    long = _runs({0.1: 3.1, 0.2: 2.9, 0.4: 3.0}, seeds=3, sd=0.01, tokens=4e6)
    longer = _runs({0.1: 3.0}, seeds=3, sd=0.01, tokens=8e6)  # only one point reaches 8e6
    (e,) = knob_effects(pd.concat([short, long, longer], ignore_index=True))
    assert e.tokens == 4e6 and e.best_loss == pytest.approx(2.9) and [p["n_seeds"] for p in e.points] == [3, 3, 3]
    assert "at 4e+06 tokens" in e.sentence()
    noise = seed_noise(pd.concat([short, long], ignore_index=True))
    assert set(noise) == {"s1 at 1e+06 tokens", "s1 at 4e+06 tokens"}
    assert noise["s1 at 4e+06 tokens"].sd == pytest.approx(0.01)


def test_sweeps_are_read_per_scale_and_need_three_architectures():
    a = _runs({0.1: 3.1, 0.2: 3.0, 0.4: 3.05}, seeds=2, sd=0.01, scale="a")
    b = _runs({0.1: 3.1, 0.2: 3.0}, seeds=2, sd=0.01, scale="b")
    explicit = pd.DataFrame([{"arch_id": "named", "scale": "a", "d_over_sqrt_n": 0.3, "mlp_attn_ratio": 4.5,
                              "seed": 1000, "valid_loss": 2.0, "sweeps": None}])  # an explicit architecture: in no sweep
    effects = knob_effects(pd.concat([a, b, explicit]))
    assert [e.scale for e in effects] == ["a"]
    no_sweeps = a.drop(columns="sweeps")
    assert knob_effects(no_sweeps) == []
    assert any("No one-knob sweep" in s for s in effect_sentences(no_sweeps))


def test_sweep_effect_uses_means_over_seeds():
    runs = _runs({1.0: 3.0, 2.0: 2.9, 3.0: 3.0}, seeds=4, sd=0.05, knob="r")
    e = sweep_effect(runs, "s1", "r", "x")
    assert [p["n_seeds"] for p in e.points] == [4, 4, 4]
    assert [p["mean"] for p in e.points] == pytest.approx([3.0, 2.9, 3.0])
    assert e.noise_sd == pytest.approx(0.05)


def test_grid_point_sweeps_name_the_knob_and_the_values_held_and_read_back():
    sweep = {"d_over_sqrt_n": [0.2, 0.4], "r": [1.0], "gqa": [1]}
    p = GridPoint(r=1.0, gqa=1, d_over_sqrt_n=0.2, origin="scales[0].grid[0]")
    assert [s.key for s in grid_point_sweeps(sweep, p, 0, 0)] == ["d_over_sqrt_n@scales[0].grid[0]|r=1,gqa=1"]
    product = {"d_model": [64, 96], "r": [1.0, 4.0], "gqa": [1]}
    q = GridPoint(r=4.0, gqa=1, d_model=96, origin="scales[1].grid[2]")
    got = grid_point_sweeps(product, q, 1, 2)
    assert [s.key for s in got] == ["d_over_sqrt_n@scales[1].grid[2]|r=4,gqa=1", "r@scales[1].grid[2]|d_model=96,gqa=1"]
    assert Sweep.parse_cell(";".join(s.key for s in got)) == got  # the runs table's cell reads back typed
    assert got[1] == Sweep("r", 1, 2, (("d_model", 96.0), ("gqa", 1.0)))
    assert got[0].name("s100k") == "s100k, d/sqrt(N) sweep at r 4"  # GQA 1 left unsaid
    assert got[1].name() == "r sweep at d_model 96"
    assert Sweep.parse("r@scales[0].grid[1]|d_over_sqrt_n=0.35,gqa=2").name() == "r sweep at d/sqrt(N) 0.35 and GQA 2"
    assert Sweep.parse_cell(None) == [] and Sweep.parse_cell("") == []
    with pytest.raises(ValueError, match="not a sweep key"):
        Sweep.parse("scales[0].grid[1]")
    assert grid_point_sweeps({"d_model": [64], "r": [1.0], "gqa": [1]},
                             GridPoint(r=1.0, gqa=1, d_model=64, origin="o"), 0, 0) == []


def test_effects_table_rows_match_the_effects_and_the_report_renders_them():
    from archscale.analysis.effects import effects_table
    from archscale.report.tables import effects_html

    runs = pd.concat([
        _runs({0.1: 3.1, 0.2: 2.95, 0.4: 2.9, 0.8: 2.98}, seeds=3, sd=0.01),             # resolved interior
        _runs({0.5: 3.2, 1.0: 3.1, 4.0: 3.0}, seeds=2, sd=0.01, knob="r", scale="s2"),     # falls, resolved
        _runs({0.5: 3.02, 1.0: 3.0, 4.0: 3.01}, seeds=2, sd=0.02, knob="r", scale="s3"),   # interior, not resolved
    ], ignore_index=True)
    table = effects_table(runs)
    assert len(table) == 3
    rows = {r["scale"]: r for r in table.to_dict("records")}
    assert rows["s1"]["verdict"] == "interior optimum resolved, in [0.2, 0.8]"
    assert rows["s1"]["rise_low"] == pytest.approx(0.2) and rows["s1"]["rise_high"] == pytest.approx(0.08)
    assert rows["s1"]["rise_high_ci95"][0] > 0 and rows["s1"]["per_run_sd"] == pytest.approx(0.01)
    assert (rows["s1"]["best_at"], rows["s1"]["seeds"], rows["s1"]["architectures"]) == (0.4, "3", 4)
    assert rows["s2"]["verdict"] == "falls, resolved" and rows["s2"]["knob"] == "r"
    assert rows["s2"]["rise_low"] == pytest.approx(0.2)  # the low end's rise over the best (high) end
    assert rows["s2"]["rise_high"] is None or np.isnan(rows["s2"]["rise_high"])  # the best point is the high end
    assert rows["s3"]["verdict"] == "interior minimum not resolved"
    assert all("Holm" in c and "(3 sweep(s))" in c for c in table["correction"])
    page = effects_html(runs)
    assert page.count("</tr>") == 4 and "interior optimum resolved, in [0.2, 0.8]" in page
    assert "+0.200 [" in page and "Holm" in page and "per-run sd" in page
    assert "No one-knob sweep" in effects_html(runs.drop(columns="sweeps"))
    one = effects_table(_runs({0.1: 3.3, 0.2: 2.9, 0.4: 3.3}, seeds=1, sd=0.0))
    assert one["verdict"].tolist() == ["no interval: one seed per architecture"]
    assert "(no interval)" in effects_html(_runs({0.1: 3.3, 0.2: 2.9, 0.4: 3.3}, seeds=1, sd=0.0))
