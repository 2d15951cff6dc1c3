"""The front page (lib.index): a section per study with its numbers, figures and notebooks; links resolve."""

import json
import re
from pathlib import Path

from lib import index


def make_run(root: Path) -> Path:
    """A compendium root with the outputs of a few stages."""
    (root / "dvc.yaml").write_text("stages: {}\n")
    diml = root / "results" / "diml"
    (diml / "figures").mkdir(parents=True)
    (diml / "figures" / "retrieval.png").write_bytes(b"\x89PNG")
    (diml / "metrics.json").write_text(json.dumps(
        {"margin": {"baseline": {"recall_at_1": 0.86, "map_at_r": 0.359}, "rerank": {"recall_at_1": 0.874, "map_at_r": None}},
         "probe_accuracy": 0.936, "gap": -0.0}))
    (diml / "diml_eval.html").write_text("<html></html>")
    (diml / "diml_eval.run.json").write_text(json.dumps(
        {"git": {"revision": "0123456789abcdef", "dirty": True}, "device": "cpu", "wall_time_s": 23.1, "peak_memory_mib": 812.0}))
    (diml / "diml_train_margin_global.html").write_text("<html></html>")  # no manifest
    (root / "paper").mkdir()
    (root / "paper" / "paper.pdf").write_bytes(b"%PDF")
    return root


def test_flatten_gives_every_leaf_its_path():
    assert list(index.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3})) == [(("a", "b"), 1), (("a", "c", "d"), 2), (("e",), 3)]


def test_page_shows_numbers_figures_and_runs_and_every_link_resolves(tmp_path):
    root = make_run(tmp_path)
    page = index.build_index(root)
    assert '<h2 id="diml">DIML: structural matching' in page and "<nav>" in page
    assert "<td>margin / baseline</td><td>0.86</td><td>0.359</td>" in page
    assert "&ndash;" in page  # a missing number is shown as such
    assert "<td>probe_accuracy</td><td>&ndash;</td><td>&ndash;</td><td>0.936</td>" in page  # top-level numbers: a row each
    assert "<td>gap</td><td>&ndash;</td><td>&ndash;</td><td>0</td>" in page
    assert "01234567 (dirty)" in page and "23 s" in page and "no run manifest" in page
    links = re.findall(r'(?:href|src)="([^"#][^"]*)"', page)
    assert "diml/figures/retrieval.png" in links and "../paper/paper.pdf" in links
    for link in links:
        assert (root / "results" / link).resolve().exists(), link
    assert "http" not in page  # self-contained: nothing fetched


def test_main_writes_the_page_atomically(tmp_path, monkeypatch):
    root = make_run(tmp_path)
    monkeypatch.chdir(root)
    assert index.main(["results/index.html"]) == 0
    assert (root / "results" / "index.html").read_text().startswith("<!DOCTYPE html>")
    assert index.main([]) == 2


def test_a_study_with_a_summary_shows_its_headlines_with_intervals_and_meaning(tmp_path):
    from lib.eval.intervals import comparison_cell, holm, interval_cell
    from lib.studies.diml.summary import DepthSweep, Summary

    root = make_run(tmp_path)
    base, method = [0.80, 0.82, 0.81], [0.86, 0.88, 0.865]
    cells = {v: {"recall_at_1": interval_cell(x, bounds=(0.0, 1.0))} for v, x in (("baseline", base), ("structural", method))}
    (compared,) = holm([comparison_cell(method, base, a="structural", b="baseline")])
    summary = Summary(seeds=[0, 1, 2], retrieval={"margin": cells},
                      comparisons={"margin": {"structural_vs_baseline": {"recall_at_1": compared}}},
                      holm_families={"variants": 1, "variants_other_metrics": 0, "depth_sweep": 0},
                      depth_sweep=DepthSweep(depths=[0], metrics={}, vs_unranked={}), r_min=499, r_max=512, n_test=2500,
                      n_queries=500, rerank_k=100, rerank_weight=1.0, epsilon=0.05, global_weight=0.5,
                      test_classes=[5, 6], objectives=["global", "structural"], ablation={}, epochs=4, best_epochs={}, beta={})
    (root / "results" / "diml" / "summary.json").write_text(summary.model_dump_json())
    page = index.build_index(root)
    low, high = cells["baseline"]["recall_at_1"].low, cells["baseline"]["recall_at_1"].high
    assert f"<td>margin / baseline: Recall@1 (%)</td><td>81.0 [{100 * low:.1f}, {100 * high:.1f}]</td>" in page
    assert "the whole method against the baseline, paired by seed: supported (Holm over 1)" in page
    assert "<td>margin / baseline</td><td>0.86</td>" not in page  # the headlines replace the bare metrics.json table
