"""Aggregation of per-run records into runs.parquet: declared schema, provenance, errors that name the file.

The records are built here from the formats documented in docs/pipeline.md (the train and
throughput stages write them in parallel).
"""

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.records import BATCH_SIZES, metrics_record, throughput_record

from archscale.analysis.aggregate import (
    PROVENANCE_KEY,
    RecordError,
    aggregate_runs,
    read_runs,
    runs_schema,
)
from archscale.config import load_config, stable_hash
from archscale.io import write_json, write_parquet
from archscale.plan import build_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path):
    """A plan from the embedded default config and one train + throughput record per architecture."""
    config = load_config(REPO / "config" / "config.yaml")
    plan = build_plan(config)
    rows = plan.rows()
    write_parquet(tmp_path / "results/plan/plan.parquet", pd.DataFrame(rows))
    metrics, through = [], []
    for i, row in enumerate(rows):
        arch = row["arch_id"]
        m = tmp_path / f"results/train/{arch}/metrics.json"
        write_json(m, metrics_record(row, 4.0 + 0.01 * i))
        curve = pd.DataFrame({
            "step": [1, 2, 3], "tokens": [4096, 8192, 12288], "loss": [6.0, 5.0, 4.5 + 0.01 * i],
            "lr": [1e-3] * 3, "grad_norm": [1.0] * 3, "valid_loss": [math.nan, math.nan, 4.0],
            "elapsed_s": [1.0, 2.0, 3.0],
        })
        write_parquet(m.parent / "curve.parquet", curve)
        t = tmp_path / f"results/throughput/{arch}.json"
        write_json(t, throughput_record(arch, 100.0 + i))
        metrics.append(m)
        through.append(t)
    return {"root": tmp_path, "config": config, "rows": rows, "metrics": metrics, "throughput": through}


def aggregate(ws, **kw):
    args = dict(batch_sizes=BATCH_SIZES, config=ws["config"], run_name="test")
    args.update(kw)
    return aggregate_runs(ws["root"] / "results/plan/plan.parquet", ws["metrics"], ws["throughput"], **args)


def test_runs_table_content_schema_and_provenance(workspace, tmp_path):
    table = aggregate(workspace)
    expected = runs_schema(BATCH_SIZES)
    assert table.schema.remove_metadata() == expected
    rows = workspace["rows"]
    assert table.num_rows == len(rows)
    df = table.to_pandas().set_index("arch_id")
    assert not {"N", "loss"} & set(df.columns)  # the law reads params_non_embedding and valid_loss
    for i, row in enumerate(sorted(rows, key=lambda r: r["arch_id"])):
        got = df.loc[row["arch_id"]]
        assert got["params_non_embedding"] == row["params_non_embedding"]
        assert got["tokens"] == row["tokens"] and got["D"] == row["steps"] * 32 * 128
        assert got["mlp_attn_ratio"] == pytest.approx(row["mlp_attn_ratio"])
        assert got["d_over_sqrt_n"] == pytest.approx(row["d_over_sqrt_n"])
        assert got["curve_points"] == 3 and got["train_device"] == "cpu"
        assert got["recipe_hash"] == stable_hash({"lr": 0.003, "seed": 1234})
        assert got["output_tokens_per_s_bs8"] == pytest.approx(8 * got["output_tokens_per_s_bs1"])
        assert pd.isna(got["energy_j_per_output_token_bs1"]) and not got["nvml_available"]
        assert got["metrics_path"].endswith(f"{row['arch_id']}/metrics.json")
    # Losses follow the records (4.0 + 0.01 i in plan order).
    by_plan = [df.loc[r["arch_id"], "valid_loss"] for r in rows]
    assert by_plan == pytest.approx([4.0 + 0.01 * i for i in range(len(rows))])

    prov = json.loads(table.schema.metadata[PROVENANCE_KEY])
    assert prov["config_hash"] == stable_hash(workspace["config"])
    assert prov["code_version"]["archscale"] == "0.1.0"
    assert prov["hardware"]["train_devices"] == ["cpu"] and prov["hardware"]["cpu_models"] == ["Test CPU"]
    assert prov["n_runs"] == len(rows) and prov["batch_sizes"] == BATCH_SIZES and prov["run_name"] == "test"

    write_parquet(tmp_path / "runs.parquet", table)
    back, prov2 = read_runs(tmp_path / "runs.parquet")
    assert prov2 == prov and len(back) == len(rows)
    assert pq.read_schema(tmp_path / "runs.parquet").remove_metadata() == expected


