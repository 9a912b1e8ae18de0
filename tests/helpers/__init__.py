"""Helpers shared by the test suites (on the path through pytest's ``pythonpath = ["tests"]``).

* :mod:`.study` - fixture records of a tiny study (runs, fits, throughput, cost model, curves);
* :mod:`.records` - one training / throughput record from the documented formats;
* :mod:`.rules` - the rule tests' Snakemake runner, configs and corpus.
"""
