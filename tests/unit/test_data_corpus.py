"""Dolma-format reader: documents, bad input with error/skip, deterministic writer."""

import gzip
import json

import pytest

from archscale.data.corpus import CorpusError, ShardStats, find_shards, read_documents, shard_name, write_shard
from archscale.data.split import id_fraction, is_valid


def docs(n, source="web", prefix="d"):
    return [{"id": f"{prefix}{i}", "text": f"document number {i} " * (i % 5 + 1), "source": source} for i in range(n)]


def write_lines(path, lines: list[bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write(line + b"\n")
    return path


def test_read_back_in_order_with_lines(tmp_path):
    p = tmp_path / "web" / "web-0000.json.gz"
    recs = docs(7)
    recs[3]["added"] = "2024-01-01T00:00:00Z"
    recs[3]["metadata"] = {"url": "x"}
    assert write_shard(p, recs) == 7
    stats = ShardStats()
    got = list(read_documents(p, stats=stats))
    assert [d.id for d in got] == [r["id"] for r in recs]
    assert [d.text for d in got] == [r["text"] for r in recs]
    assert [d.line for d in got] == list(range(1, 8))
    assert {d.source for d in got} == {"web"}
    assert stats.documents == 7 and stats.lines == 7 and stats.n_bad == 0


def test_source_defaults_to_folder_and_int_ids(tmp_path):
    p = write_lines(tmp_path / "books" / "b.json.gz", [json.dumps({"id": 5, "text": "abc"}).encode()])
    (doc,) = read_documents(p)
    assert doc.source == "books" and doc.id == "5"


def test_writer_is_deterministic(tmp_path):
    a, b = tmp_path / "a" / "x.json.gz", tmp_path / "b" / "x.json.gz"
    write_shard(a, docs(50))
    write_shard(b, docs(50))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime field


def test_find_shards_and_names(tmp_path):
    write_shard(tmp_path / "b" / "b-0001.json.gz", docs(1))
    write_shard(tmp_path / "a" / "a-0000.json.gz", docs(1))
    shards = find_shards(tmp_path)
    assert [shard_name(p) for p in shards] == ["a-0000", "b-0001"]
    with pytest.raises(CorpusError, match="no shards matching"):
        find_shards(tmp_path / "nothing")


BAD_LINES = {
    "not json": (b"{this is not json", "line is not JSON"),
    "no text": (json.dumps({"id": "x", "source": "web"}).encode(), "record has no 'text'"),
    "null text": (json.dumps({"id": "x", "text": None}).encode(), "record has no 'text'"),
    "blank text": (json.dumps({"id": "x", "text": "  \n"}).encode(), "empty 'text'"),
    "text not str": (json.dumps({"id": "x", "text": 3}).encode(), "'text' is not a string"),
    "no id": (json.dumps({"text": "abc"}).encode(), "no 'id'"),
    "array": (b"[1, 2]", "not a JSON object"),
    "bad utf8": (b'{"id": "x", "text": "\xff\xfe"}', "line is not JSON"),
    # valid JSON, but no UTF-8 encoding exists: tokenizers and writers would crash on it later
    "lone surrogate": (b'{"id": "x", "text": "abc \\ud800 def"}', "'text' holds a lone surrogate"),
    "lone low surrogate": (b'{"id": "x", "text": "\xc3\xa9t\xc3\xa9 \\udfff"}', "'text' holds a lone surrogate"),
    "surrogate in id": (b'{"id": "\\udc80", "text": "abc"}', "'id' holds a lone surrogate"),
    # a surrogate encoded as raw bytes (CESU-8 style): json.loads reads bytes with surrogatepass
    "raw surrogate bytes": (b'{"id": "x", "text": "ab\xed\xa0\x80"}', "'text' holds a lone surrogate"),
}


def test_surrogate_pairs_and_non_ascii_text_are_fine(tmp_path):
    text = r"emoji \ud83d\ude00 caf\u00e9 \u4e2d"  # JSON escapes; a proper pair decodes to one character
    p = write_lines(tmp_path / "web" / "s.json.gz", [b'{"id": "a", "text": "' + text.encode() + b'"}'])
    (doc,) = read_documents(p)
    assert doc.text == "emoji \U0001F600 caf\u00e9 \u4e2d"


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_record_error_names_file_and_line(tmp_path, case):
    bad, reason = BAD_LINES[case]
    good = [json.dumps(r).encode() for r in docs(3)]
    p = write_lines(tmp_path / "web" / "s.json.gz", good[:2] + [bad] + good[2:])
    with pytest.raises(CorpusError) as exc:
        list(read_documents(p))
    msg = str(exc.value)
    assert f"{p}:3:" in msg and reason in msg and "on_bad_record: skip" in msg


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_record_skip_counts(tmp_path, case):
    bad, reason = BAD_LINES[case]
    good = [json.dumps(r).encode() for r in docs(3)]
    p = write_lines(tmp_path / "web" / "s.json.gz", [bad] + good + [bad])
    stats = ShardStats()
    got = list(read_documents(p, "skip", stats))
    assert [d.id for d in got] == ["d0", "d1", "d2"]
    assert [d.line for d in got] == [2, 3, 4]
    assert stats.n_bad == 2 and stats.documents == 3 and stats.lines == 5
    (key,) = stats.bad_records
    assert reason in key
    assert stats.to_dict()["bad_examples"][0].startswith("line 1: ")


def test_not_gzip(tmp_path):
    p = tmp_path / "web" / "s.json.gz"
    p.parent.mkdir()
    p.write_bytes(b'{"id": "a", "text": "plain json, not gzip"}\n')
    for mode in ("error", "skip"):
        with pytest.raises(CorpusError, match=rf"{p}: unreadable gzip"):
            list(read_documents(p, mode))


def test_truncated_gzip_names_line(tmp_path):
    p = tmp_path / "web" / "s.json.gz"
    write_shard(p, docs(2000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    stats = ShardStats()
    with pytest.raises(CorpusError) as exc:
        for _ in read_documents(p, "skip", stats):
            pass
    assert "unreadable gzip" in str(exc.value)
    assert f"{p}:{stats.lines + 1}:" in str(exc.value)
    assert stats.lines > 0


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="cannot open|unreadable"):
        list(read_documents(tmp_path / "nope.json.gz"))


def test_empty_shard(tmp_path):
    p = tmp_path / "web" / "s.json.gz"
    write_shard(p, [])
    for mode in ("error", "skip"):
        with pytest.raises(CorpusError, match=rf"{p}: empty shard \(no lines\)"):
            list(read_documents(p, mode))


def test_shard_with_only_bad_records_is_empty(tmp_path):
    p = write_lines(tmp_path / "web" / "s.json.gz", [b"nope", b"nope"])
    with pytest.raises(CorpusError, match="empty shard \\(2 lines, 2 bad\\)"):
        list(read_documents(p, "skip"))


def test_split_is_a_stable_hash_of_the_id():
    ids = [f"doc-{i}" for i in range(20000)]
    frac = sum(is_valid(i, 0.05) for i in ids) / len(ids)
    assert abs(frac - 0.05) < 0.006
    assert [is_valid(i, 0.05) for i in ids[:100]] == [is_valid(i, 0.05) for i in ids[:100]]
    # monotone in the fraction: a larger held-out set contains the smaller one
    assert all(is_valid(i, 0.1) for i in ids if is_valid(i, 0.05))
    assert id_fraction("doc-1") == pytest.approx(id_fraction("doc-1"))
    assert 0 <= id_fraction("") < 1