def _break(path: Path, fn):
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r.pop("valid_loss"), "required key 'valid_loss' is missing"),
        (lambda r: r.update(valid_loss="4.1"), "key 'valid_loss' must be a number"),
        (lambda r: r.update(tokens_seen=1.5), "key 'tokens_seen' must be an integer"),
        (lambda r: r.update(steps=None), "key 'steps' is null"),
        (lambda r: r.update(arch_id="other"), "arch_id 'other' does not match"),
        (lambda r: r["arch"].update(d_model=12345), "arch.d_model = 12345 but the plan has"),
    ],
)
def test_malformed_metrics_name_file_and_key(workspace, mutate, match):
    target = workspace["metrics"][2]
    _break(target, mutate)
    with pytest.raises(RecordError, match=match) as err:
        aggregate(workspace)
    assert str(target) in str(err.value)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r["records"].pop(), "no record for batch size 8"),
        (lambda r: r["records"][0].update(output_tokens_per_s=None), r"records\[batch_size=1\]: key 'output_tokens_per_s' is null"),
        (lambda r: r["records"][1].update(output_tokens_per_s=float("nan")), "must be a finite number"),
        (lambda r: r.pop("nvml_available"), "required key 'nvml_available' is missing"),
        (lambda r: r.update(records={}), "key 'records' must be a list"),
    ],
)
def test_malformed_throughput_name_file_and_key(workspace, mutate, match):
    target = workspace["throughput"][1]
    _break(target, mutate)
    with pytest.raises(RecordError, match=match) as err:
        aggregate(workspace)
    assert str(target) in str(err.value)


def test_missing_records_are_errors(workspace):
    workspace["metrics"][0].unlink()
    with pytest.raises(RecordError, match=f"{workspace['metrics'][0]}: record is missing"):
        aggregate(workspace)


def test_missing_or_bad_curve(workspace):
    curve = workspace["metrics"][3].parent / "curve.parquet"
    pq.write_table(pa.table({"step": [1], "tokens": [1]}), curve)
    with pytest.raises(RecordError, match=r"curve.parquet: loss curve lacks column\(s\) \['loss'\]"):
        aggregate(workspace)
    curve.write_text("not parquet")
    with pytest.raises(RecordError, match="not a readable Parquet file"):
        aggregate(workspace)
    curve.unlink()
    with pytest.raises(RecordError, match="loss curve is missing"):
        aggregate(workspace)


def test_records_must_cover_the_same_architectures(workspace):
    with pytest.raises(RecordError, match="without throughput record"):
        aggregate_runs(workspace["root"] / "results/plan/plan.parquet", workspace["metrics"],
                       workspace["throughput"][1:], batch_sizes=BATCH_SIZES)


def test_unreadable_json_names_the_file(workspace):
    workspace["throughput"][0].write_text("{not json")
    with pytest.raises(RecordError, match=f"{workspace['throughput'][0]}: not valid JSON"):
        aggregate(workspace)


def test_batch_sizes_default_to_the_records(workspace):
    table = aggregate(workspace, batch_sizes=None)
    assert "output_tokens_per_s_bs8" in table.column_names
    assert json.loads(table.schema.metadata[PROVENANCE_KEY])["batch_sizes"] == [1, 8]


