"""The musecl study: parameters, region texts, training steps on a tiny city, fusion, feature sets, the truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lib.data import semantic_pairs as sp
from lib.models.backbone import TileEmbedder
from lib.params import ParameterError, validate
from lib.runtime import runtime
from lib.studies.musecl import data as mdata
from lib.studies.musecl import evaluate as ev
from lib.studies.musecl import train
from lib.studies.musecl.params import (
    FusionTrain,
    MuseclModel,
    MuseclTrainParams,
    SimclrTrain,
    SupervisedTrain,
    VisualTrain,
)

MODEL = MuseclModel(width=16, embedding_dim=8)
VISUAL = VisualTrain(loss="triplet", margin=1.0, temperature=0.1, epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0,
                     patience=2, min_delta=0.0)
TRAIN = {
    "seed": 0, "device": "cpu", "n_seeds": 1, "inference_batch_size": 16, "data": {"image_px": 16},
    "pairs": {"top_k": 1, "tile2vec_neighbours": 6, "volume_weight": 1.0, "variants": []}, "model": {"width": 16, "embedding_dim": 8},
    "visual": VISUAL.model_dump(), "simclr": {"temperature": 0.5, "epochs": 1, "batch_size": 8, "lr": 1e-3,
                                              "weight_decay": 0.0, "crop_min": 0.6, "jitter": 0.2},
    "fusion": {"objectives": ["infonce", "mse"], "temperature": 0.1, "batch_size": 8, "hidden": 8, "epochs": 2,
               "lr": 1e-3, "weight_decay": 0.0, "finetune_epochs": 1, "finetune_lr": 1e-4},
    "split": {"n_folds": 2, "block_m": 100.0, "gap_m": 0.0}, "targets": ["income"],
    "supervised": {"n_seeds": 1, "epochs": 2, "batch_size": 8, "patience": 1, "min_delta": 0.0, "lr": 1e-3,
                   "weight_decay": 0.0},
}
SUPERVISED = SupervisedTrain(n_seeds=1, epochs=12, batch_size=16, patience=4, min_delta=0.0, lr=3e-3, weight_decay=0.0)


def test_parameters_name_the_bad_key():
    assert validate("musecl", TRAIN, MuseclTrainParams).visual.margin == 1.0
    for path, value, message in ((("visual", "loss"), "hinge", "musecl.visual.loss"),
                                 (("visual", "margin"), 0.0, "musecl.visual.margin"),
                                 (("fusion", "objectives"), ["mse", "mse"], "distinct"),
                                 (("data", "image_px"), 20, "musecl.data.image_px"),
                                 (("supervised", "patience"), 0, "musecl.supervised.patience"),
                                 (("split", "n_folds"), 1, "musecl.split.n_folds")):
        bad = {**TRAIN, path[0]: {**TRAIN[path[0]], path[1]: value}}
        with pytest.raises(ParameterError, match=message):
            validate("musecl", bad, MuseclTrainParams)


def test_pair_variants_name_cities_of_the_study():
    from lib.studies.musecl.params import MuseclParams

    section = {**TRAIN, "cities": ["river_city"], "probe": {"inner_folds": 2, "reference_hidden": [8],
                                                            "reference_max_iter": 5}}
    section["pairs"] = {**TRAIN["pairs"], "variants": ["river_city"]}
    assert validate("musecl", section, MuseclParams).pairs.variants == ["river_city"]
    section["pairs"] = {**TRAIN["pairs"], "variants": ["lake_city"]}
    with pytest.raises(ParameterError, match="lake_city"):
        validate("musecl", section, MuseclParams)


def test_region_text_embeddings_are_the_mean_over_each_regions_pois():
    pois = pd.DataFrame({"region": [3, 3, 7, 3], "name": list("abcd"), "description": list("wxyz")})
    vectors = np.arange(8.0).reshape(4, 2)
    per_region = mdata.region_text_embeddings(pois, vectors, np.array([7, 3, 9]))
    np.testing.assert_allclose(per_region, [[4, 5], [(0 + 2 + 6) / 3, (1 + 3 + 7) / 3], [0, 0]])
    assert mdata.poi_texts(pois)[0] == "a. w"
    with pytest.raises(ValueError, match="not in the list"):
        mdata.region_text_embeddings(pois, vectors, np.array([7]))


def test_missing_city_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks .*regions.parquet"):
        mdata.load_regions(tmp_path, 16)
    with pytest.raises(FileNotFoundError, match="musecl_text"):
        mdata.load_text_embeddings(tmp_path / "nowhere.nc", np.array([1]))


def _two_kinds(n=24, seed=0):
    """Images of two kinds (dark with a bright square, bright with a dark one), and kind-based similarity."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.arange(n) % 2
    images = torch.rand(n, 3, 16, 16, generator=g) * 0.2 + kind[:, None, None, None] * 0.6
    images[:, :, 4:10, 4:10] = 1 - images[:, :, 4:10, 4:10]
    profiles = np.stack([kind.numpy(), 1 - kind.numpy()], axis=1).astype(float) + 0.01 * np.arange(n)[:, None]
    return images, sp.cosine_similarity(profiles)


