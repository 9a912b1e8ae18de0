"""Reading and writing corpora in Dolma's format.

A Dolma shard is a gzip-compressed JSON-lines file (``*.json.gz``): one document per line,
``{"id": str, "text": str, "source": str, "added": str?, "created": str?, "metadata": {}?}``.
Shards are grouped by source, one folder per source: ``<corpus_dir>/<source>/<shard>.json.gz``.

Bad input (an unreadable gzip, a line that is not JSON, a record without text, text that cannot
be encoded as UTF-8 such as a lone surrogate ``"\ud800"`` -- valid JSON --, an empty shard)
raises :class:`CorpusError` naming the file and line, or with ``on_bad_record="skip"`` is
skipped and counted in :class:`ShardStats`.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

OnBad = Literal["error", "skip"]
SHARD_SUFFIX = ".json.gz"


class CorpusError(ValueError):
    """Malformed corpus input; the message names the file and line and what to change."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str
    line: int  # 1-based line number in its shard


@dataclass
class ShardStats:
    """What reading a shard found: documents kept and bad records, by reason."""

    lines: int = 0
    documents: int = 0
    bad_records: Counter = field(default_factory=Counter)
    bad_examples: list[str] = field(default_factory=list)  # first few "line N: reason"

    @property
    def n_bad(self) -> int:
        return sum(self.bad_records.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "documents": self.documents,
            "bad_records": self.n_bad,
            "bad_by_reason": dict(sorted(self.bad_records.items())),
            "bad_examples": list(self.bad_examples),
        }


def shard_name(path: str | Path) -> str:
    """``.../books/books-0001.json.gz`` -> ``books-0001``."""
    name = Path(path).name
    if not name.endswith(SHARD_SUFFIX):
        raise CorpusError(f"{path}: not a Dolma shard (expected a name ending in {SHARD_SUFFIX})")
    return name[: -len(SHARD_SUFFIX)]


def find_shards(corpus_dir: str | Path, shard_glob: str = "*/*.json.gz") -> list[Path]:
    corpus_dir = Path(corpus_dir)
    shards = sorted(p for p in corpus_dir.glob(shard_glob) if p.is_file())
    if not shards:
        raise CorpusError(
            f"{corpus_dir}: no shards matching '{shard_glob}'; point data.corpus_dir at a "
            "Dolma-format corpus (<source>/*.json.gz)"
        )
    return shards


def is_utf8_encodable(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: not if it holds a lone surrogate such as
    ``"\\ud800"``, which JSON allows. Cheap for ASCII text (``isascii`` is O(1) in CPython)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_record(obj: Any) -> str | None:
    """The reason a parsed line is not a usable document, or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if "text" not in obj:
        return "record has no 'text'"
    if obj["text"] is None:
        return "record has no 'text' (null)"
    if not isinstance(obj["text"], str):
        return "'text' is not a string"
    if not obj["text"].strip():
        return "record has empty 'text'"
    if "id" not in obj or not isinstance(obj["id"], (str, int)) or obj["id"] == "":
        return "record has no 'id' (string)"
    if "source" in obj and not isinstance(obj["source"], str):
        return "'source' is not a string"
    for key in ("text", "id", "source"):
        value = obj.get(key)
        if isinstance(value, str) and not is_utf8_encodable(value):
            return f"'{key}' holds a lone surrogate (not valid Unicode: it cannot be encoded as UTF-8)"
    return None


def read_documents(
    path: str | Path,
    on_bad_record: OnBad = "error",
    stats: ShardStats | None = None,
    default_source: str | None = None,
) -> Iterator[Document]:
    """Yield the documents of one shard in file order.

    ``stats`` (if given) is filled while iterating. An empty shard (no documents at all) is an
    error even with ``on_bad_record="skip"``: it is almost always a truncated download.
    A record whose text is missing, null or blank is a bad record.
    """
    path = Path(path)
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', not {on_bad_record!r}")
    stats = stats if stats is not None else ShardStats()
    source_default = default_source if default_source is not None else path.parent.name
    lineno = 0

    def bad(reason: str) -> None:
        msg = f"{path}:{lineno}: {reason}"
        if on_bad_record == "error":
            raise CorpusError(
                f"{msg} (fix the shard, or set data.on_bad_record: skip to skip and count such records)"
            )
        stats.bad_records[reason] += 1
        if len(stats.bad_examples) < 5:
            stats.bad_examples.append(f"line {lineno}: {reason}")

    try:
        fh = gzip.open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc})") from None
    with fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                stats.lines = lineno
                if not raw.strip():
                    bad("blank line")
                    continue
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    bad(f"line is not JSON ({exc.__class__.__name__}: {exc})")
                    continue
                reason = _check_record(obj)
                if reason is not None:
                    bad(reason)
                    continue
                stats.documents += 1
                yield Document(
                    id=str(obj["id"]),
                    text=obj["text"],
                    source=obj.get("source") or source_default,
                    line=lineno,
                )
        except (OSError, EOFError, zlib.error) as exc:
            # gzip.BadGzipFile is an OSError; a truncated member raises EOFError.
            where = f"{path}:{lineno + 1}" if lineno else str(path)
            raise CorpusError(
                f"{where}: unreadable gzip ({exc.__class__.__name__}: {exc}); "
                "re-download or re-create this shard"
            ) from None
    if stats.documents == 0:
        detail = f"{stats.lines} lines, {stats.n_bad} bad" if stats.lines else "no lines"
        raise CorpusError(f"{path}: empty shard ({detail}); remove it or replace it")


def write_shard(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as a Dolma shard with deterministic bytes (gzip mtime 0, no file name).

    Returns the number of records. The caller is responsible for atomicity (use
    ``archscale.io.atomic_path``) where a partial file matters.
    """
    path = Path(path)
    n = 0
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for rec in records:
            gz.write(json.dumps(rec, ensure_ascii=False, sort_keys=False).encode("utf-8") + b"\n")
            n += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return n
