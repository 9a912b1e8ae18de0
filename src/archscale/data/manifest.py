"""The data manifest: what training reads (``results/data/manifest.json``, docs/pipeline.md).

Blend weights for megatron-core's ``BlendedMegatronDatasetBuilder``, one per shard dataset:

- ``mixture: proportional`` (the paper's rule): each shard's weight is its share of all
  tokens, so sources are sampled in proportion to their tokens;
- ``mixture: {source: weight}``: the normalised source weights, each spread over the source's
  shards in proportion to their tokens.

Shard datasets without tokens (e.g. a small shard whose documents all went to train) are left
out of the blend. The validation blend follows the same rule on the held-out tokens.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from archscale.io import read_json

SPLITS = ("train", "valid")


class ManifestError(ValueError):
    pass


def source_weights(
    tokens_by_source: Mapping[str, int], mixture: str | Mapping[str, float], split: str
) -> dict[str, float]:
    """Normalised weight of each source with tokens in ``split``."""
    present = {s: t for s, t in tokens_by_source.items() if t > 0}
    if not present:
        raise ManifestError(
            f"the {split} split has no tokens"
            + (" (raise data.valid_fraction or use more documents)" if split == "valid" else "")
        )
    if mixture == "proportional":
        total = sum(present.values())
        return {s: t / total for s, t in sorted(present.items())}
    if not isinstance(mixture, Mapping):
        raise ManifestError(f"data.mixture must be 'proportional' or a mapping, not {mixture!r}")
    unknown = sorted(set(mixture) - set(tokens_by_source))
    if unknown:
        raise ManifestError(
            f"data.mixture names sources {unknown} that are not in the corpus "
            f"(its sources: {sorted(tokens_by_source)})"
        )
    missing = sorted(set(tokens_by_source) - set(mixture))
    if missing:
        raise ManifestError(
            f"data.mixture has no weight for sources {missing}; give every source a weight "
            "(0 leaves a source out)"
        )
    for s, w in mixture.items():
        if w < 0:
            raise ManifestError(f"data.mixture.{s}: weight {w} is negative")
        if w > 0 and s not in present and split == "train":
            raise ManifestError(f"data.mixture.{s}: weight {w} but the source has no training tokens")
    chosen = {s: float(mixture[s]) for s in present if mixture[s] > 0}
    total = sum(chosen.values())
    if total <= 0:
        raise ManifestError(f"data.mixture: no source with tokens in the {split} split has a positive weight")
    return {s: w / total for s, w in sorted(chosen.items())}


def blend(records: Sequence[Mapping[str, Any]], mixture, split: str) -> tuple[dict, dict[str, float]]:
    """(``{"prefixes": [...], "weights": [...]}``, source weights) of one split."""
    by_source: dict[str, int] = defaultdict(int)
    for r in records:
        by_source[r["source"]] += int(r["tokens"][split])
    weights = source_weights(by_source, mixture, split)
    prefixes, ws = [], []
    for r in sorted(records, key=lambda r: r["prefixes"][split]):
        t = int(r["tokens"][split])
        if t == 0 or r["source"] not in weights:
            continue
        prefixes.append(r["prefixes"][split])
        ws.append(weights[r["source"]] * t / by_source[r["source"]])
    total = sum(ws)
    return {"prefixes": prefixes, "weights": [w / total for w in ws]}, weights


def build_manifest(
    records: Sequence[Mapping[str, Any]],
    tokenizer_meta: Mapping[str, Any],
    mixture: str | Mapping[str, float],
    seed: int,
    tokenizer_path: str = "results/tokenizer/tokenizer.json",
) -> dict[str, Any]:
    if not records:
        raise ManifestError("no shard records: the corpus has no shards")
    vocab, eod = int(tokenizer_meta["vocab_size"]), int(tokenizer_meta["eod_id"])
    dtypes = {r["dtype"] for r in records}
    for r in records:
        if int(r["vocab_size"]) != vocab or int(r["eod_id"]) != eod:
            raise ManifestError(
                f"shard {r['source']}/{r['shard']} was tokenized with vocab {r['vocab_size']}, "
                f"eod {r['eod_id']}; the tokenizer has vocab {vocab}, eod {eod}: re-run tokenize"
            )
    if len(dtypes) != 1:
        raise ManifestError(f"shards were written with different dtypes {sorted(dtypes)}")
    out: dict[str, Any] = {
        "vocab_size": vocab,
        "eod_id": eod,
        "dtype": dtypes.pop(),
        "tokenizer": tokenizer_path,
        "mixture": mixture if mixture == "proportional" else dict(sorted(mixture.items())),
        "seed": int(seed),
    }
    src_weights = {}
    for split in SPLITS:
        out[split], src_weights[split] = blend(records, mixture, split)
    sources: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r["source"], r["shard"])):
        s = sources.setdefault(
            r["source"],
            {"documents": 0, "tokens": 0, "valid_documents": 0, "valid_tokens": 0, "shards": 0, "bad_records": 0},
        )
        s["documents"] += int(r["documents"]["train"])
        s["tokens"] += int(r["tokens"]["train"])
        s["valid_documents"] += int(r["documents"]["valid"])
        s["valid_tokens"] += int(r["tokens"]["valid"])
        s["shards"] += 1
        s["bad_records"] += int(r.get("bad_records", 0))
    for name, s in sources.items():
        s["weight"] = src_weights["train"].get(name, 0.0)
    out["sources"] = sources
    return out


def load_records(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    return [read_json(p) for p in paths]
