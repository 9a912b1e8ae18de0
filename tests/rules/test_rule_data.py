"""Rules tokenizer, tokenize and data_manifest run by Snakemake on a tiny Dolma-format corpus."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.rules import default_config, job_counts, run_snakemake, write_config, write_corpus

from archscale.data.split import is_valid

TARGET = "results/data/manifest.json"

pytestmark = pytest.mark.slow


def _corpus(root: Path) -> dict[str, list[dict]]:
    """Two sources, three shards of real text (slices of the shipped sample)."""
    return write_corpus(root, {"plays": (60, 2), "code": (12, 1)})


def _config(root: Path, **data) -> dict:
    cfg = default_config()
    cfg["data"].update(corpus_dir="corpus", valid_fraction=0.2, **data)
    cfg["tokenizer"].update(vocab_size=300)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-rules")
    shards = _corpus(root)
    write_config(root, _config(root))
    proc = run_snakemake(root, TARGET)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, shards


def test_manifest_and_records(run):
    root, shards = run
    meta = json.loads((root / "results/tokenizer/tokenizer.meta.json").read_text())
    assert meta == {
        "vocab_size": 300,
        "eod_id": 0,
        "eod_token": "<|endoftext|>",
        "source": "trained",
        "path": "results/tokenizer/tokenizer.json",
    }
    m = json.loads((root / TARGET).read_text())
    assert (m["vocab_size"], m["eod_id"], m["dtype"], m["mixture"]) == (300, 0, "uint16", "proportional")
    assert m["train"]["prefixes"] == [f"results/data/{k}.train" for k in sorted(shards)]
    records = {k: json.loads((root / f"results/data/{k}.json").read_text()) for k in shards}
    train_tokens = [records[k]["tokens"]["train"] for k in sorted(shards)]
    assert m["train"]["weights"] == pytest.approx([t / sum(train_tokens) for t in train_tokens])
    for source, n_shards in (("plays", 2), ("code", 1)):
        s = m["sources"][source]
        assert s["shards"] == n_shards
        assert s["documents"] == sum(records[k]["documents"]["train"] for k in shards if k.startswith(source))
        assert s["weight"] == pytest.approx(s["tokens"] / sum(train_tokens))
    for k, docs in shards.items():
        r = records[k]
        n_valid = sum(is_valid(d["id"], 0.2) for d in docs)
        assert r["documents"] == {"train": len(docs) - n_valid, "valid": n_valid}
        assert r["bad_records"] == 0 and r["sources"][k.split("/")[0]]["documents"] == len(docs)
        assert (root / f"logs/tokenize/{k}.log").exists()


def test_datasets_hold_the_documents_tokens(run):
    """Workflow round trip: documents -> tokens -> IndexedDataset -> same ids and boundaries."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from tokenizers import Tokenizer

    root, shards = run
    tok = Tokenizer.from_file(str(root / "results/tokenizer/tokenizer.json"))
    tok.encode_special_tokens = True  # as the stage encodes: special-token strings in text are text
    for k, docs in shards.items():
        for split in ("train", "valid"):
            want = [d for d in docs if is_valid(d["id"], 0.2) == (split == "valid")]
            ds = IndexedDataset(str(root / f"results/data/{k}.{split}"))
            assert len(ds) == len(want) and len(ds.document_indices) == len(want) + 1
            for i, d in enumerate(want):
                arr = np.asarray(ds[i])
                assert arr.dtype == np.uint16 and arr[-1] == 0
                assert arr.tolist() == tok.encode(d["text"], add_special_tokens=False).ids + [0]


def test_unrelated_edits_rerun_nothing_and_valid_fraction_reruns_tokenize(run):
    root, _ = run
    cfg = yaml.safe_load((root / "config/config.yaml").read_text())
    cfg["training"]["lr"] = 0.001
    cfg["data"]["seed"] = 99  # only the manifest depends on it
    write_config(root, cfg)
    assert _planned(root) == {"data_manifest": 1}
    cfg["data"]["valid_fraction"] = 0.1
    write_config(root, cfg)
    assert _planned(root) == {"tokenizer": 1, "tokenize": 3, "data_manifest": 1}
    cfg["data"].update(seed=1234, valid_fraction=0.2)
    cfg["training"]["lr"] = default_config()["training"]["lr"]
    write_config(root, cfg)


