"""The stage registry and dvc.yaml: stages found from the studies, dvc.yaml written from them
(each stage listing exactly the parameter keys and lib files it reads), the whole of params.yaml
checked before a run, imports running one way, what a run records, and what a failed, killed or
hand-run stage leaves behind."""

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

from lib import params as P
from lib import pipeline
from lib import stage as S

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SHARED = ("lib/data", "lib/models", "lib/losses", "lib/explain", "lib/eval", "lib/plots")


def test_dvc_yaml_is_what_the_code_writes():
    """The drift test: dvc.yaml on disk is exactly what `python -m lib.stage sync` writes now."""
    diff = pipeline.drift(ROOT)
    assert not diff, f"dvc.yaml drifted from the code: run python -m lib.stage sync\n{diff[:3000]}"


def test_sync_is_stable_and_the_file_says_how_it_is_made(tmp_path):
    root = compendium_view(tmp_path)
    (root / "dvc.yaml").unlink()
    assert pipeline.sync(root) is True
    first = (root / "dvc.yaml").read_bytes()
    assert pipeline.sync(root) is False and (root / "dvc.yaml").read_bytes() == first
    text = first.decode()
    assert text.startswith("# Written by `python -m lib.stage sync`")
    assert "\n\n  diml_eval:\n" in text  # a blank line between stages
    assert "\nplots:\n  - " in text and "\n  - DIML validation MAP@R per epoch:\n      template: linear\n" in text
    assert "tests/test_dvc_yaml.py" not in text and (ROOT / "tests/test_stage.py").exists()


def test_dvc_resolves_the_written_stages(tmp_path, monkeypatch):
    """DVC itself reads the written file: every stage the declarations expand to, with its
    rendered notebook, HTML copy and run manifest as cached outputs (they travel with dvc push/pull)."""
    from dvc.repo import Repo

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    document = P.read_params(ROOT / "params.yaml")
    expected = {pipeline.instance_name(s, c) for s in S.stages().values() for c in pipeline.instances(s, document)}
    monkeypatch.chdir(tmp_path)  # DVC names stages relative to the working directory
    with Repo(str(tmp_path)) as repo:
        resolved = {st.addressing: st for st in repo.index.stages}
    assert set(resolved) == expected | {"paper", "index"}
    ablation = resolved["diml_ablation@margin-structural_uniform"]
    assert ablation.cmd == "python -m lib.stage diml_train loss=margin objective=structural_uniform"
    outs = {str(o.def_path): o for o in ablation.outs}
    assert outs["results/diml/diml_train_margin_structural_uniform.run.json"].use_cache
    assert "models/diml/margin_structural_uniform" in outs
    city = resolved["city@lake_city"]
    assert [p.def_path for p in city.deps if p.def_path.startswith("notebooks")] == ["notebooks/geodata/city.ipynb"]
    index_deps = {str(d.def_path) for d in resolved["index"].deps}
    assert {"results/diml/diml_train_margin_structural_uniform.run.json", "results/musecl/coastal_city/figures",
            "results/cities/coastal_city", "paper/paper.pdf"} <= index_deps
    metrics = {str(o.def_path): o for o in resolved["diml_eval"].outs if o.metric}
    assert not metrics["results/diml/metrics.json"].use_cache  # committed to git, as DVC's examples do


def test_the_writer_quotes_what_yaml_would_misread():
    for value in ("plain", "a: b", "x #y", "[list]", "yes", "1e-05", " padded", "${item.loss}", "*star", "{a}"):
        assert yaml.safe_load(f"k: {pipeline._scalar(value)}") == {"k": value}, value
        assert yaml.safe_load(f"k: [{pipeline._scalar(value, in_flow=True)}]") == {"k": [value]}, value


def test_declared_paths_expand_options_and_parameter_lists():
    document = {"maps": {"cities": ["a", "b"]}}
    assert S.expand_path("datasets/{maps.cities}/{layer}.tif", {"layer": "x"}, document) == [
        "datasets/a/x.tif", "datasets/b/x.tif"]
    assert S.expand_path("models/{loss}", {}, document) == ["models/{loss}"]  # left for DVC's ${item}
    with pytest.raises(P.ParameterError, match="params.yaml has no key 'maps.towns'"):
        S.expand_path("datasets/{maps.towns}", {}, document)


def test_the_ablation_is_a_declared_stage_running_the_training_notebook():
    train, ablation = S.get_stage("diml_train"), S.get_stage("diml_ablation")
    assert ablation.runner == "diml_train" and ablation.notebook == train.notebook
    assert ablation.output_name({"loss": "margin", "objective": "structural_pure"}) == "diml_train_margin_structural_pure"
    assert ablation.each == {"loss": "diml.ablation.losses", "objective": "diml.ablation.objectives"}
    with pytest.raises(ValueError, match="each names"):
        S.Stage("x", "diml", "diml", train.params, train.options, each={"loss": "diml.losses"})


