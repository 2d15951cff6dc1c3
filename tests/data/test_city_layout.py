"""The layout of a generated city (lib.data.city_layout): land cover independent of how the city is cut,
the railway on road pixels, hidden factors as stated."""

import numpy as np
import pytest

from lib.data.aerial import LandCover
from lib.data.city import river_city
from lib.data.city_layout import MARK_BALLAST, MARK_RAIL, CityLayout, smooth_noise


def small_layout() -> CityLayout:
    return CityLayout(river_city(grid=(8, 8), tile_px=32))


def test_the_railway_is_drawn_on_road_pixels():
    layout = CityLayout(river_city())
    classes, markings = layout.landcover(0, 2048, 0, 2048)
    rail = np.isin(markings, (MARK_BALLAST, MARK_RAIL))
    assert rail.sum() > 2000 and (classes[rail] == LandCover.ROADS).all()
    assert (markings == MARK_RAIL).sum() > 0.2 * rail.sum()


def test_land_cover_does_not_depend_on_how_the_city_is_cut():
    layout = small_layout()
    whole, whole_marks = layout.landcover(0, 256, 0, 256)
    for y0, y1, x0, x1 in ((0, 64, 0, 64), (96, 200, 17, 250), (255, 256, 0, 256)):
        part, marks = layout.landcover(y0, y1, x0, x1)
        np.testing.assert_array_equal(part, whole[y0:y1, x0:x1])
        np.testing.assert_array_equal(marks, whole_marks[y0:y1, x0:x1])
    assert set(np.unique(whole)) <= set(int(c) for c in LandCover) and len(np.unique(whole)) >= 6


def test_coarse_water_is_the_water_at_every_step_th_pixel_centre():
    layout = small_layout()
    classes, _ = layout.classify(np.arange(0, 256, 8) + 4.0, np.arange(0, 256, 8) + 4.0)
    np.testing.assert_array_equal(layout.coarse_water(8), classes == LandCover.WATER)


def test_accessibility_falls_with_the_distance_to_the_nearest_station():
    layout = small_layout()
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, 256, 50), rng.uniform(0, 256, 50)
    factors = layout.factors_at(rows, cols)
    assert len(layout.stations) > 0
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):  # a loop over the stations, from the formula
        nearest = min(np.hypot(r - sy, c - sx) for sy, sx in layout.stations)
        assert factors["accessibility"][k] == pytest.approx(np.exp(-nearest * layout.res / 450.0), rel=1e-12)
    assert set(factors) == {"affluence", "commercial", "accessibility"}


def test_smooth_noise_is_standardised_and_seeded():
    field = smooth_noise(np.random.default_rng(1), (40, 30), 2.0)
    assert field.shape == (40, 30) and abs(field.mean()) < 1e-12 and abs(field.std() - 1) < 1e-12
    np.testing.assert_array_equal(field, smooth_noise(np.random.default_rng(1), (40, 30), 2.0))
    # Smoothed: neighbours are strongly correlated, unlike white noise.
    assert np.corrcoef(field[:, 1:].ravel(), field[:, :-1].ravel())[0, 1] > 0.7
    np.testing.assert_array_equal(smooth_noise(np.random.default_rng(1), (1, 1), 2.0), np.zeros((1, 1)))