def eval_record(arch_id: str, acc: float) -> dict:
    tasks = {t: {"metrics": {}, "primary_metric": "acc", "accuracy": acc + k / 100, "accuracy_stderr": 0.01,
                 "n_samples": 50, "n_samples_total": 50, "version": 1}
             for k, t in enumerate(["arc_easy", "piqa"])}
    return {"arch_id": arch_id, "model_dir": "x", "task_names": ["arc_easy", "piqa"], "tasks": tasks,
            "average_accuracy": acc + 0.005, "num_fewshot": 0, "limit": 50, "seed": 0, "command": [],
            "device": "cpu", "batch_size": 1, "wall_time_s": 1.0, "versions": {}}


def test_accuracies_join_on_arch_id(workspace):
    rows = workspace["rows"]
    evals = []
    for i, row in enumerate(rows[:2]):
        p = workspace["root"] / f"results/eval/{row['arch_id']}.json"
        write_json(p, eval_record(row["arch_id"], 0.3 + 0.1 * i))
        evals.append(p)
    table = aggregate(workspace, eval_paths=evals)
    assert table.schema.remove_metadata() == runs_schema(BATCH_SIZES, ["acc_arc_easy", "acc_piqa"])
    df = table.to_pandas().set_index("arch_id")
    assert not {"N", "loss"} & set(df.columns)  # the law reads params_non_embedding and valid_loss
    assert df.loc[rows[1]["arch_id"], "acc_piqa"] == pytest.approx(0.41)
    assert df.loc[rows[0]["arch_id"], "acc_avg"] == pytest.approx(0.305)
    assert df.loc[rows[0]["arch_id"], "eval_tasks"] == "arc_easy,piqa"
    assert df["acc_avg"].isna().sum() == len(rows) - 2
    # Without evaluation the accuracy columns are still declared (all null).
    plain = aggregate(workspace).to_pandas()
    assert plain["acc_avg"].isna().all()
    bad = eval_record(rows[0]["arch_id"], 0.3)
    del bad["average_accuracy"]
    write_json(evals[0], bad)
    with pytest.raises(RecordError, match=f"{evals[0]}: malformed evaluation record"):
        aggregate(workspace, eval_paths=evals)


def test_several_seeds_give_one_row_per_run(workspace):
    """Seed runs (<arch>-s<seed>) add rows with their seed; throughput is per architecture."""
    from archscale.analysis.aggregate import seed_spread

    rows = workspace["rows"]
    metrics = list(workspace["metrics"])
    for k, row in enumerate(rows[:2]):
        for seed in (1, 2):
            m = workspace["root"] / f"results/train/{row['arch_id']}-s{seed}/metrics.json"
            rec = metrics_record(row, 4.1 + 0.02 * seed + k)
            rec["recipe"] = {"lr": 0.003, "seed": seed}
            write_json(m, rec)
            write_parquet(m.parent / "curve.parquet", pd.DataFrame({"step": [1], "tokens": [1], "loss": [5.0]}))
            metrics.append(m)
    table = aggregate_runs(
        workspace["root"] / "results/plan/plan.parquet", metrics, workspace["throughput"],
        batch_sizes=BATCH_SIZES, config=workspace["config"], run_name="test")
    df = table.to_pandas()
    assert len(df) == len(rows) + 4 and df["run_id"].is_unique
    a0 = rows[0]["arch_id"]
    mine = df[df["arch_id"] == a0].set_index("run_id")
    assert sorted(mine.index) == sorted([a0, f"{a0}-s1", f"{a0}-s2"])
    assert mine.loc[a0, "seed"] == 1234 and mine.loc[f"{a0}-s2", "seed"] == 2
    assert (mine["output_tokens_per_s_bs1"] == mine.loc[a0, "output_tokens_per_s_bs1"]).all()
    spread = seed_spread(df).set_index("arch_id")
    assert spread.loc[a0, "n_seeds"] == 3
    assert spread.loc[a0, "mean"] == pytest.approx(mine["valid_loss"].mean())
    assert spread.loc[a0, "std"] == pytest.approx(mine["valid_loss"].std())
    assert spread.loc[rows[2]["arch_id"], "n_seeds"] == 1 and pd.isna(spread.loc[rows[2]["arch_id"], "std"])
    # the plan's typed runs (the workflow passes them): a record whose recipe seed disagrees
    # with its planned run's seed is stale
    typed = [{"run_id": f"{r['arch_id']}-s{s}", "arch_id": r["arch_id"], "seed": s, "tokens": int(r["tokens"])}
             for r in rows[:2] for s in (1, 2)]
    again = aggregate_runs(workspace["root"] / "results/plan/plan.parquet", metrics, workspace["throughput"],
                           batch_sizes=BATCH_SIZES, train_runs=typed).to_pandas()
    assert again.set_index("run_id").loc[f"{a0}-s2", "seed"] == 2
    bad = workspace["root"] / f"results/train/{a0}-s1/metrics.json"
    rec = json.loads(bad.read_text())
    rec["recipe"]["seed"] = 3
    write_json(bad, rec)
    with pytest.raises(RecordError, match=r"-s1/metrics.json: recipe.seed = 3 but the plan trains run"):
        aggregate_runs(workspace["root"] / "results/plan/plan.parquet", metrics, workspace["throughput"],
                       batch_sizes=BATCH_SIZES, train_runs=typed)


