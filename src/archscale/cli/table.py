"""Number formatting and plain-text tables shared by every subcommand."""

from __future__ import annotations

import sys


def fmt(value, sci_at: float = 1e6) -> str:
    """A number as a user reads it: 4 significant digits (scientific from ``sci_at``), ints with
    thousands separators, ``-`` for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < sci_at else f"{value:.4e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    """Right-aligned columns, one header line; ``out`` defaults to stdout."""
    out = out or sys.stdout
    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    out.write("  ".join(c.rjust(w) for c, w in zip(columns, widths)) + "\n")
    for row in cells:
        out.write("  ".join(v.rjust(w) for v, w in zip(row, widths)) + "\n")
