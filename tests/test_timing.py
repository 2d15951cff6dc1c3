"""Tests of lib.timing: phases recorded for the stage runner, the time budget, the reference workload, the table."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone

import nbformat
import pytest
import torch
import yaml

from lib import timing
from lib.timing import BUDGET, OVERHEAD, PHASES, StageClock, phase, time_budget


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def run_state(tmp_path, monkeypatch):
    path = tmp_path / "run_state.jsonl"
    monkeypatch.setenv(timing.RUN_STATE_ENV, str(path))
    monkeypatch.delenv("RANK", raising=False)
    return path


def test_the_run_state_variable_is_the_runners():
    from lib import stage

    assert timing.RUN_STATE_ENV == stage.RUN_STATE_ENV


def test_nested_phases_count_their_own_time_only(run_state):
    with phase("train"):
        time.sleep(0.05)
        with phase("evaluate"):
            time.sleep(0.1)
        with phase("write"):
            time.sleep(0.02)
    by_name = {r["phase"]: r for r in records(run_state)}
    assert [r["phase"] for r in records(run_state)] == ["evaluate", "write", "train"]  # written as they close
    assert 0.1 <= by_name["evaluate"]["seconds"] < 0.2 and 0.02 <= by_name["write"]["seconds"] < 0.1
    assert 0.05 <= by_name["train"]["seconds"] < 0.12  # without its two inner phases' 0.12 s
    assert by_name["train"]["start"] <= by_name["evaluate"]["start"] and by_name["train"]["pid"] == os.getpid()


def test_a_phase_decorates_and_records_even_when_its_block_fails(run_state):
    @phase("data")
    def load(fail: bool) -> int:
        """Load something."""
        if fail:
            raise KeyError("missing")
        return 3

    assert load(False) == 3 and load.__doc__ == "Load something."
    with pytest.raises(KeyError):
        load(True)
    assert [r["phase"] for r in records(run_state)] == ["data", "data"]


def test_nothing_is_recorded_outside_a_stage_run_or_off_rank_0(run_state, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # a torchrun process other than the first runs the same steps
    with phase("train"):
        pass
    monkeypatch.delenv(timing.RUN_STATE_ENV)
    monkeypatch.delenv("RANK")
    with phase("train"):
        pass
    assert not run_state.exists()


def test_an_unknown_phase_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown phase 'training'; phases: \['data', 'train'"):
        with phase("training"):
            pass


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def rendered(t0: float, cells: list[tuple[float, float, str]]) -> dict:
    """A notebook as papermill renders it: code cells with start/end times (seconds after ``t0``)."""
    return {"cells": [{"cell_type": "markdown", "source": "# title", "metadata": {}}] + [
        {"cell_type": "code", "source": source, "metadata": {"papermill": {
            "start_time": iso(t0 + start), "end_time": iso(t0 + end), "duration": end - start}}}
        for start, end, source in cells]}


def clock_at(t0: float, **marks: float) -> StageClock:
    """A runner's clock started at ``t0`` with each mark at the given seconds after it."""
    clock = StageClock(start=t0)
    for name, at in marks.items():
        clock.spans[name], clock.marks[name], clock.last = t0 + at - clock.last, t0 + at, t0 + at
    return clock


def test_the_budget_splits_the_wall_time_into_parts_that_add_up():
    t0 = 1_700_000_000.0
    clock = clock_at(t0, runner_startup=2.0, notebook=30.0, html=31.0, manifest=31.5)
    notebook = rendered(t0, [
        (3.0, 4.0, "stage_params = smoke('x')"), (4.0, 4.5, "# injected"), (4.5, 8.0, "cfg = setup('x', p)"),
        (8.0, 20.0, "fit(...)"), (20.0, 28.0, "evaluate(...)"),
    ])
    runs = [{"seed": 0, "flags": {}},  # the seeds' lines are not phases
            {"phase": "data", "seconds": 1.0, "start": t0 + 8.0}, {"phase": "train", "seconds": 10.0, "start": t0 + 9},
            {"phase": "evaluate", "seconds": 5.0, "start": t0 + 20},
            {"phase": "write", "seconds": 0.5, "start": t0 + 27}]
    budget = time_budget(clock, notebook, runs)
    parts = budget["parts_s"]
    assert list(parts) == list(BUDGET)
    assert parts == {"runner_startup": 2.0, "kernel_start": 1.0, "imports": 5.0, "data": 1.0, "train": 10.0,
                     "evaluate": 5.0, "write": 0.5, "notebook_other": 3.5, "kernel_stop": 2.0, "html": 1.0,
                     "manifest": 0.5}
    assert sum(parts.values()) == pytest.approx(clock.elapsed)
    assert budget["overhead_s"] == pytest.approx(sum(parts[k] for k in OVERHEAD)) == 11.5
    assert budget["cells_s"] == [1.0, 0.5, 3.5, 12.0, 8.0]


