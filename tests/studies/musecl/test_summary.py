"""musecl's summary.json files: built from synthetic probe tables and training results, checked against loops
over the rows, validated, and holding every key paper/sections/musecl.typ reads."""

from __future__ import annotations

import json
import re
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lib.data import semantic_pairs as sp
from lib.studies.musecl import evaluate as ev
from lib.studies.musecl import summary as S
from lib.studies.musecl.train import EncoderResult

CITIES = ("river_city", "lake_city")
TARGETS = ["income", "land_price"]
TYPST = Path(__file__).resolve().parents[3] / "paper" / "sections" / "musecl.typ"


def probe_rows(seed: int = 0) -> pd.DataFrame:
    """What musecl_eval's probes give: one row per city, outcome, probe and feature set."""
    rng = np.random.default_rng(seed)
    rows = [{"features": name, "target": target, "probe": probe, "city": city,
             "r2_mean": rng.uniform(-0.1, 0.9), "r2_sd": rng.uniform(0.01, 0.2),
             "rmse_mean": rng.uniform(0.5, 2.0), "mae_mean": rng.uniform(0.3, 1.5)}
            for city, target, probe, name in product(CITIES, TARGETS, ("ridge", "mlp"), ev.FEATURE_SETS)]
    return pd.DataFrame(rows)


def truth_tables(seed: int = 1) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    columns = ("aerial", "street_view", "poi", "mobility", "all_factors", "ceiling")
    return {city: ev.truth_table({t: {c: float(rng.uniform(0, 1)) for c in columns} for t in TARGETS}, TARGETS)
            for city in CITIES}


def build(results=None, truth=None) -> S.Summary:
    return S.summarise(probe_rows() if results is None else results, truth_tables() if truth is None else truth,
                       TARGETS, n_folds=5, block_m=480.0)


def test_means_best_single_modality_and_verdicts_match_loops_over_the_rows():
    results, truth = probe_rows(), truth_tables()
    summary = build(results, truth)
    for probe, name in product(("ridge", "mlp"), ev.FEATURE_SETS):
        cells = [r.r2_mean for r in results.itertuples() if r.probe == probe and r.features == name]
        assert summary.mean_r2[probe][name] == pytest.approx(np.mean(cells), abs=5e-5)
        for target in TARGETS:
            per_city = [r.r2_mean for r in results.itertuples()
                        if r.probe == probe and r.features == name and r.target == target]
            assert summary.mean_over_cities[probe][name][target] == pytest.approx(np.mean(per_city), abs=5e-5)
    assert list(summary.mean_r2["ridge"]) == list(ev.FEATURE_SETS)
    singles = {name: summary.mean_r2["ridge"][name] for name in ev.SINGLE_MODALITIES}
    assert summary.best_single_modality == max(singles, key=singles.get)

    counted = {}
    for city, target, probe in product(CITIES, TARGETS, ("ridge", "mlp")):
        part = results[(results.city == city) & (results.target == target) & (results.probe == probe)]
        part = part.set_index("features")
        best = part.loc[list(ev.SINGLE_MODALITIES), "r2_mean"].idxmax()
        for fusion in ("fusion_infonce", "fusion_mse"):
            gap = part.loc[fusion, "r2_mean"] - part.loc[best, "r2_mean"]
            sd = max(part.loc[fusion, "r2_sd"], part.loc[best, "r2_sd"])
            tally = counted.setdefault(f"{fusion}_{probe}", [0, 0, 0, []])
            tally[0] += gap / sd > 1
            tally[1] += gap / sd < -1
            tally[2] += 1
            tally[3].append(gap)
            row = next(g for g in summary.fusion_vs_best_single
                       if (g.city, g.target, g.probe, g.fusion) == (city, target, probe, fusion))
            assert row.best_single == best and row.gap == pytest.approx(gap, abs=5e-5)
            assert row.ceiling == pytest.approx(truth[city].loc[target, "ceiling"], abs=5e-5)
    for key, (better, worse, pairs, gaps) in counted.items():
        verdict = summary.fusion_verdict[key]
        assert (verdict.beyond_one_sd_better, verdict.beyond_one_sd_worse, verdict.pairs) == (better, worse, pairs)
        assert verdict.mean_gap == pytest.approx(np.mean(gaps), abs=5e-5)
    for target in TARGETS:
        assert summary.truth_mean[target].ceiling == pytest.approx(
            np.mean([truth[c].loc[target, "ceiling"] for c in CITIES]), abs=5e-5)
        assert summary.truth["lake_city"][target].poi == truth["lake_city"].loc[target, "poi"]


