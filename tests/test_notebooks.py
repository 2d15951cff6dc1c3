"""Source notebooks: stored without outputs, runnable by papermill, one per stage."""

import json
from pathlib import Path

import pytest
import yaml

from lib.stage import STAGES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebook_is_clean_and_parameterised(path: Path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3", "papermill needs the python3 kernel spec"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), f"{path.name}: strip its outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), "a title first"


def test_every_stage_has_its_notebook_and_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in STAGES.items():
        assert (ROOT / "notebooks" / f"{stage.notebook}.ipynb").exists(), name
        cmds = [s.get("cmd", s.get("do", {}).get("cmd", "")) for s in stages.values()]
        assert any(f"lib.stage {name}" in c for c in cmds), f"stage {name} is not in dvc.yaml"
