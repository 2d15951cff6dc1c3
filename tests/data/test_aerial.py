"""Tests of the aerial renderer of synthetic cities (lib.data.aerial): railway codes, building masks.

Tiles are small (64 x 64 px), so the file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from lib.data import aerial
from lib.data.aerial import (
    MARK_BALLAST,
    MARK_DASH,
    MARK_NONE,
    MARK_RAIL,
    MARK_SLEEPER,
    LandCover,
)

SIZE = 64


def _blocks(seed: int = 0, n: int = 3) -> np.ndarray:
    """``(n, 64, 64)`` land cover of 8 x 8 px blocks of random classes."""
    cells = np.random.default_rng(seed).integers(0, len(LandCover), size=(n, 8, 8))
    return np.repeat(np.repeat(cells, 8, 1), 8, 2).astype(np.uint8)


def _render(landcover, markings, *, row0=None, col0=None, tile_ids=None, **kw):
    n = len(landcover)
    return aerial.render_aerial(
        landcover, markings,
        row0=np.arange(n) * 64 - 96 if row0 is None else row0,
        col0=np.arange(n) * 40 + 7 if col0 is None else col0,
        tile_ids=np.arange(n) + 11 if tile_ids is None else tile_ids,
        resolution_m=kw.pop("resolution_m", 2.0), seed=kw.pop("seed", 5), **kw)


def _tracks(landcover: np.ndarray, seed: int = 1) -> np.ndarray:
    """Random marking codes 0-4 on the road pixels."""
    codes = np.random.default_rng(seed).integers(MARK_NONE, MARK_SLEEPER + 1, size=landcover.shape)
    return np.where(landcover == LandCover.ROADS, codes, MARK_NONE).astype(np.uint8)


# --- railway and marking codes ----------------------------------------------


def test_marking_constants():
    assert (MARK_NONE, MARK_DASH, MARK_BALLAST, MARK_RAIL) == (0, 1, 2, 3)
    assert {"MARK_NONE", "MARK_DASH", "MARK_BALLAST", "MARK_RAIL"} <= set(aerial.__all__)


def test_bool_markings_render_as_dash_codes():
    landcover = _blocks()
    dashes = (landcover == LandCover.ROADS) & (np.random.default_rng(2).uniform(size=landcover.shape) < 0.3)
    as_bool = _render(landcover, dashes)
    as_codes = _render(landcover, dashes.astype(np.uint8) * MARK_DASH)
    assert as_bool.dtype == np.uint8 and as_bool.shape == (3, 4, SIZE, SIZE)
    np.testing.assert_array_equal(as_bool, as_codes)
    assert not np.array_equal(as_bool, _render(landcover, np.zeros_like(dashes)))  # the dashes do show


def test_rendering_in_two_halves_equals_rendering_whole():
    """Textures, railway and roofs included, depend on the global position only (noise is drawn per tile: off)."""
    landcover = _blocks(3, n=1)
    marks = _tracks(landcover)
    kw = {"illumination_noise": 0.0, "pixel_noise": 0.0, "return_buildings": True}
    whole, whole_roofs = _render(landcover, marks, row0=np.array([100]), col0=np.array([-30]), **kw)
    top, top_roofs = _render(landcover[:, :32], marks[:, :32], row0=np.array([100]), col0=np.array([-30]),
                             tile_ids=np.array([0]), **kw)
    bottom, bottom_roofs = _render(landcover[:, 32:], marks[:, 32:], row0=np.array([132]), col0=np.array([-30]),
                                   tile_ids=np.array([1]), **kw)
    np.testing.assert_array_equal(np.concatenate([top, bottom], axis=2), whole)
    np.testing.assert_array_equal(np.concatenate([top_roofs, bottom_roofs], axis=1), whole_roofs)


def test_track_codes_change_only_the_pixels_that_carry_them():
    landcover = _blocks(4)
    marks = _tracks(landcover)
    marks[landcover == LandCover.FOREST] = MARK_RAIL  # ignored off the roads
    plain = _render(landcover, np.where(marks == MARK_DASH, MARK_DASH, MARK_NONE))
    tracked = _render(landcover, marks)
    changed = (plain != tracked).any(axis=1)
    on_track = (marks >= MARK_BALLAST) & (landcover == LandCover.ROADS)
    assert not (changed & ~on_track).any()
    assert changed[on_track].mean() > 0.9


def test_ballast_and_rails_look_unlike_asphalt():
    roads = np.full((1, SIZE, SIZE), LandCover.ROADS, np.uint8)
    marks = np.zeros_like(roads)
    marks[:, :, 16:48] = MARK_BALLAST
    marks[:, :, [20, 28, 36, 44]] = MARK_RAIL
    image = _render(roads, marks, illumination_noise=0.0, pixel_noise=6.0)[0].astype(float)
    asphalt, ballast, rail = (image[:, marks[0] == code] for code in (MARK_NONE, MARK_BALLAST, MARK_RAIL))
    mean = {name: px.mean(axis=1) for name, px in (("asphalt", asphalt), ("ballast", ballast), ("rail", rail))}
    # Ballast is brighter and browner than asphalt (red over blue), a little brighter in NIR; rails darker in all bands.
    assert (mean["ballast"] - mean["asphalt"] > 6).all()
    assert mean["ballast"][0] - mean["ballast"][2] > 15 > abs(mean["asphalt"][0] - mean["asphalt"][2])
    assert (mean["asphalt"] - mean["rail"] > 6).all()
    assert mean["ballast"][3] < 100  # crushed stone, no vegetation: low NIR
    # Speckled gravel: more pixel-to-pixel spread than the patchy asphalt.
    assert ballast[:3].std(axis=1).mean() > 1.5 * asphalt[:3].std(axis=1).mean()


def test_invalid_marking_codes_are_rejected():
    landcover = _blocks()
    with pytest.raises(ValueError, match="marking codes"):
        _render(landcover, np.full(landcover.shape, 7, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        _render(landcover, np.zeros(landcover.shape[1:], np.uint8))


# --- building footprints ------------------------------------------------------


def test_building_mask_covers_roofs_only():
    landcover = _blocks(5, n=4)
    image, roofs = _render(landcover, _tracks(landcover), return_buildings=True)
    assert roofs.dtype == bool and roofs.shape == landcover.shape
    np.testing.assert_array_equal(image, _render(landcover, _tracks(landcover)))
    for cls in (LandCover.ROADS, LandCover.GREEN_URBAN, LandCover.FOREST, LandCover.AGRICULTURE, LandCover.WATER):
        assert not roofs[landcover == cls].any(), cls.label
    share = {cls: roofs[landcover == cls].mean() for cls in LandCover if cls < LandCover.ROADS}
    assert share[LandCover.DENSE_RESIDENTIAL] > 0.45
    assert share[LandCover.DENSE_RESIDENTIAL] > share[LandCover.MEDIUM_RESIDENTIAL] > \
        share[LandCover.SPARSE_RESIDENTIAL] > 0.05
    assert share[LandCover.INDUSTRIAL_COMMERCIAL] > 0.2


def test_building_mask_follows_the_painted_roof_edges():
    """Without noise, a roof has one colour per side of its ridge: the mask's edges are the colour edges."""
    landcover = np.full((2, SIZE, SIZE), LandCover.DENSE_RESIDENTIAL, np.uint8)
    image, roofs = _render(landcover, np.zeros_like(landcover), illumination_noise=0.0, pixel_noise=0.0,
                           return_buildings=True)
    image = image.astype(int)

    def colour_steps(mask):  # share of left-right neighbour pairs across the mask's edge whose colours differ
        edge = mask[:, :, 1:] != mask[:, :, :-1]
        step = np.abs(image[..., 1:] - image[..., :-1]).max(axis=1) > 2
        return step[edge].mean()

    assert colour_steps(roofs) > 0.95
    assert colour_steps(np.roll(roofs, 1, axis=2)) < 0.7  # a mask one pixel off misses the edges
    inside = roofs[:, :, 1:] & roofs[:, :, :-1]
    assert (np.abs(image[..., 1:] - image[..., :-1]).max(axis=1)[inside] == 0).mean() > 0.8
