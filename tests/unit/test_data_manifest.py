"""Manifest: blend weights, and the mixture megatron-core's BlendedDataset actually samples."""

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from archscale.data.corpus import find_shards, shard_name
from archscale.data.manifest import ManifestError, blend, build_manifest, source_weights

META = {"vocab_size": 512, "eod_id": 0}


def rec(source, shard, train, valid, docs=(10, 1)):
    return {
        "source": source,
        "shard": shard,
        "prefixes": {"train": f"results/data/{source}/{shard}.train", "valid": f"results/data/{source}/{shard}.valid"},
        "tokens": {"train": train, "valid": valid},
        "documents": {"train": docs[0], "valid": docs[1]},
        "vocab_size": 512,
        "eod_id": 0,
        "dtype": "uint16",
        "bad_records": 2,
    }


RECORDS = [rec("a", "a0", 600, 10), rec("a", "a1", 200, 0, (3, 0)), rec("b", "b0", 150, 5), rec("c", "c0", 50, 5)]


def test_proportional_weights_are_token_shares():
    m = build_manifest(RECORDS, META, "proportional", 7)
    assert m["train"]["prefixes"] == [f"results/data/{s}/{s}{i}.train" for s, i in [("a", 0), ("a", 1), ("b", 0), ("c", 0)]]
    assert m["train"]["weights"] == pytest.approx([0.6, 0.2, 0.15, 0.05])
    # a shard without held-out tokens is left out of the validation blend
    assert m["valid"]["prefixes"] == ["results/data/a/a0.valid", "results/data/b/b0.valid", "results/data/c/c0.valid"]
    assert m["valid"]["weights"] == pytest.approx([0.5, 0.25, 0.25])
    assert m["sources"]["a"] == {
        "documents": 13,
        "tokens": 800,
        "valid_documents": 1,
        "valid_tokens": 10,
        "shards": 2,
        "bad_records": 4,
        "weight": pytest.approx(0.8),
    }
    assert (m["vocab_size"], m["eod_id"], m["dtype"], m["seed"], m["mixture"]) == (512, 0, "uint16", 7, "proportional")


def test_configured_weights_spread_over_shards_by_tokens():
    m = build_manifest(RECORDS, META, {"a": 1, "b": 1, "c": 2}, 7)
    assert m["train"]["weights"] == pytest.approx([0.25 * 0.75, 0.25 * 0.25, 0.25, 0.5])
    assert sum(m["train"]["weights"]) == pytest.approx(1)
    assert {s: v["weight"] for s, v in m["sources"].items()} == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.5})


def test_zero_weight_leaves_a_source_out():
    m = build_manifest(RECORDS, META, {"a": 1, "b": 0, "c": 1}, 7)
    assert all("/b/" not in p for p in m["train"]["prefixes"])
    assert m["sources"]["b"]["weight"] == 0.0


@pytest.mark.parametrize(
    "mixture, match",
    [
        ({"a": 1, "b": 1}, r"no weight for sources \['c'\]"),
        ({"a": 1, "b": 1, "c": 1, "wiki": 1}, r"sources \['wiki'\] that are not in the corpus"),
        ({"a": 0, "b": 0, "c": 0}, "no source with tokens"),
        ({"a": -1, "b": 1, "c": 1}, "negative"),
    ],
)
def test_bad_mixture(mixture, match):
    with pytest.raises(ManifestError, match=match):
        build_manifest(RECORDS, META, mixture, 1)


def test_errors_on_inconsistent_records():
    with pytest.raises(ManifestError, match="no tokens"):
        source_weights({"a": 0}, "proportional", "valid")
    stale = dict(rec("a", "a0", 5, 5), vocab_size=300)
    with pytest.raises(ManifestError, match="re-run tokenize"):
        build_manifest([stale], META, "proportional", 1)
    with pytest.raises(ManifestError, match="no shard records"):
        build_manifest([], META, "proportional", 1)
    with pytest.raises(ManifestError, match="valid split has no tokens"):
        blend([rec("a", "a0", 5, 0)], "proportional", "valid")


# ---- the mixture over the shipped sample, as megatron-core samples it ---------------
SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "sample"


@pytest.fixture(scope="module")
def sample_records(tmp_path_factory):
    """The whole shipped sample tokenized with a 512-token BPE (as the default workflow does)."""
    from archscale.data.tokenize import tokenize_shard
    from archscale.data.tokenizer import train_bpe, training_texts

    out = tmp_path_factory.mktemp("sample-data")
    shards = find_shards(SAMPLE)
    tok = train_bpe(training_texts(shards, 3_000_000, 0.03), 512, "<|endoftext|>")
    records = []
    for shard in shards:
        prefix = out / shard.parent.name / shard_name(shard)
        records.append(
            tokenize_shard(
                shard, tok, eod_id=0, vocab_size=512, out_prefix=prefix,
                record_path=f"{prefix}.json", valid_fraction=0.03,
            )
        )
    return records


def blended_source_shares(manifest, split, n_samples, seq_length):
    """Build megatron-core's blended GPT dataset from the manifest (as training does) and
    count the tokens it samples from each source."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    blend_ = (manifest[split]["prefixes"], manifest[split]["weights"])
    cfg = GPTDatasetConfig(
        random_seed=manifest["seed"],
        sequence_length=seq_length,
        blend_per_split=[blend_, None, None],
        tokenizer=SimpleNamespace(
            vocab_size=manifest["vocab_size"],
            eod=manifest["eod_id"],
            pad=manifest["eod_id"],
            unique_identifiers={"class": "manifest-test", "vocab_size": manifest["vocab_size"]},
        ),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=None,  # in memory: a cache directory needs torch.distributed
        mid_level_dataset_surplus=0.005,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n_samples, None, None], lambda: True, cfg).build()
    n = len(train)  # megatron rounds per-dataset sample counts: within a few of n_samples
    assert abs(n - n_samples) <= len(train.datasets)
    counts = Counter(np.asarray(train.dataset_index)[:n].tolist())
    assert sum(counts.values()) == n
    # every sample has seq_length tokens: sample counts are token counts
    per_source = Counter()
    for i, ds in enumerate(train.datasets):
        per_source[Path(ds.dataset_path).parent.name] += counts[i]
        assert len(ds[0]["tokens"]) == seq_length
    return {s: c / n for s, c in per_source.items()}


@pytest.mark.slow
@pytest.mark.parametrize("mixture", ["proportional", {"plays": 0.2, "code": 0.3, "docs": 0.5}])
def test_sampled_mixture_matches_target_within_2_percent(sample_records, mixture):
    m = build_manifest(sample_records, META, mixture, seed=1234)
    tokens = {s: v["tokens"] for s, v in m["sources"].items()}
    assert set(tokens) == {"plays", "code", "docs"}
    if mixture == "proportional":
        target = {s: t / sum(tokens.values()) for s, t in tokens.items()}
    else:
        target = {s: w / sum(mixture.values()) for s, w in mixture.items()}
    # manifest weights per source
    got = Counter()
    for p, w in zip(m["train"]["prefixes"], m["train"]["weights"]):
        got[p.split("/")[-2]] += w
    for s in target:
        assert got[s] == pytest.approx(target[s], rel=0.02)
        assert m["sources"][s]["weight"] == pytest.approx(target[s], rel=0.02)
    # what megatron-core's BlendedDataset samples from those weights
    shares = blended_source_shares(m, "train", 20000, 128)
    for s in target:
        assert shares[s] == pytest.approx(target[s], rel=0.02), (s, shares, target)
