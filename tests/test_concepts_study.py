"""Tests of the concepts study's wiring (lib.concepts_study): split, parameters, metrics, augmentation, end to end."""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from pydantic import ValidationError
from scipy import stats

from lib import concepts_study as study
from lib.data.city import build_city, river_city

# A complete, tiny parameter section: one step of each variant on a 4 x 4-tile city.
TINY = {
    "seed": 0,
    "device": "cpu",
    "outcome": None,
    "split": {"val_fraction": 0.15, "test_fraction": 0.15, "n_strata": 4},
    "model": {"width": 8, "embedding_dim": 8},
    "augment": {"crop_min": 0.7, "jitter": 0.2},
    "rnc": {"temperature": 2.0, "epochs": 1, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1},
    "probe": {"ridge_alphas": [0.1, 10.0]},
    "baseline": {"epochs": 1, "batch_size": 4, "lr": 0.001, "weight_decay": 0.0, "max_steps_per_epoch": 1},
    "eval": {"knn_k": 3, "tsne_perplexity": 5.0, "batch_size": 8},
    "tcav": {"layer": "encoder.layer3", "threshold": 0.3, "set_size": 3, "min_concept_size": 2, "n_random": 10,
             "n_intervals": 2, "alpha": 0.05, "bonferroni": True, "statistic": "score", "concept_table": None},
}


# ------------------------------------------------------------------ parameters
def test_params_accept_the_tiny_section_and_reject_unknown_keys():
    cfg = study.ConceptsParams.model_validate(TINY)
    assert cfg.tcav.n_random == 10 and cfg.outcome is None

    for path in (("epoch",), ("rnc", "temprature"), ("tcav", "layers")):
        values = copy.deepcopy(TINY)
        target = values
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = 1
        with pytest.raises(ValidationError, match=path[-1]) as info:
            study.ConceptsParams.model_validate(values)
        assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tcav", "n_random", 5, "greater than or equal to 10"),
        ("tcav", "min_concept_size", 4, "exceeds set_size"),
        ("probe", "ridge_alphas", [1.0, 0.0], "must be > 0"),
        ("rnc", "epochs", "ten", "valid integer"),
    ],
)
def test_params_reject_bad_values(section, key, value, message):
    values = copy.deepcopy(TINY)
    values[section][key] = value
    with pytest.raises(ValidationError, match=message):
        study.ConceptsParams.model_validate(values)


# ------------------------------------------------------------------ split
def test_split_is_disjoint_complete_and_stratified_on_outcome_quantiles():
    y = np.random.default_rng(0).lognormal(size=1000)
    split = study.stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=3)

    parts = [split.fit, split.val, split.test]
    assert sum(map(len, parts)) == 1000
    assert len(np.unique(np.concatenate(parts))) == 1000
    assert (len(split.test), len(split.val)) == (200, 150)

    # Each decile of the outcome (100 tiles) gives each split its share, up to rounding.
    strata = study.outcome_strata(y, 10)
    assert (np.bincount(strata[split.test], minlength=10) == 20).all()
    assert np.abs(np.bincount(strata[split.val], minlength=10) - 15).max() <= 1

    again = study.stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=3)
    np.testing.assert_array_equal(again.test, split.test)
    other = study.stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=4)
    assert not np.array_equal(other.test, split.test)


def test_split_of_too_few_tiles_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        study.stratified_split(np.arange(3.0), 0.3, 0.3, 2, seed=0)


# ------------------------------------------------------------------ metrics
def test_ground_truth_agreement_on_a_planted_example():
    truth = pd.Series({"a": -15.0, "b": -2.0, "c": 2.0, "d": 6.0, "e": 12.0, "f": 20.0})
    monotone = pd.Series({k: 1 / (1 + math.exp(-v / 5)) for k, v in truth.items()})
    perfect = study.ground_truth_agreement(monotone, truth)
    assert perfect["n_concepts"] == 6
    assert perfect["spearman"] == pytest.approx(1) and perfect["kendall"] == pytest.approx(1)
    assert study.ground_truth_agreement(-monotone, truth)["spearman"] == pytest.approx(-1)

    # One adjacent swap among 6: rho = 1 - 6 * 2 / (6 * 35), tau = 1 - 2 / 15.
    swapped = monotone.copy()
    swapped["c"], swapped["d"] = monotone["d"], monotone["c"]
    one_swap = study.ground_truth_agreement(swapped, truth)
    assert one_swap["spearman"] == pytest.approx(1 - 12 / 210)
    assert one_swap["kendall"] == pytest.approx(1 - 2 / 15)

    # Concepts without a true effect, or without a sensitivity, do not count.
    extra = pd.concat([swapped, pd.Series({"unknown": 0.9})])
    extra["a"] = np.nan
    partial = study.ground_truth_agreement(extra, truth)
    assert partial["n_concepts"] == 5
    assert partial["spearman"] == pytest.approx(stats.spearmanr(swapped[list("bcdef")], truth[list("bcdef")]).statistic)
    assert math.isnan(study.ground_truth_agreement(monotone[:2], truth)["spearman"])


