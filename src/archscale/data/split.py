"""Held-out validation set: a document is in it iff a hash of its id falls below the fraction.

The split depends only on the document id (not on the shard, its order or a seed), so the same
document is held out by every job that reads it, including tokenizer training.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def id_fraction(doc_id: str) -> float:
    """A uniform number in [0, 1) derived from the document id (BLAKE2b, 64 bits)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, person=b"archscale-split").digest()
    return int.from_bytes(digest, "big") / _SCALE


def is_valid(doc_id: str, valid_fraction: float) -> bool:
    return id_fraction(doc_id) < valid_fraction
