"""Tests of the generated cities (lib.data.city): the build, its files, and the truth they store.

The layout and the outcome models have their own tests (test_city_layout.py, test_city_outcomes.py).

Cities here are small (8 x 8 or 16 x 16 tiles of 32 px, regions 64-96 m
apart) so the whole file stays around a minute; each is built once per module.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import rioxarray
import xarray as xr
from scipy.stats import mannwhitneyu, spearmanr
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.data.city import (
    GENERATING_FACTORS,
    HIDDEN_FACTORS,
    LANDCOVER_NAMES,
    MODALITY_FACTORS,
    CityLayout,
    LandCover,
    build_city,
    coastal_city,
    flow_matrix,
    lake_city,
    load_city,
    load_regions,
    load_street_views,
    load_tables,
    modality_features,
    river_city,
    stored_outcome_models,
)
from lib.data.city_outcomes import OUTCOMES
from lib.data.street_views import STREET_CUES

# rioxarray 0.19 multiplies affine transforms with `*`, which affine 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SMALL = dict(grid=(8, 8), tile_px=32, view_px=32, views_per_region=4, regions={"spacing_m": 64.0})
MEDIUM = dict(grid=(16, 16), tile_px=32, view_px=32, views_per_region=4, regions={"spacing_m": 96.0})


@pytest.fixture(scope="module")
def river(tmp_path_factory):
    config = river_city(name="river_small", seed=3, **SMALL)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


@pytest.fixture(scope="module")
def river_medium(tmp_path_factory):
    config = river_city(name="river_medium", **MEDIUM)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


@pytest.fixture(scope="module")
def river_default_regions(tmp_path_factory):
    """A small river city with the default region spacing (160 m), so regions are as large as the pipeline's."""
    config = river_city(name="river_default_regions", grid=(16, 16), tile_px=32, view_px=32, views_per_region=2)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


@pytest.fixture(scope="module")
def coast_medium(tmp_path_factory):
    config = coastal_city(name="coast_medium", **MEDIUM)
    return build_city(config, tmp_path_factory.mktemp("cities") / config.name)


def _arrays(path):
    with load_city(path) as ds:
        return {name: ds[name].values for name in ("image", "landcover", "fractions", "liveability")}


def _digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


# --- configuration ----------------------------------------------------------


def test_presets_hold_a_thousand_tiles_and_over_500_inhabited_regions():
    """At default parameters every preset city has >= 500 regions whose water fraction is under one half."""
    from lib.data.city import _Regions

    for config in (river_city(), coastal_city(), lake_city()):
        assert config.n_tiles >= 1000 and config.tile_px == 64
        layout = CityLayout(config)
        grid = _Regions(config, layout.height, layout.width)
        step = 8
        water = layout.coarse_water(step)
        ys = np.arange(water.shape[0]) * step + step / 2
        xs = np.arange(water.shape[1]) * step + step / 2
        owner = grid.assign(ys, xs).ravel()
        wet = np.bincount(owner, weights=water.ravel(), minlength=grid.n) / np.bincount(owner, minlength=grid.n)
        assert (wet < 0.5).sum() >= 500, (config.name, (wet < 0.5).sum())
    assert len({(c.layout, c.crs) for c in (river_city(), coastal_city(), lake_city())}) == 3


# --- determinism -------------------------------------------------------------


def test_building_a_city_twice_gives_identical_files(river, tmp_path):
    again = build_city(river.config, tmp_path / "again")
    assert _digests(river.path) == _digests(again.path)
    other = build_city(river.config.model_copy(update={"seed": 4}), tmp_path / "other")
    first, third = _arrays(river.path), _arrays(other.path)
    assert (first["landcover"] != third["landcover"]).mean() > 0.1


def test_tiles_do_not_depend_on_the_region_grid(river, tmp_path):
    square = river.config.model_copy(update={"regions": river.config.regions.model_copy(update={"shape": "square"})})
    recut = build_city(square, tmp_path / "recut")
    first, second = _arrays(river.path), _arrays(recut.path)
    for name in ("image", "landcover", "fractions"):
        np.testing.assert_array_equal(first[name], second[name])
    assert len(load_tables(recut.path)["regions"]) != len(load_tables(river.path)["regions"])