def test_latent_ordering_of_ordered_and_shuffled_embeddings():
    rng = np.random.default_rng(1)
    y_fit, y_test = rng.normal(size=400), rng.normal(size=120)

    def embed(y):  # the outcome along one axis, small noise along four
        return np.column_stack([3 * y, 0.1 * rng.normal(size=(len(y), 4))])

    ordered = study.latent_ordering(embed(y_fit), y_fit, embed(y_test), y_test, k=5)
    shuffled = study.latent_ordering(embed(y_fit), rng.permutation(y_fit), embed(y_test), rng.permutation(y_test), k=5)
    assert ordered["latent_spearman"] > 0.95 and ordered["knn_r2"] > 0.9
    assert abs(shuffled["latent_spearman"]) < 0.1 and shuffled["knn_r2"] < 0.1

    # Oracle: the pairwise definition written as a loop.
    emb, y = embed(y_test[:30]), y_test[:30]
    pairs = [(np.linalg.norm(emb[i] - emb[j]), abs(y[i] - y[j])) for i in range(30) for j in range(i + 1, 30)]
    expected = stats.spearmanr(*zip(*pairs, strict=True)).statistic
    assert study.latent_ordering(emb, y, emb, y, k=1)["latent_spearman"] == pytest.approx(expected)


def test_regression_metrics_match_their_definitions():
    y = np.array([1.0, 2.0, 4.0, 3.0])
    p = np.array([1.5, 2.0, 3.0, 3.5])
    out = study.regression_metrics(y, p)
    assert out["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert out["r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(y, p).statistic)


def test_conclusion_follows_the_numbers():
    def table(rnc, baseline):
        columns = ["latent_spearman", "knn_r2", "r2"]
        return pd.DataFrame([rnc, baseline], index=["rnc", "baseline"], columns=columns)

    assert "orders the latent space better than" in study.conclusion(table([0.6, 0.7, 0.7], [0.3, 0.5, 0.4]), None, "score")
    assert "does not order" in study.conclusion(table([0.2, 0.4, 0.4], [0.3, 0.5, 0.4]), None, "score")
    assert "by one measure better" in study.conclusion(table([0.509, 0.64, 0.6], [0.514, 0.56, 0.6]), None, "score")
    agreement = pd.DataFrame({"variant": ["rnc", "baseline"], "statistic": "score", "n_concepts": 2, "spearman": np.nan})
    assert "too few" in study.conclusion(table([0.6, 0.7, 0.7], [0.3, 0.5, 0.4]), agreement, "score")


