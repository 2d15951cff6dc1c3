"""The one map style (lib.data.map_style): palette, draw order, classes, and a style raster made a map."""

from __future__ import annotations

import numpy as np
import pyproj

from lib.data.map_style import (
    BUILDING_CLASS,
    MAP_CLASSES,
    STYLE_CLASS,
    STYLE_CODE,
    STYLE_RGB,
    STYLES,
    MapBatch,
    tile_from_styles,
)


def test_styles_are_named_once_and_count_as_a_known_class():
    names = [style.name for style in STYLES]
    assert len(set(names)) == len(names) and names[0] == "background"
    assert {style.map_class for style in STYLES} <= set(MAP_CLASSES)
    assert {style.map_class for style in STYLES} == set(MAP_CLASSES)  # every class can be drawn
    # Draw order: land use under buildings under roads, so a road crosses a park and a roof sits on land use.
    assert STYLE_CODE["park"] < STYLE_CODE["building"] < STYLE_CODE["road_casing"] < STYLE_CODE["road_major"]
    assert MAP_CLASSES[BUILDING_CLASS] == "buildings"


def test_a_style_raster_becomes_image_mask_and_fractions():
    styles = np.array([[0, STYLE_CODE["park"]], [STYLE_CODE["road_minor"], STYLE_CODE["road_minor"]]], np.uint8)
    tile = tile_from_styles(styles, 0.25, 40.0)
    for (r, c), code in np.ndenumerate(styles):  # a naive lookup, pixel by pixel
        assert tuple(tile.image[r, c]) == STYLES[code].rgb
        assert MAP_CLASSES[tile.mask[r, c]] == STYLES[code].map_class
    expected = np.zeros(len(MAP_CLASSES))
    for name, share in (("other", 0.25), ("green_park", 0.25), ("roads", 0.5)):
        expected[MAP_CLASSES.index(name)] = share
    np.testing.assert_allclose(tile.fractions, expected)
    assert tile.image.dtype == np.uint8 and (tile.building_fraction, tile.building_density) == (0.25, 40.0)
    assert STYLE_RGB.shape == (len(STYLES), 3) and STYLE_CLASS.shape == (len(STYLES),)


def test_a_batch_hands_out_its_tiles():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    batch = MapBatch(images=images, masks=np.zeros((2, 2, 2), np.uint8), fractions=np.eye(2, len(MAP_CLASSES)),
                     building_fraction=np.array([0.1, 0.2]), building_density=np.array([np.nan, 5.0]),
                     easting=np.zeros(2), northing=np.zeros(2), lon=np.zeros(2), lat=np.zeros(2),
                     crs=pyproj.CRS.from_epsg(3067), metres_per_px=2.0, source="landcover")
    second = batch.tile(1)
    np.testing.assert_array_equal(second.image, images[1])
    assert second.building_fraction == 0.2 and second.building_density == 5.0
    assert isinstance(second.building_density, float) and np.isnan(batch.tile(0).building_density)
