"""Tokenize one Dolma shard into two Megatron indexed datasets (train and held-out valid).

Each document becomes one sequence (its tokens followed by the end-of-document token) and one
document of megatron-core's ``IndexedDataset``; ``.bin/.idx`` are written with megatron-core's
``IndexedDatasetBuilder`` in the smallest dtype that holds the vocabulary. Within a job the
tokenizer's batch encoding does the work (in parallel over the job's threads).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from archscale.data.corpus import Document, OnBad, ShardStats, read_documents, shard_name
from archscale.data.split import is_valid
from archscale.io import atomic_path, write_json

SPLITS = ("train", "valid")


def dtype_for(vocab_size: int) -> type[np.number]:
    """uint16 when every id fits (vocab < 65536), else int32."""
    return np.uint16 if vocab_size < 65536 else np.int32


def batches(docs: Iterable[Document], max_docs: int, max_chars: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without the tokenizer's own special tokens (no BOS/EOS).

    Special-token strings inside a text (a document quoting "<|endoftext|>") are encoded as
    ordinary text, so the end-of-document id appears only where a document ends. This sets
    ``tokenizer.encode_special_tokens``.
    """
    if not tokenizer.encode_special_tokens:
        tokenizer.encode_special_tokens = True
    fast = getattr(tokenizer, "encode_batch_fast", None)  # tokenizers >= 0.20: no offsets
    encs = (fast or tokenizer.encode_batch)(texts, add_special_tokens=False)
    return [e.ids for e in encs]


class TokenizeError(ValueError):
    """The tokenizer failed on a document; the message names the shard, line and document id."""


def encode_documents(tokenizer, batch: list[Document], shard: str | Path) -> list[list[int]]:
    """:func:`encode_batch` of the documents' texts; if the tokenizer fails, find the first
    document it fails on and raise :class:`TokenizeError` naming ``shard``, its line and id."""
    try:
        return encode_batch(tokenizer, [d.text for d in batch])
    except Exception as batch_exc:  # noqa: BLE001 - the tokenizers library raises plain exceptions
        for doc in batch:
            try:
                encode_batch(tokenizer, [doc.text])
            except Exception as exc:  # noqa: BLE001
                raise TokenizeError(
                    f"{shard}:{doc.line}: the tokenizer fails on document {doc.id!r} "
                    f"({exc.__class__.__name__}: {exc}); fix or remove this record"
                ) from exc
        raise TokenizeError(
            f"{shard}: the tokenizer fails on the batch of lines {batch[0].line}-{batch[-1].line} "
            f"({batch_exc.__class__.__name__}: {batch_exc})"
        ) from batch_exc


class _Counts:
    """Documents and tokens written, per split and per source."""

    def __init__(self) -> None:
        self.docs = {s: 0 for s in SPLITS}
        self.tokens = {s: 0 for s in SPLITS}
        self.by_source: dict[str, dict[str, int]] = defaultdict(lambda: {"documents": 0, "tokens": 0})

    def add(self, split: str, source: str, n_tokens: int) -> None:
        self.docs[split] += 1
        self.tokens[split] += n_tokens
        self.by_source[source]["documents"] += 1
        self.by_source[source]["tokens"] += n_tokens


def _encode_into(
    builders: dict[str, Any], doc_batches: Iterable[list[Document]], tokenizer, shard: Path, *, eod_id: int,
    valid_fraction: float, dtype: type[np.number], counts: _Counts,
) -> float:
    """Each document's ids and the end-of-document id as one document of its split's builder;
    returns the seconds spent in the tokenizer's batch encoding."""
    t_encode = 0.0
    for batch in doc_batches:
        t = time.perf_counter()
        ids_list = encode_documents(tokenizer, batch, shard)
        t_encode += time.perf_counter() - t
        for doc, ids in zip(batch, ids_list):
            ids.append(eod_id)
            split = "valid" if is_valid(doc.id, valid_fraction) else "train"
            builders[split].add_document(np.asarray(ids, dtype=dtype), [len(ids)])
            counts.add(split, doc.source, len(ids))
    return t_encode


