"""Source notebooks: stored without outputs, runnable by papermill, one per stage, starting with setup()."""

import json
from pathlib import Path

import pytest
import yaml

from lib.stage import stages

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*/*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_source_notebook_is_clean_and_parameterised(path: Path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3", "papermill needs the python3 kernel spec"
    code = code_cells(path)
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{path.name}: strip its outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], f"{path.name}: the first code cell, and only it, is 'parameters'"
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), "a title first"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids), f"{path.name}: cell ids must be unique"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_starts_with_one_setup_call_of_its_own_stage(path: Path):
    parameters, first = ("".join(c["source"]) for c in code_cells(path)[:2])
    assert f'smoke("{path.stem}"' in parameters, "run by hand, the notebook takes the smoke profile of its stage"
    assert "stage_params" in parameters, "papermill injects the stage's parameters as stage_params"
    assert first.count(f'setup("{path.stem}", stage_params') == 1, "one setup() call validates, seeds and moves to the root"
    assert "os.chdir" not in first and "seed_everything" not in first, "setup() does both"


def test_every_stage_has_its_notebook_and_every_notebook_its_stage():
    registered = stages()
    dvc_stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in registered.items():
        assert (ROOT / stage.notebook).exists(), f"stage {name}: {stage.notebook} is missing"
        assert name in dvc_stages, f"stage {name} is not in dvc.yaml"
    notebooks = {str(p.relative_to(ROOT)) for p in NOTEBOOKS}
    assert notebooks == {s.notebook for s in registered.values()}, "a notebook without a stage, or the reverse"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_papermill_finds_every_injected_parameter_in_the_parameters_cell(path: Path):
    from papermill.inspection import _infer_parameters
    from papermill.iorw import load_notebook_node

    found = {p.name for p in _infer_parameters(load_notebook_node(str(path)), name="python3")}
    stage = stages()[path.stem]
    assert {"stage_params", *stage.options} <= found, "papermill would warn of an unknown parameter"
