"""The import graph of a package, read from its source (no import runs).

Shared by ``tests/unit/test_import_cycles.py`` (no cycle) and ``tests/unit/test_import_rules.py``
(the layer rule of docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every ``.py`` under package ``root``.

    ``from X import y`` is an edge to ``X.y`` when that is a module of the package, else to ``X``;
    relative imports are resolved; imports anywhere in a file (also inside functions and under
    ``if TYPE_CHECKING:``) count.
    """
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a package module
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == top and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph
