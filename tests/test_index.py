"""The front page (lib.index): the claims against the evidence first, then a section per study with its numbers
(ladders, headlines or metrics), figures (OpenStreetMap-derived ones credited) and notebooks; links resolve."""

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


def test_a_study_with_a_summary_shows_its_headlines_with_intervals_and_meaning(tmp_path, monkeypatch):
    """Without ladders, the rows of the study's ``headlines`` (what, value, meaning) replace its metrics.json."""
    import lib.studies.diml.summary as diml_summary
    from lib.eval.intervals import interval_cell

    root = make_run(tmp_path)
    cell = interval_cell([0.80, 0.82, 0.81], bounds=(0.0, 1.0))
    monkeypatch.setattr(diml_summary, "headlines", lambda results: [
        ("margin / baseline: Recall@1 (%)", cell.format(1, 100), "unseen digits, global model, global retrieval")])
    (root / "results" / "diml" / "summary.json").write_text("{}")
    page = index.build_index(root)
    assert (f"<td>margin / baseline: Recall@1 (%)</td><td>81.0 [{100 * cell.low:.1f}, {100 * cell.high:.1f}]</td>"
            "<td class=meaning>unseen digits, global model, global retrieval</td>") in page
    assert "<td>margin / baseline</td><td>0.86</td>" not in page  # the headlines replace the bare metrics.json table


def _ladder_and_claims():
    from lib.eval.claims import Claim, Ladder, LadderRow, verdict_of
    from lib.eval.intervals import comparison_cell, holm, interval_cell

    trivial, method = [0.41, 0.40, 0.43], [0.61, 0.60, 0.62]
    (compared,) = holm([comparison_cell(method, trivial, a="structural", b="raw pixels", bounds=(0.0, 1.0))])
    ladder = Ladder(title="Unseen digits", metric="Recall@1", rows=[
        LadderRow(name="raw pixels", rung="trivial", cell=interval_cell(trivial, bounds=(0.0, 1.0)),
                  note="nearest neighbour on pixels"),
        LadderRow(name="structural", rung="method", cell=interval_cell(method, bounds=(0.0, 1.0)), note="the method"),
        LadderRow(name="supervised", rung="bound", cell=None, note="not trained on this budget")],
        comparisons=[compared])
    claims = [Claim(study="diml", claim="structural matching beats raw pixels", original="R@1 0.67 on CUB",
                    evidence=compared, verdict=verdict_of(compared, +1), where="Table 1"),
              Claim(study="diml", claim="it explains parts", original="qualitative", evidence=None,
                    verdict="not testable here", reason="data: digits have no annotated parts")]
    return ladder, claims


def test_page_opens_with_the_claims_and_shows_ladders_with_meanings(tmp_path):
    root = make_run(tmp_path)
    ladder, claims = _ladder_and_claims()
    (root / "results" / "diml" / "summary.json").write_text(json.dumps(
        {"ladders": [json.loads(ladder.model_dump_json())], "claims": [json.loads(c.model_dump_json()) for c in claims]}))
    page = index.build_index(root)
    # the claims table comes before any study section, every study with a summary module in it
    assert page.index("<table class=claims>") < page.index('<h2 id="diml">')
    assert "structural matching beats raw pixels" in page and "R@1 0.67 on CUB" in page
    assert '<td class="reproduced">reproduced</td>' in page
    assert '<td class="not-testable-here">not testable here</td><td>data: digits have no annotated parts</td>' in page
    assert page.count(index.NOT_ASSESSED) == 4  # cocoa, concepts, gpsmaps, musecl: no summary with claims
    # the ladder replaces the raw metrics.json keys: values with intervals and a one-line meaning
    cell = ladder.rows[0].cell
    assert (f"<td>raw pixels</td><td>{cell.format(3)}</td><td class=meaning>nearest neighbour on pixels</td>") in page
    assert "difference paired by seed: supported after Holm's correction" in page
    assert "<td>margin / baseline</td>" not in page


def test_figures_made_from_openstreetmap_data_carry_the_credit(tmp_path):
    import shutil

    root = make_run(tmp_path)
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", root / "params.yaml")
    derived = index.osm_derived(root)
    assert "datasets/maps" in derived and "results/maps/figures" in derived and "results/gpsmaps/figures" in derived
    assert not any(p.startswith(("results/diml", "results/cities", "results/concepts")) for p in derived)
    for folder in ("maps/figures", "cities/river_city"):
        (root / "results" / folder).mkdir(parents=True)
    (root / "results" / "maps" / "figures" / "map_rows.png").write_bytes(b"\x89PNG")
    (root / "results" / "cities" / "river_city" / "mosaic.png").write_bytes(b"\x89PNG")
    page = index.build_index(root)
    credited = re.findall(r'<img src="([^"]+)"[^>]*><span>[^<]*</span><span class=credit>', page)
    assert credited == ["maps/figures/map_rows.png"]
    assert index.OSM_CREDIT in page and "cities/river_city/mosaic.png" in page
    (root / "params.yaml").unlink()
    assert index.osm_derived(root) == []  # no params.yaml: no option values to follow the stages by