# --- outcomes and their truth -----------------------------------------------


def _tile_design(ds):
    design = {f"fraction_{c}": ds["fractions"].sel(landcover_class=c).values.astype(np.float64)
              for c in LANDCOVER_NAMES}
    for name in ("affluence", "commercial", "accessibility", "water_proximity", "distance_to_centre_km"):
        design[name] = ds[name].values.astype(np.float64)
    return design


def _region_design(regions):
    names = [f"fraction_{c}" for c in LANDCOVER_NAMES] + [
        "affluence", "commercial", "accessibility", "water_proximity", "distance_to_centre_km"]
    return {n: regions[n].to_numpy(np.float64) for n in names}


def test_stored_weights_reproduce_the_noise_free_outcomes(river_medium):
    regions = load_tables(river_medium.path)["regions"]
    with load_city(river_medium.path) as ds:
        stored = stored_outcome_models(ds)
        assert stored == river_medium.outcome_models and set(stored) == set(OUTCOMES)
        design = _tile_design(ds)
        inhabited = ds["inhabited"].values.astype(bool)
        for name, model in stored.items():
            clean = ds[f"{name}_noise_free"].values
            np.testing.assert_allclose(clean[inhabited], model.predict(design)[inhabited], rtol=1e-5, atol=1e-4)
            noise = ds[name].values[inhabited] - clean[inhabited]
            assert np.std(noise) == pytest.approx(model.noise_sd, rel=0.35)
    live = regions[regions["inhabited"]]
    for name, model in stored.items():
        np.testing.assert_allclose(live[f"{name}_noise_free"], model.predict(_region_design(live)), rtol=1e-9)


def test_outcomes_are_missing_where_nobody_lives(coast_medium):
    regions = load_tables(coast_medium.path)["regions"]
    with load_city(coast_medium.path) as ds:
        water = ds["fractions"].sel(landcover_class="water").values
        inhabited = ds["inhabited"].values.astype(bool)
        np.testing.assert_array_equal(inhabited, water < 0.5)
        assert (~inhabited).sum() > 10  # the sea
        for name in OUTCOMES:
            assert np.isnan(ds[name].values[~inhabited]).all() and np.isfinite(ds[name].values[inhabited]).all()
    sea = ~regions["inhabited"]
    assert sea.sum() > 10 and (regions["fraction_water"][sea] >= 0.5).all()
    assert regions.loc[sea, list(OUTCOMES)].isna().all().all()
    assert (regions.loc[sea, ["population", "jobs", "n_pois"]] == 0).all().all()


def test_oracle_r2_matches_an_independent_least_squares_fit(river_medium):
    summary = json.loads((river_medium.path / "city.json").read_text())
    regions = load_tables(river_medium.path)["regions"]
    live = regions[regions["inhabited"]]
    for name in OUTCOMES:
        stored = summary["oracle_r2"]["region"][name]
        y = live[name].to_numpy()
        for modality, columns in MODALITY_FACTORS.items():
            x = live[list(columns)].to_numpy()
            assert stored[modality] == pytest.approx(LinearRegression().fit(x, y).score(x, y), abs=1e-3)
            assert -1e-9 <= stored[modality] <= stored["all_factors"] + 1e-9
        assert stored["all_factors"] <= stored["ceiling"] + 1e-9 <= 1
        assert stored["noise_free"] <= stored["ceiling"] + 0.05
    # Each modality's factor matters somewhere: the street view for income, POIs for land price.
    assert summary["oracle_r2"]["region"]["income"]["street_view"] > 0.1
    assert summary["oracle_r2"]["region"]["land_price"]["aerial"] < summary["oracle_r2"]["region"]["land_price"]["ceiling"] - 0.05


