"""Aggregation of per-run records (``aggregate``) and the ``archscale fit`` command line."""
