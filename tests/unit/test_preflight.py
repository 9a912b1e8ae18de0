"""Up-front validation: every config problem in one message with its key path, before
any job; non-finite numbers anywhere the schema says a number; YAML errors with line and column;
the CLI layers configs as the workflow does; names used in paths are safe; CLI argument ranges."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from archscale.cli import main
from archscale.config import (ConfigError, cached_schema, layered_files, load_layered, non_finite_numbers, read_yaml,
                              validate_config)
from archscale.preflight import check_study, preflight

ROOT = Path(__file__).resolve().parents[2]


def numeric_key_paths(schema: dict, config: dict) -> list[tuple]:
    """Every path of ``config`` (defaults filled) holding a number where the schema says number."""
    out = []

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))
        elif isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
            out.append(path)

    walk(config, ())
    return out


def set_path(config: dict, path: tuple, value) -> None:
    node = config
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + p)
    return out


# ---- 1. finite numbers, every problem in one message -------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_numeric_key_rejects_non_finite_values_by_key_path(default_config, bad):
    filled = validate_config(copy.deepcopy(default_config))
    paths = [p for p in numeric_key_paths(cached_schema(), filled) if isinstance(p[-1], str) or len(p) > 1]
    assert len(paths) > 60  # the walk reaches every section (training, scales, grid values, fit, ...)
    for path in paths:
        cfg = copy.deepcopy(filled)
        set_path(cfg, path, bad)
        with pytest.raises(ConfigError) as err:
            validate_config(cfg)
        assert f"'{dotted(path)}'" in str(err.value), (path, str(err.value))


def test_nan_learning_rate_is_an_error_naming_the_key(default_config):
    default_config["training"]["lr"] = math.nan
    with pytest.raises(ConfigError, match=r"training\.lr.*not a finite number"):
        validate_config(default_config)
    assert non_finite_numbers({"training": {"lr": math.inf}}) and not non_finite_numbers({"training": {"lr": 1e-3}})


def test_nan_in_scale_and_grid_values_is_a_config_error(default_config):
    default_config["scales"][0]["tokens_per_param"] = math.nan
    default_config["scales"][1]["grid"][0]["d_over_sqrt_n"][1] = math.nan
    with pytest.raises(ConfigError) as err:
        preflight(default_config, notify=lambda line: None)
    msg = str(err.value)
    assert "scales[0].tokens_per_param" in msg and "scales[1].grid[0].d_over_sqrt_n[1]" in msg


def test_all_problems_are_listed_in_one_message(default_config):
    cfg = default_config
    cfg["training"]["micro_batch"] = 5                                        # does not divide 32
    cfg["scales"][0]["architectures"] = [dict(name="mini-llama", d_model=48, ffn=96, heads=4, kv_heads=2)]
    cfg["scales"][1]["grid"] = []                                             # empty scale
    cfg["scales"][2]["grid"][1]["r"] = [40.0]                                 # infeasible points
    result = check_study(cfg)
    text = "\n".join(result.problems)
    assert "training.micro_batch" in text and "does not divide" in text
    assert "scales[2].architectures[0].name" in text and "different shape" in text
    assert "scales[1]" in text and "empty" in text
    assert "r=40.0" in text and "scales[2].grid[1]" in text
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert all(p in str(err.value) for p in result.problems)


def test_schema_errors_and_non_finite_numbers_together(default_config):
    default_config["training"]["lr"] = math.inf
    default_config["training"]["seq_length"] = 2
    default_config["fit"]["r_min"] = math.nan
    with pytest.raises(ConfigError) as err:
        validate_config(default_config)
    msg = str(err.value)
    assert "3 problems" in msg and "training.lr" in msg and "training.seq_length" in msg and "fit.r_min" in msg


def test_same_name_same_shape_is_not_a_duplicate(default_config):
    arch = default_config["scales"][2]["architectures"][0]
    default_config["scales"][2]["architectures"].append(dict(arch))
    assert not [p for p in check_study(default_config).problems if "different shape" in p]


def test_byte_level_bpe_vocabulary_below_257_is_a_problem_only_when_trained_here(default_config, tmp_path):
    default_config["tokenizer"]["vocab_size"] = 256
    problems = check_study(copy.deepcopy(default_config)).problems
    assert [p for p in problems if "key 'tokenizer.vocab_size'" in p and "at least 257" in p], problems
    default_config["tokenizer"]["vocab_size"] = 257
    assert not check_study(copy.deepcopy(default_config)).problems
    # a tokenizer file brings its own vocabulary: 256 is then the file's business, not this check's
    default_config["tokenizer"]["vocab_size"] = 256
    default_config["tokenizer"]["file"] = str(tmp_path / "tokenizer.json")
    assert not [p for p in check_study(default_config).problems if "too small for the byte-level" in p]


def test_skipped_points_are_notices(default_config):
    default_config["model"]["on_infeasible"] = "skip"
    default_config["scales"][0]["grid"][1]["r"] = [40.0, 1.0]
    seen: list[str] = []
    study = preflight(default_config, notify=seen.append)
    assert study.plan.ids and seen and all("skipped (model.on_infeasible: skip)" in s for s in seen)
    assert any("r=40.0" in s for s in seen)


def test_scale_whose_every_point_is_skipped_is_a_problem(default_config):
    default_config["model"]["on_infeasible"] = "skip"
    default_config["scales"][0]["grid"] = [{"d_over_sqrt_n": [0.35], "r": [40.0], "gqa": [1]}]
    problems = check_study(default_config).problems
    assert any("scales[0]" in p and "every grid point was skipped" in p for p in problems), problems


# ---- YAML syntax errors ---------------------------------------------------------------------------
def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: 0.003\n  global_batch: [1, 2\n  seq_length: 64\n")
    with pytest.raises(ConfigError, match=rf"{bad}, line \d+, column \d+: YAML syntax error"):
        read_yaml(bad)


# ---- layering (one loader for the workflow and the CLIs) ----------------------------------------
def test_layering_matches_snakemake_configfile(monkeypatch):
    monkeypatch.chdir(ROOT)
    tiny = load_layered(["config/test-tiny.yaml"])
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert tiny["training"]["lr"] == base["training"]["lr"] and tiny["run_name"] == "test-tiny"
    assert [s["name"] for s in tiny["scales"]] == ["s30k", "s50k"]  # lists are replaced, not merged
    assert layered_files(["config/config.yaml"]) == [Path("config/config.yaml")]


def test_plan_cli_layers_test_tiny_on_the_default_like_the_workflow(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["plan", "config/test-tiny.yaml"]) == 0  # alone it has infeasible points
    assert "8 architectures" in capsys.readouterr().out
    assert main(["plan", "--no-base", "config/test-tiny.yaml"]) == 2
    assert "infeasible" in capsys.readouterr().err


def test_paper_config_is_complete_on_its_own(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_layered(["config/paper.yaml"]) == load_layered(["config/paper.yaml"], base=None)
    assert "config/config.yaml" in (ROOT / "config" / "paper.yaml").read_text().split("\nrun_name")[0]


# ---- names used in paths --------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", ".hidden", "", "a b"])
def test_names_used_in_paths_are_restricted(default_config, name):
    for where in ("target", "architecture", "scale"):
        cfg = copy.deepcopy(default_config)
        if where == "target":
            cfg["search"] = {"targets": [{"name": name, "scale": "s100k"}]}
            key = r"search\.targets\[0\]\.name"
        elif where == "architecture":
            cfg["scales"][2]["architectures"][0]["name"] = name
            key = r"scales\[2\]\.architectures\[0\]\.name"
        else:
            cfg["scales"][0]["name"] = name
            key = r"scales\[0\]\.name"
        with pytest.raises(ConfigError, match=key):
            validate_config(cfg)


def test_safe_names_pass(default_config):
    default_config["search"] = {"targets": [{"name": "s100k_v1.2-a", "scale": "s100k"}]}
    validate_config(default_config)


# ---- CLI argument ranges --------------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["--context=-100000", "--context=0", "--d-model=-64", "--layers=0", "--heads=x"])
def test_arch_cli_rejects_out_of_range_arguments(arg, capsys):
    argv = ["arch", "--d-model", "64", "--ffn", "96", "--layers", "2", "--heads", "4", "--kv-heads", "2",
            "--head-dim", "16", "--vocab", "512", arg]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert arg.split("=")[0] in capsys.readouterr().err


def test_non_finite_numbers_and_batch_problems_in_one_message(default_config):
    default_config["training"]["lr"] = math.nan
    default_config["training"]["micro_batch"] = 5
    problems = check_study(default_config).problems
    assert any("training.lr" in p for p in problems) and any("training.micro_batch" in p for p in problems)


def test_preflight_makes_snakemakes_config_canonical_in_place(default_config):
    """common.smk hands Snakemake's own ``config`` to preflight: every rule that reads ``config``
    directly then sees canonical numbers (32.0 -> 32)."""
    default_config["training"]["global_batch"] = 32.0
    default_config["throughput"]["repeats"] = 7.0
    default_config["training"]["lr"] = "3e-3"
    preflight(default_config, notify=lambda line: None)
    assert type(default_config["training"]["global_batch"]) is int
    assert type(default_config["throughput"]["repeats"]) is int
    assert default_config["training"]["lr"] == 0.003


def test_duplicate_keys_in_a_layered_file_name_file_line_and_column(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("fit:\n  r_min: 0.5\n  r_min: 0.7\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml, line 3, column 3: .*duplicate key 'r_min'"):
        load_layered([path], base=None)
