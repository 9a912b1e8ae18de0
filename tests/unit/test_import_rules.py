"""The import rules of docs/architecture.md, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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
