"""The musecl summaries: ladders and claims from the probes' rows, paired comparisons and the per-city summary."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lib.data import semantic_pairs as sp
from lib.eval.intervals import comparison_cell
from lib.studies.musecl import evaluate as ev
from lib.studies.musecl import summary as S
from lib.studies.musecl.train import EncoderResult, SupervisedResult

CITIES = ("river_city", "lake_city")
TARGETS = ["income", "land_price"]
TRUTH = ("oracle_aerial", "oracle_street_view", "oracle_poi", "observable", "full")


def spatial_rows(seeds=(0, 1, 2), folds=3, fusion_gain=0.1) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for city, seed, fold, target in product(CITIES, seeds, range(folds), TARGETS):
        base = rng.uniform(0.2, 0.4)
        for name in (*ev.FEATURE_SETS, *TRUTH, "best_single"):
            r2 = base + rng.normal(0, 0.01) + (fusion_gain if name == "fusion_infonce" else 0.0)
            rows.append({"city": city, "seed": seed, "fold": fold, "target": target, "features": name,
                         "r2": 0.9 if name in TRUTH else r2, "chosen": "aerial" if name == "best_single" else None})
    return pd.DataFrame(rows)


def reference_rows(seeds=(0, 1, 2)) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame([{"city": c, "seed": s, "target": t, "features": n, "r2": rng.uniform(0.3, 0.5)}
                         for c, s, t, n in product(CITIES, seeds, TARGETS, [n for _, n in S.REFERENCE_ROWS])])


def build(spatial=None, reference=None):
    attention = pd.DataFrame({"city": ["river_city"] * 3, "seed": [0, 1, 2], "rho": [0.2, 0.3, 0.25]})
    return S.summarise(spatial_rows() if spatial is None else spatial,
                       reference_rows() if reference is None else reference, attention, TARGETS, 3, 480.0, 160.0)


def test_ladder_cells_are_means_over_repetitions_and_comparisons_pair_them():
    spatial = spatial_rows()
    summary = build(spatial)
    assert summary.n_spatial_repetitions == 2 * 3 * 3 and summary.n_reference_repetitions == 6
    ladder = summary.ladders[S.LADDERS.index("spatial")]
    cell = next(r.cell for r in ladder.rows if r.name == S.LABELS["fusion_infonce"])
    per_rep = spatial[spatial["features"] == "fusion_infonce"].groupby(["city", "seed", "fold"])["r2"].mean()
    assert cell.n == 18 and cell.mean == pytest.approx(per_rep.mean())
    assert [r.rung for r in ladder.rows][:3] == ["trivial", "trivial", "method"]
    supervised = next(r for r in ladder.rows if r.rung == "bound")
    assert supervised.cell is None and "not in this run" in supervised.note
    # The comparison is the paired one, Holm-adjusted over the family of all three tables.
    comparison = ladder.comparisons[0]
    best = spatial[spatial["features"] == "best_single"].groupby(["city", "seed", "fold"])["r2"].mean()
    raw = comparison_cell(per_rep.to_numpy(), best.to_numpy(), a="a", b="b")
    assert comparison.difference == pytest.approx(raw.difference) and comparison.p_holm >= raw.p_value
    n_family = sum(len(lad.comparisons) for lad in summary.ladders)
    assert n_family == len(S.SPATIAL_COMPARISONS) + len(S.PAIR_COMPARISONS) + len(S.REFERENCE_COMPARISONS)
    assert summary.fraction_of_observable[S.LABELS["fusion_infonce"]].mean == pytest.approx(
        (per_rep / 0.9).mean())
    assert summary.best_single_chosen == {"aerial": 2 * 3 * 3 * 2, "street_view": 0, "poi_text": 0}


def test_the_supervised_bound_counts_over_the_seeds_it_was_trained_for():
    spatial = spatial_rows()
    bound = spatial[(spatial["features"] == "aerial") & (spatial["seed"] == 0)].assign(features="supervised", r2=0.7)
    summary = build(pd.concat([spatial, bound], ignore_index=True))
    row = next(r for r in summary.ladders[S.LADDERS.index("spatial")].rows if r.rung == "bound")
    assert row.cell.n == 2 * 3 and row.cell.mean == pytest.approx(0.7)  # cities x folds of the first seed
    assert summary.fraction_of_observable[S.LABELS["supervised"]].mean == pytest.approx(0.7 / 0.9)
    assert summary.mean_r2["ridge"]["supervised"] == pytest.approx(0.7)
    # any other feature set must have every repetition
    with pytest.raises(ValueError, match="every repetition needs every set"):
        build(spatial[~((spatial["features"] == "concat") & (spatial["seed"] == 2))])


def test_a_city_of_unknown_truth_is_summarised_without_ceilings():
    spatial = spatial_rows()
    imported = spatial[~((spatial["city"] == "lake_city") & spatial["features"].isin(TRUTH))]
    summary = build(imported)
    row = next(r for r in summary.ladders[S.LADDERS.index("spatial")].rows if r.name == S.LABELS["observable"])
    assert row.cell.n == 3 * 3  # the river city's repetitions only
    fraction = summary.fraction_of_observable[S.LABELS["fusion_infonce"]]
    assert fraction.n == 3 * 3
    none_known = build(spatial[~spatial["features"].isin(TRUTH)])
    assert none_known.fraction_of_observable == {}
    assert not any(r.rung == "ceiling" for r in none_known.ladders[S.LADDERS.index("spatial")].rows)


def test_claims_take_their_verdict_from_the_comparisons():
    claims = {c.claim: c for c in build().claims}
    fusion = claims["The attentional fusion predicts socioeconomic outcomes better than the best single modality"]
    assert fusion.verdict == "reproduced"  # the rows give the fusion +0.1 R^2 in every repetition
    no_gain = {c.claim: c for c in build(spatial_rows(fusion_gain=-0.1)).claims}
    lost = no_gain[fusion.claim]
    assert lost.verdict == "not reproduced" and "other way round" in lost.reason
    # Without the pair variants the pairing claims cannot be tested, and say why.
    spatial = spatial_rows()
    spatial = spatial[~spatial["features"].isin(["aerial_random", "aerial_oracle", "street_neighbour", "street_random",
                                                  "street_oracle"])]
    untested = next(c for c in build(spatial).claims if "street views by mobility" in c.claim)
    assert untested.verdict == "not testable here" and "variants" in untested.reason


def test_pair_variants_of_one_city_are_compared_over_its_repetitions():
    spatial = spatial_rows()
    variants = ["aerial_random", "aerial_oracle", "street_neighbour", "street_random", "street_oracle"]
    one_city = spatial[~((spatial["city"] == "lake_city") & spatial["features"].isin(variants))]
    pairs = build(one_city).ladders[S.LADDERS.index("pairs")]
    compared = {(c.a, c.b): c for c in pairs.comparisons}
    assert compared[S.LABELS["street_view"], S.LABELS["street_neighbour"]].n == 3 * 3  # river city: seeds x folds
    assert compared[S.LABELS["aerial"], S.LABELS["tile2vec"]].n == 2 * 3 * 3  # both cities train Tile2Vec
    row = next(r for r in pairs.rows if r.name == S.LABELS["aerial_random"])
    assert row.cell.n == 3 * 3


def test_missing_scores_fail_clearly():
    spatial = spatial_rows()
    # (a missing ceiling is a city of unknown truth: test_a_city_of_unknown_truth_is_summarised_without_ceilings)
    holes = spatial.drop(index=spatial[(spatial["features"] == "aerial") & (spatial["seed"] == 1)].index)
    with pytest.raises(ValueError, match="every repetition"):
        build(holes)


def test_written_files_validate(tmp_path):
    summary = build()
    S.write_summary(tmp_path, summary)
    assert S.Summary.model_validate_json((tmp_path / "summary.json").read_text()) is not None
    assert (tmp_path / "metrics.json").exists()
    with pytest.raises(ValidationError, match="cities x seeds x folds"):
        S.Summary.model_validate({**summary.model_dump(), "n_spatial_repetitions": 5})


def _encoder(ranked, best):
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.5, 0.4], "heldout_triplets_ranked": ranked})
    return EncoderResult(None, history, 1.0, best, True)


def test_city_summary_lists_every_seed():
    encoders = {0: {"aerial": _encoder([0.5, 0.8, 0.7], 1)}, 1: {"aerial": _encoder([0.6, 0.6, 0.9], 2)}}
    weights = {s: {"fusion_infonce": np.random.default_rng(s).dirichlet([2, 3], size=10)} for s in (0, 1)}
    bound = {(0, k): SupervisedResult(None, pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.7],
                                                          "heldout_r2": [0.1, 0.3 + k]}), 1.0, 1, k == 0)
             for k in (0, 1)}
    summary = S.city_summary("river_city", np.array([0, 1, 2, 0, 3, 1, 1, 0, 5, 3]), 16,
                             {"aerial": np.arange(6)}, [], encoders, weights, bound)
    assert [(b.fold, b.heldout_r2, b.stopped_at_plateau) for b in summary.supervised] == [(0, 0.3, True), (1, 1.3, False)]
    assert summary.seeds == [0, 1] and summary.heldout_triplets_ranked == {"aerial": [0.8, 0.9]}
    assert summary.best_epoch == {"aerial": [1, 2]} and summary.epochs_trained == {"aerial": [3, 3]}
    both = np.concatenate([weights[0]["fusion_infonce"][:, 0], weights[1]["fusion_infonce"][:, 0]])
    assert summary.attention_aerial_mean["fusion_infonce"] == pytest.approx(both.mean(), abs=5e-5)
    with pytest.raises(ValidationError, match="entries for 2 seeds"):
        S.CitySummary.model_validate({**summary.model_dump(), "best_epoch": {"aerial": [1]}})


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