def compendium_view(tmp_path: Path) -> Path:
    """A compendium root that shares this one's code, notebooks and data (links) but has its own
    params.yaml and dvc.yaml, for checks that must not touch the real files."""
    root = tmp_path / "compendium"
    root.mkdir()
    for name in ("lib", "notebooks", "data", "paper"):
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    for name in ("params.yaml", "params.smoke.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    return root


def check_with(tmp_path: Path, change) -> list[str]:
    root = compendium_view(tmp_path)
    document = P.read_params(root / "params.yaml")
    change(document)
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    pipeline.sync(root)
    return pipeline.check(root)


def test_check_passes_the_repository_parameters(tmp_path):
    assert check_with(tmp_path, lambda d: None) == []


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["diml"]["train"].update(epochs=-3), "diml.train.epochs"),
    (lambda d: d["concepts"].update(device="gpu0"), "concepts.device: device must be auto, cpu, cuda"),
    (lambda d: d["cities"]["lake_city"].update(crs="EPSG:99999"), "cities.lake_city: crs 'EPSG:99999' is not"),
    (lambda d: d["cities"]["lake_city"].update(crs="EPSG:4326"), "cities.lake_city: crs 'EPSG:4326' is not a projected"),
    (lambda d: d["diml"]["ablation"].update(losses=["triplet"]), "diml.ablation.losses.0"),
    (lambda d: d["musecl"].update(cities=["river_city", "atlantis"]), "stage musecl_train@atlantis: stage option city="),
    (lambda d: d["maps"].update(cities=["atlantis"]), "stage maps reads datasets/atlantis/landcover.tif"),
    (lambda d: d.update(dimll={}), "unknown section 'dimll'"),
])
def test_check_names_every_bad_value_before_a_run(tmp_path, change, named):
    problems = check_with(tmp_path, change)
    assert any(named in p for p in problems), problems


def test_check_finds_a_stale_dvc_yaml(tmp_path):
    root = compendium_view(tmp_path)
    pipeline.sync(root)
    (root / "dvc.yaml").write_text((root / "dvc.yaml").read_text().replace("      - lib/runtime.py\n", "", 1))
    assert pipeline.check(root) == ["dvc.yaml is out of date with the code or params.yaml: run python -m lib.stage sync"]


