"""The gpsmaps summary: ladders with every rung, Holm-corrected comparisons, claims, the budget curve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.eval.claims import RUNGS
from lib.eval.intervals import comparison_cell
from lib.studies.gpsmaps.summary import POOLED, ROWS, Summary, summarise, write_summary

TARGETS, TRANSFER = ["income", "liveability", "environment_index"], ["land_price"]
SEEDS, FOLDS = [0, 1, 2], 5
SECTION = Path(__file__).parents[3] / "paper" / "sections" / "gpsmaps.typ"
UNTRAINED = ("coordinates", "coordinates_mlp", "rff", "pixels", "histogram", "class_fractions")


def _inputs(seed: int = 0, lift: float = 0.3):
    rng = np.random.default_rng(seed)
    scores = {}
    for name in ROWS:
        if name == "oracle":
            continue
        n_seeds = 1 if name in UNTRAINED else len(SEEDS)
        base = lift if name == "full" else 0.0
        scores[name] = base + rng.normal(0.2, 0.05, (n_seeds, FOLDS, 4))
    oracle = {t: [0.8, 0.7, 0.9] for t in [*TARGETS, *TRANSFER]}
    budget = {("full", 4, 40): scores["full"] - 0.1, ("full", 16, 160): scores["full"],
              ("dino", 4, 40): scores["dino"], ("dino", 16, 160): scores["dino"]}
    maps = pd.DataFrame({"kept": rng.random(300) > 0.2, "holdout": rng.random(300) > 0.6})
    histories = {v: pd.DataFrame({"epoch": [1, 2, 3, 4], "loss_dino": [6.0, 5.0, 4.0, 3.9],
                                  "loss_total": [9.0, 7.0, 6.0, 5.9], "embedding_std": [0.1] * 4})
                 for v in ("full", "dino")}
    return scores, oracle, budget, histories, maps


def _args(seed: int = 0, lift: float = 0.3):
    scores, oracle, budget, histories, maps = _inputs(seed, lift)
    return scores, TARGETS, TRANSFER, oracle, budget, histories, maps


def test_every_ladder_has_its_rows_in_rung_order_and_the_holm_corrected_comparisons():
    summary = summarise(*_args(), SEEDS)
    titles = [lad.title for lad in summary.ladders]
    assert titles == [POOLED, "income", "liveability", "environment index", "land price (supervised transfer)"]
    for lad in summary.ladders:
        assert [r.name for r in lad.rows] == [label for _, label in ROWS.values()]
        assert {r.rung for r in lad.rows} == set(RUNGS)
        assert all(c.p_holm is not None and c.p_holm >= c.p_value for c in lad.comparisons)
    pooled = summary.ladders[0]
    full = next(r for r in pooled.rows if r.name == ROWS["full"][1])
    scores = _inputs()[0]
    # A cell: folds' R^2 averaged over seeds, then over the outcomes no training sees; n = folds.
    expected = scores["full"][..., :3].mean(-1).mean(0)
    np.testing.assert_allclose(full.cell.values, expected)
    assert full.cell.n == FOLDS
    raw = comparison_cell(expected, scores["random_init"][..., :3].mean(-1).mean(0), a="x", b="y")
    stored = next(c for c in pooled.comparisons if c.b == ROWS["random_init"][1])
    assert stored.difference == pytest.approx(raw.difference) and stored.p_value == pytest.approx(raw.p_value)


def test_claims_follow_the_comparisons_and_the_budget_curve_compares_with_random_weights():
    summary = summarise(*_args(lift=0.5), SEEDS)
    verdicts = {c.claim: c.verdict for c in summary.claims}
    assert verdicts["GPS embeddings learned from maps beat the same encoder with random weights"] == "reproduced"
    assert all(c.verdict == "reproduced" for c in summary.claims)
    flat = summarise(*_args(lift=0.0), SEEDS)
    assert any(c.verdict == "not reproduced" and c.reason for c in flat.claims)
    assert [(p.training, p.step) for p in summary.budget] == [("dino", 40), ("dino", 160), ("full", 40), ("full", 160)]
    assert all(p.versus_random.b == "random-weight encoder" for p in summary.budget)
    assert summary.plateau["full"] == pytest.approx(abs(5.9 - 6.0) / 6.0, abs=1e-4)


def test_written_summary_round_trips_and_bad_scores_are_refused(tmp_path):
    scores, oracle, budget, histories, maps = _inputs(1)
    summary = summarise(scores, TARGETS, TRANSFER, oracle, budget, histories, maps, SEEDS)
    write_summary(summary, tmp_path)
    assert Summary.model_validate(json.loads((tmp_path / "summary.json").read_text())) == summary
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary.headline()
    with pytest.raises(ValueError, match=r"scores\['full'\] must be"):
        summarise({**scores, "full": scores["full"][..., :2]}, TARGETS, TRANSFER, oracle, budget, histories, maps, SEEDS)


def test_the_papers_section_reads_only_keys_the_summary_has():
    text = SECTION.read_text()
    top = set(re.findall(r"\bgps\.(\w+)", text))
    assert top and top <= set(Summary.model_fields), top - set(Summary.model_fields)
    assert "OpenStreetMap" in text
