"""Architecture arithmetic and the grid-point resolver (method.md section 2)."""

import math

import pytest

from archscale.arch import Architecture, GridPoint, InfeasiblePoint, Scale, resolve
from archscale.cost import arch_summary, inference_flops_per_token, training_cost

LLAMA_1B = Architecture(d_model=2048, ffn=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256)
LLAMA_3B = Architecture(d_model=3072, ffn=8192, layers=28, heads=24, kv_heads=8, head_dim=128, vocab=128256)


def test_llama_3_2_counts_are_exact():
    assert LLAMA_1B.params_total == 1_235_814_400
    assert LLAMA_1B.params_non_embedding == 973_146_112
    assert LLAMA_3B.params_total == 3_212_749_824
    assert LLAMA_3B.params_non_embedding == 2_818_747_392


def test_untied_output_layer_adds_v_times_d():
    untied = Architecture(**{**LLAMA_1B.__dict__, "tied": False})
    assert untied.params_total - LLAMA_1B.params_total == 128256 * 2048
    assert untied.params_non_embedding == LLAMA_1B.params_non_embedding


@pytest.mark.parametrize(
    "d, f, layers, h, g, dh, r, x",
    [
        (2048, 8192, 16, 32, 8, 64, 4.80, 0.066),  # LLaMA-3.2-1B
        (2560, 4096, 16, 72, 18, 64, 1.07, 0.082),  # Panda-1B
        (2560, 6144, 16, 36, 4, 64, 3.6, 0.082),  # Surefire-1B
        (3072, 8192, 28, 24, 8, 128, 3.0, 0.058),  # LLaMA-3.2-3B (the paper prints 4.80: a typo)
        (4096, 4096, 28, 36, 12, 128, 1.0, 0.077),  # Panda-3B
        (4096, 4096, 28, 42, 6, 128, 1.0, 0.077),  # Surefire-3B
    ],
)
def test_paper_table_ratios(d, f, layers, h, g, dh, r, x):
    a = Architecture(d_model=d, ffn=f, layers=layers, heads=h, kv_heads=g, head_dim=dh, vocab=128256)
    assert round(a.mlp_attn_ratio, 2 if r < 4 else 1) == pytest.approx(r, abs=0.011)
    assert round(a.d_over_sqrt_n, 3) == pytest.approx(x, abs=0.0011)


def test_heads_must_be_divisible_by_kv_heads():
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        Architecture(d_model=64, ffn=64, layers=2, heads=6, kv_heads=4, head_dim=8, vocab=512)


def test_kv_cache_and_inference_flops():
    # 2 (K and V) x layers x kv heads x head dim x 2 bytes
    assert LLAMA_1B.kv_cache_bytes_per_token("bf16") == 2 * 16 * 8 * 64 * 2
    assert inference_flops_per_token(LLAMA_1B, 4096) == 2 * 973_146_112 + 2 * 16 * 4096 * 2048
    s = arch_summary(LLAMA_1B, 4096)
    assert s["gqa"] == 4 and s["params_total"] == 1_235_814_400


def test_training_cost_components():
    cost = training_cost(LLAMA_1B, tokens=10**9, seq_length=2048)
    assert cost.flops_6nd == 6 * 973_146_112 * 10**9
    assert cost.flops_attention == 6 * 16 * 2048 * 2048 * 10**9
    assert cost.flops == pytest.approx(cost.flops_6nd + cost.flops_attention + cost.flops_logits)


SCALE_1B = Scale("1b", 973_146_112, 16, 64, 128256, n_tolerance=0.05, r_tolerance=0.2)


def test_resolver_recovers_llama_1b():
    a = resolve(SCALE_1B, GridPoint(r=4.8, gqa=4, d_over_sqrt_n=0.066))
    assert (a.d_model, a.ffn, a.heads, a.kv_heads) == (2048, 8192, 32, 8)
    assert a.arch_id == "1b-L16-d2048-h32g8x64-f8192"


@pytest.mark.parametrize("x", [0.05, 0.066, 0.08, 0.1])
@pytest.mark.parametrize("r", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("gqa", [1, 4, 8])
def test_resolver_invariants(x, r, gqa):
    a = resolve(SCALE_1B, GridPoint(r=r, gqa=gqa, d_over_sqrt_n=x))
    assert a.heads % a.kv_heads == 0 and a.gqa == gqa
    assert a.d_model % 64 == 0 and a.ffn % 64 == 0
    assert abs(a.params_non_embedding / SCALE_1B.n_target - 1) <= 0.05
    assert abs(a.mlp_attn_ratio / r - 1) <= 0.2
    assert a.d_model == round(x * math.sqrt(SCALE_1B.n_target) / 64) * 64


def test_resolver_accepts_absolute_d_model():
    a = resolve(SCALE_1B, GridPoint(r=1.0, gqa=4, d_model=2560))
    assert a.d_model == 2560 and abs(a.mlp_attn_ratio - 1) < 0.15


def test_resolver_is_deterministic_and_ids_are_stable():
    p = GridPoint(r=2.0, gqa=4, d_over_sqrt_n=0.08)
    assert resolve(SCALE_1B, p).arch_id == resolve(SCALE_1B, p).arch_id
    assert Architecture.from_dict(resolve(SCALE_1B, p).to_dict()) == resolve(SCALE_1B, p)


def test_infeasible_point_names_scale_point_and_fix():
    tiny = Scale("s", 25_000, 2, 8, 512, d_multiple=8, ffn_multiple=8, r_tolerance=0.15)
    with pytest.raises(InfeasiblePoint) as exc:
        resolve(tiny, GridPoint(r=4.0, gqa=1, d_over_sqrt_n=0.35))
    msg = str(exc.value)
    assert "scale 's'" in msg and "r=4.0" in msg and "r_tolerance" in msg


def test_hidden_size_too_large_for_budget():
    tiny = Scale("s", 10_000, 2, 8, 512, d_multiple=8, ffn_multiple=8)
    with pytest.raises(InfeasiblePoint, match="leaves no parameters|exceeds the per-layer budget"):
        resolve(tiny, GridPoint(r=1.0, gqa=1, d_model=4096))


def test_grid_point_needs_exactly_one_hidden_size():
    with pytest.raises(InfeasiblePoint, match="exactly one"):
        resolve(SCALE_1B, GridPoint(r=1.0, gqa=4))


def test_the_spec_carries_the_network_settings_outside_its_shape_dict():
    """The spec's network settings travel beside the shape dict (the rules' params and every
    record keep their content); records of older code with rope_base beside arch still load."""
    from archscale.arch import NORM_EPS

    shape = Architecture(d_model=32, ffn=80, layers=2, heads=4, kv_heads=2, head_dim=8, vocab=256, scale="t")
    spec = shape.with_network(rope_base=10000)
    assert spec.to_dict() == shape.to_dict() and "rope_base" not in spec.to_dict()
    assert spec == shape and spec.network() == {"rope_base": 10000.0} and spec.norm_eps == NORM_EPS
    assert Architecture.from_dict(spec.spec_dict()).rope_base == 10000.0
    assert Architecture.from_record({"arch": shape.to_dict(), "rope_base": 10000}).network() == {"rope_base": 10000.0}
    odd = spec.with_network(norm_eps=1e-6)
    assert odd.to_dict()["norm_eps"] == 1e-6 and odd.network() == {"rope_base": 10000.0, "norm_eps": 1e-6}
    with pytest.raises(ValueError, match="no rope_base"):
        shape.network()
    with pytest.raises(TypeError):
        shape.with_network(heads=2)
