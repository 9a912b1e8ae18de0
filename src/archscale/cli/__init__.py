"""Command-line interface: the library's arithmetic, plan, fits and search without Snakemake.

One module per verb (:mod:`.arch`, :mod:`.plan`, :mod:`.search`, :mod:`.fit`), each with a
``register(subparsers)``; :mod:`.main` builds the parser; :mod:`.table` formats numbers and tables.
"""

from .main import build_parser, main
from .plan import PLAN_COLUMNS
from .table import print_table

__all__ = ["PLAN_COLUMNS", "build_parser", "main", "print_table"]
