"""Tests of the synthetic-city generator (lib.data.city) and its renderer (lib.data.aerial).

Cities here are small (8 x 8 or 16 x 16 tiles of 32 px) so the whole file
stays well under a minute; each is built once per module.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import rioxarray
import torch
import xarray as xr
from pydantic import ValidationError
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.data import aerial
from lib.data.city import (
    LANDCOVER_NAMES,
    POI_TYPES,
    CityTiles,
    LandCover,
    build_city,
    coastal_city,
    load_city,
    load_street_views,
    load_tables,
    outcome_models,
    river_city,
    stored_outcome_models,
)

# rioxarray 0.19 multiplies affine transforms with `*`, which affine 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SMALL = dict(grid=(8, 8), tile_px=32, view_px=32, pois_per_region=6, views_per_region=3)
MEDIUM = dict(grid=(16, 16), tile_px=32, view_px=32, views_per_region=2)


@pytest.fixture(scope="module")
def river(tmp_path_factory):
    config = river_city(name="river_small", seed=3, **SMALL)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


@pytest.fixture(scope="module")
def river_medium(tmp_path_factory):
    config = river_city(name="river_medium", **MEDIUM)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


@pytest.fixture(scope="module")
def coast_medium(tmp_path_factory):
    config = coastal_city(name="coast_medium", **MEDIUM)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


def _arrays(path):
    with load_city(path) as ds:
        return {name: ds[name].values for name in ("image", "landcover", "fractions", "liveability")}


# --- configuration ----------------------------------------------------------


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ValidationError, match="tile_size"):
        river_city(tile_size=64)


def test_config_requires_a_projected_crs():
    with pytest.raises(ValidationError, match="not a projected CRS"):
        river_city(crs="EPSG:4326")


def test_config_requires_tiles_in_multiples_of_16_px():
    with pytest.raises(ValidationError, match="multiple of 16"):
        river_city(tile_px=40)


def test_presets_differ_and_hold_a_thousand_tiles_of_64_px():
    river, coast = river_city(), coastal_city()
    assert (river.layout, river.task) == ("river", "liveability")
    assert (coast.layout, coast.task) == ("coast", "income")
    for config in (river, coast):
        assert config.n_tiles >= 1000 and config.tile_px == 64


# --- determinism -------------------------------------------------------------


def test_same_seed_same_city_other_seed_other_city(river, tmp_path):
    again = build_city(river.config, tmp_path / "again")
    other = build_city(river.config.model_copy(update={"seed": 4}), tmp_path / "other")
    first, second, third = _arrays(river.path), _arrays(again.path), _arrays(other.path)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    pd.testing.assert_frame_equal(load_tables(river.path)["pois"], load_tables(again.path)["pois"])
    assert (first["landcover"] != third["landcover"]).mean() > 0.1
    assert not np.array_equal(first["image"], third["image"])


def test_tiles_do_not_depend_on_how_the_city_is_cut_into_regions(river, tmp_path):
    recut = build_city(river.config.model_copy(update={"region_tiles": 3}), tmp_path / "recut")
    first, second = _arrays(river.path), _arrays(recut.path)
    for name in ("image", "landcover", "fractions"):
        np.testing.assert_array_equal(first[name], second[name])


# --- outcomes ----------------------------------------------------------------


def _design(ds):
    return np.column_stack([ds["fractions"].values, ds["distance_to_centre_km"].values, ds["water_proximity"].values])


def test_outcome_weights_are_stored_and_recoverable(river_medium):
    with load_city(river_medium.path) as ds:
        stored = stored_outcome_models(ds)
        assert stored == river_medium.outcome_models == outcome_models("liveability")
        x = _design(ds)
        present = ds["fractions"].values.sum(axis=0) > 0.5  # classes with at least half a tile in the city
        for name, model in stored.items():
            assert json.loads(ds[name].attrs["weights"]) == model.terms()
            clean = ds[f"{name}_noise_free"].values
            fit = LinearRegression(fit_intercept=False).fit(x, clean)
            assert fit.score(x, clean) > 0.999
            # Fractions sum to one, so each class coefficient is intercept + w_k.
            expected = np.array([model.intercept + model.landcover[k] for k in LANDCOVER_NAMES])
            scale = np.abs(expected).max()
            np.testing.assert_allclose(fit.coef_[:-2][present], expected[present], atol=1e-3 * scale)
            np.testing.assert_allclose(fit.coef_[-2:], [model.distance_km, model.water_proximity], atol=1e-3 * scale)

            noisy = ds[name].values
            assert LinearRegression().fit(x, noisy).score(x, noisy) > 0.3
            assert np.std(noisy - clean) == pytest.approx(model.noise_sd, rel=1e-3)


def test_outcome_noise_can_be_switched_off(tmp_path):
    build = build_city(coastal_city(name="quiet", outcome_noise=0.0, **SMALL), tmp_path / "quiet")
    with load_city(build.path) as ds:
        for name in build.outcome_models:
            np.testing.assert_array_equal(ds[name].values, ds[f"{name}_noise_free"].values)


# --- concepts ----------------------------------------------------------------


def _patch_features(images, landcover, size=8):
    """Per-patch pixel statistics (mean, sd, gradients per band, NDVI) and the patch's class if >= 90 % pure."""
    n, bands, side, _ = images.shape
    k = side // size
    patches = images.astype(np.float32).reshape(n, bands, k, size, k, size).transpose(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(-1, bands, size, size)
    labels = landcover.reshape(n, k, size, k, size).transpose(0, 1, 3, 2, 4).reshape(-1, size * size)
    counts = np.stack([(labels == c).sum(axis=1) for c in range(len(LandCover))], axis=1)
    pure = counts.max(axis=1) >= 0.9 * size * size
    red, nir = patches[:, 0], patches[:, 3]
    features = np.hstack([
        patches.mean(axis=(2, 3)), patches.std(axis=(2, 3)),
        np.abs(np.diff(patches, axis=3)).mean(axis=(2, 3)), np.abs(np.diff(patches, axis=2)).mean(axis=(2, 3)),
        ((nir - red) / (nir + red + 1)).mean(axis=(1, 2))[:, None],
    ])
    tiles = np.repeat(np.arange(n), k * k)
    return features[pure], counts.argmax(axis=1)[pure], tiles[pure], patches[pure]


def test_landcover_classes_are_visually_distinct_but_colours_overlap(river_medium):
    with load_city(river_medium.path) as ds:
        features, labels, tiles, patches = _patch_features(ds["image"].values, ds["landcover"].values)
    held_out = np.isin(tiles, np.random.default_rng(0).permutation(tiles.max() + 1)[: (tiles.max() + 1) // 3])
    assert len(np.unique(labels)) == len(LandCover)

    def accuracy(x):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        return model.fit(x[~held_out], labels[~held_out]).score(x[held_out], labels[held_out])

    texture = accuracy(features)
    majority = np.bincount(labels[held_out]).max() / held_out.sum()
    assert texture > 0.7 and texture > majority + 0.3
    # One pixel's colour is a much weaker cue than the texture around it.
    centre_pixel = patches[:, :, 4, 4]
    assert accuracy(centre_pixel) < texture - 0.1


# --- layout -----------------------------------------------------------------


def test_fractions_sum_to_one_and_match_the_landcover(river):
    with load_city(river.path) as ds:
        fractions = ds["fractions"].values
        landcover = ds["landcover"].values
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, atol=1e-6)
    counts = np.stack([(landcover == c).mean(axis=(1, 2)) for c in LandCover], axis=1)
    np.testing.assert_allclose(fractions, counts, atol=1e-6)


def test_river_crosses_the_city(river_medium):
    with load_city(river_medium.path) as ds:
        water = ds["fractions"].sel(landcover_class="water").values
        cols = ds["col"].values
    assert 0.02 < water.mean() < 0.25
    assert water[cols < 4].sum() > 0 and water[cols >= 12].sum() > 0


def test_sea_lies_on_the_seaward_side(coast_medium):
    with load_city(coast_medium.path) as ds:
        geometry = json.loads(ds.attrs["layout_geometry"])
        bearing = np.radians(geometry["water_bearing_deg"])
        seaward = (np.sin(bearing) * (ds["easting"].values - geometry["centre_easting"])
                   + np.cos(bearing) * (ds["northing"].values - geometry["centre_northing"]))
        water = ds["fractions"].sel(landcover_class="water").values
    radius = geometry["radius_m"]
    assert water[seaward > 0.7 * radius].mean() > 0.8
    assert water[seaward < -0.2 * radius].mean() < 0.1


@pytest.mark.parametrize("city", ["river_medium", "coast_medium"])
def test_density_falls_with_distance_from_the_centre(city, request):
    with load_city(request.getfixturevalue(city).path) as ds:
        distance = ds["distance_to_centre_km"].values
        residential = ["dense_residential", "medium_residential", "sparse_residential"]
        f = ds["fractions"].sel(landcover_class=residential).values
        land = ds["fractions"].sel(landcover_class="water").values < 0.5
    built = f @ np.array([1.0, 0.5, 0.2])
    assert spearmanr(distance[land], built[land]).statistic < -0.4
    inner = land & (distance < np.quantile(distance, 1 / 3))
    outer = land & (distance > np.quantile(distance, 2 / 3))
    assert built[inner].mean() > 2 * built[outer].mean()


@pytest.mark.parametrize(("city", "lon", "lat", "epsg"), [
    ("river_medium", 24.9, 60.2, 3067), ("coast_medium", 16.45, 43.52, 32633)])
def test_crs_and_coordinates_are_recorded(city, lon, lat, epsg, request):
    build = request.getfixturevalue(city)
    with load_city(build.path) as ds:
        assert ds.rio.crs.to_epsg() == epsg and ds.attrs["crs"] == f"EPSG:{epsg}"
        assert np.abs(ds["lon"].values - lon).max() < 0.2 and np.abs(ds["lat"].values - lat).max() < 0.2
        tiles = ds["landcover"].values
        rows, cols = build.config.grid
    raster = rioxarray.open_rasterio(build.path / "landcover.tif")
    assert raster.rio.crs.to_epsg() == epsg
    assert raster.rio.transform().c == build.config.origin[0] and raster.rio.transform().f == build.config.origin[1]
    assert raster.rio.resolution() == (build.config.resolution_m, -build.config.resolution_m)
    tp = build.config.tile_px
    mosaic = tiles.reshape(rows, cols, tp, tp).transpose(0, 2, 1, 3).reshape(rows * tp, cols * tp)
    np.testing.assert_array_equal(raster.values[0], mosaic)


# --- streaming and atomic writing -------------------------------------------


def _failing_renderer(monkeypatch, after):
    """Make the aerial renderer raise on its ``after + 1``-th call."""
    calls = []
    render = aerial.render_aerial

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise RuntimeError("renderer failed")
        return render(*args, **kwargs)

    monkeypatch.setattr(aerial, "render_aerial", flaky)
    return calls


def test_failed_build_leaves_no_output(tmp_path, monkeypatch):
    calls = _failing_renderer(monkeypatch, after=5)
    with pytest.raises(RuntimeError, match="renderer failed"):
        build_city(river_city(name="broken", region_tiles=2, **SMALL), tmp_path / "broken")
    assert len(calls) == 6
    assert list(tmp_path.iterdir()) == []


def test_failed_rebuild_keeps_the_previous_build(river, tmp_path, monkeypatch):
    target = tmp_path / "city"
    build_city(river.config, target)
    before = _arrays(target)
    _failing_renderer(monkeypatch, after=2)
    with pytest.raises(RuntimeError):
        build_city(river.config.model_copy(update={"seed": 9}), target)
    assert [p.name for p in tmp_path.iterdir()] == ["city"]
    np.testing.assert_array_equal(_arrays(target)["image"], before["image"])


def test_a_build_cleans_what_a_killed_build_left(river, tmp_path):
    """A killed process leaves its hidden work folder; the next build removes it, and only its own city's."""
    target = tmp_path / "city"
    for leftover in (".city.abc123.partial", ".city.def456.old"):
        (tmp_path / leftover / "half").mkdir(parents=True)
    (tmp_path / ".other.abc123.partial").mkdir()
    build_city(river.config, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc123.partial", "city"]


def test_build_renders_and_writes_one_region_at_a_time(tmp_path, monkeypatch):
    # Spy on the renderer and on writes to the image variable: no call may
    # see more than one region, no write more than one tile row of a region.
    config = river_city(name="rows", grid=(8, 6), tile_px=32, region_tiles=2, views_per_region=0)
    batches, writes = [], []
    render = aerial.render_aerial
    store = h5py.Dataset.__setitem__

    def spy_render(landcover, *args, **kwargs):
        batches.append(len(landcover))
        return render(landcover, *args, **kwargs)

    def spy_store(dataset, key, value):
        if dataset.name == "/image" and dataset.file.filename.endswith("tiles.nc"):
            writes.append(len(value))
        return store(dataset, key, value)

    monkeypatch.setattr(aerial, "render_aerial", spy_render)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", spy_store)
    build_city(config, tmp_path / "rows")
    assert batches == [4] * 12
    assert writes == [2] * 24


def test_outputs_reopen_lazily_with_their_schema(river):
    config = river.config
    with load_city(river.path) as ds:
        assert not ds["image"].variable._in_memory
        assert ds["image"].dims == ("tile", "band", "y", "x") and ds["image"].dtype == np.uint8
        assert ds["image"].shape == (64, 4, 32, 32)
        assert ds["landcover"].shape == (64, 32, 32) and ds["fractions"].shape == (64, len(LandCover))
        assert list(ds["landcover_class"].values) == list(LANDCOVER_NAMES)
        for name in ("easting", "northing", "lon", "lat", "row", "col", "region"):
            assert name in ds.coords
        for name in outcome_models(config.task):
            assert ds[name].dtype == np.float32 and ds[f"{name}_noise_free"].dtype == np.float32
    assert sorted(p.name for p in river.path.iterdir()) == sorted([
        "city.json", "flows.parquet", "landcover.tif", "pois.parquet", "regions.parquet", "street_views.nc",
        "tiles.nc"])


# --- regions, POIs, flows, street views -------------------------------------


def test_regions_pois_and_flows(river):
    tables = load_tables(river.path)
    regions, pois, flows = tables["regions"], tables["pois"], tables["flows"]
    n = len(regions)
    assert n == 4 and regions["n_tiles"].sum() == 64
    assert (regions["population"] >= 0).all() and (regions["jobs"] > 0).all()

    assert len(pois) == n * river.config.pois_per_region
    for poi in pois.itertuples():
        assert poi.type in POI_TYPES[poi.landcover] and poi.description.startswith(poi.type)
    raster = rioxarray.open_rasterio(river.path / "landcover.tif")
    points = {"x": xr.DataArray(pois["easting"].to_numpy(), dims="poi"),
              "y": xr.DataArray(pois["northing"].to_numpy(), dims="poi")}
    under = raster.sel(points, method="nearest").values[0]
    assert [LANDCOVER_NAMES[c] for c in under] == list(pois["landcover"])
    with load_city(river.path) as ds:
        assert (ds["region"].values[pois["tile"]] == pois["region"]).all()

    assert len(flows) == n * (n - 1) and (flows["origin"] != flows["destination"]).all()
    assert (flows["flow"] >= 0).all() and flows["flow"].dtype == np.int64
    total = river.config.gravity.trips_per_capita * regions["population"].sum()
    assert flows["expected"].sum() == pytest.approx(total)
    assert abs(flows["flow"].sum() - total) < 5 * np.sqrt(total)


def test_street_views_follow_the_regions(river):
    config = river.config
    regions = load_tables(river.path)["regions"]
    with load_street_views(river.path) as views:
        assert views["image"].shape == (len(regions), config.views_per_region, 3, config.view_px, config.view_px)
        assert views["image"].dtype == np.uint8 and views.rio.crs.to_epsg() == 3067
        np.testing.assert_allclose(views["view_fractions"].values.sum(axis=-1), 1.0, atol=1e-5)
        east = views["view_easting"].values
        north = views["view_northing"].values
        images = views["image"].values
    def within(values, low, high):
        return (values >= regions[low].to_numpy()[:, None]) & (values <= regions[high].to_numpy()[:, None])

    assert within(east, "min_easting", "max_easting").all() and within(north, "min_northing", "max_northing").all()
    assert not np.array_equal(images[0], images[1])


def test_street_views_show_the_land_cover_mix():
    rng = np.random.default_rng(0)
    forest = np.eye(len(LandCover))[[LandCover.FOREST] * 8]
    dense = np.eye(len(LandCover))[[LandCover.DENSE_RESIDENTIAL] * 8]

    def greenness(views):  # green over the mean of red and blue, above the horizon
        views = views.astype(float)[..., :18, :]
        return (views[:, 1] - (views[:, 0] + views[:, 2]) / 2).mean()

    assert greenness(aerial.render_street_views(forest, rng, size=32)) > \
        greenness(aerial.render_street_views(dense, rng, size=32)) + 10


# --- torch dataset -----------------------------------------------------------


def test_torch_dataset_returns_image_outcome_and_fractions(river):
    data = CityTiles(river.path, "liveability")
    assert len(data) == 64
    image, outcome, fractions = data[5]
    assert image.shape == (4, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    with load_city(river.path) as ds:
        assert outcome.item() == pytest.approx(float(ds["liveability"][5]))
        np.testing.assert_allclose(image.numpy(), ds["image"].values[5] / 255.0, atol=1e-6)
    assert fractions.shape == (len(LandCover),) and fractions.sum().item() == pytest.approx(1.0, abs=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(CityTiles(river.path, "land_price", tiles=[1, 2, 3],
                                                             noise_free=True), batch_size=3)))
    assert batch[0].shape == (3, 4, 32, 32) and batch[1].shape == (3,)
    with pytest.raises(KeyError, match="income"):
        CityTiles(river.path, "income")
