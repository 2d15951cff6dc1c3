"""The gpsmaps summary: built from a probe table, validated, written, and readable by the paper's section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lib.studies.gpsmaps.params import VARIANTS
from lib.studies.gpsmaps.summary import COORDINATE_ENCODINGS, HEADLINE, Summary, summarise, write_summary

ORDER = [*VARIANTS, "random_init", *COORDINATE_ENCODINGS]
TARGETS = {"land_price": "regression", "environment_index": "regression", "landcover_at_centre": "classification"}
SECTION = Path(__file__).parents[3] / "paper" / "sections" / "gpsmaps.typ"


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for target, task in TARGETS.items():
        for name in ORDER:
            metric = "r2" if task == "regression" else "accuracy"
            other = ("rmse", "mae") if task == "regression" else ("macro_f1",)
            row = {"features": name, "target": target, "task": task,
                   f"{metric}_mean": rng.uniform(-0.2, 0.9), f"{metric}_sd": rng.uniform(0.01, 0.2)}
            row.update({f"{o}_{s}": rng.uniform(0, 1) for o in other for s in ("mean", "sd")})
            rows.append(row)
    results = pd.DataFrame(rows)
    maps = pd.DataFrame({"kept": rng.random(300) > 0.2, "holdout": rng.random(300) > 0.6})
    histories = {v: pd.DataFrame({"epoch": [1, 2], "teacher_entropy": rng.uniform(0, 6, 2),
                                  "embedding_std": rng.uniform(0, 0.2, 2), "loss_dino": rng.uniform(1, 7, 2),
                                  "loss_total": rng.uniform(1, 9, 2)}) for v in VARIANTS}
    return results, maps, histories


def test_summary_holds_what_the_probe_table_and_the_histories_say():
    results, maps, histories = _inputs()
    summary = summarise(results, maps, 5, histories, ORDER)
    assert summary.n_maps == 300 and summary.n_folds == 5
    assert summary.dropped_by_entropy == int((~maps["kept"]).sum())
    assert summary.n_heldout == int(maps["holdout"].sum())
    assert summary.metric == {"land_price": "r2", "environment_index": "r2", "landcover_at_centre": "accuracy"}
    for target, task in TARGETS.items():
        metric = summary.metric[target]
        rows = results[results["target"] == target].set_index("features")
        for name in ORDER:
            score = summary.scores[name][target]
            assert score.metric == metric
            assert score.mean == round(rows.loc[name, f"{metric}_mean"], 4)
            assert score.sd == round(rows.loc[name, f"{metric}_sd"], 4)
        # the best of each family, by a plain search over the table
        assert summary.best_map_variant[target] == rows.loc[list(VARIANTS), f"{metric}_mean"].idxmax()
        assert summary.best_coordinate_encoding[target] == rows.loc[list(COORDINATE_ENCODINGS),
                                                                    f"{metric}_mean"].idxmax()
    for variant, history in histories.items():
        assert summary.final_epoch[variant].loss_dino == round(history["loss_dino"].iloc[-1], 4)
        assert summary.final_epoch[variant].teacher_entropy == round(history["teacher_entropy"].iloc[-1], 4)
    assert set(summary.headline()) == set(HEADLINE)
    assert summary.headline()["full"]["land_price"] == summary.scores["full"]["land_price"].mean


def test_written_summary_round_trips_and_metrics_hold_the_headline(tmp_path):
    results, maps, histories = _inputs(1)
    summary = summarise(results, maps, 4, histories, ORDER)
    write_summary(summary, tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert Summary.model_validate(written) == summary
    assert json.loads((tmp_path / "metrics.json").read_text()) == summary.headline()


def test_the_papers_section_reads_only_keys_the_summary_has():
    text = SECTION.read_text()
    top = set(re.findall(r"\bgps\.(\w+)", text))
    assert top and top <= set(Summary.model_fields), top - set(Summary.model_fields)
    # rows of its table and of its sentences: scores of feature sets the study reports, read as mean and sd
    rows = re.search(r"#let rows = \(([^)]*)\)", text).group(1)
    assert set(re.findall(r'"(\w+)"', rows)) == set(ORDER)
    assert set(re.findall(r"\bs\.(\w+)", text)) <= {"mean", "sd"}
    assert "final_epoch.full.teacher_entropy" in text


def test_an_inconsistent_summary_is_refused_naming_what_is_wrong():
    results, maps, histories = _inputs(2)
    good = summarise(results, maps, 5, histories, ORDER).model_dump()
    bad_best = {**good, "best_map_variant": {**good["best_map_variant"], "land_price": "rff"}}
    with pytest.raises(ValidationError, match="best_map_variant"):
        Summary.model_validate(bad_best)
    only_price = {"land_price": good["scores"]["full"]["land_price"]}
    missing_target = {**good, "scores": {**good["scores"], "full": only_price}}
    with pytest.raises(ValidationError, match=r"scores\['full'\]"):
        Summary.model_validate(missing_target)
    with pytest.raises(ValidationError, match="extra"):
        Summary.model_validate({**good, "verdict": "wins"})
    with pytest.raises(ValueError, match="no probe result for features 'tile2vec'"):
        summarise(results, maps, 5, histories, [*ORDER, "tile2vec"])
    with pytest.raises(ValueError, match="lacks"):
        summarise(results, maps, 5, {"full": histories["full"].drop(columns="embedding_std")}, ORDER)
