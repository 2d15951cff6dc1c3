"""Plot helpers of places (lib.plots.maps): tiles on their grid, irregular places as markers, the
principal-component colouring of embeddings."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from lib.plots.maps import pca_rgb, regular_grid, tile_map


def test_pca_rgb_lies_in_the_unit_cube():
    rgb = pca_rgb(np.random.default_rng(0).normal(size=(50, 8)))
    assert rgb.shape == (50, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_pca_rgb_colours_by_the_leading_components():
    rng = np.random.default_rng(1)
    t = rng.normal(size=200)
    features = np.column_stack([10 * t, rng.normal(size=(200, 4)) * 0.1])  # one dominant direction
    red = pca_rgb(features)[:, 0]
    assert abs(np.corrcoef(red, t)[0, 1]) > 0.99  # the first component, up to its sign


def test_a_regular_grid_is_drawn_north_up():
    easting = np.array([0.0, 10.0, 20.0, 0.0, 10.0, 20.0])
    northing = np.array([50.0, 50.0, 50.0, 40.0, 40.0, 40.0])
    values = np.arange(6.0)
    image, extent = regular_grid(easting, northing, values)
    np.testing.assert_array_equal(image, [[0, 1, 2], [3, 4, 5]])  # the northern row on top
    assert extent == (-5.0, 25.0, 35.0, 55.0)
    holes = regular_grid(easting[:5], northing[:5], values[:5])[0]
    assert np.isnan(holes[1, 2])
    fig, ax = plt.subplots()
    artist = tile_map(ax, easting, northing, values, cmap="viridis")
    np.testing.assert_array_equal(artist.get_array(), image)
    assert artist.get_cmap().name == "viridis" and artist.get_extent() == list(extent)


def test_scattered_places_are_drawn_as_markers():
    rng = np.random.default_rng(2)
    easting, northing = rng.uniform(0, 1000, 30), rng.uniform(0, 1000, 30)
    assert regular_grid(easting, northing, np.ones(30)) is None
    fig, ax = plt.subplots()
    points = tile_map(ax, easting, northing, np.arange(30.0))
    np.testing.assert_array_equal(points.get_offsets(), np.column_stack([easting, northing]))
    np.testing.assert_array_equal(points.get_array(), np.arange(30.0))