def test_a_phase_during_the_imports_is_taken_from_them_and_gaps_count_with_the_work():
    t0 = 1_700_000_000.0
    clock = clock_at(t0, runner_startup=1.0, notebook=12.0, html=12.5, manifest=13.0)
    notebook = rendered(t0, [(2.0, 5.0, "x = setup('s', p)"), (5.5, 10.0, "work()")])  # 0.5 s between the cells
    budget = time_budget(clock, notebook, [{"phase": "data", "seconds": 1.0, "start": t0 + 3.0}])
    parts = budget["parts_s"]
    assert parts["imports"] == 2.0 and parts["data"] == 1.0 and parts["notebook_other"] == 5.0
    assert sum(parts.values()) == pytest.approx(13.0)


def test_a_budget_needs_the_runners_marks_and_known_phases():
    clock = StageClock(start=0.0)
    clock.mark("runner_startup")
    with pytest.raises(ValueError, match="no mark 'notebook'"):
        time_budget(clock, {}, [])
    for name in ("notebook", "html", "manifest"):
        clock.mark(name)
    with pytest.raises(ValueError, match="unknown phase 'plotting'"):
        time_budget(clock, {}, [{"phase": "plotting", "seconds": 1.0, "start": 0.0}])


def test_the_reference_workload_is_fixed_and_leaves_the_thread_count_alone():
    a, b = timing._reference_model(), timing._reference_model()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    result = timing.reference_workload("cpu", threads=1, repeats=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.get_num_threads() == threads and result["threads"] == 1
    assert 0 < result["spread_s"][0] <= result["seconds"] <= result["spread_s"][1]
    assert result["workload"] == timing.REFERENCE_WORKLOAD and result["device"] == "cpu"
    with pytest.raises(ValueError, match="repeats"):
        timing.reference_workload("cpu", repeats=0)


def test_the_manifest_of_a_timed_run_has_its_budget_and_reference_units():
    from lib import params as P
    from lib import stage as S

    stage = S.get_stage("maps")
    cfg = P.validate("maps", yaml.safe_load(open(S.project_root() / "params.yaml"))["maps"], stage.params)
    clock = StageClock()
    for name in ("runner_startup", "notebook", "html"):
        clock.mark(name)
    record = S.manifest(stage, cfg, {}, S.project_root(), 99.0, [{"seed": 4, "flags": {"num_threads": 1}}],
                        clock=clock, notebook={"cells": []})
    assert record["determinism"]["seeds"] == [4] and record["reference"]["threads"] == 1
    assert record["wall_time_s"] == round(clock.elapsed, 2) < 99.0  # the whole stage, by the clock
    assert record["reference_units"] == pytest.approx(clock.elapsed / record["reference_s"], rel=0.01, abs=0.1)
    assert set(record["time_budget"]["parts_s"]) == set(BUDGET)
    json.dumps(record)


def test_papermill_run_budget_covers_the_cells_and_the_phases(tmp_path, monkeypatch):
    """End to end: a notebook run by papermill records its phases, and the budget adds up to the clock."""
    import papermill

    state = tmp_path / "state.jsonl"
    monkeypatch.setenv(timing.RUN_STATE_ENV, str(state))
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("import time\nfrom lib.timing import phase\nsetup = lambda: None\nsetup()"),
                nbformat.v4.new_code_cell("with phase('train'):\n    time.sleep(0.3)\ntime.sleep(0.1)")]
    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    clock = StageClock()
    clock.mark("runner_startup")
    papermill.execute_notebook(str(source), str(out), kernel_name="python3", progress_bar=False,
                               cwd=str(timing.Path(__file__).resolve().parents[1]))
    clock.mark("notebook")
    clock.mark("html")
    clock.mark("manifest")
    budget = time_budget(clock, json.loads(out.read_text()), records(state))
    parts = budget["parts_s"]
    assert 0.3 <= parts["train"] < 0.5 and 0.05 <= parts["notebook_other"] < 0.5
    assert parts["kernel_start"] > 0 and parts["imports"] > 0
    assert sum(parts.values()) == pytest.approx(clock.elapsed, abs=0.06)  # rounding of 11 parts


