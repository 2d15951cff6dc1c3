"""The whole pipeline, end to end, in a temporary copy of the compendium.

Runs ``dvc repro`` on the smoke profile (params.smoke.yaml merged into
params.yaml), checks the outputs a reader relies on, that ``dvc status`` is
clean and a second ``dvc repro`` does nothing, checks the rendered notebooks
(complete, and one rerun with nbval, lax: it must run, outputs are not compared), and last that
``dvc exp run -S diml.eval.rerank_k=...`` reruns only the stages that read it;
in between, what DVC users compare runs by: ``dvc metrics show`` (a few
headline numbers per study), ``dvc plots show``, ``dvc exp show`` on a commit,
and the front page ``results/index.html`` whose links all resolve.
"""

from __future__ import annotations

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
    smoke = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "params.smoke.yaml").read_text())
    merged = {section: params._merge(values, overlay.get(section, {})) for section, values in smoke.items()}
    (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"]):
        run(cmd, dest)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = copy_compendium(tmp_path_factory.mktemp("compendium"))
    run(["dvc", "repro"], dest)
    return dest


def test_outputs(repo: Path):
    metrics = json.loads((repo / "results/diml/summary.json").read_text())
    table = metrics["retrieval"]
    assert set(table) == {"margin", "multi_similarity"}
    # the ablations of the structural objective are trained for the margin loss only (diml.ablation)
    assert set(table["margin"]) == {"baseline", "rerank", "structural_global", "structural", "structural_pure",
                                    "structural_uniform"}
    assert set(table["multi_similarity"]) == {"baseline", "rerank", "structural_global", "structural"}
    for variants in table.values():
        for values in variants.values():
            assert set(values) >= {"recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "r_precision", "map_at_r", "nmi"}
            assert all(0.0 <= v <= 1.0 for v in values.values())
    for figure in ("training_curves", "retrieval", "rerank_depth", "structural_matches"):
        assert (repo / f"results/diml/figures/{figure}.png").stat().st_size > 10_000
    for variant in ("margin_global", "margin_structural_pure", "multi_similarity_structural"):
        for seed in (0, 1):
            assert (repo / f"models/diml/{variant}/seed_{seed}.safetensors").exists()
    for stage in ("diml_eval", "diml_train_margin_global", "diml_train_multi_similarity_structural"):
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
    for city in ("river_city", "coastal_city"):
        summary = json.loads((repo / f"results/concepts/{city}/summary.json").read_text())
        assert set(summary["variants"]) == {"rnc", "baseline"} and summary["seeds"] == [0, 1]
        assert set(summary["variants"]["rnc"]["r2"]) == {"mean", "ci95", "per_seed", "n_seeds"}
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
            "caption_matching_accuracy", "probe_test_accuracy"} <= set(cocoa)
    assert cocoa["n_seeds"] == 2 and cocoa["caption_matching_accuracy"]["ci95"] is not None
    for seed in (0, 1):
        assert (repo / f"models/cocoa/simclr/seed_{seed}.safetensors").exists()
    for place in ("helsinki", "river_city", "coastal_city"):
        with xr.open_dataset(repo / f"datasets/maps/{place}.nc", engine="h5netcdf") as maps:
            assert maps.sizes["tile"] == 16
    # musecl: text embeddings per city through the cache, every embedding per city, probes against the truth
    muse = json.loads((repo / "results/musecl/summary.json").read_text())
    assert set(muse["mean_r2"]["ridge"]) >= {"fusion_infonce", "fusion_mse", "aerial", "street_view", "poi_text"}
    assert len(muse["scores"]) == 2 * 9 * 2 * 3  # probes x feature sets x targets x cities
    for city in ("river_city", "coastal_city", "lake_city"):
        with xr.open_dataset(repo / f"datasets/musecl/{city}/embeddings.nc", engine="h5netcdf") as ds:
            weights = ds["attention_fusion_infonce"].values
            assert np.allclose(weights.sum(1), 1, atol=1e-5)
        assert (repo / f"results/musecl/{city}/figures/pairs.png").stat().st_size > 10_000
    assert (repo / "datasets/text_cache/minilm.npz").exists()
    assert (repo / "results/index.html").exists()


def test_status_clean_and_second_repro_is_a_no_op(repo: Path):
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again, again


def test_a_stage_run_twice_gives_identical_bytes(repo: Path):
    """The design's promise on the CPU: a stage run again gives the same weights, metrics, figures and paper."""
    files = ["models/diml/margin_global/seed_0.safetensors", "results/diml/metrics.json", "results/diml/summary.json",
             "results/diml/figures/retrieval.png", "results/diml/plots/validation_map_at_r.csv", "paper/paper.pdf"]
    before = {f: (repo / f).read_bytes() for f in files}
    run(["dvc", "repro", "--force", "--single-item", "diml_train@margin-global", "diml_eval", "paper"], repo)
    changed = [f for f in files if (repo / f).read_bytes() != before[f]]
    assert not changed, f"a second run changed {changed}"


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


def test_an_evaluation_parameter_reruns_only_the_evaluation(repo: Path):
    """The README's promise: `dvc exp run -S key=value` reruns only the stages that read the key.

    Runs last: the experiment leaves its results in the workspace.
    """
    smoke_k = yaml.safe_load((repo / "params.yaml").read_text())["diml"]["eval"]["rerank_k"]
    done = run(["dvc", "exp", "run", "-S", f"diml.eval.rerank_k={smoke_k - 5}"], repo)
    ran = {line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"diml_eval", "paper", "index"}, done.stdout[-3000:]
    metrics = json.loads((repo / "results/diml/summary.json").read_text())
    assert metrics["rerank_k"] == smoke_k - 5