def test_a_triplet_encoder_learns_to_rank_semantic_pairs():
    images, similarity = _two_kinds()
    result = train.train_triplet_encoder(lambda idx, g: images[torch.as_tensor(idx)], images,
                                         sp.PairSampler(similarity, 3), np.arange(24), MODEL,
                                         VISUAL.model_copy(update={"epochs": 6}), train.hflip, runtime("cpu"), 0,
                                         progress=False)
    assert list(result.history.columns) == ["epoch", "loss", "heldout_triplets_ranked"]
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    # the kept epoch is the first that ranks most held-out triplets right
    assert result.best_epoch == result.history["epoch"][result.history["heldout_triplets_ranked"].idxmax()]
    z = train.embed_regions(result.encoder, images, 16, runtime("cpu"))
    kind = np.arange(24) % 2
    within = np.linalg.norm(z[kind == 0][:, None] - z[kind == 0][None], axis=-1).mean()
    between = np.linalg.norm(z[kind == 0][:, None] - z[kind == 1][None], axis=-1).mean()
    assert within < between
    with pytest.raises(ValueError, match="too few"):
        train.train_triplet_encoder(lambda idx, g: images[torch.as_tensor(idx)], images,
                                    sp.PairSampler(similarity), np.arange(4), MODEL, VISUAL, train.hflip,
                                    runtime("cpu"), 0)


