"""The whole pipeline, end to end, in a temporary copy of the compendium.

Runs ``dvc repro`` on the smoke profile (params.smoke.yaml merged into
params.yaml), checks the outputs a reader relies on, that ``dvc status`` is
clean and a second ``dvc repro`` does nothing, checks the rendered notebooks
(complete, and one rerun with nbval, lax: it must run, outputs are not compared), and last that
``dvc exp run -S diml.eval.rerank_k=...`` reruns only the stages that read it;
in between, what DVC users compare runs by: ``dvc metrics show`` (a few
headline numbers per study), ``dvc plots show``, ``dvc exp show`` on a commit,
and the front page ``results/index.html`` whose links all resolve; and what
survives a reader's use: a notebook run by hand leaves every pipeline output
and tracked file as it was, a ``git clone`` + ``dvc pull`` from a DVC remote
gives a clean ``dvc status`` (nothing to rerun), and a float written by
``dvc exp run -S`` (``1e-05``) is read as a number (in the last test).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lib import index, params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_compendium(dest: Path) -> Path:
    """The files git would see (tracked or not ignored) plus the raw data, in a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(ROOT / "data", dest / "data")
    smoke = params.read_params(ROOT / "params.yaml")
    overlay = params.read_params(ROOT / "params.smoke.yaml")
    merged = {section: params._merge(values, overlay.get(section, {})) for section, values in smoke.items()}
    (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"]):
        run(cmd, dest)
    return dest


#: Studies whose stages run in the second copy (the place studies and the data they share); the image
#: studies, then the paper and the front page, run in the first.
SECOND_HALF = ("geodata", "concepts", "gpsmaps", "musecl")


def stage_names(root: Path) -> list[str]:
    listed = run(["dvc", "stage", "list", "--name-only"], root).stdout.split()
    return [name for name in listed if name]


def repro_in_two_halves(dest: Path, scratch: Path) -> None:
    """``dvc repro`` of the whole pipeline, its two independent halves side by side (two cores, two copies).

    The image studies run in ``dest`` while the place studies run in a copy of it that shares ``dest``'s
    DVC cache; their outputs and lock entries then join ``dest`` (no stage of one half depends on the
    other), and a last ``dvc repro`` in ``dest`` runs what reads both: the paper and the front page. The
    tests below then see one checkout, as after a plain ``dvc repro`` (its clean ``dvc status`` and no-op
    second repro check the join).
    """
    other = scratch / "second_half"
    shutil.copytree(dest, other, symlinks=True)
    (other / ".dvc/config.local").write_text(f"[cache]\n    dir = {dest / '.dvc/cache'}\n")
    second_stages = {stage.name for package in SECOND_HALF for stage in _study_stages(package)}
    names = [n for n in stage_names(dest) if n.split("@")[0] not in {"paper", "index"}]
    second = [n for n in names if n.split("@")[0] in second_stages]
    first = [n for n in names if n not in second]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    procs = [subprocess.Popen(["dvc", "repro", *targets], cwd=root, env={**env, "PYTHONPATH": str(root)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for root, targets in ((dest, first), (other, second))]
    outputs = [p.communicate()[0] for p in procs]
    for p, out, root in zip(procs, outputs, (dest, other)):
        if p.returncode != 0:
            raise AssertionError(f"dvc repro in {root.name} failed ({p.returncode}):\n{out[-6000:]}")
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    joined = yaml.safe_load((other / "dvc.lock").read_text())["stages"]
    for name, entry in joined.items():
        if name in lock["stages"]:
            continue
        for out in entry.get("outs", []):
            src, dst = other / out["path"], dest / out["path"]
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        lock["stages"][name] = entry
    (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(other)
    run(["dvc", "repro"], dest)


def _study_stages(package: str) -> list:
    import importlib

    return list(importlib.import_module(f"lib.studies.{package}").STAGES)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = copy_compendium(tmp_path_factory.mktemp("compendium"))
    repro_in_two_halves(dest, tmp_path_factory.mktemp("halves"))
    return dest


def test_outputs(repo: Path):
    metrics = json.loads((repo / "results/diml/summary.json").read_text())
    table = metrics["retrieval"]
    # the ladder's rungs: raw pixels, the margin loss's variants, the classifier bound
    assert set(table) == {"pixels", "margin", "cross_entropy"}
    # the ablations of the structural objective are trained for the margin loss only (diml.ablation)
    assert set(table["margin"]) == {"baseline", "rerank", "structural_global", "structural", "structural_uniform"}
    assert set(metrics["scenes_retrieval"]["margin"]) == {"baseline", "rerank", "structural_global", "structural"}
    for retrieval in (table, metrics["scenes_retrieval"]):
        for variants in retrieval.values():
            for values in variants.values():
                assert set(values) >= {"recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision",
                                       "map_at_r"}
                # every cell a mean over the two seeds with an interval that stays in [0, 1]
                assert all(c["n"] == 2 and 0.0 <= c["low"] <= c["mean"] <= c["high"] <= 1.0 for c in values.values())
    assert metrics["ladders"] and metrics["claims"] and len(metrics["trainings"]) == 14
    assert 0.0 <= metrics["control"]["share"]["mean"] <= 1.0
    for figure in ("training_curves", "retrieval", "rerank_depth", "structural_matches"):
        assert (repo / f"results/diml/figures/{figure}.png").stat().st_size > 10_000
    for variant in ("margin_global", "margin_structural_uniform", "scenes/margin_structural",
                    "mnist5k/cross_entropy_classifier"):
        for seed in (0, 1):
            assert (repo / f"models/diml/{variant}/seed_{seed}.safetensors").exists()
    for stage in ("diml_eval", "diml_train_margin_global", "diml_fit_scenes_margin_structural"):
        assert (repo / f"results/diml/{stage}.html").exists()
        manifest = json.loads((repo / f"results/diml/{stage}.run.json").read_text())
        assert manifest["git"]["revision"] and manifest["parameters"]["seeds"] == [0, 1]
        assert manifest["wall_time_s"] > 0 and manifest["peak_memory_mib"] > 0
        # what the run itself set: setup() seeded, and training seeded again
        assert manifest["determinism"]["seeds"][0] == 0
        assert manifest["determinism"]["settings"]["deterministic_algorithms"] is True
    # each stage's manifest holds the keys it reads, not its whole section
    assert "eval" not in json.loads((repo / "results/diml/diml_train_margin_global.run.json").read_text())["parameters"]
    assert "train" not in json.loads((repo / "results/diml/diml_eval.run.json").read_text())["parameters"]
    assert (repo / "paper/paper.pdf").read_bytes()[:4] == b"%PDF"
    # the geo datasets: both cities with their CRS, map tiles of Helsinki and of the cities
    import rioxarray  # noqa: F401
    import xarray as xr

    for city, crs in (("river_city", "EPSG:3067"), ("coastal_city", "EPSG:32633")):
        with xr.open_dataset(repo / f"datasets/{city}/tiles.nc", engine="h5netcdf", decode_coords="all") as tiles:
            assert tiles.rio.crs.to_string() == crs and tiles.sizes["tile"] == 64
        assert (repo / f"results/cities/city_{city}.html").exists()
    for city in ("river_city",):  # lib.studies.concepts.CITIES
        summary = json.loads((repo / f"results/concepts/{city}/summary.json").read_text())
        assert set(summary["variants"]) == {"rnc", "baseline"} and summary["seeds"] == [0, 1]
        assert {"mean", "low", "high", "n", "values", "method"} <= set(summary["variants"]["rnc"]["r2"])
        assert summary["comparison"]["latent_spearman"]["supported"] in (True, False)
        assert "interval_truth" in summary
        # n_random is one of the candidates, chosen on the validation tiles
        assert summary["tcav"]["n_random"] in (10, 12)
        for variant in ("rnc", "baseline"):
            for seed in (0, 1):
                assert (repo / f"models/concepts/{city}/{variant}/seed_{seed}.safetensors").exists()
        assert (repo / f"results/concepts/{city}/training/training_curves.png").exists()
        assert (repo / f"results/concepts/concepts_eval_{city}.html").exists()
    cocoa = json.loads((repo / "results/cocoa/summary.json").read_text())
    assert {"benchmark", "comparisons", "verdicts", "localisation", "localisation_comparisons", "sanity",
            "sanity_cascade", "recovery", "caption_matching_accuracy", "probe_test_accuracy", "ladders",
            "claims", "trainings"} <= set(cocoa)
    assert cocoa["n_seeds"] == 2 and cocoa["caption_matching_accuracy"]["low"] is not None
    assert cocoa["n_trainings"] == len(cocoa["trainings"]) >= cocoa["n_stopped_at_plateau"]
    for seed in (0, 1):
        assert (repo / f"models/cocoa/simclr/seed_{seed}.safetensors").exists()
    for place in ("helsinki", "river_city", "coastal_city"):
        with xr.open_dataset(repo / f"datasets/maps/{place}.nc", engine="h5netcdf") as maps:
            assert maps.sizes["tile"] == 16
    # musecl: text embeddings per city through the cache, every embedding per city and seed, ladders and claims
    muse = json.loads((repo / "results/musecl/summary.json").read_text())
    assert muse["cities"] == ["river_city", "coastal_city"] and len(muse["seeds"]) == 2
    rows = {row["name"] for ladder in muse["ladders"] for row in ladder["rows"]}
    assert len(muse["ladders"]) == 3 and muse["claims"] and len(rows) > 5
    for city in muse["cities"]:
        for seed in muse["seeds"]:
            with xr.open_dataset(repo / f"datasets/musecl/{city}/seed_{seed}.nc", engine="h5netcdf") as ds:
                for fusion in ("fusion_infonce", "fusion_mse", "fusion_text", "fusion_finetuned"):
                    assert np.allclose(ds[f"attention_{fusion}"].values.sum(1), 1, atol=1e-5)
        # the supervised bound: out-of-fold predictions of the first seed, every region tested by one fold
        with xr.open_dataset(repo / f"datasets/musecl/{city}/supervised_seed_{muse['seeds'][0]}.nc",
                             engine="h5netcdf") as ds:
            assert set(ds["fold"].values) <= set(range(muse["n_folds"])) | {-1}
        assert (repo / f"results/musecl/{city}/figures/pairs.png").stat().st_size > 10_000
        assert (repo / f"results/musecl/{city}/figures/supervised_curves.png").exists()
    bound = next(row for row in muse["ladders"][0]["rows"] if row["rung"] == "bound")
    assert bound["cell"]["n"] == len(muse["cities"]) * muse["n_folds"]  # the first seed only (supervised.n_seeds)
    assert (repo / "datasets/text_cache/minilm.npz").exists()
    assert (repo / "results/index.html").exists()


def test_every_summary_validates_against_its_study_model(repo: Path):
    """Each study that declares its summary.json (``lib/studies/<study>/summary.py::Summary``) wrote every
    summary.json under its results in that schema, and the Holm families were applied."""
    import importlib
    import importlib.util

    checked = []
    for package in params.study_packages():
        if importlib.util.find_spec(f"{package}.summary") is None:
            continue
        module = importlib.import_module(f"{package}.summary")
        study = package.rpartition(".")[2]
        # SCHEMAS: where a study writes summaries of more than one kind (fnmatch pattern of the path under
        # results/<study> -> model); by default every summary.json of the study is a Summary
        schemas = getattr(module, "SCHEMAS", {"*summary.json": module.Summary})
        found = sorted((repo / "results" / study).glob("**/summary.json"))
        assert found, f"{study} declares a Summary but wrote no results/{study}/**/summary.json"
        for path in found:
            relative = path.relative_to(repo / "results" / study).as_posix()
            matching = [m for pattern, m in schemas.items() if fnmatch.fnmatchcase(relative, pattern)]
            assert matching, f"{path} matches none of {study}'s summary schemas {list(schemas)}"
            matching[0].model_validate_json(path.read_text())  # raises, naming the field, on any mismatch
            checked.append(path.relative_to(repo).as_posix())
            cells = [c for c in _comparison_cells(json.loads(path.read_text())) if c["p_value"] is not None]
            assert all(c["p_holm"] is not None and c["p_holm"] >= c["p_value"] for c in cells), path
    assert {"results/diml/summary.json", "results/cocoa/summary.json", "results/concepts/river_city/summary.json"} <= set(checked)


def _comparison_cells(node) -> list[dict]:
    """Every paired-comparison cell (a mapping with ``p_holm``) anywhere in a summary's JSON."""
    if isinstance(node, dict):
        return [node] if "p_holm" in node else [c for v in node.values() for c in _comparison_cells(v)]
    if isinstance(node, list):
        return [c for v in node for c in _comparison_cells(v)]
    return []


def test_status_clean_and_second_repro_is_a_no_op(repo: Path):
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again, again


def test_a_stage_run_twice_gives_identical_bytes(repo: Path, tmp_path: Path):
    """The design's promise on the CPU: a stage run again gives the same weights, metrics, figures and paper.

    The paper's compute section lists the stages' timings, which differ run to run: the paper compiled
    without the run manifests (no compute table) is what must not change."""
    from lib.paper import compile_paper

    files = ["models/diml/margin_global/seed_0.safetensors", "results/diml/metrics.json", "results/diml/summary.json",
             "results/diml/figures/retrieval.png", "results/diml/plots/validation_map_at_r.csv"]
    before = {f: (repo / f).read_bytes() for f in files}
    paper_before = compile_paper(repo / "paper/paper.typ", tmp_path / "before.pdf", manifest_paths=[]).read_bytes()
    # index too: it reads the run manifests, which a rerun rewrites (later tests expect a clean `dvc status`)
    run(["dvc", "repro", "--force", "--single-item", "diml_train@margin-global", "diml_eval", "paper", "index"], repo)
    changed = [f for f in files if (repo / f).read_bytes() != before[f]]
    assert not changed, f"a second run changed {changed}"
    paper_after = compile_paper(repo / "paper/paper.typ", tmp_path / "after.pdf", manifest_paths=[]).read_bytes()
    assert paper_after == paper_before, "a second run changed the paper beyond its compute table"


def test_paper_numbers_figures_and_citations_trace_to_the_run(repo: Path):
    """The paper of the smoke run: every number in its generated sections comes from a results file, every
    figure file exists, every citation key resolves (the checks of tests/test_paper.py, on the real paper)."""
    import importlib.util

    from lib.paper import paper_inputs

    spec = importlib.util.spec_from_file_location("paper_checks", ROOT / "tests" / "test_paper.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    source, inputs = repo / "paper/paper.typ", paper_inputs(repo)
    texts = checks.generated_text(source, repo, inputs)
    assert any("Claims against the evidence" in t for t in texts) and any("Compute" in t for t in texts)
    untraced = checks.untraced_numbers(texts, checks.results_numbers(repo))
    assert not untraced, untraced
    assert not checks.missing_figures(source, repo, inputs)
    assert not checks.unresolved_citations(source, repo, inputs, repo / "paper/refs.yml")


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file of the checkout (git's and DVC's), DVC's and git's own folders and scratch/ aside."""
    skip = {".git", ".dvc", "scratch"}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] not in skip
    }


def test_a_notebook_run_by_hand_leaves_the_pipeline_outputs_alone(repo: Path, tmp_path: Path):
    """Run by hand as in JupyterLab (from its folder, no injected parameters: the smoke profile),
    an evaluation notebook writes under scratch/; no tracked or DVC-tracked file changes. (musecl's: the
    smoke pipeline's quickest evaluation that reads the outputs of several upstream stages.)"""
    before = snapshot(repo)
    run([str(BIN / "jupyter-nbconvert"), "--to", "notebook", "--execute", "--output-dir", str(tmp_path),
         "notebooks/musecl/musecl_eval.ipynb"], repo)
    assert snapshot(repo) == before
    assert (repo / "scratch/results/musecl/metrics.json").exists()
    assert (repo / "scratch/datasets/musecl/river_city/seed_0.nc").exists()  # an input, copied
    assert "scratch" not in run(["git", "status", "--porcelain"], repo).stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_rendered_notebooks_are_complete_and_rerun_under_nbval(repo: Path):
    """Every stage leaves a complete rendered notebook, and a rendered notebook reruns outside papermill.

    Papermill has already executed each rendered notebook, parameters included, so
    re-executing all of them would repeat the whole pipeline; nbval reruns one
    training notebook (torch, a study package, weights written), the rest are
    checked for what a reader needs: the python3 kernel spec, the injected
    parameters, every code cell executed and no error output.
    """
    import nbformat

    rendered = sorted(p for p in (repo / "results").glob("*/*.ipynb") if "failed" not in p.name)
    # Every stage of dvc.yaml renders one notebook, except the paper and the front page.
    names = run(["dvc", "stage", "list", "--name-only"], repo).stdout.split()
    assert len(rendered) == len([n for n in names if n not in ("paper", "index")]), (names, rendered)
    for path in rendered:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata.kernelspec.name == "python3", path
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in code), f"{path}: no injected parameters"
        assert all(c.execution_count is not None for c in code), f"{path}: a code cell did not run"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    notebook = repo / "results/diml/diml_train_margin_global.ipynb"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--rootdir", str(repo), str(notebook)], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_metrics_show_lists_each_study_with_a_few_headline_numbers(repo: Path):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(shown.values()))["data"]
    studies = {path.split("/")[1] for path in files}
    assert {"diml", "concepts", "cocoa"} <= studies, files.keys()
    for path, content in files.items():
        leaves = sum(1 for _ in index.flatten(content["data"]))
        assert 4 <= leaves <= 20, f"{path} has {leaves} numbers: headline metrics should be a dozen or so"


def test_plots_show_renders_the_declared_data_plots(repo: Path):
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    for plot in declared:
        spec = next(iter(plot.values()))
        for path, columns in spec["y"].items():
            header = (repo / path).read_text().splitlines()[0].split(",")
            wanted = [spec["x"], *([columns] if isinstance(columns, str) else columns)]
            assert set(wanted) <= set(header), f"{path} lacks {set(wanted) - set(header)}"
    out = repo / "plots_html"
    done = run(["dvc", "plots", "show", "-o", str(out)], repo)
    assert "ERROR" not in done.stdout + done.stderr
    page = (out / "index.html").read_text()
    assert page.count("vega") > 0 and "DIML validation MAP@R per epoch" in page


def test_front_page_links_resolve_to_files_of_the_run(repo: Path):
    page = (repo / "results/index.html").read_text()
    links = re.findall(r'(?:href|src)="([^"#][^"]*)"', page)
    assert any(link.endswith(".html") for link in links) and any(link.endswith(".png") for link in links)
    assert "../paper/paper.pdf" in links
    for link in links:
        assert (repo / "results" / link).resolve().is_file(), link
    for study in ("diml", "concepts", "cocoa", "geodata"):
        assert f'id="{study}"' in page


def test_exp_show_reads_the_committed_metrics_of_a_commit(repo: Path):
    """metrics.json and plot data are git-tracked, so a commit (and an experiment) carries them."""
    tracked = run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout
    assert "results/diml/metrics.json" in tracked and "results/diml/plots/validation_map_at_r.csv" in tracked
    assert "summary.json" not in tracked and "tables/" not in tracked  # the rest stays with DVC
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke run"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    commit = next(row for row in shown if row["rev"] != "workspace")
    values = commit["data"]["metrics"]["results/diml/metrics.json"]["data"]
    assert isinstance(values["margin"]["baseline"]["recall_at_1"], float)


def test_a_clone_pulls_every_output_and_reruns_nothing(repo: Path, tmp_path: Path):
    """README's "Share results through a DVC remote": push to a remote, git clone, dvc pull, and
    the clone is complete (run manifests included) and up to date: nothing to recompute."""
    remote, clone = tmp_path / "remote", tmp_path / "clone"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], repo)
    run(["dvc", "commit", "--force", "data.dvc"], repo)  # the raw data was copied in, not restored by DVC
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], repo)
    run(["dvc", "push"], repo)
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for path in ("results/diml/diml_eval.run.json", "results/cities/city_river_city.run.json",
                 "models/diml/margin_global/seed_1.safetensors", "datasets/text_cache/minilm.npz", "data/mnist"):
        assert (clone / path).exists(), path
    assert (clone / "results/diml/diml_eval.run.json").read_bytes() == (repo / "results/diml/diml_eval.run.json").read_bytes()
    status = run(["dvc", "status"], clone).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again


def test_an_evaluation_parameter_reruns_only_the_evaluation(repo: Path):
    """The README's promise: `dvc exp run -S key=value` reruns only the stages that read the key.

    The second key is a float as DVC writes it, `1e-05` (a number in YAML 1.2 and to the
    compendium's reader, a string to PyYAML's YAML 1.1): the stage must read it as a number.
    Runs last: the experiment leaves its results in the workspace.
    """
    smoke_k = params.read_params(repo / "params.yaml")["diml"]["eval"]["rerank_k"]
    done = run(["dvc", "exp", "run", "-S", f"diml.eval.rerank_k={smoke_k - 5}", "-S", "diml.eval.rerank_weight=1e-5"],
               repo)
    ran = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"diml_eval", "paper", "index"}, done.stdout[-3000:]
    metrics = json.loads((repo / "results/diml/summary.json").read_text())
    assert metrics["rerank_k"] == smoke_k - 5
    assert "rerank_weight: 1e-05" in (repo / "params.yaml").read_text()
    manifest = json.loads((repo / "results/diml/diml_eval.run.json").read_text())
    assert manifest["parameters"]["eval"]["rerank_weight"] == 1e-05
