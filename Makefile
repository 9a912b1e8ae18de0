# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv/ with pip when it is absent and install archscale with its pinned deps.
SHELL := /bin/bash
# Interpreter of a new .venv: PYTHON=... overrides; else tools/find-python picks the newest of
# python3.13, python3.12, python3.11, python3 that pyproject.toml's requires-python accepts.
PYTHON ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.archscale-installed
CORES ?= 2

.PHONY: install run test test-fast lint format dry-run plan report bench clean

$(STAMP): pyproject.toml constraints/cpu-lock.txt
	@test -x $(BIN)/python || { py=$$(tools/find-python $(PYTHON)) && echo "creating $(VENV) with $$py" && "$$py" -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints/cpu-lock.txt locks every package (torch 2.13.0, megatron-core 0.16.1) within
	# pyproject.toml's ranges: reproducible, and pip never resolves an unpinned CUDA build.
	$(BIN)/python -m pip install -q -e '.[dev,bench]' -c constraints/cpu-lock.txt
	@touch $(STAMP)

install: $(STAMP)

## Run the whole workflow on the embedded default (CPU), then build the HTML report.
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html
	@echo "report: results/report.html"

## Unit, rule-level and integration tests: two pytest-xdist workers, a test file per worker at a
## time (--dist loadfile: the tests that read the one tiny study live in one file, so it runs
## once), then the tests that need both cores alone (marker `serial`). Every test has a timeout
## (pyproject.toml); the 15 slowest are listed. TESTS=... narrows the selection (CI's newest end).
PYTEST := PATH=$(abspath $(BIN)):$$PATH $(BIN)/pytest -q
TESTS ?= tests
test: $(STAMP)
	$(PYTEST) -n 2 --dist loadfile --durations=15 -m "not serial$(if $(MARKERS), and ($(MARKERS)))" $(TESTS)
	$(PYTEST) --durations=5 -m "serial$(if $(MARKERS), and ($(MARKERS)))" $(TESTS)

## Library unit tests that train nothing and run no workflow (marker `slow` excluded): seconds.
test-fast: $(STAMP)
	$(PYTEST) -n 2 -m "not slow" tests/unit

lint: $(STAMP)
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/snakefmt Snakefile workflow/

dry-run: $(STAMP)
	$(BIN)/snakemake -n --quiet rules

plan: $(STAMP)
	$(BIN)/archscale plan config/config.yaml

clean:
	rm -rf results logs benchmarks .snakemake