@pytest.mark.slow
def test_command_line_errors_are_one_line_and_exit_2(tmp_path):
    root = compendium_view(tmp_path)
    document = P.read_params(root / "params.yaml")
    document["diml"]["train"]["epochs"] = -3
    (root / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, message in ((["check"], "diml.train.epochs"), (["--deps", "nosuch"], "error: unknown stage 'nosuch'")):
        done = subprocess.run([sys.executable, "-m", "lib.stage", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


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
    document = P.read_params(ROOT / "params.yaml")
    assert S.parse_options(S.get_stage("concepts_eval"), ["city=coastal_city"], document) == {"city": "coastal_city"}
    with pytest.raises(P.ParameterError, match="city='atlantis' must be one of"):
        S.parse_options(S.get_stage("city"), ["city=atlantis"], document)


def lib_imports(path: Path) -> set[str]:
    """The ``lib`` modules (and names of them) a Python file or a notebook's code cells import."""
    if path.suffix == ".ipynb":
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        lines = [line for c in cells for line in "".join(c["source"]).splitlines()
                 if not line.lstrip().startswith(("%", "!"))]  # IPython magics and shell lines are not Python
        tree = ast.parse("\n".join(lines))
    else:
        tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
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


def test_notebooks_import_only_their_own_study():
    """A study's notebook imports the frame, the shared layers and its own study package, no other study."""
    notebooks = sorted((ROOT / "notebooks").glob("*/*.ipynb"))
    assert notebooks
    for path in notebooks:
        own = path.parent.name
        studies = {m.split(".")[2] for m in lib_imports(path) if m.startswith("lib.studies.")}
        assert studies <= {own}, f"{path.relative_to(ROOT)} imports the studies {sorted(studies - {own})}"


def test_the_study_folders_mirror_each_other():
    for package in P.study_packages():
        study = package.rpartition(".")[2]
        assert (ROOT / "lib/studies" / study / "params.py").exists(), study
        assert list((ROOT / "notebooks" / study).glob("*.ipynb")), f"no notebooks/{study}/"
        assert list((ROOT / "tests/studies" / study).glob("test_*.py")), f"no tests/studies/{study}/"


def test_the_runner_checks_every_stage_without_importing_torch():
    """The runner's own start-up is overhead of every stage: it reads params.yaml, resolves the stage and picks
    the CPU kernels without torch (the kernel imports it, and times the reference workload, lib.timing)."""
    code = ("import sys; from pathlib import Path; import lib.stage as S, lib.params as P, lib.pipeline as L\n"
            "import lib.cpu\n"
            "doc = P.read_params(Path('params.yaml'))\n"
            "for stage in S.stages().values():\n"
            "    for chosen in L.instances(stage, doc):\n"
            "        S.resolve(stage.name, chosen, doc)\n"
            "lib.cpu.portable_cpu_kernels()\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_every_shared_module_has_tests_mirroring_lib():
    """tests/ mirrors lib/: lib/<layer>/<module>.py is tested in tests/<layer>/test_<module>.py.

    A shared module that no test imports fails; one tested only elsewhere (e.g. through a bigger module's
    tests) is listed in a warning, to be given its own file when it grows.
    """
    tested = set().union(*(lib_imports(path) for path in (ROOT / "tests").rglob("*.py")))
    untested, elsewhere = [], []
    for layer in SHARED:
        for path in sorted((ROOT / layer).glob("*.py")):
            if path.name == "__init__.py":
                continue
            mirror = ROOT / "tests" / Path(layer).relative_to("lib") / f"test_{path.stem}.py"
            if not mirror.exists():
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                (elsewhere if module in tested else untested).append(module)
    if elsewhere:
        warnings.warn(f"shared modules without a mirroring tests/<layer>/test_<module>.py: {elsewhere}", stacklevel=1)
    assert not untested, f"shared modules that no test imports: {untested}"


def test_smoke_and_setup_give_the_stage_its_own_keys(tmp_path, monkeypatch):
    root = tmp_path / "compendium"
    (root / "notebooks" / "diml").mkdir(parents=True)
    (root / "data" / "mnist").mkdir(parents=True)
    for name in ("params.yaml", "params.smoke.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    monkeypatch.chdir(root / "notebooks" / "diml")  # where JupyterLab runs a notebook
    values = S.smoke("diml_eval")
    assert set(values) == set(S.get_stage("diml_eval").params.model_fields)
    smoke = P.read_params(ROOT / "params.smoke.yaml")["diml"]
    assert values["eval"]["rerank_k"] == smoke["eval"]["rerank_k"]
    cfg = S.setup("diml_eval", dict(values))  # the pipeline's values (papermill injects a plain dict)
    assert Path.cwd() == root.resolve() and cfg.eval.rerank_k == smoke["eval"]["rerank_k"]
    with pytest.raises(P.ParameterError, match="diml.train: unknown parameter"):
        S.setup("diml_eval", {**values, "train": {}})
    with pytest.raises(P.ParameterError, match="unknown stage option 'city'"):
        S.setup("diml_eval", values, city="river_city")


def test_a_notebook_run_by_hand_works_in_scratch(tmp_path, monkeypatch):
    """Run by hand (the smoke profile), a notebook writes under scratch/, never over the pipeline's
    outputs: the raw data is linked, an upstream output is copied there, the original stays as it was."""
    root = tmp_path / "compendium"
    (root / "notebooks" / "diml").mkdir(parents=True)
    (root / "data" / "mnist").mkdir(parents=True)
    (root / "models" / "diml" / "margin_global").mkdir(parents=True)
    weights = root / "models" / "diml" / "margin_global" / "seed_0.safetensors"
    weights.write_bytes(b"the pipeline's weights")
    for name in ("params.yaml", "params.smoke.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    monkeypatch.chdir(root / "notebooks" / "diml")
    S.setup("diml_eval", S.smoke("diml_eval"))
    scratch = (root / "scratch").resolve()
    assert Path.cwd() == scratch
    assert (scratch / "data" / "mnist").is_dir() and (scratch / "data").resolve() == (root / "data").resolve()
    copied = Path("models/diml/margin_global/seed_0.safetensors")
    assert copied.read_bytes() == weights.read_bytes()
    copied.write_bytes(b"smoke weights")  # what the notebook's training would do
    Path("results/diml").mkdir(parents=True)
    Path("results/diml/metrics.json").write_text("{}")
    assert weights.read_bytes() == b"the pipeline's weights" and not (root / "results").exists()
    S.setup("diml_eval", S.smoke("diml_eval"))  # a second hand run keeps what the first made there
    assert copied.read_bytes() == b"smoke weights"
    ignored = subprocess.run(["git", "check-ignore", "-q", "scratch/models/x"], cwd=ROOT)
    assert ignored.returncode == 0, "scratch/ must be git-ignored"


def test_stale_stage_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"stage-{dead.pid}-abcd1234"
    live = tmp_path / f"stage-{os.getpid()}-efgh5678"
    other = tmp_path / "stage-notapid"
    for folder in (stale, live, other):
        (folder / "runtime").mkdir(parents=True)
        (folder / "runtime" / "kernel-1.json").write_text("{}")  # a killed kernel's connection file
    assert S.remove_stale_stage_folders(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_partial_outputs_of_a_failed_run_are_removed(tmp_path):
    document = P.read_params(ROOT / "params.yaml")
    train, text = S.get_stage("diml_train"), S.get_stage("musecl_text")
    chosen = {"loss": "margin", "objective": "global"}
    written = [o.path for o in train.written(chosen, document)]
    assert written == ["models/diml/margin_global", "results/diml/diml_train_margin_global.ipynb",
                       "results/diml/diml_train_margin_global.html", "results/diml/diml_train_margin_global.run.json"]
    (tmp_path / "models/diml/margin_global").mkdir(parents=True)
    (tmp_path / "models/diml/margin_global/seed_0.safetensors").write_bytes(b"half")
    (tmp_path / "results/diml").mkdir(parents=True)
    (tmp_path / "results/diml/diml_train_margin_global.failed.ipynb").write_text("{}")
    assert S.remove_partial_outputs(train, chosen, document, tmp_path) == ["models/diml/margin_global"]
    assert not (tmp_path / "models/diml/margin_global").exists()
    assert (tmp_path / "results/diml/diml_train_margin_global.failed.ipynb").exists()  # kept for reading
    (tmp_path / "datasets/text_cache").mkdir(parents=True)
    (tmp_path / "datasets/text_cache/minilm.npz").write_bytes(b"cache")
    (tmp_path / "datasets/musecl_text").mkdir()
    assert S.remove_partial_outputs(text, {}, document, tmp_path) == ["datasets/musecl_text"]
    assert (tmp_path / "datasets/text_cache/minilm.npz").exists()  # persistent: outlives reruns


def test_resolve_validates_the_whole_section_first():
    document = P.read_params(ROOT / "params.yaml")
    document["diml"]["eval"]["rerank_kk"] = 5  # a key only diml_eval reads, misspelt
    with pytest.raises(P.ParameterError, match=r"diml.eval.rerank_kk: unknown parameter \(did you mean 'rerank_k'"):
        S.resolve("diml_train", ["loss=margin", "objective=global"], document)
    stage, chosen, cfg = S.resolve("city", ["city=river_city"], P.read_params(ROOT / "params.yaml"))
    assert cfg.name == "river_city" and chosen == {"city": "river_city"}


def test_manifest_records_the_determinism_the_run_set(tmp_path):
    stage = S.get_stage("maps")
    cfg = P.validate("maps", P.read_params(ROOT / "params.yaml")["maps"], stage.params)
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


#: The front page imports each study package and, where it has one, its summary module (its headlines).
INDEX_MODULES = {"lib.index", *P.study_packages(),
                 *(f"{p}.summary" for p in P.study_packages() if (ROOT / p.replace(".", "/") / "summary.py").exists())}


@pytest.mark.parametrize(("name", "modules"), [("paper", {"lib.paper"}), ("index", INDEX_MODULES)])
def test_dvc_yaml_lists_the_lib_files_of_the_paper_and_the_index(name, modules):
    listed = sorted(d for d in DVC[name]["deps"] if d.startswith("lib/"))
    assert listed == S.module_dependencies(modules, ROOT)


@pytest.mark.slow
def test_a_dead_kernel_names_the_stage_and_its_memory_and_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    """A kernel killed from outside (as the system does for want of memory): the runner says which
    stage, how much memory it had used and what to try; the half-written output and the stage's
    temporary folder (run state, kernel connection file) are gone; the executed part stays to read."""
    import nbformat

    class DemoParams(P.Seeded):
        pass

    demo = S.Stage("demo", "demo", "demo", DemoParams, outs=("models/demo",))
    monkeypatch.setattr(S, "stages", lambda: {"demo": demo})
    monkeypatch.setattr(P, "sections", lambda: {"demo": DemoParams})
    root = tmp_path / "compendium"
    (root / "notebooks" / "demo").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("demo:\n  seed: 0\n")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("stage_params = {}", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, pathlib, signal\n"
                                  "pathlib.Path('models/demo').mkdir(parents=True)\n"
                                  "pathlib.Path('models/demo/half.bin').write_bytes(b'half')\n"
                                  "os.kill(os.getpid(), signal.SIGKILL)"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / "notebooks" / "demo" / "demo.ipynb")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(root)
    runtime_dir = os.environ.get("JUPYTER_RUNTIME_DIR")

    assert S.main(["demo"]) == 1
    message = capsys.readouterr().err
    assert message.startswith("error: stage demo: the notebook's kernel died") and "peak memory" in message, message
    assert "Try smaller batch sizes" in message and len(message.strip().splitlines()) == 1
    assert not (root / "models" / "demo").exists()
    assert (root / "results" / "demo" / "demo.failed.ipynb").exists()
    assert not list(temp.glob("stage-*")) and os.environ.get("JUPYTER_RUNTIME_DIR") == runtime_dir
