"""Street-level views (lib.data.street_views): the affluence shows in the upkeep, the accessibility in the street.

Views are few (at most 80) and small (64 x 64 px), so the file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from lib.data.aerial import LandCover
from lib.data.street_views import (
    _ASPHALT,
    _BUS,
    _STOP_SIGN,
    STREET_BANDS,
    STREET_CUES,
    _Upkeep,
    render_street_views,
)

SIZE = 64

HORIZON = round(0.58 * SIZE)
MIX = np.eye(len(LandCover))[[LandCover.DENSE_RESIDENTIAL] * 7 + [LandCover.MEDIUM_RESIDENTIAL] * 2
                             + [LandCover.ROADS]].mean(axis=0)


def _saturation(views: np.ndarray) -> np.ndarray:
    top, bottom = views.max(axis=1), views.min(axis=1)
    return (top - bottom) / np.maximum(top, 1)


def _street_statistics(views: np.ndarray) -> dict[str, np.ndarray]:
    """Per view: facade saturation, share of street-tree green and number of bright car-paint pixels.

    * ``facade_saturation``: mean HSV saturation of the non-green pixels in
      the facade band (rows from 30 % of the view above the horizon to 2 px above it);
    * ``tree_green``: share of the band's pixels whose green exceeds red and blue by 12;
    * ``car_paint``: pixels of the kerb band (5 px above the horizon to 3 below)
      with saturation above 0.6 and a band above 100: bright paint, not facades.
    """
    views = views.astype(float)
    band = views[:, :, HORIZON - int(0.30 * SIZE):HORIZON - 2]
    green = (band[:, 1] > band[:, 0] + 12) & (band[:, 1] > band[:, 2] + 12)
    saturation = _saturation(band)
    kerb = views[:, :, HORIZON - 5:HORIZON + 3]
    return {
        "facade_saturation": np.array([s[~g].mean() for s, g in zip(saturation, green, strict=True)]),
        "tree_green": green.mean(axis=(1, 2)),
        "car_paint": ((_saturation(kerb) > 0.6) & (kerb.max(axis=1) > 100)).sum(axis=(1, 2)).astype(float),
    }


def test_affluence_is_visible_at_street_level():
    n = 40
    mixes = np.tile(MIX, (n, 1))
    poor = _street_statistics(render_street_views(mixes, np.random.default_rng([0, 0]), affluence=np.full(n, -2.0)))
    rich = _street_statistics(render_street_views(mixes, np.random.default_rng([0, 1]), affluence=np.full(n, 2.0)))
    combined = {"poor": 0.0, "rich": 0.0}
    for name in poor:
        lo, hi = poor[name], rich[name]
        auc = mannwhitneyu(hi, lo).statistic / (n * n)
        effect = (hi.mean() - lo.mean()) / np.sqrt((hi.var() + lo.var()) / 2)
        assert auc > 0.8 and effect > 1.5, (name, auc, effect)
        both = np.concatenate([lo, hi])
        combined["poor"] += (lo - both.mean()) / both.std()
        combined["rich"] += (hi - both.mean()) / both.std()
    # The three statistics together tell nearly every view apart.
    assert mannwhitneyu(combined["rich"], combined["poor"]).statistic / (n * n) > 0.98


def test_affluence_changes_the_upkeep_not_the_street():
    """The same rng state draws the same street at any affluence: sky and carriageway stay, upkeep changes."""
    mixes = np.tile(MIX, (6, 1))
    poor = render_street_views(mixes, np.random.default_rng(3), affluence=np.full(6, -2.0))
    rich = render_street_views(mixes, np.random.default_rng(3), affluence=np.full(6, 2.0))
    np.testing.assert_array_equal(poor[..., :4, :], rich[..., :4, :])  # sky above the tallest facades
    middle = slice(SIZE // 2 - 4, SIZE // 2 + 4)
    np.testing.assert_array_equal(poor[..., -6:, middle], rich[..., -6:, middle])  # the carriageway
    assert (poor != rich).any(axis=1).mean() > 0.1


def test_affluence_none_means_zero():
    mixes = np.random.default_rng(4).dirichlet(np.ones(len(LandCover)), size=5)
    default = render_street_views(mixes, np.random.default_rng(5), size=32)
    zeros = render_street_views(mixes, np.random.default_rng(5), affluence=np.zeros(5), size=32)
    assert default.shape == (5, 3, 32, 32) and default.dtype == np.uint8
    np.testing.assert_array_equal(default, zeros)
    assert not np.array_equal(default, render_street_views(mixes, np.random.default_rng(5),
                                                                   affluence=np.ones(5), size=32))


def test_affluence_is_validated():
    mixes = np.tile(MIX, (3, 1))
    with pytest.raises(ValueError, match="shape"):
        render_street_views(mixes, np.random.default_rng(0), affluence=np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        render_street_views(mixes, np.random.default_rng(0), affluence=np.array([0.0, np.nan, 1.0]))
    assert render_street_views(mixes[:0], np.random.default_rng(0)).shape == (0, 3, SIZE, SIZE)


def test_upkeep_follows_the_stated_formulas():
    """q = logistic(affluence) and the chances the docstring states (street trees 0.005, 0.19, 0.67 at -2, 0, 2)."""
    for affluence in (-2.0, 0.0, 2.0):
        upkeep = _Upkeep.at(affluence)
        q = 1 / (1 + np.exp(-affluence))
        assert upkeep.q == pytest.approx(q)
        assert upkeep.p_car == pytest.approx(0.2 + 0.55 * q)
        assert upkeep.p_board == pytest.approx(0.45 * (1 - q) ** 2)
        assert upkeep.p_litter == pytest.approx(0.025 * (1 - q))
    assert [round(_Upkeep.at(a).p_tree, 3) for a in (-2.0, 0.0, 2.0)] == [0.005, 0.188, 0.667]
    assert [round(_Upkeep.at(a).q, 2) for a in (-2.0, 0.0, 2.0)] == [0.12, 0.5, 0.88]


def test_views_are_rgb_and_seeded():
    mixes = np.tile(MIX, (2, 1))
    first = render_street_views(mixes, np.random.default_rng(9), size=32)
    assert first.shape == (2, len(STREET_BANDS), 32, 32)
    np.testing.assert_array_equal(first, render_street_views(mixes, np.random.default_rng(9), size=32))
    assert not np.array_equal(first[0], first[1])  # one rng, two different streets
    water = np.eye(len(LandCover))[[LandCover.WATER]]
    lake = render_street_views(water, np.random.default_rng(0), size=32, pixel_noise=0.0, illumination_noise=0.0)
    # Along water: open horizon, no facade, so the sky reaches the horizon in every column.
    sky_row = lake[0, :, round(0.58 * 32) - 1].astype(int)
    assert (sky_row[2] > sky_row[0]).all()  # blue above red: sky, not a wall


# ---------------------------------------------------------------------------
# Accessibility: road width, traffic, buses, a transit stop
# ---------------------------------------------------------------------------


def _clean(mixes, seed, accessibility, size=SIZE):
    """Views without camera noise, so painted colours stay exact, and their cues."""
    return render_street_views(mixes, np.random.default_rng(seed), accessibility=accessibility, size=size,
                               pixel_noise=0.0, illumination_noise=0.0, return_cues=True)


def _has(views: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per view: whether some pixel has exactly ``colour``."""
    return (views.astype(np.float32) == np.asarray(colour, np.float32).round()[None, :, None, None]).all(axis=1).any(
        axis=(1, 2))


