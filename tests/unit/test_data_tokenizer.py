"""Tokenizer: trained byte-level BPE, configured file, checks against the config."""

import itertools
import json
from pathlib import Path

import pytest

from archscale.data.corpus import read_documents, write_shard
from archscale.data.split import is_valid
from archscale.data.tokenizer import TokenizerError, build, load, load_checked, train_bpe, training_texts

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample"


def sample_texts(n_per_shard=20):
    for shard in sorted(SAMPLE.glob("*/*.json.gz")):
        for doc in itertools.islice(read_documents(shard), n_per_shard):
            yield doc.text


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(sample_texts(), 300, "<|endoftext|>")


def test_trained_bpe_size_eod_and_round_trip(bpe):
    assert bpe.get_vocab_size() == 300
    assert bpe.token_to_id("<|endoftext|>") == 0
    text = "To be, or not to be: that is the question.\n    def f(x):\n        return x  # é, 日本"
    ids = bpe.encode(text, add_special_tokens=False).ids
    assert 0 not in ids  # the eod token is never produced from text
    assert bpe.decode(ids) == text  # byte-level: lossless on any unicode
    assert len(ids) < len(text.encode())  # merges were learned


def test_training_is_deterministic():
    a = train_bpe(sample_texts(5), 280, "<eod>")
    b = train_bpe(sample_texts(5), 280, "<eod>")
    assert a.to_str() == b.to_str()


def test_corpus_too_small_for_vocab():
    with pytest.raises(TokenizerError, match="lower tokenizer.vocab_size"):
        train_bpe(["ab ab ab"], 2000, "<eod>")


def test_vocab_below_byte_alphabet():
    with pytest.raises(TokenizerError, match="too small for a byte-level BPE"):
        train_bpe(["abc"], 100, "<eod>")


def test_training_texts_budget_and_held_out(tmp_path):
    recs = [{"id": f"d{i}", "text": "x" * 100} for i in range(200)]
    a = write_shard(tmp_path / "a" / "a.json.gz", recs)
    b = write_shard(tmp_path / "b" / "b.json.gz", recs)
    assert a == b == 200
    shards = [tmp_path / "a" / "a.json.gz", tmp_path / "b" / "b.json.gz"]
    texts = list(training_texts(shards, 1000, 0.5))
    assert sum(map(len, texts)) == 1000  # 500 characters from each shard
    # no held-out document is used: all texts come from training documents
    train_ids = [r["id"] for r in recs if not is_valid(r["id"], 0.5)]
    assert len(texts) == 10 and len(train_ids) < 200
    full = list(training_texts(shards, 10**9, 0.5))
    assert len(full) == 2 * len(train_ids)


def test_build_trained_and_load_checked(tmp_path):
    shard = tmp_path / "c" / "web" / "w.json.gz"
    write_shard(shard, [{"id": f"d{i}", "text": t} for i, t in enumerate(sample_texts(10))])
    cfg = {"file": None, "vocab_size": 300, "eod_token": "<|endoftext|>", "train_max_chars": 10**6}
    meta = build(tmp_path / "t.json", tmp_path / "t.meta.json", tokenizer_cfg=cfg, shards=[shard])
    assert meta == {
        "vocab_size": 300,
        "eod_id": 0,
        "eod_token": "<|endoftext|>",
        "source": "trained",
        "path": str(tmp_path / "t.json"),
    }
    assert json.loads((tmp_path / "t.meta.json").read_text()) == meta
    tok, meta2 = load_checked(tmp_path / "t.json", tmp_path / "t.meta.json")
    assert meta2 == meta and tok.get_vocab_size() == 300
    assert not list(tmp_path.glob(".*tmp"))


def test_configured_file(tmp_path, bpe):
    f = tmp_path / "given.json"
    bpe.save(str(f))
    cfg = {"file": str(f), "vocab_size": 300, "eod_token": "<|endoftext|>"}
    meta = build(tmp_path / "out.json", tmp_path / "out.meta.json", tokenizer_cfg=cfg)
    assert meta["source"] == "file" and meta["path"] == str(f) and meta["eod_id"] == 0
    assert (tmp_path / "out.json").read_bytes() == f.read_bytes()


def test_configured_file_vocab_mismatch(tmp_path, bpe):
    f = tmp_path / "given.json"
    bpe.save(str(f))
    cfg = {"file": str(f), "vocab_size": 512, "eod_token": "<|endoftext|>"}
    with pytest.raises(TokenizerError) as exc:
        build(tmp_path / "out.json", tmp_path / "out.meta.json", tokenizer_cfg=cfg)
    assert str(f) in str(exc.value) and "300 tokens" in str(exc.value)
    assert "set tokenizer.vocab_size: 300" in str(exc.value)
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.meta.json").exists()


def test_configured_file_without_eod(tmp_path, bpe):
    f = tmp_path / "given.json"
    bpe.save(str(f))
    cfg = {"file": str(f), "vocab_size": 300, "eod_token": "<|end_of_text|>"}
    with pytest.raises(TokenizerError, match=r"'<\|end_of_text\|>' \(tokenizer.eod_token\) is not in"):
        build(tmp_path / "out.json", tmp_path / "out.meta.json", tokenizer_cfg=cfg)


def test_configured_file_missing_or_garbage(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a Hugging Face tokenizer.json"):
        load(tmp_path / "bad.json")


def test_load_checked_detects_stale_meta(tmp_path, bpe):
    bpe.save(str(tmp_path / "t.json"))
    (tmp_path / "m.json").write_text(json.dumps({"vocab_size": 300, "eod_id": 7, "eod_token": "<|endoftext|>"}))
    with pytest.raises(TokenizerError, match="re-run the tokenizer rule"):
        load_checked(tmp_path / "t.json", tmp_path / "m.json")


def test_lone_surrogate_in_a_shard_names_shard_and_line(tmp_path):
    from archscale.data.corpus import CorpusError

    shard = tmp_path / "c" / "web" / "w.json.gz"
    write_shard(shard, [{"id": f"d{i}", "text": t} for i, t in enumerate(sample_texts(10))])
    import gzip

    lines = gzip.decompress(shard.read_bytes()).splitlines()
    lines.insert(3, b'{"id": "lone", "text": "x \\udc00 y"}')  # valid JSON, not encodable as UTF-8
    shard.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    cfg = {"file": None, "vocab_size": 300, "eod_token": "<|endoftext|>", "train_max_chars": 10**6}
    with pytest.raises(CorpusError, match=rf"{shard}:4: 'text' holds a lone surrogate"):
        build(tmp_path / "t.json", tmp_path / "t.meta.json", tokenizer_cfg=cfg, shards=[shard])
    meta = build(tmp_path / "t.json", tmp_path / "t.meta.json", tokenizer_cfg=cfg, shards=[shard],
                 on_bad_record="skip")
    assert meta["vocab_size"] == 300


def test_training_failure_names_shard_and_line():
    from collections import deque

    from archscale.data.tokenizer import train_on

    recent = deque(maxlen=1024)

    def texts():  # a text the record check would reject, reaching the real trainer another way
        for line, text in enumerate(["some text " * 50, "more words " * 50, "bad \ud800", "fine"] * 3, 1):
            recent.append(("web/w.json.gz", line, f"d{line}", text))
            yield text

    with pytest.raises(TokenizerError, match=r"web/w.json.gz:3: tokenizer training failed on document 'd3'"):
        train_on(texts(), 300, "<eod>", recent)
