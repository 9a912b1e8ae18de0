"""Tokenize a shard: round trip through megatron-core's IndexedDataset, split, bad input."""

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from archscale.data.corpus import CorpusError, read_documents, write_shard
from archscale.data.split import is_valid
from archscale.data.tokenize import batches, dtype_for, read_tokens, tokenize_shard
from archscale.data.tokenizer import train_bpe

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample"
EOD = "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus_docs():
    """Real documents of every shipped source (small slices), with unicode added."""
    out = []
    for shard in sorted(SAMPLE.glob("*/*.json.gz"))[::2]:
        for doc in itertools.islice(read_documents(shard), 25):
            out.append({"id": doc.id, "text": doc.text[:3000], "source": doc.source})
    out.append({"id": "unicode", "text": "naïve café — 日本語のテキスト 🙂\n\ttabs", "source": "web"})
    out.append({"id": "quotes-eod", "text": 'GPT-2 ends documents with "<|endoftext|>".', "source": "web"})
    return out


@pytest.fixture(scope="module")
def tok(corpus_docs):
    return train_bpe((d["text"] for d in corpus_docs), 320, EOD)


def run(tmp_path, shard, tok, **kw):
    args = dict(eod_id=0, vocab_size=320, valid_fraction=0.2, on_bad_record="error")
    args.update(kw)
    return tokenize_shard(
        shard, tok, out_prefix=tmp_path / "out" / "s", record_path=tmp_path / "out" / "s.json", **args
    )


def test_round_trip_tokens_and_document_boundaries(tmp_path, corpus_docs, tok):
    shard = tmp_path / "mixed" / "mixed-0000.json.gz"
    write_shard(shard, corpus_docs)
    rec = run(tmp_path, shard, tok, batch_docs=7)  # several encode batches
    expected = {"train": [], "valid": []}
    assert tok.encode_special_tokens  # set by the stage: "<|endoftext|>" in a text is text
    for d in corpus_docs:
        ids = tok.encode(d["text"], add_special_tokens=False).ids + [0]
        expected["valid" if is_valid(d["id"], 0.2) else "train"].append((d, ids))
    assert expected["valid"] and expected["train"]
    for split in ("train", "valid"):
        got = read_tokens(tmp_path / "out" / f"s.{split}")
        assert len(got) == len(expected[split])  # one document per document
        for arr, (d, ids) in zip(got, expected[split]):
            assert arr.dtype == np.uint16
            assert arr.tolist() == ids
            assert arr[-1] == 0 and 0 not in arr[:-1]  # eod closes every document, only there
            assert tok.decode(arr[:-1].tolist()) == d["text"]
        assert rec["documents"][split] == len(expected[split])
        assert rec["tokens"][split] == sum(len(i) for _, i in expected[split])
    assert rec["prefixes"] == {"train": str(tmp_path / "out" / "s.train"), "valid": str(tmp_path / "out" / "s.valid")}
    assert rec["dtype"] == "uint16" and rec["bad_records"] == 0 and rec["lines"] == len(corpus_docs)
    by_src = rec["sources"]
    assert sum(v["documents"] for v in by_src.values()) == len(corpus_docs)
    assert by_src["web"]["documents"] == 2
    assert json.loads((tmp_path / "out" / "s.json").read_text()) == json.loads(json.dumps(rec))
    # megatron's own reader sees the document boundaries
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(tmp_path / "out" / "s.train"))
    assert ds.document_indices.tolist() == list(range(len(expected["train"]) + 1))
    assert ds.sequence_lengths.tolist() == [len(i) for _, i in expected["train"]]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_int32_for_large_vocab(tmp_path, tok):
    shard = tmp_path / "a" / "a.json.gz"
    write_shard(shard, [{"id": "x", "text": "hello world"}])
    rec = run(tmp_path, shard, tok, vocab_size=70000, valid_fraction=0.01)
    assert rec["dtype"] == "int32"
    (arr,) = read_tokens(tmp_path / "out" / "s.train")
    assert arr.dtype == np.int32 and arr.tolist() == tok.encode("hello world").ids + [0]
    assert dtype_for(65535) is np.uint16 and dtype_for(65536) is np.int32


