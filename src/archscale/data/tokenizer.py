"""Tokenizer of the workflow: a configured Hugging Face ``tokenizer.json`` or a byte-level BPE
trained on the corpus with the HF ``tokenizers`` library.

Either way the result is one artefact, ``results/tokenizer/tokenizer.json``, plus
``tokenizer.meta.json`` (``{"vocab_size", "eod_id", "eod_token", "source", "path"}``). Every
document is tokenized without the tokenizer's own special tokens (no BOS) and followed by the
end-of-document token ``eod_id``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from archscale.data.corpus import CorpusError, OnBad, ShardStats, is_utf8_encodable, read_documents
from archscale.data.split import is_valid
from archscale.io import atomic_path, read_json, write_json


# A byte-level BPE holds the 256 byte symbols plus the end-of-document token, at least.
MIN_BPE_VOCAB = 257


class TokenizerError(ValueError):
    """A tokenizer that does not fit the config; the message says what to change."""


def set_threads(threads: int | None) -> None:
    """Limit the tokenizers library's thread pool (call before its first parallel use)."""
    if threads:
        os.environ["RAYON_NUM_THREADS"] = str(int(threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def load(path: str | Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file not found (tokenizer.file in config)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception on a malformed file
        raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json ({exc})") from None


def check(tok, vocab_size: int, eod_token: str, where: str) -> int:
    """Check a tokenizer against the config; return the id of the end-of-document token."""
    actual = tok.get_vocab_size(with_added_tokens=True)
    if actual != vocab_size:
        raise TokenizerError(
            f"{where}: tokenizer has {actual} tokens but tokenizer.vocab_size is {vocab_size}; "
            f"set tokenizer.vocab_size: {actual} (or use a tokenizer of {vocab_size} tokens)"
        )
    eod_id = tok.token_to_id(eod_token)
    if eod_id is None:
        specials = sorted(t.content for t in tok.get_added_tokens_decoder().values())[:12]
        raise TokenizerError(
            f"{where}: end-of-document token {eod_token!r} (tokenizer.eod_token) is not in the "
            f"vocabulary; its special tokens include {specials}"
        )
    return int(eod_id)


def training_texts(
    shards: Sequence[str | Path],
    max_chars: int,
    valid_fraction: float,
    on_bad_record: OnBad = "error",
    recent: deque | None = None,
) -> Iterator[str]:
    """Texts to train the BPE on: up to ``max_chars`` characters, the same budget per shard
    (so every source is seen even when the corpus is far larger than the budget), training
    documents only (the validation set stays unseen).

    ``recent`` (if given, a bounded deque) receives ``(shard, line, id, text)`` of each text
    yielded, so that a failure inside the tokenizer's training can name the document."""
    if not shards:
        raise CorpusError("no shards to train the tokenizer on")
    per_shard = max(1, max_chars // len(shards))
    for shard in shards:
        used = 0
        for doc in read_documents(shard, on_bad_record, ShardStats()):
            if is_valid(doc.id, valid_fraction):
                continue
            text = doc.text[: per_shard - used]
            if text:
                if recent is not None:
                    recent.append((str(shard), doc.line, doc.id, text))
                yield text
            used += len(text)
            if used >= per_shard:
                break


def train_bpe(texts: Iterable[str], vocab_size: int, eod_token: str):
    """Byte-level BPE (GPT-2 style pre-tokenization) with ``eod_token`` as its only special
    token (id 0). Raises TokenizerError if the corpus cannot fill ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    assert len(alphabet) + 1 == MIN_BPE_VOCAB
    if vocab_size < MIN_BPE_VOCAB:
        raise TokenizerError(
            f"tokenizer.vocab_size {vocab_size} is too small for a byte-level BPE "
            f"(needs at least {MIN_BPE_VOCAB}: 256 bytes + the end-of-document token)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[eod_token],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=True)
    if got != vocab_size:
        raise TokenizerError(
            f"the corpus yields only {got} tokens of a byte-level BPE, fewer than "
            f"tokenizer.vocab_size {vocab_size}; lower tokenizer.vocab_size or give more text"
        )
    return tok


#: Texts remembered for error messages: more than the tokenizers library reads ahead (256).
RECENT_TEXTS = 1024


def train_on(texts: Iterable[str], vocab_size: int, eod_token: str, recent: deque):
    """:func:`train_bpe`, with a failure of the tokenizers library on a text reported at its
    shard and line. The library reads texts ahead in buffers, so the culprit is looked for among
    the ``recent`` ones (filled by :func:`training_texts`): the first that has no UTF-8 encoding,
    else the last one read."""
    try:
        return train_bpe(texts, vocab_size, eod_token)
    except (TokenizerError, CorpusError):
        raise
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain exceptions
        if not recent:
            raise
        unencodable = [r for r in recent if not is_utf8_encodable(r[3])]
        shard, line, doc_id, _ = unencodable[0] if unencodable else recent[-1]
        where = "on" if unencodable else "at or shortly after"
        raise TokenizerError(
            f"{shard}:{line}: tokenizer training failed {where} document {doc_id!r} "
            f"({exc.__class__.__name__}: {exc}); fix or remove this record"
        ) from exc


def build(
    out_tokenizer: str | Path,
    out_meta: str | Path,
    *,
    tokenizer_cfg: dict[str, Any],
    shards: Sequence[str | Path] = (),
    valid_fraction: float = 0.02,
    on_bad_record: OnBad = "error",
) -> dict[str, Any]:
    """Produce the workflow's tokenizer (``tokenizer`` rule): copy and check a configured file,
    or train a byte-level BPE on the shards. Writes both outputs atomically; returns the meta."""
    vocab_size = int(tokenizer_cfg["vocab_size"])
    eod_token = tokenizer_cfg.get("eod_token", "<|endoftext|>")
    file = tokenizer_cfg.get("file")
    if file:
        tok = load(file)
        eod_id = check(tok, vocab_size, eod_token, str(file))
        with atomic_path(out_tokenizer) as tmp:
            shutil.copyfile(file, tmp)
        source, path = "file", str(file)
    else:
        recent: deque = deque(maxlen=RECENT_TEXTS)
        texts = training_texts(
            shards, int(tokenizer_cfg.get("train_max_chars", 20_000_000)), valid_fraction, on_bad_record,
            recent=recent,
        )
        tok = train_on(texts, vocab_size, eod_token, recent)
        eod_id = check(tok, vocab_size, eod_token, "trained BPE")
        with atomic_path(out_tokenizer) as tmp:
            tok.save(str(tmp))
        source, path = "trained", str(out_tokenizer)
    meta = {
        "vocab_size": vocab_size,
        "eod_id": eod_id,
        "eod_token": eod_token,
        "source": source,
        "path": path,
    }
    write_json(out_meta, meta)
    return meta


def load_checked(tokenizer_path: str | Path, meta_path: str | Path):
    """Load the workflow's tokenizer and check it against its meta; return (tokenizer, meta)."""
    meta = read_json(meta_path)
    tok = load(tokenizer_path)
    eod_id = check(tok, int(meta["vocab_size"]), meta["eod_token"], str(tokenizer_path))
    if eod_id != meta["eod_id"]:
        raise TokenizerError(
            f"{tokenizer_path}: eod id {eod_id} differs from {meta_path} ({meta['eod_id']}); "
            "re-run the tokenizer rule"
        )
    return tok, meta


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