def test_a_resumed_triplet_encoder_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    """Epoch e's batches and views come from (seed, e): a run resumed from its checkpoint repeats them."""
    monkeypatch.chdir(tmp_path)
    images, similarity = _two_kinds()
    views = torch.stack([images, images.flip(-2)], dim=1)  # two "street views" per region

    def one_view(idx, generator):
        return views[torch.as_tensor(idx), torch.randint(2, (len(idx),), generator=generator)]

    class CountingSampler(sp.PairSampler):
        draws = 0

        def sample(self, anchors, rng):
            CountingSampler.draws += 1
            return super().sample(anchors, rng)

    def run(epochs, checkpoint=None, margin=1.0):
        CountingSampler.draws = 0
        # (width 16: at width 4 the channels-last 1x1 stride-2 convolution's weight gradient varies from run to
        # run on a 2-thread CPU, so no two runs would agree)
        return train.train_triplet_encoder(one_view, views, CountingSampler(similarity, 3), np.arange(24), MODEL,
                                           VISUAL.model_copy(update={"epochs": epochs, "margin": margin}),
                                           train.hflip, runtime("cpu"), 3, progress=False, checkpoint=checkpoint)

    uninterrupted = run(2)
    steps_in_two_epochs = CountingSampler.draws - 1  # one draw of the held-out triplets
    run(1, tmp_path / "street.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resumed, not trained afresh (that would warn)
        resumed = run(2, tmp_path / "street.pt")
    assert CountingSampler.draws - 1 == steps_in_two_epochs // 2  # only the second epoch's batches were drawn
    assert all(torch.equal(a, b) for a, b in zip(resumed.encoder.state_dict().values(),
                                                 uninterrupted.encoder.state_dict().values(), strict=True))
    pd.testing.assert_frame_equal(resumed.history, uninterrupted.history, check_exact=True)
    with pytest.warns(RuntimeWarning, match="fingerprint differs"):  # other settings: trained afresh
        assert len(run(1, tmp_path / "street.pt", margin=2.0).history) == 1


def test_street_view_embeddings_are_the_mean_over_views_and_simclr_trains():
    images, _ = _two_kinds(8)
    views = torch.stack([images, images.flip(-1)], dim=1)  # (8, 2, 3, 16, 16)
    result = train.train_simclr(images, MODEL, SimclrTrain(temperature=0.5, epochs=1, batch_size=4, lr=1e-3,
                                                           weight_decay=0.0, crop_min=0.6, jitter=0.2),
                                runtime("cpu"), 0, progress=False)
    assert list(result.history.columns) == ["epoch", "loss"] and result.best_epoch == 0
    per_view = train.embed_regions(result.encoder, views.reshape(16, 3, 16, 16), 4, runtime("cpu")).reshape(8, 2, -1)
    np.testing.assert_allclose(train.embed_regions(result.encoder, views, 4, runtime("cpu")), per_view.mean(1),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["infonce", "mse"])
def test_fusion_trains_on_regions_with_text_and_fuses_every_region(objective):
    rng = np.random.default_rng(0)
    modal = rng.normal(size=(30, 2, 8))
    text = rng.normal(size=(30, 12))
    has_text = np.arange(30) % 3 != 0
    cfg = FusionTrain(objectives=[objective], temperature=0.1, batch_size=8, hidden=4, epochs=3, lr=1e-2,
                      weight_decay=0.0, finetune_epochs=0, finetune_lr=1e-4)
    model, fused, weights, history = train.train_fusion(modal, text, has_text, objective, cfg, runtime("cpu"), 0,
                                                        progress=False)
    assert fused.shape == (30, 8) and weights.shape == (30, 2) and len(history) == 3
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    np.testing.assert_allclose(weights.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(fused, (weights[:, :, None] * modal).sum(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="too few"):
        train.train_fusion(modal, text, np.zeros(30, bool), objective, cfg, runtime("cpu"), 0)
    with pytest.raises(ValueError, match=r"modal must be \(N, M, D\)"):
        train.train_fusion(modal[:, 0], text, has_text, objective, cfg, runtime("cpu"), 0)


def test_the_fine_tuned_fusion_starts_as_the_frozen_one_and_trains_its_encoders():
    import copy

    images, _ = _two_kinds(16)
    views = torch.stack([images, images.flip(-1)], dim=1)
    rt = runtime("cpu")
    encoders = [TileEmbedder(3, MODEL.width, MODEL.embedding_dim).eval() for _ in range(2)]
    za = train.embed_regions(encoders[0], images, 8, rt)
    zs = train.embed_regions(encoders[1], views, 8, rt)
    text = np.random.default_rng(0).normal(size=(16, 6))
    has_text = np.arange(16) % 4 != 0
    cfg = FusionTrain(objectives=["infonce"], temperature=0.1, batch_size=8, hidden=4, epochs=1, lr=1e-2,
                      weight_decay=0.0, finetune_epochs=2, finetune_lr=1e-3)
    modal = np.stack([train.standardise(za), train.standardise(zs)], axis=1)
    fusion, fused, weights, _ = train.train_fusion(modal, text, has_text, "infonce", cfg, rt, 0, progress=False)
    network = train.FinetunedFusion(*copy.deepcopy(encoders), copy.deepcopy(fusion), za, zs).eval()
    with torch.no_grad():
        start, start_weights = network(images, views)
    np.testing.assert_allclose(start.numpy(), fused, rtol=1e-4, atol=1e-4)  # the frozen fusion, before any step
    np.testing.assert_allclose(start_weights.numpy(), weights, rtol=1e-4, atol=1e-4)
    tuned, tuned_weights, history = train.finetune_fusion(network, images, views, text, has_text, cfg, rt, 0,
                                                          progress=False)
    assert tuned.shape == (16, MODEL.embedding_dim) and len(history) == 2
    np.testing.assert_allclose(tuned_weights.sum(1), 1, rtol=1e-6)
    moved = [not torch.equal(a, b) for a, b in zip(network.aerial.state_dict().values(),
                                                   encoders[0].state_dict().values())]
    assert any(moved)  # the encoder learned through the alignment
    with pytest.raises(ValueError, match="too few"):
        train.finetune_fusion(network, images, views, text, np.zeros(16, bool), cfg, rt, 0)


def test_feature_sets_add_the_concatenation_of_the_three_way_fusions_inputs():
    rng = np.random.default_rng(1)
    e = {k: rng.normal(size=(20, 4)) for k in ("aerial", "street_view", "text_reduced", "fusion_mse", "simclr")}
    e["poi_text"] = rng.normal(size=(20, 6))
    features = ev.feature_sets(e)
    assert list(features) == ["fusion_mse", "concat", "aerial", "street_view", "poi_text", "simclr"]
    np.testing.assert_allclose(features["concat"], np.concatenate(
        [train.standardise(e[k]) for k in ("aerial", "street_view", "text_reduced")], axis=1))
    with pytest.raises(KeyError, match="text_reduced"):
        ev.feature_sets({"aerial": e["aerial"], "street_view": e["street_view"]})


def test_ridge_cv_matches_scikit_learns_grid_search_with_a_spatial_inner_split():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6)) * [1, 2, 3, 1, 1, 0.1]
    y = np.stack([x @ rng.normal(size=6) + rng.normal(size=90) * s for s in (0.5, 3.0)], axis=1)
    groups = np.arange(90) // 10
    folds = [(np.flatnonzero(groups % 3 != k), np.flatnonzero(groups % 3 == k)) for k in range(3)]
    result = ev.ridge_cv(x, y, folds, groups, inner_folds=3)
    for k, (train_idx, test_idx) in enumerate(folds):
        for t in range(2):
            search = GridSearchCV(Pipeline([("s", StandardScaler()), ("m", Ridge())]),
                                  {"m__alpha": list(ev.DEFAULT_ALPHAS)}, cv=GroupKFold(3))
            search.fit(x[train_idx], y[train_idx, t], groups=groups[train_idx])
            assert result.alpha[k, t] == search.best_params_["m__alpha"]
            assert np.isclose(result.inner_r2[k, t], search.best_score_)
            assert np.isclose(result.test_r2[k, t], search.score(x[test_idx], y[test_idx, t]))
            np.testing.assert_allclose(result.predictions[test_idx, t], search.predict(x[test_idx]))
    with pytest.raises(ValueError, match="two or more"):
        ev.ridge_cv(x, y, folds, np.zeros(90))


def test_best_single_modality_is_chosen_by_the_training_folds_not_the_test_scores():
    inner = {"aerial": np.array([[0.5, 0.1]]), "street_view": np.array([[0.2, 0.3]]), "poi_text": np.array([[0.1, 0.0]])}
    test = {"aerial": np.array([[0.1, 0.9]]), "street_view": np.array([[0.9, 0.2]]), "poi_text": np.array([[0.95, 0.99]])}
    chosen, r2 = ev.best_single(inner, test)
    assert chosen.tolist() == [[0, 1]]  # aerial, then street view: the best inner scores
    assert r2.tolist() == [[0.1, 0.2]]  # their test scores, though poi_text scored best on the test folds
    with pytest.raises(KeyError, match="poi_text"):
        ev.best_single({k: inner[k] for k in ("aerial", "street_view")}, test)


def test_reference_protocol_split_sizes_and_mlp():
    for n in (5, 10, 748, 1001):
        train_idx, val, test = ev.reference_split(n, seed=3)
        assert (len(train_idx), len(val)) == (round(0.6 * n), round(0.2 * n))
        assert len(train_idx) + len(val) + len(test) == n
        assert np.array_equal(np.sort(np.concatenate([train_idx, val, test])), np.arange(n))
    assert not np.array_equal(ev.reference_split(100, 0)[2], ev.reference_split(100, 1)[2])
    with pytest.raises(ValueError, match="at least 5"):
        ev.reference_split(4, 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    table = pd.DataFrame({"a": x[:, 0] * 2 + 0.1 * rng.normal(size=200), "b": x[:, 1] - x[:, 2]})
    r2, val = ev.reference_mlp(x, table, ["a", "b"], seed=0, hidden=(32,), max_iter=300)
    assert r2.shape == (2,) and (r2 > 0.8).all() and val > 0.8


def test_trivial_features_and_the_truth_inputs():
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 3, size=(5, 4))
    aerial, street = torch.rand(5, 4, 8, 8), torch.rand(5, 3, 3, 8, 8)
    trivial = ev.trivial_features(hist, aerial, street)
    np.testing.assert_allclose(trivial["poi_counts"][:, 0], np.log1p(hist.sum(1)))
    assert trivial["image_statistics"].shape == (5, 4 * 2 + 3 * 2)
    np.testing.assert_allclose(trivial["image_statistics"][2, 4 * 2 + 1],
                               street[2, :, 1].double().mean().item(), rtol=1e-6)  # band 1 of the views, pooled
    table = pd.DataFrame(rng.normal(size=(5, 4)), columns=["f", "g", "h", "hidden"])
    truth = ev.truth_features(table, {"aerial": ["f", "g"], "street_view": ["g"], "poi": ["h"], "mobility": []},
                              ["hidden"])
    assert set(truth) == {"oracle_aerial", "oracle_street_view", "oracle_poi", "observable", "full"}
    assert truth["observable"].shape == (5, 3) and truth["full"].shape == (5, 4)
    with pytest.raises(KeyError, match="missing_column"):
        ev.truth_features(table, {"aerial": ["missing_column"]}, [])


def test_truth_columns_name_the_missing_key(tmp_path):
    import json
    pd.DataFrame({"region": [0], "inhabited": [True], "f": [1.0]}).to_parquet(tmp_path / "regions.parquet")
    (tmp_path / "city.json").write_text(json.dumps({"hidden_factors": []}))
    with pytest.raises(KeyError, match="modality_features"):
        mdata.truth_columns(tmp_path)
    contract = {"aerial": ["f"], "street_view": ["f"], "poi": ["f"], "mobility": ["gone"]}
    (tmp_path / "city.json").write_text(json.dumps({"hidden_factors": [], "modality_features": contract}))
    with pytest.raises(KeyError, match="gone"):
        mdata.truth_columns(tmp_path)
    contract["mobility"] = []
    (tmp_path / "city.json").write_text(json.dumps({"hidden_factors": ["f"], "modality_features": contract}))
    assert mdata.truth_columns(tmp_path) == (contract, ["f"])


def test_an_imported_city_has_no_truth_and_its_own_poi_categories(tmp_path):
    """A real city (lib.data.city_import) runs without oracle, ceiling or oracle-pair rungs: no truth columns,
    no truth features, and its POI histograms take the categories its city.json lists."""
    import importlib.util
    from pathlib import Path

    from lib.data.city_import import import_city

    spec = importlib.util.spec_from_file_location(
        "city_import_inputs", Path(__file__).resolve().parents[2] / "data" / "test_city_import.py")
    inputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inputs)  # its four-region city: regions, POIs, images, views, trips
    write_city = inputs.write_city

    city = tmp_path / "datasets" / "own_city"
    import_city("own_city", **write_city(tmp_path / "input"), out_dir=city, aerial_px=16, view_px=16,
                outcomes=["income", "price"])
    features, hidden = mdata.truth_columns(city)
    assert features == {m: [] for m in mdata.MODALITIES} and hidden == []
    regions = mdata.load_regions(city, 16)
    assert ev.truth_features(regions.table, features, hidden) == {}
    categories = mdata.poi_categories(city)
    assert categories == ["cafe", "school"]
    histograms = sp.poi_histograms(regions.pois, regions.ids, categories)
    assert histograms.sum() == 3 and histograms.shape == (4, 2)
    trivial = ev.trivial_features(histograms, regions.aerial, regions.street)
    assert trivial["poi_counts"].shape == (4, 3) and np.isfinite(trivial["image_statistics"]).all()
    # an outcome the importer left missing is named, not probed
    with pytest.raises(ValueError, match="missing values"):
        ev.outcomes(regions.table, ["income"])
    assert ev.outcomes(regions.table, ["price"]).ravel().tolist() == [1, 2, 3, 4]


