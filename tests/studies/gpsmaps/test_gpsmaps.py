"""The gpsmaps study: parameters, the held-out split, geo targets, a training step, the evaluation helpers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from lib.eval.spatial_cv import folds_for
from lib.params import ParameterError, validate
from lib.runtime import runtime
from lib.studies.gpsmaps import data as gdata
from lib.studies.gpsmaps import evaluate as ev
from lib.studies.gpsmaps.model import GpsMapsNet
from lib.studies.gpsmaps.params import VARIANTS, GpsMapsTrainParams
from lib.studies.gpsmaps.train import map_batches, train_variant, variant_loss
from lib.training import Callback, StepState, unwrap

PARAMS = {
    "seed": 0, "device": "cpu", "inference_batch_size": 16,
    "data": {"places": ["helsinki", "town"], "entropy_threshold": 0.1, "block_m": 100.0, "gap_m": 30.0,
             "holdout_fraction": 0.4},
    "views": {"n_global": 2, "n_local": 1, "global_size": 16, "local_size": 16, "global_scale": [0.5, 1.0],
              "local_scale": [0.2, 0.5], "rotation": 90.0},
    "model": {"width": 4, "embedding_dim": 8, "head_hidden": 16, "head_bottleneck": 8, "head_out": 16},
    "loss": {"geo_weight": 1.0, "reconstruction_weight": 1.0, "clustering_weight": 1.0, "student_temperature": 0.1,
             "teacher_temperature": 0.04, "teacher_warmup_temperature": 0.04, "teacher_warmup_epochs": 0,
             "center_momentum": 0.9, "teacher_momentum": 0.996, "density_clusters": 2, "n_centroids": 4,
             "cluster_temperature": 0.1, "hidden_fraction": 0.3},
    "train": {"epochs": 1, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 8, "max_steps_per_epoch": 2},
}


def _params(**changes) -> GpsMapsTrainParams:
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PARAMS.items()}
    for path, value in changes.items():
        section, key = path.split("__")
        values[section][key] = value
    return validate("gpsmaps", values, GpsMapsTrainParams)


def _write_place(directory, place: str, n: int, labelled: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(n))
    east = 400000.0 + 40.0 * (np.arange(n) % side)
    north = 6600000.0 + 40.0 * (np.arange(n) // side)
    mask = rng.integers(0, 8, (n, 16, 16)).astype(np.uint8)
    mask[0] = 3  # one uniform map: entropy 0, dropped
    image = rng.integers(0, 255, (n, 16, 16, 3)).astype(np.uint8)
    labels = {"land_price": rng.normal(3, 1, n), "population_density": rng.gamma(2, 2, n),
              "environment_index": rng.normal(50, 10, n), "landcover_at_centre": rng.integers(0, 3, n)}
    if not labelled:
        labels = {k: np.full(n, np.nan) for k in labels}
        labels["landcover_at_centre"] = np.full(n, -1)
    ds = xr.Dataset(
        {"image": (("tile", "y", "x", "band"), image), "mask": (("tile", "y", "x"), mask),
         **{k: ("tile", v) for k, v in labels.items()}},
        coords={"tile": np.arange(n), "easting": ("tile", east), "northing": ("tile", north),
                "lon": ("tile", 24 + (east - 400000) / 55000), "lat": ("tile", 60 + (north - 6600000) / 111000)},
    )
    ds.to_netcdf(directory / f"{place}.nc", engine="h5netcdf")


@pytest.fixture
def maps_dir(tmp_path):
    _write_place(tmp_path, "helsinki", 36, labelled=False, seed=1)
    _write_place(tmp_path, "town", 64, labelled=True, seed=2)
    return tmp_path


def test_bad_parameters_name_the_key():
    with pytest.raises(ParameterError, match="entropy_threshold"):
        _params(data__entropy_threshold=math.log(8) + 0.01)
    with pytest.raises(ParameterError, match="n_local"):
        _params(views__n_local=11)
    with pytest.raises(ParameterError, match="teacher_warmup_temperature"):
        _params(loss__teacher_warmup_temperature=0.5)


def test_variants_drop_exactly_their_terms():
    loss = _params().loss
    assert variant_loss(loss, "full") == loss
    assert variant_loss(loss, "no_geo").geo_weight == 0 and variant_loss(loss, "no_geo").clustering_weight == 1
    dino = variant_loss(loss, "dino")
    assert (dino.geo_weight, dino.reconstruction_weight, dino.clustering_weight) == (0, 0, 0)
    with pytest.raises(ValueError, match="unknown variant"):
        variant_loss(loss, "everything")


def test_holdout_takes_whole_blocks_and_is_seeded():
    x, y = np.repeat(np.arange(10) * 30.0, 10), np.tile(np.arange(10) * 30.0, 10)
    out = gdata.holdout_blocks(x, y, 100.0, 0.4, np.random.default_rng(0))
    again = gdata.holdout_blocks(x, y, 100.0, 0.4, np.random.default_rng(0))
    assert np.array_equal(out, again)
    block = np.floor(x / 100) * 100 + np.floor(y / 100)
    for b in np.unique(block):  # a block is held out whole or not at all
        assert len(set(out[block == b])) == 1
    assert 0 < out.mean() < 1


def test_load_maps_keeps_labels_away_from_held_out_maps(maps_dir):
    cfg = _params()
    maps = gdata.load_maps(cfg.data, cfg.seed, directory=maps_dir)
    t = maps.table
    assert maps.images.shape == (100, 3, 16, 16) and 0 <= float(maps.images.min()) and float(maps.images.max()) <= 1
    assert list(np.flatnonzero(~t["kept"].to_numpy())) == [0, 36]  # each place's uniform map is dropped
    assert not (t["place"] == "helsinki").pipe(lambda h: t.loc[h, "holdout"] | t.loc[h, "geo_train"]).any()
    town = t[t["place"] == "town"]
    assert town["holdout"].any() and town["geo_train"].any()
    assert not (town["holdout"] & town["geo_train"]).any()
    held = town.loc[town["holdout"], ["easting", "northing"]].to_numpy()
    train = town.loc[town["geo_train"], ["easting", "northing"]].to_numpy()
    gaps = np.sqrt(((train[:, None] - held[None]) ** 2).sum(-1)).min(1)
    assert (gaps > cfg.data.gap_m).all()


def test_geo_targets_are_fitted_on_training_maps_only(maps_dir):
    cfg = _params()
    t = gdata.load_maps(cfg.data, cfg.seed, directory=maps_dir).table
    targets = gdata.geo_targets(t, 2, cfg.seed)
    train = t["geo_train"].to_numpy()
    price = targets.price.numpy()
    assert np.isnan(price[~train]).all() and np.isfinite(price[train]).all()
    assert abs(price[train].mean()) < 1e-5 and abs(price[train].std() - 1) < 1e-5
    clusters = targets.density_cluster.numpy()
    assert (clusters[~train] == -1).all()
    density = t["population_density"].to_numpy()[train]
    assert density[clusters[train] == 1].min() >= density[clusters[train] == 0].max()  # numbered low to high


@pytest.mark.parametrize("variant", ["full", "dino"])
def test_a_variant_trains_and_its_teacher_follows(maps_dir, variant):
    cfg = _params()
    maps = gdata.load_maps(cfg.data, cfg.seed, directory=maps_dir)
    targets = gdata.geo_targets(maps.table, cfg.loss.density_clusters, cfg.seed)
    result = train_variant(cfg, variant, maps, targets, runtime("cpu"))
    h = result.history
    assert len(h) == 1 and np.isfinite(h.select_dtypes("number").to_numpy()).all()
    assert ("loss_geo" in h) == (variant == "full") and ("loss_clustering" in h) == (variant == "full")
    student = dict(result.net.student.named_parameters())
    moved = [name for name, p in result.net.teacher.named_parameters() if not torch.equal(p, student[name])]
    assert moved, "after a few steps the EMA teacher lags the student"
    assert all(not p.requires_grad for p in result.net.teacher.parameters())
    assert set(VARIANTS) >= {variant}


def test_planar_km_matches_great_circle_distances_within_a_city():
    lon, lat = np.array([24.90, 24.98]), np.array([60.15, 60.19])
    xy = ev.planar_km(lon, lat)
    planar = float(np.hypot(*(xy[1] - xy[0])))
    p, q = np.radians(lat), np.radians(lon)
    a = np.sin((p[1] - p[0]) / 2) ** 2 + np.cos(p[0]) * np.cos(p[1]) * np.sin((q[1] - q[0]) / 2) ** 2
    haversine = 2 * ev.EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))
    assert abs(planar - haversine) / haversine < 0.01


def test_knn_and_mlp_probes_score_a_signal_above_noise_and_knn_matches_scikit_learn():
    from sklearn.metrics import r2_score
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    n = 120
    table = pd.DataFrame({"place": "town", "easting": rng.uniform(0, 1000, n), "northing": rng.uniform(0, 1000, n)})
    y = np.stack([table["easting"] / 100 + rng.normal(0, 0.1, n), rng.normal(size=n)], axis=1)
    folds = folds_for(table, 3, 250.0, 0.0, 0, group_by="place")
    xy = table[["easting", "northing"]].to_numpy() / 1000
    good, noise = xy + rng.normal(0, 0.01, (n, 2)), rng.normal(size=(n, 4))
    knn_good, knn_noise = ev.knn_scores(good, y, folds, 5), ev.knn_scores(noise, y, folds, 5)
    assert knn_good.shape == (len(folds), 2)
    assert knn_good[:, 0].mean() > 0.8 > knn_noise[:, 0].mean()
    train, test = folds[0]
    oracle = make_pipeline(StandardScaler(), KNeighborsRegressor(5)).fit(good[train], y[train]).predict(good[test])
    assert np.allclose(knn_good[0], [r2_score(y[test, t], oracle[:, t]) for t in range(2)])
    mlp = ev.mlp_scores(xy, y, folds, 0)
    assert mlp.shape == (len(folds), 2) and mlp[:, 0].mean() > 0.5


class _Spy(Callback):
    """Runs after the study's callbacks: what each step saw and left behind."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_after_backward(self, state: StepState) -> None:
        net = unwrap(state.model)
        optimised = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
        self.steps.append({
            "teacher_before": {k: v.clone() for k, v in net.teacher.named_parameters()},
            "epoch_buffer": int(net.epoch),
            "teacher_grads": [p.grad for p in net.teacher.parameters()],
            "teacher_optimised": any(id(p) in optimised for p in net.teacher.parameters()),
            "frozen_optimised": any(id(p) in optimised for p in net.parameters() if not p.requires_grad),
            "gain": net.student.head.last_layer.parametrizations.weight.original0.detach().clone(),
            "epoch": state.epoch, "global_step": state.global_step, "total_steps": state.total_steps,
        })

    def on_step(self, state: StepState) -> None:
        net = unwrap(state.model)
        self.steps[-1]["teacher_after"] = {k: v.clone() for k, v in net.teacher.named_parameters()}
        self.steps[-1]["student_after"] = {k: v.detach().clone() for k, v in net.student.named_parameters()}


