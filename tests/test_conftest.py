"""The suite's xdist set-up (tests/conftest.py): the pipeline's tests in one worker, its fixture built once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

PIPELINE = '''
import json, os, pytest

@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps({"fixture": os.environ.get("PYTEST_XDIST_WORKER")}) + "\\n")
    return 1

@pytest.mark.parametrize("i", range(6))
def test_stage(repo, i):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps({"pipeline": os.environ.get("PYTEST_XDIST_WORKER")}) + "\\n")
'''

UNIT = '''
import json, os, pytest, torch

@pytest.mark.parametrize("i", range(8))
def test_unit(i):
    with open(os.environ["LOG"], "a") as f:
        f.write(json.dumps({"unit": os.environ.get("PYTEST_XDIST_WORKER"), "threads": torch.get_num_threads()}) + "\\n")
'''


@pytest.mark.slow
def test_the_pipeline_tests_come_first_and_share_one_worker_and_one_fixture(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(HERE / "conftest.py", tests / "conftest.py")
    (tests / "test_pipeline.py").write_text(PIPELINE)
    (tests / "test_a_units.py").write_text(UNIT)  # before the pipeline's file in name order
    log = tmp_path / "log.jsonl"
    env = {**os.environ, "LOG": str(log)}
    listed = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(tests)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    assert len(ids) == 14 and all("test_pipeline.py" in i for i in ids[:6]), listed.stdout  # the pipeline first
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                           "--dist", "loadfile", "--no-loadscope-reorder", "--rootdir", str(tmp_path), str(tests)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["fixture"] for line in lines if "fixture" in line] in (["gw0"], ["gw1"])  # built once
    workers = {line["pipeline"] for line in lines if "pipeline" in line}
    assert len(workers) == 1 and sum("pipeline" in line for line in lines) == 6
    units = [line for line in lines if "unit" in line]
    assert len(units) == 8 and {u["threads"] for u in units} == {1}
    assert {u["unit"] for u in units} - workers, "the other worker ran unit tests beside the pipeline"
