"""`archscale throughput` core: argument parsing, interleaved measurement, ratio and verdict output."""

import argparse
import json

import pytest

from archscale.throughput import command, compare

ARGS = ["throughput", "--d-model", "32", "--ffn", "64", "--layers", "1", "--heads", "4", "--kv-heads", "2",
        "--head-dim", "8", "--vocab", "128", "--input-len", "6", "--output-len", "3", "--repeats", "5",
        "--threads", "1"]


def _parser():
    parser = argparse.ArgumentParser(prog="archscale")
    command.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_parse_changes_and_errors():
    assert command.parse_changes("kv_heads=1, ffn=512,tied=false") == {"kv_heads": 1, "ffn": 512, "tied": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        command.parse_changes("colour=1")
    with pytest.raises(ValueError, match="must be an integer"):
        command.parse_changes("ffn=big")
    with pytest.raises(SystemExit):
        _parser().parse_args(ARGS + ["--batch-size", "0,2"])


def test_compare_measures_both_interleaved_with_a_ratio(capsys):
    args = _parser().parse_args(ARGS + ["--batch-size", "2,1", "--compare", "kv_heads=1", "--context", "20", "--json"])
    assert args.batch_size == [2, 1]
    archs, base = command.architectures(args)
    assert base == "A" and archs["B"].kv_heads == 1 and archs["B"].d_model == 32
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["batch_size"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert r["mode"] == "decode_at_context" and r["context"] == 20
        a, b = r["architectures"]["A"], r["architectures"]["B"]
        assert len(a["repeats"]) == len(b["repeats"]) == 5 and "vs_baseline" not in a
        assert b["vs_baseline"]["verdict"] in ("faster", "slower", "not resolved")
        ratio = b["vs_baseline"]["ratio"]
        assert ratio["low"] <= ratio["value"] <= ratio["high"]
        assert a["median"]["output_tokens_per_s"]["low"] is not None
    text = command.format_result(out)
    assert "B/A:" in text and "decode_at_context T=20" in text


def test_single_architecture_text_output(capsys):
    args = _parser().parse_args(ARGS)
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "batch 1 (prefill+decode" in text and "A:" in text and "output tok/s" in text


def test_too_few_repeats_refused():
    with pytest.raises(ValueError, match="at least 5"):
        compare.measure_interleaved({}, {}, 1, 4, 2, "prefill+decode", None, repeats=3)


def test_archscale_cli_has_the_throughput_verb():
    from archscale.cli.main import build_parser

    args = build_parser().parse_args(ARGS + ["--batch-size", "1,2", "--rope-base", "10000"])
    assert args.func is command.run and args.batch_size == [1, 2] and command.rope_base(args) == 10000.0


def test_rope_base_defaults_to_the_schema():
    from archscale.config import schema_default

    args = _parser().parse_args(ARGS)
    assert command.rope_base(args) == float(schema_default("model.rope_base"))


def test_isolated_threads_takes_every_core_locally_only():
    from archscale.workflow_support import isolated_threads

    assert isolated_threads(True, 2, 1) == 2  # locally: the whole run's cores
    assert isolated_threads(True, None, 1) == 1  # dry-run without --cores
    assert isolated_threads(False, 64, 4) == 4  # cluster: configured threads, exclusive node


def test_threads_flag_refuses_zero_and_defaults_to_the_owned_cores(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        _parser().parse_args(ARGS[:-2] + ["--threads", "0"])
    err = capsys.readouterr().err
    assert "argument --threads: expected a positive number of torch threads, got '0'" in err
    assert "leave --threads out to use the cores this job owns" in err
    with pytest.raises(SystemExit):
        _parser().parse_args(ARGS[:-2] + ["--threads", "two"])
    assert "--threads: expected a positive integer, got 'two'" in capsys.readouterr().err

    from archscale.throughput import job

    seen = {}
    real = compare.measure

    def spy(archs, batch_sizes, input_len, output_len, context, repeats, warmup, threads, *rest, **kw):
        seen["threads"] = threads
        result = real(archs, batch_sizes, input_len, output_len, context, repeats, warmup, threads, *rest, **kw)
        result["results"][0]["machine_before"]["load_average_1m"] = 99.0  # a busy machine, before the repeats
        return result

    monkeypatch.setattr(compare, "measure", spy)
    monkeypatch.setattr(job, "owned_cores", lambda: 1)
    args = _parser().parse_args(ARGS[:-2])  # no --threads
    assert args.threads is None and args.func(args) == 0
    assert seen["threads"] == 1
    text = capsys.readouterr().out
    assert "warning: load average 99.00 before the measurement exceeds the" in text
