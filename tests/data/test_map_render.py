"""Map tiles rendered from the Helsinki OSM layers (lib.data.map_render): classes, building measures,
determinism, coordinates."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from PIL import Image

from lib.data.map_render import as_coords, check_window, project_coords, render_map, render_maps, sample_coordinates
from lib.data.map_style import MAP_CLASSES, STYLES

STYLE_RGB = {style.name: style.rgb for style in STYLES}
CLASS = {name: code for code, name in enumerate(MAP_CLASSES)}


def fraction(tile, map_class: str) -> float:
    return float(tile.fractions[CLASS[map_class]])


def test_largest_park_renders_green(layers):
    parks = layers.leisure[layers.leisure["leisure"] == "park"]
    park = parks.geometry.iloc[int(parks.area.argmax())]  # Kaisaniemi park
    point = park.representative_point()
    tile = render_map(layers, (point.x, point.y), size_px=32, metres_per_px=2.0)
    assert fraction(tile, "green_park") > 0.5
    assert tile.fractions.argmax() == CLASS["green_park"]
    assert (tile.image == STYLE_RGB["park"]).all(axis=-1).mean() > 0.5


def test_largest_pond_renders_water(layers):
    water = layers.natural[layers.natural["map_style"] == "water"]
    pond = water.geometry.iloc[int(water.area.argmax())]
    point = pond.representative_point()
    tile = render_map(layers, (point.x, point.y), size_px=16, metres_per_px=1.0)
    assert fraction(tile, "water") > 0.9
    assert (tile.image == STYLE_RGB["water"]).all(axis=-1).mean() > 0.9


def test_building_density_against_footprints(layers):
    building = layers.buildings.geometry.iloc[int(layers.buildings.area.argmax())]
    point = building.representative_point()
    tile = render_map(layers, (point.x, point.y), size_px=64, metres_per_px=4.0)

    window = shapely.box(point.x - 128, point.y - 128, point.x + 128, point.y + 128)
    clipped = gpd.clip(layers.buildings, window)
    expected_fraction = clipped.area.sum() / window.area
    expected_count = layers.buildings.representative_point().within(window).sum()
    assert tile.building_fraction == pytest.approx(expected_fraction, rel=1e-6)
    assert tile.building_density == pytest.approx(expected_count / 0.065536)
    assert tile.building_fraction > 0.2 and fraction(tile, "buildings") > 0.2


def test_pixel_and_footprint_building_shares_agree(layers):
    coords = sample_coordinates(layers, 40, seed=3, margin_m=128, coords_crs=None)
    maps = render_maps(layers, coords, coords_crs=None)
    pixel_share = maps.fractions[:, CLASS["buildings"]]
    assert np.abs(pixel_share - maps.building_fraction).max() < 0.12
    assert np.corrcoef(pixel_share, maps.building_fraction)[0, 1] > 0.98


def test_image_mask_and_fractions_are_consistent(layers):
    maps = render_maps(layers, sample_coordinates(layers, 8, seed=5, margin_m=128))
    assert maps.images.shape == (8, 64, 64, 3) and maps.images.dtype == np.uint8
    assert maps.masks.shape == (8, 64, 64)
    np.testing.assert_allclose(maps.fractions.sum(axis=1), 1.0)
    for image, mask, fractions in zip(maps.images, maps.masks, maps.fractions, strict=True):
        np.testing.assert_allclose(
            fractions, np.bincount(mask.ravel(), minlength=len(MAP_CLASSES)) / mask.size
        )
        # Every pixel shows the colour of a style of its own land-cover class.
        for style in STYLES:
            painted = (image == style.rgb).all(axis=-1)
            same_colour = {s.map_class for s in STYLES if s.rgb == style.rgb}
            assert set(np.array(MAP_CLASSES)[np.unique(mask[painted])]) <= same_colour


def test_rendering_and_sampling_are_deterministic(layers):
    coords = sample_coordinates(layers, 6, seed=11, margin_m=64)
    np.testing.assert_array_equal(coords, sample_coordinates(layers, 6, seed=11, margin_m=64))
    first, again = render_maps(layers, coords), render_maps(layers, coords)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.building_density, again.building_density)
    np.testing.assert_array_equal(render_map(layers, (first.easting[2], first.northing[2])).image, first.images[2])


def test_coordinates_outside_the_extract_are_named(layers):
    inside = sample_coordinates(layers, 2, seed=0)
    coords = np.array([inside[0], [24.80, 60.20], inside[1], [25.10, 60.10]])
    with pytest.raises(
        ValueError,
        match=r"2 coordinate\(s\) outside the OSM extract.*#1 \(24\.8, 60\.2\), #3 \(25\.1, 60\.1\)",
    ):
        render_maps(layers, coords)
    with pytest.raises(ValueError, match=r"#0 \(0, 0\)"):
        render_map(layers, (0.0, 0.0))


def test_samples_are_uniform_inside_the_covered_area(layers):
    xy = sample_coordinates(layers, 2000, seed=1, margin_m=100, coords_crs=None)
    assert shapely.contains_xy(layers.coverage.buffer(-100), xy[:, 0], xy[:, 1]).all()
    centroid = layers.coverage.buffer(-100).centroid
    assert np.allclose(xy.mean(axis=0), [centroid.x, centroid.y], atol=30)
    assert not np.allclose(xy, sample_coordinates(layers, 2000, seed=2, margin_m=100, coords_crs=None))
    with pytest.raises(ValueError, match="margin_m=5000 leaves no area"):
        sample_coordinates(layers, 2, seed=0, margin_m=5000)


def test_grid_png_of_helsinki_maps(layers, tmp_path):
    maps = render_maps(layers, sample_coordinates(layers, 16, seed=0, margin_m=128))
    rows = [np.concatenate(list(maps.images[r * 4 : r * 4 + 4]), axis=1) for r in range(4)]
    path = tmp_path / "helsinki_map_grid.png"
    Image.fromarray(np.concatenate(rows, axis=0)).resize((768, 768), Image.NEAREST).save(path)
    assert Image.open(path).size == (768, 768)
    # A city centre: every tile has streets and buildings, no two tiles alike.
    assert (maps.fractions[:, CLASS["roads"]] > 0.05).all()
    assert (maps.fractions[:, CLASS["buildings"]] > 0).mean() > 0.8
    assert len({tile.tobytes() for tile in maps.images}) == 16


def test_coordinate_helpers_check_their_input():
    np.testing.assert_array_equal(as_coords((1.0, 2.0)), [[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"shape \(n, 2\), got \(2, 3\)"):
        as_coords(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"non-finite values at rows \[1\]"):
        as_coords([[0.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match="size_px must be a positive integer"):
        check_window(0, 2.0)
    with pytest.raises(ValueError, match="metres_per_px must be positive"):
        check_window(8, 0.0)
    # Helsinki's railway station, to ETRS-TM35FIN and back (pyproj as the oracle: the same transform).
    lonlat = np.array([[24.9414, 60.1710]])
    import pyproj

    tm35 = pyproj.CRS.from_epsg(3067)
    xy = project_coords(lonlat, "EPSG:4326", tm35)
    assert 385_000 < xy[0, 0] < 386_500 and 6_671_000 < xy[0, 1] < 6_673_000
    np.testing.assert_allclose(project_coords(xy, tm35, pyproj.CRS.from_epsg(4326)), lonlat, atol=1e-9)
    assert project_coords(xy, None, tm35) is xy