def test_attention_agreement_is_spearmans_rho():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    w, n = rng.random(30), rng.integers(0, 9, 30)
    assert np.isclose(ev.attention_agreement(w, n), spearmanr(w, n).statistic)
    assert ev.attention_agreement(np.ones(5), np.arange(5)) == 0.0


def _planted_outcome(n=64, seed=0):
    """Regions whose outcome is the brightness of a square in the aerial image; street views and text are noise."""
    g = torch.Generator().manual_seed(seed)
    aerial = torch.rand(n, 3, 16, 16, generator=g) * 0.2
    level = torch.rand(n, generator=g)
    aerial[:, :, 4:12, 4:12] += level[:, None, None, None] * 0.8
    street = torch.rand(n, 2, 3, 16, 16, generator=g)
    extra = np.random.default_rng(seed).normal(size=(n, 3))
    y = np.stack([level.numpy() * 10.0 + 3.0, -level.numpy()], axis=1).astype(np.float64)
    return aerial, street, extra, y


def test_the_supervised_bound_learns_a_planted_outcome_from_the_fitting_regions_only():
    aerial, street, extra, y = _planted_outcome()
    rows = np.arange(len(y))
    fit_rows, held, test = rows[:36], rows[36:48], rows[48:]
    result = train.train_supervised(aerial, street, extra, y, fit_rows, held, MODEL, SUPERVISED, runtime("cpu"), 0,
                                    progress=False)
    predicted = train.predict_supervised(result.model, aerial, street, extra, test, 5, runtime("cpu"))
    assert predicted.shape == (len(test), 2)
    r2 = 1 - ((y[test] - predicted) ** 2).sum(0) / ((y[test] - y[test].mean(0)) ** 2).sum(0)
    assert (r2 > 0.5).all(), r2  # the planted brightness, in the outcomes' own units
    assert result.best_epoch == result.history["heldout_r2"].idxmax()
    # what the test regions' outcomes are cannot change the model: they are never read
    y_changed = y.copy()
    y_changed[test] = 1e6
    again = train.train_supervised(aerial, street, extra, y_changed, fit_rows, held, MODEL, SUPERVISED,
                                   runtime("cpu"), 0, progress=False)
    np.testing.assert_allclose(train.predict_supervised(again.model, aerial, street, extra, test, 64, runtime("cpu")),
                               predicted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        train.train_supervised(aerial, street, extra, y, fit_rows, fit_rows[:5], MODEL, SUPERVISED, runtime("cpu"), 0)
    y_nan = y.copy()
    y_nan[fit_rows[0], 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train.train_supervised(aerial, street, extra, y_nan, fit_rows, held, MODEL, SUPERVISED, runtime("cpu"), 0)


def test_held_out_blocks_are_whole_blocks_of_the_training_rows():
    blocks = np.repeat(np.arange(8), 5)
    train_rows = np.arange(30)  # blocks 0-5
    fit_rows, held = train.held_out_blocks(train_rows, blocks, seed=3)
    assert set(fit_rows) | set(held) == set(train_rows) and not set(fit_rows) & set(held)
    assert not set(blocks[fit_rows]) & set(blocks[held]) and len(set(blocks[held])) == 2  # a quarter of 6 blocks
    with pytest.raises(ValueError, match="spatial block"):
        train.held_out_blocks(np.arange(5), blocks, seed=0)


def test_supervised_rows_score_each_fold_and_refuse_other_folds(tmp_path):
    table = pd.DataFrame({"region": np.arange(6), "income": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]})
    folds = [(np.array([3, 4, 5]), np.array([0, 1, 2])), (np.array([0, 1, 2]), np.array([3, 4, 5]))]
    predictions = np.array([[1.0], [2.0], [3.0], [5.0], [5.0], [5.0]])
    fold = np.array([0, 0, 0, 1, 1, 1])
    path = tmp_path / "supervised_seed_0.nc"
    mdata.write_supervised(path, table["region"].to_numpy(), fold, ["income"], predictions)
    rows = ev.supervised_seed(path, table, ["income"], folds)
    assert rows["features"].eq("supervised").all() and list(rows["fold"]) == [0, 1]
    # fold 0 predicted exactly; fold 1 observes 4, 5, 7 (mean 16/3) and predicts 5, 5, 5
    total = (4 - 16 / 3) ** 2 + (5 - 16 / 3) ** 2 + (7 - 16 / 3) ** 2
    assert rows["r2"].tolist() == pytest.approx([1.0, 1 - (1 + 0 + 4) / total])
    with pytest.raises(ValueError, match="other folds"):
        ev.supervised_rows(predictions, np.array([0, 0, 1, 1, 1, 1]), table, ["income"], folds)
    with pytest.raises(ValueError, match="rerun musecl_train"):
        ev.supervised_seed(path, table, ["land_price"], folds)