def test_fits_resample_seed_runs_as_runs(workspace):
    """With several seeds each seed run is one bootstrap unit (law.conditional's run column)."""
    from archscale.law.conditional import resolve_columns, run_ids

    rows = workspace["rows"]
    metrics = list(workspace["metrics"])
    row = rows[0]
    m = workspace["root"] / f"results/train/{row['arch_id']}-s1/metrics.json"
    rec = metrics_record(row, 4.2)
    rec["recipe"] = {"lr": 0.003, "seed": 1}
    write_json(m, rec)
    write_parquet(m.parent / "curve.parquet", pd.DataFrame({"step": [1], "tokens": [1], "loss": [5.0]}))
    df = aggregate_runs(workspace["root"] / "results/plan/plan.parquet", metrics + [m], workspace["throughput"],
                        batch_sizes=BATCH_SIZES).to_pandas()
    cols = resolve_columns(df)
    assert cols["run"] == "run_id"
    assert run_ids(df, cols) is None  # each row (seed run) is its own bootstrap unit
    assert len(set(run_ids(df, {**cols, "run": "arch_id"}))) == len(df) - 1  # not pooled by architecture


@pytest.mark.slow
def test_conditional_fit_uses_every_seed_run():
    import numpy as np
    from helpers.study import true_loss

    from archscale.law import fit_outputs

    plan = build_plan(load_config(REPO / "config" / "config.yaml"))
    rng = np.random.default_rng(0)
    rows = []
    for run in plan.runs.values():
        for seed in (1234, 1, 2):
            row = run.row(plan.compute)
            loss = true_loss(run.arch, run.scale.n_target) + rng.normal(0, 0.003)
            row.update(run_id=run.arch_id if seed == 1234 else f"{run.arch_id}-s{seed}", seed=seed,
                       valid_loss=loss, loss=loss, N=row["params_non_embedding"], D=row["tokens"])
            rows.append(row)
    df = pd.DataFrame(rows)
    _, cond, _ = fit_outputs(df, {"bootstrap": 20})
    assert cond["status"] == "ok" and cond["columns"]["run"] == "run_id"
    assert cond["n_runs"] == len(df) == 3 * len(plan.ids)
    in_range = df["mlp_attn_ratio"].between(0.5, 5.0).sum()
    assert cond["forms"]["multiplicative"]["n_points"] == in_range
