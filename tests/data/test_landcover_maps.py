"""Land-cover rasters drawn as maps in the OSM style (lib.data.landcover_maps): the class table, nodata and
the raster's edge, building footprints drawn and counted as OSM's."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from lib.data.landcover_maps import (
    Footprints,
    landcover_class_names,
    landcover_class_to_style,
    render_landcover_map,
    render_landcover_maps,
    sample_nearest,
    sample_raster_coordinates,
)
from lib.data.map_style import MAP_CLASSES, STYLES

STYLE_RGB = {style.name: style.rgb for style in STYLES}
CLASS = {name: code for code, name in enumerate(MAP_CLASSES)}


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


def test_class_table_comes_from_the_cf_flags(landcover):
    names = landcover_class_names(landcover)
    assert names[4] == "industrial_commercial" and len(names) == 9  # "industrial/commercial", normalised
    plain, with_roofs = landcover_class_to_style(landcover), landcover_class_to_style(landcover, footprints=True)
    assert plain[1] == "building" and with_roofs[1] == "residential"
    assert {k: v for k, v in plain.items() if k != 1} == {k: v for k, v in with_roofs.items() if k != 1}
    as_tags = landcover.assign_attrs(flag_values=" ".join(map(str, range(1, 10))))  # GeoTIFF tags are strings
    assert landcover_class_names(as_tags) == names
    with pytest.raises(ValueError, match="has no style"):
        landcover_class_to_style(landcover.assign_attrs(flag_meanings=" ".join(["swamp"] * 9)))
    with pytest.raises(ValueError, match="9 codes but flag_meanings 2 names"):
        landcover_class_names(landcover.assign_attrs(flag_meanings="water forest"))


def test_nearest_sampling_against_a_naive_lookup(landcover):
    values = landcover.values
    transform = landcover.rio.transform()
    rng = np.random.default_rng(0)
    x = rng.uniform(WEST - 50, WEST + 350, 200)
    y = rng.uniform(NORTH - 350, NORTH + 50, 200)
    sampled, inside = sample_nearest(values, transform, x, y, 255)
    for xi, yi, got, ok in zip(x, y, sampled, inside, strict=True):
        col, row = int(np.floor((xi - WEST) / CELL_M)), int(np.floor((NORTH - yi) / CELL_M))
        within = 0 <= row < values.shape[0] and 0 <= col < values.shape[1]
        assert ok == within and got == (values[row, col] if within else 255)


def test_raster_centres_stay_inside_the_margin(landcover):
    xy = sample_raster_coordinates(landcover, 500, seed=0, margin_m=40.0)
    assert (xy[:, 0] >= WEST + 40).all() and (xy[:, 0] <= WEST + 260).all()
    assert (xy[:, 1] >= NORTH - 260).all() and (xy[:, 1] <= NORTH - 40).all()
    np.testing.assert_array_equal(xy, sample_raster_coordinates(landcover, 500, seed=0, margin_m=40.0))
    with pytest.raises(ValueError, match="leaves no area"):
        sample_raster_coordinates(landcover, 1, seed=0, margin_m=150.0)


def test_maps_of_several_centres_equal_one_map_each(landcover):
    coords = np.array([[WEST + 60, NORTH - 70], [WEST + 200, NORTH - 130]])
    maps = render_landcover_maps(landcover, coords, size_px=8, metres_per_px=CELL_M)
    for i, centre in enumerate(coords):
        np.testing.assert_array_equal(maps.images[i], render_landcover_map(landcover, centre, 8, CELL_M).image)
    assert maps.source == "landcover" and maps.crs.to_epsg() == 3067
    lonlat = render_landcover_maps(landcover, np.column_stack([maps.lon, maps.lat]), coords_crs="EPSG:4326",
                                   size_px=8, metres_per_px=CELL_M)
    np.testing.assert_array_equal(lonlat.images, maps.images)


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


def test_footprint_points_lie_on_their_roofs():
    roof = np.zeros((36, 30), np.uint8)
    roof[:28, :28] = blocks(28, 4, 7)  # 4 x 4 square roofs
    roof[31:34, 2:9] = 1  # and a long building
    found = Footprints.from_raster(raster(roof))
    assert len(found.points) == 16 + 1
    col = np.floor((found.points[:, 0] - WEST2) / PX_M).astype(int)
    row = np.floor((NORTH2 - found.points[:, 1]) / PX_M).astype(int)
    assert (roof[row, col] == 1).all()
    whole_raster = (WEST2, NORTH2 - 72, WEST2 + 60, NORTH2)
    assert found.count(whole_raster) == 17 and found.count((WEST2, NORTH2 - 60, WEST2 + 60, NORTH2)) == 16
    assert found.area_fraction(whole_raster) == pytest.approx(roof.mean())
    # Half a pixel of window clips half a roof pixel: the area is exact, not counted in whole pixels.
    assert found.area_fraction((WEST2 + 2, NORTH2 - 4, WEST2 + 3, NORTH2 - 2)) == pytest.approx(1.0)
    assert found.area_fraction((WEST2 + 1, NORTH2 - 4, WEST2 + 3, NORTH2 - 2)) == pytest.approx(0.5)
    assert len(Footprints.from_raster(raster(np.zeros((4, 4), np.uint8))).points) == 0
