import json
from pathlib import Path

import pandas as pd

from archscale.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_arch_json_panda_1b(capsys):
    rc = main("arch --d-model 2560 --ffn 4096 --layers 16 --heads 72 --kv-heads 18 --head-dim 64 "
              "--vocab 128256 --tied --context 5120 --json".split())
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params_non_embedding"] == 975_260_160
    assert round(out["mlp_attn_ratio"], 2) == 1.07 and round(out["d_over_sqrt_n"], 3) == 0.082
    assert out["gqa"] == 4
    assert out["kv_cache_bytes_per_token"] == 2 * 16 * 18 * 64 * 2
    assert out["inference_flops_per_token"] == 2 * 975_260_160 + 2 * 16 * 5120 * 72 * 64


def test_arch_untied_and_table(capsys):
    main("arch --d-model 2048 --ffn 8192 --layers 16 --heads 32 --kv-heads 8 --head-dim 64 --vocab 128256 --untied".split())
    out = capsys.readouterr().out
    assert "params_total" in out and "1,498,482,688" in out


def test_plan_writes_parquet(tmp_path, capsys):
    out = tmp_path / "plan.parquet"
    assert main(["plan", str(ROOT / "config" / "config.yaml"), "--output", str(out)]) == 0
    df = pd.read_parquet(out)
    assert df["arch_id"].is_unique and len(df) > 10
    assert "architectures" in capsys.readouterr().out


def test_plan_bad_config_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scales:\n  - name: s\n    n_target: 1000\n    layers: 2\n    head_dim: 8\n    bogus: 1\n")
    assert main(["plan", str(bad)]) == 2
    assert "bogus" in capsys.readouterr().err