def _planned(root: Path) -> dict[str, int]:
    """Jobs a dry-run would run, from its 'Job stats' table."""
    return job_counts(run_snakemake(root, TARGET, "-n", "--quiet", "rules"))


def _bad_corpus(root: Path, bad_line: bytes) -> None:
    import gzip

    _corpus(root)
    p = root / "corpus/plays/plays-0001.json.gz"
    lines = gzip.open(p).read().splitlines()
    lines.insert(3, bad_line)  # becomes line 4
    with gzip.open(p, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")


def test_bad_record_fails_the_shard_and_leaves_no_partial_dataset(run, tmp_path):
    root0, _ = run
    _bad_corpus(tmp_path, b'{"id": "x", "source": "plays"}')
    tok = tmp_path / "tok.json"
    tok.write_bytes((root0 / "results/tokenizer/tokenizer.json").read_bytes())
    write_config(tmp_path, _config(tmp_path) | {"tokenizer": {"file": str(tok), "vocab_size": 300}})
    proc = run_snakemake(tmp_path, TARGET, "--keep-going")
    assert proc.returncode != 0
    log = (tmp_path / "logs/tokenize/plays/plays-0001.log").read_text()
    assert "corpus/plays/plays-0001.json.gz:4: record has no 'text'" in log and "on_bad_record: skip" in log
    assert not list((tmp_path / "results/data/plays").glob("plays-0001*"))
    assert not list((tmp_path / "results/data/plays").glob(".plays-0001*"))  # no temporaries either
    assert (tmp_path / "results/data/plays/plays-0000.json").exists()  # the other shards finished

    # with on_bad_record: skip the record is skipped and counted
    cfg = yaml.safe_load((tmp_path / "config/config.yaml").read_text())
    cfg["data"]["on_bad_record"] = "skip"
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path, "results/data/plays/plays-0001.json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rec = json.loads((tmp_path / "results/data/plays/plays-0001.json").read_text())
    assert rec["bad_records"] == 1 and rec["bad_examples"] == ["line 4: record has no 'text'"]
    assert rec["documents"]["train"] + rec["documents"]["valid"] == 30
    meta = json.loads((tmp_path / "results/tokenizer/tokenizer.meta.json").read_text())
    assert meta["source"] == "file" and meta["path"] == str(tok)


def test_trained_tokenizer_reports_bad_line(tmp_path):
    _bad_corpus(tmp_path, b"{not json")
    write_config(tmp_path, _config(tmp_path))
    proc = run_snakemake(tmp_path, "results/tokenizer/tokenizer.json")
    assert proc.returncode != 0
    log = (tmp_path / "logs/tokenizer.log").read_text()
    assert "corpus/plays/plays-0001.json.gz:4: line is not JSON" in log
    assert not (tmp_path / "results/tokenizer/tokenizer.json").exists()


def test_tokenizer_file_with_wrong_vocab_size(run, tmp_path):
    root0, _ = run
    _corpus(tmp_path)
    tok = tmp_path / "tok.json"
    tok.write_bytes((root0 / "results/tokenizer/tokenizer.json").read_bytes())
    write_config(tmp_path, _config(tmp_path) | {"tokenizer": {"file": str(tok), "vocab_size": 512}})
    proc = run_snakemake(tmp_path, TARGET)
    assert proc.returncode != 0
    log = (tmp_path / "logs/tokenizer.log").read_text()
    assert f"{tok}: tokenizer has 300 tokens but tokenizer.vocab_size is 512" in log
    assert "set tokenizer.vocab_size: 300" in log
    assert not (tmp_path / "results/tokenizer").exists() or not list((tmp_path / "results/tokenizer").iterdir())