def test_accessibility_widens_the_road_as_stated():
    """The bottom row's asphalt spans 2 w (0.04 + 0.42 t) size, w = 0.7 + 0.6 a + 0.5 (u - 0.5)."""
    n = 12
    mixes = np.tile(MIX, (n, 1))
    low, low_cues = _clean(mixes, 1, np.zeros(n))
    high, high_cues = _clean(mixes, 1, np.ones(n))
    wide, narrow = _has_row(high[:, :, -1], _ASPHALT), _has_row(low[:, :, -1], _ASPHALT)
    assert (wide > narrow).all()
    # Same rng: same u, so the widths differ by exactly 0.6.
    width = STREET_CUES.index("road_width")
    np.testing.assert_allclose(high_cues[:, width] - low_cues[:, width], 0.6)
    depth = (SIZE - 1 - HORIZON) / (SIZE - HORIZON)
    expected = 2 * high_cues[:, width] * (0.04 + 0.42 * depth) * SIZE
    # The centre line's dashes take a pixel or two; the road may run off the view's edges.
    assert (np.abs(wide + 2 - np.minimum(expected, SIZE)) <= 3).all(), (wide, expected)


def _has_row(rows: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per view, the pixels of a ``(V, 3, W)`` row that have exactly ``colour``."""
    return (rows.astype(np.float32) == np.asarray(colour, np.float32)[None, :, None]).all(axis=1).sum(axis=1)


def test_traffic_buses_and_stops_follow_the_stated_chances_and_show():
    n = 400
    mixes = np.tile(MIX, (n, 1))
    for a in (0.0, 0.5, 1.0):
        views, cues = _clean(mixes, 2, np.full(n, a), size=32)
        cue = dict(zip(STREET_CUES, cues.T, strict=True))
        p_stop, p_vehicle, p_bus = a**2, 0.1 + 0.7 * a, 0.6 * a
        for name, p, trials in (("transit_stop", p_stop, 1), ("vehicles", p_vehicle, 4),
                                ("buses", p_vehicle * p_bus, 4)):
            sd = np.sqrt(trials * p * (1 - p) / n) + 1e-9
            assert abs(cue[name].mean() - trials * p) < 4 * sd, (a, name, cue[name].mean(), trials * p)
        # What the cues report is what the image shows: the stop's yellow sign, the buses' red.
        np.testing.assert_array_equal(_has(views, _STOP_SIGN), cue["transit_stop"] > 0)
        np.testing.assert_array_equal(_has(views, _BUS), cue["buses"] > 0)


def test_accessibility_changes_the_street_not_the_upkeep():
    mixes = np.tile(MIX, (6, 1))
    affluence = np.linspace(-2, 2, 6)
    far = render_street_views(mixes, np.random.default_rng(3), affluence=affluence, accessibility=np.zeros(6))
    near = render_street_views(mixes, np.random.default_rng(3), affluence=affluence, accessibility=np.ones(6))
    np.testing.assert_array_equal(far[..., :4, :], near[..., :4, :])  # the sky
    assert (far != near).any(axis=1)[:, HORIZON:].mean() > 0.1
    default = render_street_views(mixes, np.random.default_rng(3), affluence=affluence)
    np.testing.assert_array_equal(default, far)  # None means 0


def test_accessibility_is_validated():
    mixes = np.tile(MIX, (3, 1))
    with pytest.raises(ValueError, match="accessibility has shape"):
        render_street_views(mixes, np.random.default_rng(0), accessibility=np.zeros(2))
    with pytest.raises(ValueError, match=r"accessibility must lie in \[0, 1\]"):
        render_street_views(mixes, np.random.default_rng(0), accessibility=np.array([0.0, 1.5, 0.2]))
    with pytest.raises(ValueError, match="accessibility must be finite"):
        render_street_views(mixes, np.random.default_rng(0), accessibility=np.array([0.0, np.nan, 0.2]))
