"""The import rules of docs/architecture.md: the layer rule (read from the source, every module, lazy
imports too) and the light modules, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.imports import import_graph

SRC = Path(__file__).resolve().parents[2] / "src" / "archscale"
HEAVY = ("torch", "megatron", "transformers", "vllm")


@pytest.mark.parametrize(
    "module",
    ["archscale.search", "archscale.law", "archscale.study", "archscale.plan", "archscale.workflow_support",
     "archscale.train.launcher", "archscale.throughput", "archscale.science", "archscale.report.science"],
)
def test_light_modules_never_import_torch_or_megatron(module):
    code = (
        f"import sys, {module}\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_library_never_imports_the_workflow_or_snakemake():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n.split(".")[0] in ("snakemake", "workflow")]
    assert not offenders, offenders


def test_search_algorithm_does_no_file_io():
    for name in ("algorithm.py", "selection.py", "targets.py"):
        text = (SRC / "search" / name).read_text()
        for word in ("open(", "read_json", "write_json", "read_parquet", "to_parquet", "Path("):
            assert word not in text, f"search/{name} uses {word}"


# ---- the layer rule ---------------------------------------------------------------------------
#: The layers of docs/architecture.md, lowest first. A module imports only from its own unit (an
#: entry below: a module or a package), from a lower layer, or -- in the two library layers (0 and
#: 1) -- from another unit of its own layer; the stage units of layers 2 and up never import a
#: sibling. Imports at module level and inside functions count alike. A module belongs to the
#: longest entry that names it or a package above it; ``archscale`` is the package's ``__init__``.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("archscale", "io", "config", "compat", "ranks", "provenance", "records", "arch", "sweeps", "cost",
                     "eval_tasks")),
    ("study and inputs", ("study", "plan", "search.targets", "data", "model", "checkpoint")),
    ("stages", ("train", "throughput", "law", "evaluate")),
    ("analysis, search and export", ("analysis", "search", "export")),
    ("science", ("science",)),
    ("report and checks", ("report", "preflight", "doctor", "verify")),
    ("entry points", ("cli", "workflow_support")),
)
#: The first layer whose units never import each other.
STAGES = 2


def unit_of(module: str) -> tuple[int, str]:
    """``(layer, entry)`` of a dotted ``archscale`` module; KeyError for a module no entry covers."""
    best, depth = None, -1
    for number, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            full = "archscale" if entry == "archscale" else f"archscale.{entry}"
            covers = module == full or (entry != "archscale" and module.startswith(full + "."))
            if covers and full.count(".") > depth:
                best, depth = (number, entry), full.count(".")
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")
    return best


def wrong_way_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers or (layer >= STAGES) to a sibling unit, as
    ``'a (layer i) -> b (layer j)'``."""
    out = []
    for a in sorted(graph):
        (la, ua) = unit_of(a)
        for b in sorted(graph[a]):
            (lb, ub) = unit_of(b)
            if lb > la or (lb == la and ua != ub and la >= STAGES):
                out.append(f"{a} (layer {la}) -> {b} (layer {lb})")
    return out


def test_every_module_has_a_layer():
    missing = []
    for module in import_graph(SRC):
        try:
            unit_of(module)
        except KeyError as exc:
            missing.append(str(exc))
    assert not missing, missing


def test_no_import_points_up_the_layers_or_to_a_sibling_stage():
    assert wrong_way_imports(import_graph(SRC)) == []


def test_an_upward_import_is_found(tmp_path):
    """The check sees a lazy import inside a function and a relative one at module level."""
    pkg = tmp_path / "archscale"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io.py").write_text("def f():\n    from .train import loop\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("from ..report import x\n")
    (pkg / "report.py").write_text("from archscale import io\n")
    assert wrong_way_imports(import_graph(pkg)) == [
        "archscale.io (layer 0) -> archscale.train.loop (layer 2)",
        "archscale.train.loop (layer 2) -> archscale.report (layer 5)",
    ]


def test_the_layer_table_of_the_docs_is_this_one():
    """docs/architecture.md lists the same layers (one table row per layer, in this order)."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    want = [f"| {n} | {name} | {', '.join(f'`{e}`' for e in entries)} |" for n, (name, entries) in enumerate(LAYERS)]
    assert [r[: len(w)] for r, w in zip(rows, want)] == want and len(rows) == len(want), "\n".join(want)