# ------------------------------------------------------------------ augmentation and concepts
def test_augmentation_without_crop_or_jitter_is_a_symmetry_of_the_square():
    x = torch.rand(32, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    views = study.aerial_augment(x, crop_min=1.0, jitter=0.0, generator=torch.Generator().manual_seed(1))
    symmetries = [x.rot90(k, dims=(2, 3)) for k in range(4)]
    symmetries += [s.flip(3) for s in symmetries]
    matched = [min(float((view - s[i]).abs().max()) for s in symmetries) for i, view in enumerate(views)]
    assert max(matched) < 1e-5
    assert len({int(np.argmin([float((v - s[i]).abs().max()) for s in symmetries])) for i, v in enumerate(views)}) > 4

    jittered = study.aerial_augment(x, crop_min=0.5, jitter=0.3)
    assert jittered.shape == x.shape and torch.isfinite(jittered).all()


def test_concept_sets_keep_dominant_tiles_and_skip_rare_concepts():
    fractions = pd.DataFrame({"forest": [0.9, 0.6, 0.2, 0.7, 0.8], "water": [0.0, 0.4, 0.8, 0.1, 0.0]})
    pool = np.array([0, 1, 2, 3])  # tile 4 is a test tile
    sets = study.concept_sets(fractions, pool, threshold=0.5, set_size=2, min_size=2, seed=0)
    assert set(sets.members) == {"forest"}
    assert len(sets.members["forest"]) == 2 and set(sets.members["forest"]) <= {0, 1, 3}
    assert sets.table.set_index("concept")["qualifying_tiles"].to_dict() == {"forest": 3, "water": 1}


def test_imported_tiles_load_with_a_concept_table_or_without_concepts(tmp_path):
    """Tiles in import_geotiff_tiles' layout: uint16 pixels, string ids, no fractions, no generator."""
    ids = [f"t{i:02d}" for i in range(6)]
    pixels = np.arange(6 * 3 * 4 * 4, dtype=np.uint16).reshape(6, 3, 4, 4)
    ds = xr.Dataset(
        {"image": (("tile", "band", "y", "x"), pixels), "income": ("tile", np.linspace(20.0, 30.0, 6))},
        coords={"tile": ids, "band": [1, 2, 3], "easting": ("tile", np.arange(6.0)), "northing": ("tile", np.zeros(6))},
    )
    path = tmp_path / "tiles.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    pd.DataFrame({"tile": ["t05", "t01"], "park": [0.8, 0.6], "port": [0.1, 0.0]}).to_csv(tmp_path / "concepts.csv", index=False)

    data = study.load_tiles(path, "income", tmp_path / "concepts.csv")
    assert data.images.dtype == torch.float32 and float(data.images.max()) == 1.0
    assert data.band_names == ["1", "2", "3"] and data.true_effects is None
    assert data.concepts["park"].tolist() == [0.0, 0.6, 0.0, 0.0, 0.0, 0.8]  # tiles not in the table: 0

    assert study.load_tiles(path, "income").concepts is None
    with pytest.raises(KeyError, match="income"):
        study.load_tiles(path, "liveability")
    with pytest.raises(ValueError, match="concepts.outcome"):
        study.load_tiles(path)


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city") / "tiny"
    build_city(river_city(name="tiny", grid=(4, 4), tile_px=32, region_tiles=2, views_per_region=0), out)
    return out / "tiles.nc"


def test_end_to_end_on_a_tiny_city(tiny_city, tmp_path):
    cfg = study.ConceptsParams.model_validate(TINY)
    data = study.load_tiles(tiny_city)
    assert data.outcome_name == "liveability" and data.images.shape == (16, 4, 32, 32)
    split = study.stratified_split(data.outcome, cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.n_strata, cfg.seed)

    trained = {v: study.train_variant(cfg, data, split, v, tmp_path / f"tiny_{v}.safetensors", progress=False)
               for v in study.VARIANTS}
    for variant, model in trained.items():
        assert len(model.meta["history"]) == 1
        reloaded = study.load_variant(tmp_path / f"tiny_{variant}.safetensors")
        rt = study.runtime("cpu")
        np.testing.assert_allclose(reloaded.predict(data.images, rt), model.predict(data.images, rt), rtol=1e-5)
    assert "probe_alpha" in trained["rnc"].meta

    metrics = study.metrics_table(trained, data, split, cfg)
    assert list(metrics.index) == ["rnc", "baseline"]
    assert {"r2", "mae", "kendall_tau", "latent_spearman", "knn_r2", "val_r2"} <= set(metrics.columns)
    assert np.isfinite(metrics[["r2", "mae", "latent_spearman", "knn_r2"]].to_numpy(float)).all()

    sets = study.concept_sets(data.concepts, np.concatenate([split.fit, split.val]), cfg.tcav.threshold,
                              cfg.tcav.set_size, cfg.tcav.min_concept_size, cfg.seed)
    tcav = {"rnc": study.concept_tcav(trained["rnc"], data, split, sets, cfg)}  # one variant: the test stays short
    assert set(tcav["rnc"]["concept"]) == {*sets.members, "random_0"}
    agreement = study.agreement_table(tcav, data.true_effects)
    assert set(agreement["statistic"]) == {"score", "magnitude"}

    study.save_results(tmp_path / "results", "tiny", data, split, metrics, study.history_frame(trained), cfg,
                       sets=sets, tcav=tcav, agreement=agreement)
    saved = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert saved["variants"]["rnc"]["r2"] == pytest.approx(metrics.loc["rnc", "r2"])
    assert saved["tiles"] == {"fit": len(split.fit), "validation": len(split.val), "test": len(split.test)}
    assert set(saved["ground_truth_agreement"]) == {"rnc"}
    assert (tmp_path / "results" / "tables" / "tcav_intervals.csv").exists()
