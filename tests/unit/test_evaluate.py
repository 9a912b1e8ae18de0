"""Downstream evaluation: task resolution, selection, the paper's task list, records, and an
offline lm-evaluation-harness run on an exported model checked against an independent
computation of the same log-likelihoods."""

import json
from pathlib import Path

import pytest
import torch

from archscale.arch import Architecture
from archscale.eval_tasks import PAPER_TASKS, EvaluationError, find_local_tasks, local_task_files, resolve_tasks, task_registry
from archscale.evaluate import (
    AVERAGE_COLUMN,
    accuracy_columns,
    accuracy_table,
    evaluate_model,
    lm_eval_command,
    parse_metrics,
    plot_accuracy_vs_loss,
    primary_metric,
    select_architectures,
    summarise,
)

ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = ROOT / "resources" / "eval"


def _archs():
    mk = lambda d, h, g, scale, name="": Architecture(d_model=d, ffn=64, layers=2, heads=h, kv_heads=g, head_dim=8,
                                                       vocab=512, scale=scale, name=name)
    return [mk(48, 4, 4, "s30k"), mk(64, 4, 2, "s30k"), mk(96, 4, 2, "s100k", "mini-llama"), mk(80, 6, 3, "s100k")]


def test_select_architectures_by_all_name_id_and_scale():
    archs = _archs()
    ids = [a.arch_id for a in archs]
    assert select_architectures("all", archs) == ids
    assert select_architectures(["mini-llama"], archs) == [ids[2]]
    assert select_architectures([ids[1], "mini-llama"], archs) == [ids[1], ids[2]]  # plan order
    assert select_architectures(["s30k"], archs) == ids[:2]
    assert select_architectures(["s100k", "mini-llama"], archs) == ids[2:]  # no duplicates
    with pytest.raises(EvaluationError, match=r"export.architectures: 'panda-1b' .*mini-llama"):
        select_architectures(["panda-1b"], archs, key="export.architectures")


