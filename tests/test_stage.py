"""The stage registry and dvc.yaml: stages found from the studies, each listing exactly the
parameter keys and lib files it reads, imports running one way, and what a run records."""

import ast
import json
import os
from pathlib import Path

import pytest
import yaml

from lib import params as P
from lib import stage as S

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SHARED = ("lib/data", "lib/models", "lib/losses", "lib/explain", "lib/eval", "lib/plots")


def dvc_body(stage: S.Stage) -> dict:
    entry = DVC[stage.name]
    return entry.get("do", entry)


@pytest.mark.parametrize("name", sorted(S.stages()))
def test_dvc_yaml_lists_exactly_the_parameter_keys_the_stage_reads(name):
    stage = S.get_stage(name)
    assert dvc_body(stage)["params"] == stage.param_keys(), (
        f"dvc.yaml's params of {name} drifted from its parameter model; `python -m lib.stage --deps {name}` prints them"
    )


@pytest.mark.parametrize("name", sorted(S.stages()))
def test_dvc_yaml_lists_exactly_the_lib_files_the_stage_imports(name):
    stage = S.get_stage(name)
    deps = dvc_body(stage)["deps"]
    listed = sorted(d for d in deps if d.startswith("lib/"))
    assert listed == S.lib_dependencies(stage, ROOT), (
        f"dvc.yaml's lib deps of {name} drifted from its imports; `python -m lib.stage --deps {name}` prints them"
    )
    assert stage.notebook in deps
    assert all((ROOT / d).exists() for d in listed)


def test_lib_dependencies_follow_imports_and_stay_inside_the_study():
    deps = S.lib_dependencies(S.get_stage("diml_eval"), ROOT)
    assert {"lib/stage.py", "lib/studies/diml/params.py", "lib/studies/diml/evaluate.py",
            "lib/explain/structural.py", "lib/eval/retrieval.py", "lib/studies/__init__.py"} <= set(deps)
    assert not [d for d in deps if d.startswith(("lib/studies/cocoa", "lib/studies/concepts", "lib/explain/tcav"))]


def test_stage_options_come_from_the_parameter_models():
    train = S.get_stage("diml_train")
    assert train.options == {"loss": ("margin", "multi_similarity"),
                             "objective": ("global", "structural", "structural_pure", "structural_uniform")}
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert S.parse_options(S.get_stage("concepts_eval"), ["city=coastal_city"], document) == {"city": "coastal_city"}
    with pytest.raises(P.ParameterError, match="city='atlantis' must be one of"):
        S.parse_options(S.get_stage("city"), ["city=atlantis"], document)


def lib_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("lib.")}


def test_imports_run_one_way():
    """A study imports the frame and the shared layers, never another study; nothing shared imports a study."""
    for path in sorted((ROOT / "lib").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        studies = {m.split(".")[2] for m in lib_imports(path) if m.startswith("lib.studies.")}
        if rel.startswith("lib/studies/") and rel.count("/") >= 3:
            own = rel.split("/")[2]
            assert studies <= {own}, f"{rel} imports the studies {sorted(studies - {own})}"
        else:
            assert not studies, f"{rel} is shared code but imports the studies {sorted(studies)}"


def test_the_study_folders_mirror_each_other():
    for package in P.study_packages():
        study = package.rpartition(".")[2]
        assert (ROOT / "lib/studies" / study / "params.py").exists(), study
        assert list((ROOT / "notebooks" / study).glob("*.ipynb")), f"no notebooks/{study}/"
        if study != "geodata":
            assert list((ROOT / "tests/studies" / study).glob("test_*.py")), f"no tests/studies/{study}/"


def test_smoke_and_setup_give_the_stage_its_own_keys(tmp_path, monkeypatch):
    values = S.smoke("diml_eval")
    assert set(values) == set(S.get_stage("diml_eval").params.model_fields)
    smoke = yaml.safe_load((ROOT / "params.smoke.yaml").read_text())["diml"]
    assert values["eval"]["rerank_k"] == smoke["eval"]["rerank_k"]
    monkeypatch.chdir(ROOT / "notebooks" / "diml")
    cfg = S.setup("diml_eval", values)
    assert Path.cwd() == ROOT and cfg.eval.rerank_k == smoke["eval"]["rerank_k"]
    with pytest.raises(P.ParameterError, match="diml.train: unknown parameter"):
        S.setup("diml_eval", {**values, "train": {}})
    with pytest.raises(P.ParameterError, match="unknown stage option 'city'"):
        S.setup("diml_eval", values, city="river_city")


def test_resolve_validates_the_whole_section_first():
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    document["diml"]["eval"]["rerank_kk"] = 5  # a key only diml_eval reads, misspelt
    with pytest.raises(P.ParameterError, match=r"diml.eval.rerank_kk: unknown parameter \(did you mean 'rerank_k'"):
        S.resolve("diml_train", ["loss=margin", "objective=global"], document)
    stage, chosen, cfg = S.resolve("city", ["city=river_city"], yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert cfg.name == "river_city" and chosen == {"city": "river_city"}


def test_manifest_records_the_determinism_the_run_set(tmp_path):
    stage = S.get_stage("maps")
    cfg = P.validate("maps", yaml.safe_load((ROOT / "params.yaml").read_text())["maps"], stage.params)
    calls = [{"seed": 0, "pid": 1, "flags": {"deterministic_algorithms": True}},
             {"seed": 3, "pid": 1, "flags": {"deterministic_algorithms": False}}]
    manifest = S.manifest(stage, cfg, {}, ROOT, 1.5, calls, {"ATEN_CPU_CAPABILITY": "avx2"})
    assert manifest["determinism"] == {"seeds": [0, 3], "settings": {"deterministic_algorithms": False},
                                       "cpu_kernels": {"ATEN_CPU_CAPABILITY": "avx2"}}
    assert manifest["parameters"]["n_tiles"] == cfg.n_tiles and manifest["stage"] == "maps"
    assert S.manifest(stage, cfg, {}, ROOT, 1.5, [])["determinism"] == {"seeds": [], "settings": None, "cpu_kernels": {}}
    json.dumps(manifest)


def test_run_state_file_is_read_line_by_line(tmp_path):
    path = tmp_path / "state.jsonl"
    assert S._read_run_state(path) == []
    path.write_text('{"seed": 1, "flags": {}}\n\n{"seed": 2, "flags": {}}\n')
    assert [c["seed"] for c in S._read_run_state(path)] == [1, 2]
    assert os.environ.get(S.RUN_STATE_ENV) is None  # the runner sets it only around a run


@pytest.mark.parametrize(("name", "modules"), [("paper", {"lib.paper"}), ("index", {"lib.index", *P.study_packages()})])
def test_dvc_yaml_lists_the_lib_files_of_the_paper_and_the_index(name, modules):
    listed = sorted(d for d in DVC[name]["deps"] if d.startswith("lib/"))
    assert listed == S.module_dependencies(modules, ROOT)