def test_written_files_validate_and_hold_every_key_the_paper_reads(tmp_path):
    S.write_summary(tmp_path, build())
    written = json.loads((tmp_path / "summary.json").read_text())
    S.Summary.model_validate(written)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"ridge_r2_mean", "ceiling_mean"} and metrics["ridge_r2_mean"] == written["mean_r2"]["ridge"]

    city = tmp_path / "river_city.json"
    S.write_city_summary(city, city_summary())
    city_written = json.loads(city.read_text())
    S.CitySummary.model_validate(city_written)

    typst = TYPST.read_text()
    read = {name: set(re.findall(rf"\b{name}\.([a-z_0-9]+)", typst)) for name in ("muse", "mtrain")}
    assert read["muse"] and read["mtrain"], "the paper's section no longer reads muse/mtrain: update this test"
    assert read["muse"] <= set(written), read["muse"] - set(written)
    assert read["mtrain"] <= set(city_written), read["mtrain"] - set(city_written)
    # the nested keys the section reads
    assert {"concat", "simclr", "fusion_infonce", "fusion_mse"} <= set(written["mean_r2"]["ridge"])
    assert {"aerial", "street_view", "poi", "ceiling"} <= set(written["truth_mean"]["income"])
    assert {"beyond_one_sd_better", "beyond_one_sd_worse", "pairs", "mean_gap"} <= set(
        written["fusion_verdict"]["fusion_infonce_ridge"])
    assert {"aerial", "street_view"} <= set(city_written["heldout_triplets_ranked"])
    assert "fusion_infonce" in city_written["attention_aerial_mean"]


def test_undefined_spreads_become_null_and_inconsistent_inputs_fail():
    results = probe_rows()
    results.loc[0, "r2_sd"] = np.nan  # one fold
    summary = build(results)
    assert summary.scores[0].r2_sd is None
    json.dumps(summary.model_dump(mode="json"), allow_nan=False)  # valid JSON: no NaN anywhere
    truth = truth_tables()
    truth["lake_city"] = truth["lake_city"].iloc[:1]  # one outcome missing from a city's truth
    with pytest.raises(ValueError, match=r"truth of lake_city lacks the outcomes \['land_price'\]"):
        build(truth=truth)
    with pytest.raises(ValueError, match="without their truth"):
        build(truth={"river_city": truth_tables()["river_city"]})
    with pytest.raises(ValidationError, match="truth_mean has outcomes"):
        S.Summary.model_validate({**build().model_dump(), "truth_mean": {}})
    with pytest.raises(ValueError, match="no scores of the single modalities"):
        build(results[results["features"] != "poi_text"])


def city_summary() -> S.CitySummary:
    rng = np.random.default_rng(2)
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "heldout_triplets_ranked": [0.5, 0.8, 0.7]})
    encoders = {"aerial": EncoderResult(None, history, 12.34, best_epoch=1),
                "street_view": EncoderResult(None, history.assign(heldout_triplets_ranked=[0.6, 0.6, 0.9]), 5.0, 2),
                "simclr": EncoderResult(None, history[["epoch", "loss"]], 7.0, 2)}
    weights = {"fusion_infonce": rng.dirichlet([2, 3], size=10), "fusion_mse": rng.dirichlet([1, 1], size=10)}
    agreement = [S.PairAgreement(factor="commercial", anchor_positive=0.123456, anchor_negative=0.3, pairs="POI")]
    return S.city_summary("river_city", np.array([0, 2, 5, 0, 1, 1, 0, 0, 3, 4]), 16,
                          {"aerial": np.arange(6), "street_view": np.arange(9)}, agreement, encoders, weights)


def test_city_summary_reads_the_kept_epoch_and_the_attention():
    summary = city_summary()
    assert (summary.n_regions, summary.regions_with_pois, summary.n_pois) == (10, 6, 16)
    assert summary.heldout_triplets_ranked == {"aerial": 0.8, "street_view": 0.9}  # at each kept epoch
    assert summary.best_epoch == {"aerial": 1, "street_view": 2, "simclr": 2}
    assert summary.anchors == {"aerial": 6, "street_view": 9} and "seconds" not in summary.model_dump()
    weights = np.random.default_rng(2).dirichlet([2, 3], size=10)
    assert summary.attention_aerial_mean["fusion_infonce"] == pytest.approx(weights[:, 0].mean(), abs=5e-5)
    assert summary.attention_aerial_sd["fusion_infonce"] == pytest.approx(weights[:, 0].std(), abs=5e-5)
    dumped = summary.model_dump(mode="json", by_alias=True)
    assert dumped["pair_agreement"] == [{"factor": "commercial", "|anchor - positive|": 0.1235,
                                         "|anchor - negative|": 0.3, "pairs": "POI"}]
    with pytest.raises(ValidationError, match="exceeds n_regions"):
        S.CitySummary.model_validate({**summary.model_dump(), "regions_with_pois": 11})


def test_pair_agreement_is_the_mean_factor_distance_of_the_drawn_triplets():
    factor = np.array([0.0, 0.1, 1.0, 1.1, 5.0])
    profiles = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 1]], float)
    sampler = sp.PairSampler(sp.cosine_similarity(profiles), 1)
    anchors = np.array([0, 2])
    row = S.pair_agreement(sampler, anchors, factor, "commercial", "POI", seed=4)
    a, p, n = sampler.sample(anchors, np.random.default_rng(4))
    assert row.anchor_positive == pytest.approx(np.abs(factor[a] - factor[p]).mean())
    assert row.anchor_negative == pytest.approx(np.abs(factor[a] - factor[n]).mean())
    assert row.anchor_positive == pytest.approx(0.1)  # each anchor's most similar profile is its near twin
