"""Reading a runs/loss table for the fits: CSV, Parquet, JSON lines or JSON records, by extension."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
}


class TableError(ValueError):
    """A table that cannot be read; the message names the file."""


def read_table(path) -> pd.DataFrame:
    """A DataFrame from ``path``; the format is chosen by its extension (see :data:`READERS`).

    ``.json`` holds a list of records (``[{"N": ..., "loss": ...}, ...]``) or an object with
    a ``runs``/``records``/``rows`` list of records. An unknown extension, a missing file or
    an unreadable file is a :class:`TableError` naming the file.
    """
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise TableError(
            f"{path}: unknown table format '{path.suffix or '(no extension)'}'; use one of "
            f"{', '.join(sorted(READERS))}"
        )
    if not path.is_file():
        raise TableError(f"{path}: no such file (no such table)")
    try:
        if kind == "csv":
            df = pd.read_csv(path)
        elif kind == "tsv":
            df = pd.read_csv(path, sep="\t")
        elif kind == "parquet":
            df = pd.read_parquet(path)
        elif kind == "jsonl":
            df = pd.read_json(path, lines=True)
        else:
            obj = json.loads(path.read_text())
            if isinstance(obj, dict):
                key = next((k for k in ("runs", "records", "rows") if isinstance(obj.get(k), list)), None)
                if key is None:
                    raise TableError(
                        f"{path}: a JSON object must hold the records under 'runs', 'records' or 'rows'; "
                        f"it has keys {sorted(obj)[:8]}"
                    )
                obj = obj[key]
            if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
                raise TableError(f"{path}: expected a JSON list of records (objects), one per run")
            df = pd.DataFrame.from_records(obj)
    except TableError:
        raise
    except Exception as exc:  # pandas/pyarrow/json raise many types; name the file in every case
        raise TableError(f"{path}: cannot read as {kind}: {exc}") from exc
    if df.empty:
        raise TableError(f"{path}: the table has no rows")
    return df