def lines_with_bad(good, bad_at, bad):
    lines = [json.dumps(r).encode() for r in good]
    lines.insert(bad_at, bad)
    return lines


def gz(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    "bad, reason",
    [(b"not json at all", "line is not JSON"), (b'{"id": "z", "source": "web"}', "record has no 'text'")],
)
def test_bad_record_fails_without_partial_outputs(tmp_path, corpus_docs, tok, bad, reason):
    shard = gz(tmp_path / "web" / "w.json.gz", lines_with_bad(corpus_docs[:30], 20, bad))
    with pytest.raises(CorpusError) as exc:
        run(tmp_path, shard, tok, batch_docs=4)  # fails after batches were written
    assert f"{shard}:21:" in str(exc.value) and reason in str(exc.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_record_skipped_and_counted(tmp_path, corpus_docs, tok):
    shard = gz(tmp_path / "web" / "w.json.gz", lines_with_bad(corpus_docs[:30], 20, b"{oops"))
    rec = run(tmp_path, shard, tok, on_bad_record="skip")
    assert rec["bad_records"] == 1 and rec["lines"] == 31
    assert rec["documents"]["train"] + rec["documents"]["valid"] == 30
    (reason,) = rec["bad_by_reason"]
    assert "not JSON" in reason and rec["bad_examples"][0].startswith("line 21:")


def test_unreadable_and_empty_shards_leave_nothing(tmp_path, corpus_docs, tok):
    trunc = tmp_path / "web" / "t.json.gz"
    write_shard(trunc, corpus_docs * 3)
    trunc.write_bytes(trunc.read_bytes()[:-5000])
    with pytest.raises(CorpusError, match="unreadable gzip"):
        run(tmp_path, trunc, tok, on_bad_record="skip")
    assert write_shard(tmp_path / "web" / "e.json.gz", []) == 0
    with pytest.raises(CorpusError, match="empty shard"):
        run(tmp_path, tmp_path / "web" / "e.json.gz", tok)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_batches_cover_all_docs_in_order():
    from archscale.data.corpus import Document

    docs = [Document(str(i), "x" * i, "s", i) for i in range(1, 40)]
    got = list(batches(docs, max_docs=5, max_chars=50))
    assert [d for b in got for d in b] == docs
    assert all(len(b) <= 5 for b in got)
    assert all(sum(len(d.text) for d in b[:-1]) < 50 for b in got)


# A lone surrogate is valid JSON but has no UTF-8 encoding: the tokenizers library cannot take it.
SURROGATE = b'{"id": "lone", "text": "broken \\ud800 text", "source": "web"}'


def test_lone_surrogate_is_a_bad_record_named_by_line(tmp_path, corpus_docs, tok):
    shard = gz(tmp_path / "web" / "w.json.gz", lines_with_bad(corpus_docs[:30], 20, SURROGATE))
    with pytest.raises(CorpusError) as exc:
        run(tmp_path, shard, tok, batch_docs=4)
    assert f"{shard}:21:" in str(exc.value) and "lone surrogate" in str(exc.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    rec = run(tmp_path, shard, tok, on_bad_record="skip")
    assert rec["bad_records"] == 1 and rec["documents"]["train"] + rec["documents"]["valid"] == 30
    (reason,) = rec["bad_by_reason"]
    assert "lone surrogate" in reason and rec["bad_examples"][0].startswith("line 21:")


def test_tokenizer_failure_names_shard_line_and_document(tok):
    from archscale.data.corpus import Document
    from archscale.data.tokenize import TokenizeError, encode_documents

    # documents that got past the record check by another route: the real tokenizer fails on one
    batch = [Document("a", "fine text", "web", 7), Document("b", "bad \ud800", "web", 9), Document("c", "ok", "web", 12)]
    with pytest.raises(TokenizeError) as exc:
        encode_documents(tok, batch, "corpus/web/w.json.gz")
    assert "corpus/web/w.json.gz:9:" in str(exc.value) and "'b'" in str(exc.value)
    assert encode_documents(tok, batch[:1], "x") == [tok.encode("fine text", add_special_tokens=False).ids]