def _train(maps_dir, **changes):
    cfg = _params(**({"model__width": 8, "train__epochs": 2} | changes))
    maps = gdata.load_maps(cfg.data, cfg.seed, directory=maps_dir)
    targets = gdata.geo_targets(maps.table, cfg.loss.density_clusters, cfg.seed)
    return cfg, maps, targets


def test_training_runs_on_fit_with_the_teacher_an_ema_of_the_student_after_every_step(maps_dir):
    cfg, maps, targets = _train(maps_dir, loss__teacher_momentum=0.9, loss__teacher_warmup_temperature=0.02,
                                loss__teacher_warmup_epochs=1)
    spy = _Spy()
    result = train_variant(cfg, "full", maps, targets, runtime("cpu"), progress=False, callbacks=[spy])
    n = len(spy.steps)
    assert n == 4 and [s["global_step"] for s in spy.steps] == [0, 1, 2, 3] and spy.steps[0]["total_steps"] == 4
    for k, step in enumerate(spy.steps):
        # DINO's momentum: a cosine from 0.9 at the first step to 1 at the last (Caron et al., Sec. 3.1)
        momentum = 1 - (1 - 0.9) * (1 + math.cos(math.pi * k / (n - 1))) / 2
        for name, before in step["teacher_before"].items():
            expected = momentum * before + (1 - momentum) * step["student_after"][name]
            torch.testing.assert_close(step["teacher_after"][name], expected, rtol=1e-6, atol=1e-7)
        assert all(g is None for g in step["teacher_grads"]) and not step["teacher_optimised"]
        assert not step["frozen_optimised"]
        assert torch.equal(step["gain"], torch.ones_like(step["gain"]))  # weight-norm gain frozen at 1
        assert step["epoch_buffer"] == step["epoch"]  # the DINO loss read this epoch's teacher temperature
    assert spy.steps[-1]["teacher_after"].keys() == dict(result.net.student.named_parameters()).keys()
    assert all(not p.requires_grad for p in result.net.teacher.parameters())

    h = result.history
    assert list(h["epoch"]) == [1, 2]
    np.testing.assert_allclose(h["teacher_temperature"], [0.02, 0.04])
    assert h["teacher_momentum"].iloc[-1] == 1.0
    terms = ["loss_dino", "loss_geo", "loss_reconstruction", "loss_clustering"]
    assert np.isfinite(h[[*terms, "loss_total", "teacher_entropy", "embedding_std"]].to_numpy()).all()
    assert (h[terms].to_numpy() > 0).all()
    # the total is the weighted sum of the logged terms (epoch means are linear), with the weights as applied
    weights = np.array([1.0, *(result.weights[t] for t in ("geo", "reconstruction", "clustering"))])
    np.testing.assert_allclose(h[terms].to_numpy() @ weights, h["loss_total"], rtol=1e-5)
    np.testing.assert_allclose(h["weight_geo"], result.weights["geo"])


