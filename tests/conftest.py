"""Settings of the whole test suite: the smoke pipeline beside the unit tests under pytest-xdist.

``make test`` runs ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: two
worker processes, each taking whole test files. The smoke pipeline's tests
(``tests/test_pipeline.py``) are collected first, so one worker starts on them
at once, builds the smoke compendium once (the module-scoped ``repo``
fixture) and runs them all, while the other worker takes the unit tests.
(``--dist loadgroup`` with an ``xdist_group`` mark would do the same, but
pytest-xdist 3.8 names the group by rewriting ``item._nodeid``, which pytest 9
no longer reads: the group is silently ignored.)

Each worker is a process of its own, so a test's ``os.chdir`` (``setup()``
moves to the compendium's root) and its torch settings stay in it. The unit
tests write under ``tmp_path``; files that tests or notebooks run by hand
leave in the tree (``scratch/``, ``checkpoints/``, caches) are git-ignored, so
the pipeline's copy of the tree (``git ls-files --others --exclude-standard``)
never sees them come and go.
"""

from __future__ import annotations

import os

import pytest

#: The test file of the smoke pipeline, the longest part of the suite.
PIPELINE_TESTS = "test_pipeline.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The pipeline's tests first (in their own order): xdist hands out files in collection order."""
    items.sort(key=lambda item: item.path.name != PIPELINE_TESTS)  # a stable sort keeps every other order


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker, torch computes on one thread: the other core is the smoke pipeline's, whose stages
    (subprocesses, which keep torch's default) would otherwise fight the unit tests' threads for both cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