def test_green_space_matters_only_in_the_upper_half(river_medium):
    """The interval-dependent effect is in the stored data: the green slope is 0 below the threshold, 30 above."""
    with load_city(river_medium.path) as ds:
        model = stored_outcome_models(ds)["liveability"]
        inhabited = ds["inhabited"].values.astype(bool)
        design = {k: v[inhabited] for k, v in _tile_design(ds).items()}
        clean = ds["liveability_noise_free"].values[inhabited]
        slope = ds["liveability_slope_green_urban"].values[inhabited]
    base = model.base(design)
    upper = base > model.interval.threshold
    assert 0.3 < upper.mean() < 0.7
    np.testing.assert_array_equal(slope, np.where(upper, 30.0, 0.0))
    # What green adds to the noise-free outcome, recovered from the data: 0 below, 30 per unit above.
    green = design["fraction_green_urban"]
    np.testing.assert_allclose((clean - base)[~upper], 0.0, atol=1e-3)
    has_green = upper & (green > 0.05)
    assert has_green.sum() > 3
    np.testing.assert_allclose(((clean - base) / np.where(green > 0, green, 1))[has_green], 30.0, rtol=1e-3)


# --- regions, POIs, views, flows ---------------------------------------------


def test_regions_tile_the_city_on_a_hexagonal_grid(river):
    regions = load_tables(river.path)["regions"]
    east, north = regions["easting"].to_numpy(), regions["northing"].to_numpy()
    d = np.hypot(east[:, None] - east[None, :], north[:, None] - north[None, :])
    np.fill_diagonal(d, np.inf)
    nearest = d.min(axis=1)
    np.testing.assert_allclose(nearest, 64.0, rtol=0.02)  # hexagonal: six neighbours at one spacing
    assert np.median((np.abs(d - 64.0) < 1.5).sum(axis=1)) == 6
    assert regions["land_area_km2"].sum() <= (512 * 512) / 1e6 + 1e-9
    with load_regions(river.path) as ds:
        assert ds["image"].shape == (len(regions), 4, 32, 32)


def test_pois_stand_on_land_at_distinct_pixels(river_medium):
    tables = load_tables(river_medium.path)
    regions, pois = tables["regions"], tables["pois"]
    assert len(pois) > 50
    raster = rioxarray.open_rasterio(river_medium.path / "landcover.tif")
    points = {"x": xr.DataArray(pois["easting"].to_numpy(), dims="poi"),
              "y": xr.DataArray(pois["northing"].to_numpy(), dims="poi")}
    under = raster.sel(points, method="nearest").values[0]
    assert [LANDCOVER_NAMES[c] for c in under] == list(pois["landcover"])
    assert (under != LandCover.WATER).all()
    assert not pois.duplicated(["easting", "northing"]).any()
    assert regions.set_index("region").loc[pois["region"], "inhabited"].all()
    assert pois["category"].nunique() >= 12
    # Counts follow intensity and commercial character (a Poisson draw, not a constant).
    live = regions[regions["inhabited"]]
    assert live["n_pois"].nunique() > 3
    assert spearmanr(live["n_pois"], live["commercial"]).statistic > 0.1
    # "by the water" is measured city-wide: POIs near the river say so, some of them outside its regions.
    near = pois["description"].str.contains("by the water")
    assert near.any() and (~near).any()


def test_street_views_stand_on_streets_and_show_affluence(river_medium):
    regions = load_tables(river_medium.path)["regions"]
    raster = rioxarray.open_rasterio(river_medium.path / "landcover.tif")
    with load_street_views(river_medium.path) as views:
        assert views.sizes["view"] >= 4
        live = regions["inhabited"].to_numpy()
        east = views["view_easting"].values[live].ravel()
        north = views["view_northing"].values[live].ravel()
        assert np.isfinite(east).all() and np.isnan(views["view_easting"].values[~live]).all()
        under = raster.sel(x=xr.DataArray(east, dims="v"), y=xr.DataArray(north, dims="v"), method="nearest").values[0]
        assert (under != LandCover.WATER).all()
        # On streets wherever the region has streets (rural regions without any stand on their land).
        streets = np.repeat(regions["fraction_roads"].to_numpy()[live] > 0.05, views.sizes["view"])
        # (a region's roads may all be railway, where no view stands)
        assert streets.mean() > 0.5 and (under[streets] == LandCover.ROADS).mean() > 0.9
        affluence = views["view_affluence"].values[live].ravel()
        access = views["view_accessibility"].values[live].ravel()
        images = views["image"].values[live].reshape(-1, 3, 32, 32).astype(np.float64)
    # Views of the most and least affluent places differ in a simple statistic of their pixels, once the
    # accessibility's traffic, buses and stops (colourful too) are regressed out.
    hi, lo = affluence > np.quantile(affluence, 0.8), affluence < np.quantile(affluence, 0.2)
    colourfulness = images.std(axis=1).mean(axis=(1, 2))  # spread across the RGB bands
    fit = LinearRegression().fit(access[:, None], colourfulness)
    stats = colourfulness - fit.predict(access[:, None])
    assert abs(stats[hi].mean() - stats[lo].mean()) > 2 * np.sqrt(stats[hi].var() / hi.sum() + stats[lo].var() / lo.sum())