def test_a_variant_builds_and_logs_only_its_terms(maps_dir):
    cfg, maps, targets = _train(maps_dir, train__epochs=1)
    result = train_variant(cfg, "no_reconstruction", maps, targets, runtime("cpu"), progress=False)
    assert {c for c in result.history if c.startswith("loss_")} == {"loss_dino", "loss_geo", "loss_clustering",
                                                                    "loss_total"}
    assert not hasattr(result.net, "decoder") and hasattr(result.net, "clusters") and hasattr(result.net, "price")
    dino = GpsMapsNet(cfg.model, variant_loss(cfg.loss, "dino"))
    assert {name.split(".")[0] for name, _ in dino.named_parameters()} == {"student", "teacher"}


def test_every_variant_sees_the_same_batches_and_each_epoch_its_own(maps_dir):
    cfg, maps, targets = _train(maps_dir)
    kept = np.flatnonzero(maps.table["kept"].to_numpy())
    batches = map_batches(maps, kept, targets, cfg.views, 0.3, 8, 3, seed=5)
    first, again, other = list(batches(0)), list(batches(0)), list(batches(1))
    assert len(first) == 3 and first[0]["global"].shape == (2, 8, 3, 16, 16)  # one tensor per view size
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["global"], b["global"]) and torch.equal(a["hidden"], b["hidden"])
        assert torch.equal(a["local"], b["local"]) and torch.equal(a["price"].nan_to_num(), b["price"].nan_to_num())
    assert not torch.equal(first[0]["global"], other[0]["global"])
    # two processes share the epoch's batches out between them, each taking its own
    shards = [list(map_batches(maps, kept, targets, cfg.views, 0.3, 8, 2, seed=5, rank=r, world_size=2)(0))
              for r in (0, 1)]
    dealt = [b["global"] for b in map_batches(maps, kept, targets, cfg.views, 0.3, 8, 4, seed=5)(0)]
    assert torch.equal(shards[0][0]["global"], dealt[0]) and torch.equal(shards[1][0]["global"], dealt[1])
    assert torch.equal(shards[0][1]["global"], dealt[2]) and torch.equal(shards[1][1]["global"], dealt[3])
    with pytest.raises(ValueError, match="cannot fill"):
        map_batches(maps, kept, targets, cfg.views, 0.3, 8, 100, seed=5)