def manifest(wall: float, parts: dict | None, reference: float | None) -> dict:
    record = {"wall_time_s": wall}
    if parts is not None:
        record["time_budget"] = {"parts_s": parts, "overhead_s": sum(parts.get(k, 0) for k in OVERHEAD)}
    if reference is not None:
        record["reference_s"], record["reference_units"] = reference, wall / reference
    return record


def test_the_pipeline_table_lists_seconds_units_shares_and_overhead(tmp_path):
    (tmp_path / "diml").mkdir()
    (tmp_path / "diml/diml_eval.run.json").write_text(json.dumps(manifest(30.0, {"evaluate": 20.0, "imports": 6.0,
                                                                                 "html": 4.0}, 0.2)))
    time.sleep(0.01)  # the table follows the order in which the stages finished
    (tmp_path / "paper.run.json").write_text(json.dumps(manifest(10.0, None, None)))  # written before budgets
    found = timing.read_manifests(tmp_path)
    assert [name for name, _ in found] == ["diml_eval", "paper"]
    table = timing.pipeline_table(found).splitlines()
    assert table[1].split()[:4] == ["diml_eval", "30.0", "150", "75.0%"] and "evaluate 20.0, imports 6.0" in table[1]
    assert table[2].split()[:4] == ["paper", "10.0", "-", "25.0%"] and "(no time budget)" in table[2]
    assert table[3].split()[:4] == ["total", "40.0", "150", "100.0%"]
    assert "10.0 s, 25.0% of the stages' time" in table[4] and "median 200 ms" in table[5]
    assert "run the pipeline first" in timing.pipeline_table([])
    (tmp_path / "bad.run.json").write_text("{")
    with pytest.raises(ValueError, match="bad.run.json: not a JSON manifest"):
        timing.read_manifests(tmp_path)


def test_every_phase_is_a_part_of_the_budget():
    assert set(PHASES) <= set(BUDGET) and set(OVERHEAD) <= set(BUDGET) and not set(PHASES) & set(OVERHEAD)


def test_the_benchmarks_short_fits_cut_every_fit_and_time_its_steps():
    """tests/benchmarks/step_timing.py: a study's fit runs a few steps only, timed, and fit is restored after."""
    import importlib.util
    import types

    from lib import training
    from lib.runtime import runtime

    path = timing.Path(__file__).resolve().parent / "benchmarks" / "step_timing.py"
    spec = importlib.util.spec_from_file_location("step_timing", path)
    step_timing = importlib.util.module_from_spec(spec)
    study = types.ModuleType("a_study")  # a study module that imported fit
    study.fit = training.fit
    sys.modules.update(step_timing=step_timing, a_study=study)
    try:
        spec.loader.exec_module(step_timing)
        model = torch.nn.Linear(3, 1)
        batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(10)]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with step_timing.short_fits(steps=3) as runs:
            result = study.fit(model, torch.nn.functional.mse_loss, lambda epoch: batches, optimizer, epochs=50,
                               runtime=runtime("cpu"), validate=lambda m: 0.0, progress=False)
        assert study.fit is training.fit  # restored
        assert len(result.history) == 1 and "val_score" not in result.history[0]  # one epoch, no validation
        assert len(runs) == 1 and len(runs[0].step_s) == 2 and runs[0].median_step_s > 0  # 3 steps, 2 after the first
        assert torch.equal(runs[0].batch[0], batches[0][0]) and runs[0].model is model
        bare = step_timing.bare_seconds(model, list(model.parameters()), batches[0][0], runtime("cpu"), repeats=2)
        assert bare > 0 and model.weight.grad is not None
    finally:
        del sys.modules["a_study"], sys.modules["step_timing"]