def test_flows_follow_the_gravity_model_with_accessibility(river_medium):
    config = river_medium.config
    tables = load_tables(river_medium.path)
    regions, flows = tables["regions"], tables["flows"]
    assert (flows["origin"] != flows["destination"]).all() and (flows["flow"] > 0).all()
    assert regions.set_index("region").loc[flows["origin"], "inhabited"].all()
    total = config.gravity.trips_per_capita * regions["population"].sum()
    assert flows["flow"].sum() == pytest.approx(total, rel=0.1)
    # log E[flow] is linear in the accessibility of both ends with the stated weight, given the rest.
    r = regions.set_index("region")
    o, d = r.loc[flows["origin"]], r.loc[flows["destination"]]
    x = np.column_stack([np.log(o["population"].to_numpy()), np.log(d["jobs"].to_numpy()),
                         np.log(np.maximum(flows["distance_km"], config.gravity.min_distance_km)),
                         o["accessibility"].to_numpy() + d["accessibility"].to_numpy()])
    fit = LinearRegression().fit(x, np.log(flows["expected"]))
    np.testing.assert_allclose(fit.coef_[:3], [config.gravity.alpha, config.gravity.beta, -config.gravity.gamma],
                               atol=0.3)
    assert fit.coef_[3] == pytest.approx(config.gravity.accessibility, abs=0.5)
    matrix = flow_matrix(flows, len(regions))
    np.testing.assert_allclose(matrix.sum(axis=1), regions["trips_out"])
    np.testing.assert_allclose(matrix.sum(axis=0), regions["trips_in"])


