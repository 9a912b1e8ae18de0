"""GQA walk and Surefire verdict on interleaved measurements (injected rates, no timing)."""

import pytest

from archscale.search import SearchError
from archscale.search.selection import interleaved_comparer, resolved_gqa_walk, surefire_verdict

STEPS = [{"gqa": 4, "arch_id": "g4", "within_target": True}, {"gqa": 8, "arch_id": "g8", "within_target": True},
         {"gqa": 16, "arch_id": "g16", "within_target": True}]
NOISE = [0.97, 0.99, 1.0, 1.01, 1.03, 0.98, 1.02]


def rates(level: float, spread: float = 1.0) -> list[float]:
    return [level * (1 + (x - 1) * spread) for x in NOISE]


def test_walk_moves_only_on_resolved_faster_steps():
    compare = interleaved_comparer({"g4": rates(100), "g8": rates(130), "g16": rates(131)})
    walk = resolved_gqa_walk(STEPS, compare)
    # g8 is clearly faster than g4; g16 against g8 is within the noise: not resolved, stop at g8
    assert walk["best"]["arch_id"] == "g8"
    assert [s["status"] for s in walk["steps"]] == ["base", "kept", "not resolved: stop"]
    assert walk["steps"][1]["ratio"]["low"] > 1 and walk["steps"][2]["against"] == "g8"
    assert walk["stopped_at_gqa"] == 16


def test_walk_keeps_the_base_when_noise_hides_a_faster_step():
    # 10% faster in the median, but the repeats spread +-30%: the interval straddles 1
    compare = interleaved_comparer({"g4": rates(100, 10), "g8": rates(110, 10), "g16": rates(200)})
    walk = resolved_gqa_walk(STEPS, compare)
    assert walk["best"]["arch_id"] == "g4" and walk["steps"][1]["verdict"] == "not resolved"
    assert len(walk["steps"]) == 2  # g16 is never compared


def test_walk_does_not_take_a_step_above_the_loss_target():
    steps = [STEPS[0], dict(STEPS[1], within_target=False), STEPS[2]]
    walk = resolved_gqa_walk(steps, interleaved_comparer({"g4": rates(100), "g8": rates(150), "g16": rates(200)}))
    assert walk["best"]["arch_id"] == "g4" and walk["steps"][1]["status"].endswith("above loss target: stop")


def test_surefire_verdict_keeps_the_baseline_unless_resolved_faster():
    base, pick = {"arch_id": "b"}, {"arch_id": "s"}
    fast = surefire_verdict(pick, base, interleaved_comparer({"b": rates(100), "s": rates(140)}))
    assert fast["verdict"] == "faster" and fast["kept"] == "s" and fast["ratio"]["low"] > 1
    assert fast["ratio"]["value"] == pytest.approx(1.4)
    noisy = surefire_verdict(pick, base, interleaved_comparer({"b": rates(100, 10), "s": rates(105, 10)}))
    assert noisy["verdict"] == "not resolved" and noisy["kept"] == "b"
    assert noisy["ratio"]["low"] < 1 < noisy["ratio"]["high"]
    slow = surefire_verdict(pick, base, interleaved_comparer({"b": rates(100), "s": rates(60)}))
    assert slow["verdict"] == "slower" and slow["kept"] == "b"
    assert surefire_verdict(None, base, None) is None
    assert surefire_verdict(base, base, None)["verdict"] == "same architecture"


def test_too_few_rounds_is_not_resolved():
    compare = interleaved_comparer({"b": [100.0, 101.0, 99.0], "s": [200.0, 201.0, 199.0]})
    v = compare("s", "b")
    assert v["verdict"] == "not resolved" and v["ratio"]["low"] is None and "at least 5" in v["ratio"]["withheld_reason"]


def test_missing_measurement_names_the_architecture():
    with pytest.raises(SearchError, match="g8"):
        interleaved_comparer({"g4": rates(100)})("g8", "g4")


def test_select_with_interleaved_samples_reports_the_surefire_interval_and_verdict():
    from test_search import FINE, LLAMA_1B, PAPER_1B, OracleLaw, conditional_json, target_1b

    from archscale.search import prepare, select

    cands, space = prepare(target_1b(), FINE, OracleLaw.of(conditional_json(PAPER_1B)), lambda a: 1.0)
    by_id = {m["arch_id"]: m for m in cands["measure"]}

    def level(aid):  # GQA 8 is 20% faster than 4, 16 collapses; the baseline sits at 1000
        return {4: 1000.0, 8: 1200.0}.get(by_id[aid].get("gqa"), 10.0) if aid != LLAMA_1B.arch_id else 1000.0

    samples = {aid: rates(level(aid)) for aid in by_id}
    result, _ = select(cands, space, lambda a: float(sorted(samples[a])[3]), samples=samples)
    assert result["surefire"]["gqa"] == 8
    assert all(w["comparison"].startswith("interleaved") for w in result["gqa_walks"])
    v = result["surefire_verdict"]
    assert v["verdict"] == "faster" and v["kept"] == result["surefire"]["arch_id"] and v["ratio"]["low"] > 1
    assert result["versus_baseline"]["surefire"]["verdict"] == "faster"
    # the same picks with noise that hides the 20%: the baseline is kept
    noisy = {aid: rates(level(aid), 15) for aid in by_id}
    result, _ = select(cands, space, lambda a: float(sorted(noisy[a])[3]), samples=noisy)
    assert result["surefire_verdict"]["verdict"] == "not resolved"
    assert result["surefire_verdict"]["kept"] == LLAMA_1B.arch_id
