"""The musecl study: parameters, region texts, training steps on a tiny city, fusion, feature sets, the truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lib.data import semantic_pairs as sp
from lib.params import ParameterError, validate
from lib.runtime import runtime
from lib.studies.musecl import data as mdata
from lib.studies.musecl import evaluate as ev
from lib.studies.musecl import train
from lib.studies.musecl.params import FusionTrain, MuseclModel, MuseclTrainParams, SimclrTrain, VisualTrain

MODEL = MuseclModel(width=16, embedding_dim=8)
VISUAL = VisualTrain(loss="triplet", margin=1.0, temperature=0.1, epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0)
TRAIN = {
    "seed": 0, "device": "cpu", "inference_batch_size": 16, "data": {"image_px": 16},
    "pairs": {"top_k": 1, "tile2vec_neighbours": 6}, "model": {"width": 16, "embedding_dim": 8},
    "visual": VISUAL.model_dump(), "simclr": {"temperature": 0.5, "epochs": 1, "batch_size": 8, "lr": 1e-3,
                                              "weight_decay": 0.0, "crop_min": 0.6, "jitter": 0.2},
    "fusion": {"objectives": ["infonce", "mse"], "temperature": 0.1, "batch_size": 8, "hidden": 8, "epochs": 2,
               "lr": 1e-3, "weight_decay": 0.0},
}


def test_parameters_name_the_bad_key():
    assert validate("musecl", TRAIN, MuseclTrainParams).visual.margin == 1.0
    for path, value, message in ((("visual", "loss"), "hinge", "musecl.visual.loss"),
                                 (("visual", "margin"), 0.0, "musecl.visual.margin"),
                                 (("fusion", "objectives"), ["mse", "mse"], "distinct"),
                                 (("data", "image_px"), 20, "musecl.data.image_px")):
        bad = {**TRAIN, path[0]: {**TRAIN[path[0]], path[1]: value}}
        with pytest.raises(ParameterError, match=message):
            validate("musecl", bad, MuseclTrainParams)


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
                      weight_decay=0.0)
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


def test_feature_sets_and_the_truth_table():
    rng = np.random.default_rng(1)
    e = {k: rng.normal(size=(20, 4)) for k in ("aerial", "street_view", "text_reduced", "fusion_mse", "simclr")}
    e["poi_text"] = rng.normal(size=(20, 6))
    features = ev.feature_sets(e)
    assert list(features) == ["fusion_mse", "aerial", "street_view", "poi_text", "sum", "concat", "simclr"]
    assert features["concat"].shape == (20, 12)
    np.testing.assert_allclose(features["sum"], sum(train.standardise(e[k]) for k in ("aerial", "street_view",
                                                                                       "text_reduced")))
    oracle = {"income": {"aerial": 0.4, "street_view": 0.3, "poi": 0.1, "mobility": 0.0, "all_factors": 0.9,
                         "ceiling": 0.95, "noise_free": 0.95}}
    assert ev.truth_table(oracle, ["income"]).loc["income", "ceiling"] == 0.95