class _Interrupt(Callback):
    def on_step(self, state: StepState) -> None:
        if state.epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_training_resumes_to_the_same_teacher(maps_dir, tmp_path):
    cfg, maps, targets = _train(maps_dir)
    whole = train_variant(cfg, "full", maps, targets, runtime("cpu"), progress=False)
    checkpoint = tmp_path / "full.pt"
    with pytest.raises(KeyboardInterrupt):
        train_variant(cfg, "full", maps, targets, runtime("cpu"), checkpoint=checkpoint, progress=False,
                      callbacks=[_Interrupt()])
    resumed = train_variant(cfg, "full", maps, targets, runtime("cpu"), checkpoint=checkpoint, progress=False)
    for (name, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(whole.history, resumed.history)


def test_the_teacher_keeps_its_own_batch_norm_statistics(maps_dir):
    cfg, maps, targets = _train(maps_dir, train__epochs=1)
    result = train_variant(cfg, "dino", maps, targets, runtime("cpu"), progress=False)
    student = dict(result.net.student.named_buffers())
    running = [n for n in student if n.endswith("running_mean")]
    teacher = dict(result.net.teacher.named_buffers())
    # Official DINO: the teacher's statistics come from its own forward passes, not from the student's.
    assert any(not torch.equal(teacher[n], student[n]) for n in running)
    assert all(not torch.equal(teacher[n], torch.zeros_like(teacher[n])) for n in running)


def test_the_heads_last_layer_is_frozen_in_the_first_epoch_only(maps_dir):
    cfg, maps, targets = _train(maps_dir, loss__freeze_last_layer_epochs=1)
    spy = _Spy()
    result = train_variant(cfg, "dino", maps, targets, runtime("cpu"), progress=False, callbacks=[spy])
    name = "head.last_layer.parametrizations.weight.original1"
    initial = spy.steps[0]["teacher_before"][name]  # the teacher starts as a copy of the student
    epoch_of = [s["epoch"] for s in spy.steps]
    after = [s["student_after"][name] for s in spy.steps]
    assert all(torch.equal(a, initial) for a, e in zip(after, epoch_of, strict=True) if e == 0)
    assert not torch.equal(after[-1], initial)
    assert result.history["teacher_entropy"].notna().all()


def test_balanced_weights_put_each_term_at_its_share_of_the_dino_loss(maps_dir):
    from lib.studies.gpsmaps.model import balanced_weights
    from lib.studies.gpsmaps.train import build_net

    cfg, maps, targets = _train(maps_dir)
    kept = np.flatnonzero(maps.table["kept"].to_numpy())
    batch = next(iter(map_batches(maps, kept, targets, cfg.views, 0.3, 8, 1, seed=0)(0)))
    torch.manual_seed(0)
    net = build_net(cfg, "full", 0, 1, (0.5,) * 3, (0.25,) * 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shares = {"geo": 0.5, "reconstruction": 0.25, "clustering": 1.0}
    weights = balanced_weights(net, batch, shares)
    for k, v in net.state_dict().items():  # calibration moves no statistic, centre or weight
        if k != "weights":
            assert torch.equal(v, before[k]), k
    terms = net.terms(batch)
    for name, share in shares.items():
        assert weights[name] * float(terms[name]) == pytest.approx(share * float(terms["dino"]), rel=1e-4)
        assert net.weight(name) == pytest.approx(weights[name])


def test_simclr_and_the_supervised_bound_train_on_the_shared_trainer(maps_dir):
    cfg, maps, targets = _train(maps_dir, train__epochs=1)
    targets = gdata.geo_targets(maps.table, cfg.loss.density_clusters, cfg.seed, outcomes=("income", "liveability"))
    for training in ("simclr", "supervised"):
        result = train_variant(cfg, training, maps, targets, runtime("cpu"), progress=False)
        assert np.isfinite(result.history[f"loss_{training}"]).all() and "embedding_std" in result.history
        teacher, student = result.snapshots[1]
        assert teacher.shape == (len(maps.table), cfg.model.embedding_dim) and torch.equal(teacher, student)


def test_aerial_oracles_read_each_citys_tile_table_in_order_and_skip_places_without_one(tmp_path):
    import json

    for place, r2 in (("b_city", 0.4), ("a_city", 0.7)):
        (tmp_path / place).mkdir()
        (tmp_path / place / "city.json").write_text(json.dumps(
            {"oracle_r2": {"tile": {"income": {"aerial": r2, "all": 0.9}, "liveability": {"aerial": r2 / 2}}}}))
    oracle = gdata.aerial_oracles(["helsinki", "b_city", "a_city"], root=tmp_path)
    assert oracle == {"income": [0.4, 0.7], "liveability": [0.2, 0.35]}
    (tmp_path / "c_city").mkdir()
    (tmp_path / "c_city" / "city.json").write_text(json.dumps({"oracle_r2": {"region": {}}}))
    with pytest.raises(KeyError, match="c_city.*oracle_r2.tile"):
        gdata.aerial_oracles(["c_city"], root=tmp_path)