def test_pois_number_tens_in_dense_regions_and_follow_their_expectation(river_default_regions):
    """At the default spacing a dense region holds tens of POIs, a peripheral one a few; counts are Poisson."""
    tables = load_tables(river_default_regions.path)
    live = tables["regions"][tables["regions"]["inhabited"]]
    # The densest tenth of the regions (a small city's core is dense in part only).
    dense = live["fraction_dense_residential"] >= live["fraction_dense_residential"].quantile(0.9)
    assert dense.sum() >= 3 and live.loc[dense, "n_pois"].median() >= 10 and live["n_pois"].max() >= 20, (
        live.loc[dense, ["fraction_dense_residential", "commercial", "n_pois"]])
    outskirts = live["fraction_dense_residential"] + live["fraction_medium_residential"] < 0.1
    assert live.loc[outskirts, "n_pois"].median() <= 5
    # Poisson(lambda) per region: the total within 4 sd of the expected total, and lambda as stated.
    lam = live["expected_pois"]
    assert abs(live["n_pois"].sum() - lam.sum()) < 4 * np.sqrt(lam.sum())
    hectares = live["land_area_km2"] * 100 / (1 - live["fraction_water"])
    from lib.data.city import _POI_COMMERCIAL, _POI_INTENSITY

    fractions = live[[f"fraction_{c}" for c in LANDCOVER_NAMES]].to_numpy()
    stated = (river_default_regions.config.pois.rate * np.exp(_POI_COMMERCIAL * live["commercial"])
              * hectares * (fractions @ _POI_INTENSITY))
    np.testing.assert_allclose(lam, stated, rtol=1e-4)  # fractions are stored as float32
    assert spearmanr(live["n_pois"], live["commercial"]).statistic > 0.2
    # The city's categories: a long tail (many categories, the rarer half of them a small share).
    counts = np.sort(tables["pois"]["category"].value_counts().to_numpy())[::-1]
    assert len(counts) >= 25 and counts[len(counts) // 2:].sum() < 0.2 * counts.sum()


def test_street_view_cues_follow_accessibility(river_medium):
    regions = load_tables(river_medium.path)["regions"]
    live = regions[regions["inhabited"]]
    for cue in ("sv_road_width", "sv_transit_stop", "sv_vehicles", "sv_buses"):
        assert spearmanr(live[cue], live["accessibility"]).statistic > 0.4, cue
    assert spearmanr(live["sv_affluence"], live["affluence"]).statistic > 0.8
    with load_street_views(river_medium.path) as views:
        for cue in STREET_CUES:  # the region columns are the means of what each view drew
            per_view = views[f"view_{cue}"].values[live.index]
            np.testing.assert_allclose(per_view.mean(axis=1), live[f"sv_{cue}"])
        # Drawn with the accessibility at the viewpoint, which the views record.
        stop = views["view_transit_stop"].values[live.index].ravel()
        access = views["view_accessibility"].values[live.index].ravel()
    assert mannwhitneyu(access[stop == 1], access[stop == 0], alternative="greater").pvalue < 1e-3


def test_trips_start_from_the_noise_free_population(river, tmp_path):
    """More outcome noise changes the noisy population density, not the population or the expected trips."""
    noisier = build_city(river.config.model_copy(update={"outcome_noise": 3.0}), tmp_path / "noisier")
    first, second = load_tables(river.path), load_tables(noisier.path)
    live = first["regions"]["inhabited"]
    assert not np.allclose(first["regions"]["population_density"][live], second["regions"]["population_density"][live])
    for column in ("population", "jobs"):
        np.testing.assert_array_equal(first["regions"][column], second["regions"][column])
    pd.testing.assert_frame_equal(first["flows"], second["flows"])
    r = first["regions"][live]
    stated = 1000 * r["land_area_km2"] * np.maximum(r["population_density_noise_free"], 0)
    np.testing.assert_allclose(r["population"], stated)


def test_city_json_names_what_each_modality_renders(river_medium):
    summary = json.loads((river_medium.path / "city.json").read_text())
    regions = load_tables(river_medium.path)["regions"]
    live = regions[regions["inhabited"]]
    features = summary["modality_features"]
    assert features == modality_features() and set(features) == {"aerial", "street_view", "poi", "mobility"}
    observable = [c for columns in features.values() for c in columns]
    assert len(observable) == len(set(observable))
    for column in [*observable, *summary["hidden_factors"], *summary["generating_factors"]]:
        assert column in regions.columns, column
        assert np.isfinite(live[column].to_numpy(np.float64)).all(), column
    assert summary["hidden_factors"] == list(HIDDEN_FACTORS) and summary["generating_factors"] == list(GENERATING_FACTORS)
    assert set(HIDDEN_FACTORS) <= set(GENERATING_FACTORS) and not set(HIDDEN_FACTORS) & set(observable)
    assert "in-sample" in summary["oracle_r2_definition"]
    # The aerial features are the image's land cover: they sum to one and differ from the region's own cell.
    image = live[features["aerial"]].to_numpy()
    np.testing.assert_allclose(image.sum(axis=1), 1, atol=1e-5)
    with load_regions(river_medium.path) as ds:
        assert ds["image"].shape[0] == len(regions)
    # What the mobility features carry: trips out per inhabitant follow the accessibility.
    assert spearmanr(live["trips_out_per_capita"], live["accessibility"]).statistic > 0.3
    pois = load_tables(river_medium.path)["pois"]
    np.testing.assert_array_equal(live[[c for c in features["poi"] if c.startswith("poi_count_")]].sum(axis=1),
                                  live["n_pois"])
    assert len(pois) == regions["n_pois"].sum()


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
    assert 0.02 < water.mean() < 0.3
    assert water[cols < 4].sum() > 0 and water[cols >= 12].sum() > 0


def test_sea_lies_on_the_seaward_side(coast_medium):
    with load_city(coast_medium.path) as ds:
        geometry = json.loads(ds.attrs["layout_geometry"])
        bearing = np.radians(geometry["water_bearing_deg"] + 90)
        seaward = (np.sin(bearing) * (ds["easting"].values - geometry["centre_easting"])
                   + np.cos(bearing) * (ds["northing"].values - geometry["centre_northing"]))
        water = ds["fractions"].sel(landcover_class="water").values
    radius = geometry["radius_m"]
    assert water[seaward > 0.9 * radius].mean() > 0.6
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


