"""Labels of map centres in a generated city (lib.data.map_labels): centres uniform over the inhabited
tiles, and the outcomes and land cover under each centre against an independent lookup."""

from __future__ import annotations

import numpy as np
import pytest
import rioxarray
import xarray as xr

from lib.data.geotiff import DatasetImportError
from lib.data.map_labels import (
    CITY_LABELS,
    CityGrid,
    PointLabels,
    city_labels,
    point_labels_at,
    read_point_labels,
    sample_city_centres,
)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A small coastal city (8 x 8 tiles of 64 m, some of them sea): its land cover and its tiles."""
    from lib.data.city import build_city, coastal_city

    config = coastal_city(grid=(8, 8), tile_px=32, view_px=32, regions={"spacing_m": 64.0})
    path = build_city(config, tmp_path_factory.mktemp("datasets") / config.name).path
    landcover = rioxarray.open_rasterio(path / "landcover.tif").squeeze("band", drop=True)
    with xr.open_dataset(path / "tiles.nc", engine="h5netcdf", decode_coords="all") as tiles:
        return landcover, tiles.load()


def test_centres_are_uniform_over_inhabited_tiles(city):
    _, tiles = city
    tile_m = tiles.attrs["tile_px"] * tiles.attrs["resolution_m"]
    xy = sample_city_centres(tiles, 4000, seed=1, margin_m=0.0)
    col = np.floor((xy[:, 0] - tiles.attrs["origin_easting"]) / tile_m).astype(int)
    row = np.floor((tiles.attrs["origin_northing"] - xy[:, 1]) / tile_m).astype(int)
    grid = np.zeros((8, 8), dtype=int)
    np.add.at(grid, (row, col), 1)
    inhabited = np.zeros((8, 8), dtype=bool)
    inhabited[tiles["row"].values, tiles["col"].values] = tiles["inhabited"].values == 1
    assert (~inhabited).any() and (grid[~inhabited] == 0).all()
    expected = 4000 / inhabited.sum()
    assert np.abs(grid[inhabited] - expected).max() < 5 * np.sqrt(expected)
    np.testing.assert_array_equal(xy, sample_city_centres(tiles, 4000, seed=1, margin_m=0.0))


def test_a_margin_keeps_centres_away_from_the_city_s_edge(city):
    _, tiles = city
    grid = CityGrid.from_tiles(tiles)
    minx, miny, maxx, maxy = grid.bounds
    assert maxx - minx == maxy - miny == 8 * 64.0
    xy = sample_city_centres(tiles, 500, seed=2, margin_m=40.0)
    assert (xy[:, 0] >= minx + 40).all() and (xy[:, 0] <= maxx - 40).all()
    assert (xy[:, 1] >= miny + 40).all() and (xy[:, 1] <= maxy - 40).all()
    with pytest.raises(ValueError, match="no inhabited tile of coastal_city has room"):
        sample_city_centres(tiles, 1, seed=0, margin_m=300.0)


def test_labels_are_those_of_the_tile_under_the_centre(city):
    landcover, tiles = city
    xy = sample_city_centres(tiles, 150, seed=4, margin_m=16.0)
    outside = np.array([[tiles.attrs["origin_easting"] - 10.0, tiles.attrs["origin_northing"] + 10.0]])
    labels = city_labels(tiles, np.concatenate([xy, outside]), landcover)
    # Independent lookup: the tile whose centre lies within half a tile of the map's centre.
    half_tile = tiles.attrs["tile_px"] * tiles.attrs["resolution_m"] / 2
    near = ((np.abs(xy[:, :1] - tiles["easting"].values) <= half_tile)
            & (np.abs(xy[:, 1:] - tiles["northing"].values) <= half_tile))
    assert (near.sum(axis=1) == 1).all()
    tile = near.argmax(axis=1)
    np.testing.assert_array_equal(labels["city_tile"][:-1], tiles["tile"].values[tile])
    for name in CITY_LABELS:
        np.testing.assert_array_equal(labels[name][:-1], tiles[name].values[tile].astype(np.float32))
        assert np.isfinite(labels[name][:-1]).all() and np.isnan(labels[name][-1])
    under = landcover.sel(x=xr.DataArray(xy[:, 0]), y=xr.DataArray(xy[:, 1]), method="nearest").values
    np.testing.assert_array_equal(labels["landcover_at_centre"][:-1], under)
    assert labels["city_tile"][-1] == -1 and labels["landcover_at_centre"][-1] == -1
    assert (city_labels(tiles, xy)["landcover_at_centre"] == -1).all()  # no raster, no land cover


def test_point_labels_come_from_the_nearest_point_within_reach():
    rng = np.random.default_rng(0)
    points = PointLabels("points.csv", rng.uniform(0, 1000, (50, 2)), {"rent": rng.normal(size=50)})
    centres = rng.uniform(-200, 1200, (300, 2))
    values, distance = point_labels_at(points, centres, max_distance_m=80.0)
    # Naive loop from the definition: the nearest point, if within reach.
    for m, centre in enumerate(centres):
        d = np.hypot(*(points.xy - centre).T)
        if d.min() <= 80.0:
            assert values["rent"][m] == np.float32(points.values["rent"][d.argmin()])
            assert distance[m] == pytest.approx(d.min(), abs=1e-3)
        else:
            assert np.isnan(values["rent"][m]) and np.isnan(distance[m])
    with pytest.raises(DatasetImportError, match=r"points\.csv: no labelled point lies within 1\.0 m"):
        point_labels_at(points, [[5000.0, 5000.0]], max_distance_m=1.0)


def test_point_label_tables_are_projected_and_checked(tmp_path):
    import pandas as pd

    path = tmp_path / "labels.csv"
    pd.DataFrame({"lon": [24.94], "lat": [60.17], "rent": ["12.5"], "note": ["x"]}).to_csv(path, index=False)
    labels = read_point_labels(path, "EPSG:3067", columns=["rent"])
    assert labels.xy[0] == pytest.approx([385_700, 6_672_000], abs=2_000) and labels.values["rent"][0] == 12.5
    with pytest.raises(DatasetImportError, match=r"labels\.csv: column 'note' of row 1 is 'x', not a number"):
        read_point_labels(path, "EPSG:3067")
    with pytest.raises(DatasetImportError, match=r"label table labels\.csv has no column\(s\) \['price'\]"):
        read_point_labels(path, "EPSG:3067", columns=["price"])