def _shard_record(
    shard: Path, source: str, out_prefix: str, counts: _Counts, stats: ShardStats, *, on_bad_record: OnBad,
    dtype: type[np.number], vocab_size: int, eod_id: int, valid_fraction: float,
) -> dict[str, Any]:
    """The shard's record: what was read, written and skipped, and the settings that decided it."""
    return {
        "source": source,
        "shard": shard_name(shard),
        "input": str(shard),
        "prefixes": {s: f"{out_prefix}.{s}" for s in SPLITS},
        "documents": counts.docs,
        "tokens": counts.tokens,
        "sources": {k: dict(v) for k, v in sorted(counts.by_source.items())},
        "lines": stats.lines,
        "bad_records": stats.n_bad,
        "bad_by_reason": dict(sorted(stats.bad_records.items())),
        "bad_examples": stats.bad_examples,
        "on_bad_record": on_bad_record,
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab_size,
        "eod_id": eod_id,
        "valid_fraction": valid_fraction,
    }


def tokenize_shard(
    shard: str | Path,
    tokenizer,
    *,
    eod_id: int,
    vocab_size: int,
    out_prefix: str | Path,
    record_path: str | Path,
    valid_fraction: float,
    on_bad_record: OnBad = "error",
    source: str | None = None,
    batch_docs: int = 1024,
    batch_chars: int = 4_000_000,
    extra: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``{out_prefix}.{train,valid}.{bin,idx}`` and the shard's record (JSON).

    All four dataset files are written to temporary names and renamed only after the whole
    shard succeeded; the record is written last. Returns the record. ``timings`` (if given)
    receives the seconds spent in total and in the tokenizer's batch encoding (kept out of the
    record, whose content must not vary from run to run).
    """
    with warnings.catch_warnings():  # megatron.core's package import warns about missing Apex/TE
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex.*")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # ~5 s import

    shard = Path(shard)
    out_prefix = str(out_prefix)
    source = source or shard.parent.name
    dtype = dtype_for(vocab_size)
    if not 0 <= eod_id < vocab_size:
        raise ValueError(f"eod_id {eod_id} outside the vocabulary of {vocab_size}")
    stats = ShardStats()
    counts = _Counts()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        paths = {
            (split, ext): stack.enter_context(atomic_path(f"{out_prefix}.{split}.{ext}"))
            for split in SPLITS
            for ext in ("bin", "idx")
        }
        builders = {s: IndexedDatasetBuilder(str(paths[(s, "bin")]), dtype=dtype) for s in SPLITS}
        try:
            reader = read_documents(shard, on_bad_record, stats, default_source=source)
            t_encode = _encode_into(builders, batches(reader, batch_docs, batch_chars), tokenizer, shard,
                                    eod_id=eod_id, valid_fraction=valid_fraction, dtype=dtype, counts=counts)
        finally:
            for b in builders.values():
                b.data_file.close()
        for s in SPLITS:
            builders[s].finalize(str(paths[(s, "idx")]))
    elapsed = time.perf_counter() - t0
    if timings is not None:
        timings.update(total_s=elapsed, encode_s=t_encode)
    record = _shard_record(shard, source, out_prefix, counts, stats, on_bad_record=on_bad_record, dtype=dtype,
                           vocab_size=vocab_size, eod_id=eod_id, valid_fraction=valid_fraction)
    record.update(extra or {})
    write_json(record_path, record)
    docs, tokens = counts.docs, counts.tokens
    total = tokens["train"] + tokens["valid"]
    print(
        f"{shard}: {docs['train']}+{docs['valid']} documents (train+valid), {total} tokens, "
        f"{stats.n_bad} bad records; {elapsed:.2f} s ({total / max(elapsed, 1e-9):,.0f} tokens/s), "
        f"of which encoding {t_encode:.2f} s"
    )
    return record


def read_tokens(prefix: str | Path) -> list[np.ndarray]:
    """Every document of an indexed dataset as an array of token ids (for checks and tests)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix), mmap=True)
    return [np.array(ds[i]) for i in range(len(ds))]