def test_local_task_resolves_data_files_against_its_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resolution must not depend on the working directory
    assert find_local_tasks([EVAL_DIR]) == {"archscale_mc": EVAL_DIR / "archscale_mc" / "archscale_mc.yaml"}
    specs, local = resolve_tasks(["archscale_mc"], [EVAL_DIR], registry=[])
    assert local == ["archscale_mc"]
    data = Path(specs[0]["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data == (EVAL_DIR / "archscale_mc" / "archscale_mc.jsonl").resolve()
    assert specs[0]["output_type"] == "multiple_choice"
    assert local_task_files(["archscale_mc", "piqa"], [EVAL_DIR]) == [
        str(EVAL_DIR / "archscale_mc" / "archscale_mc.jsonl"), str(EVAL_DIR / "archscale_mc" / "archscale_mc.yaml")]


def test_local_task_file_content():
    rows = [json.loads(line) for line in (EVAL_DIR / "archscale_mc" / "archscale_mc.jsonl").read_text().splitlines()]
    assert len(rows) == 32
    assert all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in rows)
    # answer positions are balanced: a position-biased model scores 25%
    assert sorted({sum(r["answer"] == k for r in rows) for k in range(4)}) == [8]


def test_unknown_task_and_bad_paths_are_named(tmp_path):
    with pytest.raises(EvaluationError, match="evaluate.tasks: 'arc_easyy'"):
        resolve_tasks(["arc_easyy"], [EVAL_DIR], registry=list(PAPER_TASKS))
    with pytest.raises(EvaluationError, match="more than once"):
        resolve_tasks(["piqa", "piqa"], [EVAL_DIR], registry=list(PAPER_TASKS))
    with pytest.raises(EvaluationError, match="evaluate.include_path"):
        find_local_tasks([tmp_path / "missing"])
    bad = tmp_path / "t"
    bad.mkdir()
    (bad / "t.yaml").write_text("task: broken\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nope.jsonl\n")
    with pytest.raises(EvaluationError, match="nope.jsonl"):
        resolve_tasks(["broken"], [bad], registry=[])


@pytest.mark.slow
def test_the_papers_nine_tasks_are_lm_eval_tasks():
    """The nine names resolve against lm-evaluation-harness's own registry (no dataset download)."""
    registry = set(task_registry([EVAL_DIR]))
    assert set(PAPER_TASKS) <= registry and "archscale_mc" in registry
    specs, local = resolve_tasks(list(PAPER_TASKS), [EVAL_DIR], registry=registry)
    assert specs == list(PAPER_TASKS) and local == []


def test_paper_command_line():
    cmd = lm_eval_command("results/export/A", list(PAPER_TASKS), ["resources/eval"], None, "auto", "cuda")
    assert cmd[:3] == ["lm_eval", "--model", "hf"]
    assert cmd[cmd.index("--tasks") + 1] == (
        "arc_easy,arc_challenge,lambada_openai,hellaswag,openbookqa,piqa,sciq,winogrande,coqa")
    assert cmd[cmd.index("--num_fewshot") + 1] == "0"
    assert cmd[cmd.index("--model_args") + 1] == "pretrained=results/export/A,dtype=auto"
    assert "--limit" not in cmd
    assert lm_eval_command("m", ["piqa"], [], 10)[-2:] == ["--limit", "10"]


def test_primary_metrics():
    assert primary_metric("hellaswag", ["acc", "acc_norm"]) == "acc_norm"
    assert primary_metric("coqa", ["em", "f1"]) == "f1"
    assert primary_metric("archscale_mc", ["acc", "acc_norm"]) == "acc"
    assert primary_metric("piqa", ["acc", "acc_norm"], {"piqa": "acc"}) == "acc"
    with pytest.raises(EvaluationError, match="evaluate.metrics"):
        primary_metric("piqa", ["acc"], {"piqa": "bleu"})
    with pytest.raises(EvaluationError, match="evaluate.metrics"):
        primary_metric("custom", ["bleu"])


def test_summarise_lm_eval_results_shape():
    # The shape of lm_eval.simple_evaluate's "results" (metric,filter keys; an alias; N/A stderr).
    raw = {
        "results": {
            "hellaswag": {"alias": "hellaswag", "acc,none": 0.30, "acc_stderr,none": 0.01,
                          "acc_norm,none": 0.34, "acc_norm_stderr,none": 0.01},
            "coqa": {"alias": "coqa", "em,none": 0.20, "em_stderr,none": "N/A", "f1,none": 0.31,
                     "f1_stderr,none": 0.02},
        },
        "n-samples": {"hellaswag": {"original": 10042, "effective": 100}, "coqa": {"original": 500, "effective": 500}},
        "versions": {"hellaswag": 1.0, "coqa": 3.0},
    }
    assert parse_metrics(raw["results"]["coqa"]) == {"em": 0.20, "em_stderr": None, "f1": 0.31, "f1_stderr": 0.02}
    s = summarise(raw, ["hellaswag", "coqa"])
    assert s["tasks"]["hellaswag"]["accuracy"] == 0.34 and s["tasks"]["hellaswag"]["n_samples"] == 100
    assert s["tasks"]["coqa"]["primary_metric"] == "f1"
    assert s["average_accuracy"] == pytest.approx((0.34 + 0.31) / 2)
    with pytest.raises(EvaluationError, match="no result for task 'piqa'"):
        summarise(raw, ["piqa"])


def _record(arch_id, accs):
    return {"arch_id": arch_id, "task_names": list(accs), "limit": None,
            "tasks": {t: {"accuracy": a} for t, a in accs.items()},
            "average_accuracy": sum(accs.values()) / len(accs)}


def test_accuracy_columns_table_and_figure(tmp_path):
    from archscale.io import write_json

    paths = []
    for i, arch in enumerate(["a1", "a2", "a3"]):
        p = tmp_path / "eval" / f"{arch}.json"
        write_json(p, _record(arch, {"arc_easy": 0.4 + i / 10, "lambada_openai": 0.2 + i / 20}))
        paths.append(p)
    row = accuracy_columns(json.loads(paths[0].read_text()))
    assert row == {"arch_id": "a1", "acc_arc_easy": 0.4, "acc_lambada_openai": 0.2, AVERAGE_COLUMN: pytest.approx(0.3),
                   "eval_tasks": "arc_easy,lambada_openai", "eval_limit": None}
    table = accuracy_table(paths)
    assert list(table["arch_id"]) == ["a1", "a2", "a3"]
    assert table["acc_avg"].tolist() == pytest.approx([0.3, 0.375, 0.45])
    assert list(accuracy_table([]).columns) == ["arch_id"]

    import pandas as pd

    runs = pd.DataFrame({"arch_id": ["a1", "a2", "a3", "a4"], "scale": ["s", "s", "t", "t"],
                         "valid_loss": [3.0, 2.9, 2.8, 2.7]}).merge(table, on="arch_id", how="left")
    out = plot_accuracy_vs_loss(runs, tmp_path / "fig" / "acc_vs_loss.png")
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"
    assert plot_accuracy_vs_loss(runs.drop(columns=["acc_avg"]), tmp_path / "none.png") is None


# ---- offline end to end: export -> lm-evaluation-harness on the local task ---------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from archscale.data.tokenizer import train_bpe
    from archscale.export import export_model
    from archscale.model import build_model, resolve_runtime, setup_runtime

    rt = resolve_runtime("fp32", "local", cuda_available=False)
    setup_runtime(rt, seed=0)
    root = tmp_path_factory.mktemp("exported")
    rows = [json.loads(line) for line in (EVAL_DIR / "archscale_mc" / "archscale_mc.jsonl").read_text().splitlines()]
    texts = [r["context"] + " " + c for r in rows for c in r["choices"]] * 5
    tok = train_bpe(texts, 320, "<|endoftext|>")
    tok.save(str(root / "tokenizer.json"))
    # d % heads != 0: the exported config is the mistral type (see archscale.export.hf_model_type)
    arch = Architecture(d_model=40, ffn=64, layers=2, heads=6, kv_heads=2, head_dim=8, vocab=320, scale="t")
    torch.manual_seed(0)
    model = build_model(arch, rt, max_sequence_length=128, rope_base=500000)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a model with opinions: accuracies away from ties
    out = root / "hf"
    export_model(model, arch, out, tokenizer_file=root / "tokenizer.json",
                 tokenizer_meta={"vocab_size": 320, "eod_id": 0, "eod_token": "<|endoftext|>"},
                 seq_length=128, rope_base=500000)
    return arch, out


def _independent_accuracy(model_dir):
    """acc and acc_norm of archscale_mc computed directly with transformers: sum of the log-probs of
    a choice's tokens after the context (lm-eval's split: context tokens, then the rest of
    context + " " + choice), argmax; acc_norm divides by the length of the choice in characters."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = [json.loads(line) for line in (EVAL_DIR / "archscale_mc" / "archscale_mc.jsonl").read_text().splitlines()]
    hits = hits_norm = 0
    for r in rows:
        ctx = tok(r["context"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in r["choices"]:
            whole = tok(r["context"] + " " + choice, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx):]
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            scores.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        norm = [s / len(c) for s, c in zip(scores, r["choices"])]
        hits += max(range(4), key=lambda k: scores[k]) == r["answer"]
        hits_norm += max(range(4), key=lambda k: norm[k]) == r["answer"]
    return hits / len(rows), hits_norm / len(rows)


@pytest.mark.slow
def test_lm_eval_on_the_local_task_matches_an_independent_computation(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    arch, model_dir = exported
    spec = {"tasks": ["archscale_mc"], "include_path": [str(EVAL_DIR)], "limit": None, "num_fewshot": 0,
            "metrics": {}, "seed": 1234}
    rec = evaluate_model(arch.arch_id, model_dir, spec, {"batch_size": 4, "device": "cpu", "threads": 1})
    r = rec["tasks"]["archscale_mc"]
    assert r["n_samples"] == 32 and r["primary_metric"] == "acc"
    acc, acc_norm = _independent_accuracy(model_dir)
    assert r["metrics"]["acc"] == pytest.approx(acc) and r["metrics"]["acc_norm"] == pytest.approx(acc_norm)
    assert rec["average_accuracy"] == pytest.approx(acc)
    assert rec["command"][rec["command"].index("--tasks") + 1] == "archscale_mc"
    assert rec["versions"]["lm-eval"] and rec["limit"] is None

    # limit: only the first documents are scored, and the record says so
    rec2 = evaluate_model(arch.arch_id, model_dir, dict(spec, limit=5), {"batch_size": 4, "device": "cpu"})
    assert rec2["tasks"]["archscale_mc"]["n_samples"] == 5 and rec2["limit"] == 5


def test_evaluate_refuses_a_directory_that_is_not_an_export(tmp_path):
    with pytest.raises(EvaluationError, match="config.json missing"):
        evaluate_model("x", tmp_path, {"tasks": ["archscale_mc"], "include_path": [str(EVAL_DIR)]})


def test_configs_switch_evaluation_as_documented():
    import yaml

    from archscale.config import validate_config

    paper = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    default = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    assert paper["evaluate"]["enabled"] is True and tuple(paper["evaluate"]["tasks"]) == PAPER_TASKS
    assert paper["evaluate"]["num_fewshot"] == 0 and paper["evaluate"]["limit"] is None
    assert default["evaluate"]["enabled"] is False and default["evaluate"]["tasks"] == ["archscale_mc"]
    # the schema's default task list is the paper's too
    assert tuple(validate_config({"scales": default["scales"]})["evaluate"]["tasks"]) == PAPER_TASKS
