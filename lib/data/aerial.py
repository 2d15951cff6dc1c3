"""Aerial and street-level rendering of a synthetic city from its land cover.

The city generator (:mod:`lib.data.city`) decides *what* is where -- one
land-cover class per pixel. This module decides how it *looks*, so that a
model has to learn visual features (roof shapes, shadows, canopy blobs,
field strips, ripples) rather than a colour per class:

* :func:`render_aerial` turns land-cover tiles into 4-band (R, G, B, NIR)
  ``uint8`` images at the city's ground resolution, and on request the mask
  of the pixels it painted as roofs (building footprints, for maps);
* :func:`render_street_views` draws 3-band street-level views (sky, facades,
  trees, road) whose content is sampled from a neighbourhood's land-cover
  mix, and whose upkeep (facade condition, street trees, parked cars, a
  tidy verge) shows a hidden affluence factor that is no land-cover property.

Transport land (class ROADS) carries markings, one code per pixel:
:data:`MARK_DASH` (1) a white centre-line dash on asphalt;
:data:`MARK_BALLAST` (2) a railway's track bed, greyish-brown crushed stone
(R, G, B, NIR = 128, 116, 100, 78), speckled pixel by pixel with a rusty
tint here and there, low in NIR like all bare ground; :data:`MARK_RAIL` (3)
a rail, dark steel (56, 56, 60, 40) with a glint on one pixel in six;
:data:`MARK_SLEEPER` (4) a sleeper, dark timber (70, 56, 44, 58) -- the
caller, who knows the direction of the track, paints sleepers as periodic
cross-bars on the ballast as it paints the dashes along a road.

Every texture is a deterministic function of the *global* pixel position
and the city seed: buildings, trees and field parcels live on lattices of
cells, and each cell's properties (is there a building, its size, its roof
colour) come from a 64-bit hash of the cell index. A building therefore
continues across tile borders and the same pixel always renders the same
way, however the city is cut into chunks. Only the per-tile illumination
and the sensor noise vary from tile to tile, each drawn from the tile id.

The image model for one pixel of tile ``t`` in band ``c`` is::

    scene   = texture_class(y, x)                      # lattices, shadows, markings
    scene  += v * s_t * (AUTUMN - scene) * 0.6         # season s_t on vegetation v
    image   = b_t * g_tc * scene + haze_t + eps,       eps ~ N(0, pixel_noise^2)

with per-tile brightness ``b_t = exp(0.25 * a * U(-1, 1))``, per-band gain
``g_tc = exp(0.08 * a * U(-1, 1))`` (a hue shift), ``haze_t = 20 * a *
U(0, 1)`` and season ``s_t = min(a, 1) * U(0, 1)``, where ``a`` is the
illumination-noise level. These factors make the colour distributions of
the classes overlap, while their textures stay distinct.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy import ndimage

__all__ = [
    "AERIAL_BANDS",
    "MARK_BALLAST",
    "MARK_DASH",
    "MARK_NONE",
    "MARK_RAIL",
    "MARK_SLEEPER",
    "STREET_BANDS",
    "LandCover",
    "render_aerial",
    "render_street_views",
]

AERIAL_BANDS = ("red", "green", "blue", "nir")
# Codes of the ``markings`` passed to :func:`render_aerial` (painted on ROADS pixels only).
MARK_NONE, MARK_DASH, MARK_BALLAST, MARK_RAIL = 0, 1, 2, 3
MARK_SLEEPER = 4
STREET_BANDS = ("red", "green", "blue")


class LandCover(IntEnum):
    """Land-cover classes, after the Copernicus Urban Atlas nomenclature.

    ``URBAN_ATLAS_CODES`` maps each class to the Urban Atlas code it stands
    for (continuous and discontinuous urban fabric, industrial units, roads,
    green urban areas, forest, arable land, water).
    """

    DENSE_RESIDENTIAL = 0
    MEDIUM_RESIDENTIAL = 1
    SPARSE_RESIDENTIAL = 2
    INDUSTRIAL_COMMERCIAL = 3
    ROADS = 4
    GREEN_URBAN = 5
    FOREST = 6
    AGRICULTURE = 7
    WATER = 8

    @property
    def label(self) -> str:
        """The class name in snake case, as used in datasets: ``dense_residential``."""
        return self.name.lower()


URBAN_ATLAS_CODES = {
    LandCover.DENSE_RESIDENTIAL: 11100,
    LandCover.MEDIUM_RESIDENTIAL: 11210,
    LandCover.SPARSE_RESIDENTIAL: 11230,
    LandCover.INDUSTRIAL_COMMERCIAL: 12100,
    LandCover.ROADS: 12220,
    LandCover.GREEN_URBAN: 14100,
    LandCover.FOREST: 31000,
    LandCover.AGRICULTURE: 21000,
    LandCover.WATER: 50000,
}

# ---------------------------------------------------------------------------
# Hashing: the source of every per-cell property.
# ---------------------------------------------------------------------------

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ROW_PRIME = np.uint64(0x9E3779B97F4A7C15)
_COL_PRIME = np.uint64(0xC2B2AE3D27D4EB4F)
_MASK64 = (1 << 64) - 1


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: scrambles a uint64 so that every output bit depends on every input bit."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _key(seed: int, salt: int) -> np.uint64:
    """A 64-bit key per (city seed, texture layer), so layers and cities get unrelated lattices."""
    return np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03 + 1) & _MASK64)


def _hash(iy: np.ndarray, ix: np.ndarray, key: np.uint64) -> np.ndarray:
    """Hash integer cell indices (negative ones wrap, which is harmless) to uint64."""
    z = iy.astype(np.uint64) * _ROW_PRIME + ix.astype(np.uint64) * _COL_PRIME + key
    return _mix(z)


def _byte(h: np.ndarray, k: int) -> np.ndarray:
    """The k-th byte of a hash as a uniform number in [0, 1): eight independent draws per hash."""
    return ((h >> np.uint64(8 * k)) & np.uint64(255)).astype(np.float32) / np.float32(256.0)


def _cells(y: np.ndarray, x: np.ndarray, cell_y: int, cell_x: int, key: np.uint64):
    """Place pixels on a lattice of ``cell_y x cell_x`` cells.

    Returns ``(u, v, h)``: the pixel's row and column inside its cell and the
    hash of the cell, from which all of the cell's properties are drawn.
    """
    iy = np.floor_divide(y, cell_y)
    ix = np.floor_divide(x, cell_x)
    return y - iy * cell_y, x - ix * cell_x, _hash(iy, ix, key)


# ---------------------------------------------------------------------------
# Texture primitives. Coordinates are global pixel indices (1-D int64 arrays
# of the pixels of one class); sizes are in pixels.
# ---------------------------------------------------------------------------

# Shadows fall to the north-east: the sun stands in the south-west, so the
# caster of a shadow lies at (+south, -west) of the shaded pixel.
_TO_SUN = (0.6, -0.8)


def _px(metres: float, resolution_m: float, minimum: int = 1) -> int:
    """A length in metres as a whole number of pixels, at least ``minimum``."""
    return max(minimum, int(round(metres / resolution_m)))


def _footprints(y, x, cell: int, fill: tuple[float, float], presence: float, key):
    """Rectangular building footprints, at most one per lattice cell.

    A cell holds a building with probability ``presence``; the building
    covers a fraction U(fill) of the cell along each axis and sits at a
    random offset inside it. Returns ``(inside, h, ridge_side)``: whether the
    pixel is on a roof, the cell hash (for the roof colour) and which half
    of a pitched roof the pixel is on (True: the half facing the sun; the
    ridge runs along the building's longer side).
    """
    u, v, h = _cells(y, x, cell, cell, key)
    lo, hi = fill
    size_y = np.maximum(1.0, np.round(cell * (lo + (hi - lo) * _byte(h, 0))))
    size_x = np.maximum(1.0, np.round(cell * (lo + (hi - lo) * _byte(h, 1))))
    off_y = np.floor(_byte(h, 2) * (cell - size_y + 1))
    off_x = np.floor(_byte(h, 3) * (cell - size_x + 1))
    ry = u - off_y
    rx = v - off_x
    inside = (_byte(h, 4) < presence) & (ry >= 0) & (ry < size_y) & (rx >= 0) & (rx < size_x)
    # Ridge along x: the southern half faces the sun; ridge along y: the western half.
    ridge_side = np.where(size_x >= size_y, ry >= size_y / 2, rx < size_x / 2)
    return inside, h, ridge_side


def _shadow(y, x, length: int, caster) -> np.ndarray:
    """Pixels shaded by something ``caster(y, x)`` reports within ``length`` pixels towards the sun.

    Three samples along the sun direction approximate the swept footprint
    of an extruded object, enough for the short shadows at 2 m resolution.
    """
    shade = np.zeros(y.shape, dtype=bool)
    for step in (length / 3, 2 * length / 3, length):
        dy = int(round(_TO_SUN[0] * step))
        dx = int(round(_TO_SUN[1] * step))
        shade |= caster(y + dy, x + dx)
    return shade


def _trees(y, x, cell: int, presence: float, radius: tuple[float, float], key):
    """Round tree crowns, at most one per lattice cell.

    Returns ``(canopy, shade, h)``: the crown mask, a brightness factor that
    is highest on the sun side of the crown and falls off towards its rim,
    ``shade = 0.9 + 0.2 * lit - 0.3 * (d / r)^2``, and the cell hash.
    """
    u, v, h = _cells(y, x, cell, cell, key)
    r = radius[0] + (radius[1] - radius[0]) * _byte(h, 0)
    cy = cell / 2 + (_byte(h, 1) - 0.5) * cell * 0.5
    cx = cell / 2 + (_byte(h, 2) - 0.5) * cell * 0.5
    du = u + 0.5 - cy
    dv = v + 0.5 - cx
    d2 = (du * du + dv * dv) / (r * r)
    canopy = (_byte(h, 3) < presence) & (d2 < 1.0)
    lit = (du * _TO_SUN[0] + dv * _TO_SUN[1]) / r
    shade = 0.9 + 0.2 * lit - 0.3 * d2
    return canopy, shade.astype(np.float32), h


def _patches(y, x, cell: int, amplitude: float, key) -> np.ndarray:
    """Blotchy brightness variation: one factor 1 + amplitude * U(-1, 1) per small cell."""
    _, _, h = _cells(y, x, cell, cell, key)
    return (1.0 + amplitude * (2.0 * _byte(h, 0) - 1.0)).astype(np.float32)


def _ground(colour, y, x, cell: int, amplitude: float, key) -> np.ndarray:
    """A flat ``(n, 4)`` ground colour with blotchy brightness variation (see :func:`_patches`)."""
    return np.asarray(colour, np.float32)[None, :] * _patches(y, x, cell, amplitude, key)[:, None]


def _palette(colours, h, byte: int) -> np.ndarray:
    """Pick one row of ``colours`` per pixel from a hash byte."""
    colours = np.asarray(colours, dtype=np.float32)
    return colours[(_byte(h, byte) * len(colours)).astype(np.intp)]


def _overlay(base: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Paint ``colour`` (one per pixel or one for all) over ``base`` where ``mask``."""
    return np.where(mask[:, None], colour, base)


# ---------------------------------------------------------------------------
# Class textures. Each returns (colour (n, 4) float32 in DN, vegetation (n,)
# in [0, 1], roof (n,) bool or None); vegetation tells the season model which
# pixels are plants, roof which are painted as a building's roof (None: none).
# Colours are (R, G, B, NIR); plants are bright in NIR, water is dark.
# ---------------------------------------------------------------------------

_GRASS = (94, 132, 70, 172)
_LAWN = (102, 138, 76, 165)
_PAVING = (122, 120, 116, 92)
_ASPHALT = (84, 85, 89, 62)
_CANOPY = (58, 96, 52, 198)
_BALLAST = (128, 116, 100, 78)  # crushed stone: greyish brown, no chlorophyll
_RAIL = (56, 56, 60, 40)  # steel
_SLEEPER = (70, 56, 44, 58)  # creosoted timber
_SHADOW = np.float32(0.5)
_AUTUMN = np.array([150, 128, 70, 118], dtype=np.float32)

_RESIDENTIAL_ROOFS = {
    # class: (cell m, fill range, presence, height m, roof palette)
    LandCover.DENSE_RESIDENTIAL: (
        30.0, (0.62, 0.92), 0.95, 18.0,
        [(168, 92, 72, 96), (128, 126, 130, 86), (86, 88, 96, 70),
         (104, 138, 122, 82), (184, 170, 146, 112), (150, 110, 90, 90)],
    ),
    LandCover.MEDIUM_RESIDENTIAL: (
        24.0, (0.42, 0.66), 0.85, 10.0,
        [(160, 84, 66, 92), (120, 118, 122, 84), (96, 78, 64, 74),
         (176, 160, 136, 110), (70, 74, 82, 64)],
    ),
    LandCover.SPARSE_RESIDENTIAL: (
        22.0, (0.30, 0.46), 0.75, 6.0,
        [(158, 66, 56, 88), (92, 92, 98, 74), (122, 90, 70, 80),
         (190, 186, 176, 120), (72, 98, 80, 90)],
    ),
}
_RESIDENTIAL_GARDENS = {
    # class: (ground colour, tree cell m, tree presence, ground is vegetation)
    LandCover.DENSE_RESIDENTIAL: (_PAVING, 12.0, 0.15, 0.0),
    LandCover.MEDIUM_RESIDENTIAL: (_GRASS, 10.0, 0.30, 1.0),
    LandCover.SPARSE_RESIDENTIAL: (_LAWN, 10.0, 0.45, 1.0),
}
_INDUSTRIAL_ROOFS = [(196, 196, 194, 124), (218, 218, 212, 134), (122, 140, 166, 96),
                     (92, 92, 96, 72), (170, 160, 150, 112)]
_CAR_COLOURS = [(200, 200, 205, 150), (40, 40, 44, 40), (150, 30, 30, 70),
                (30, 60, 130, 50), (180, 180, 170, 140)]
_CROPS = [  # (colour, vegetation)
    ((112, 150, 72, 192), 1.0),  # green cereal
    ((192, 176, 112, 142), 0.4),  # ripe cereal
    ((128, 102, 78, 86), 0.0),  # ploughed soil
    ((122, 154, 88, 178), 1.0),  # pasture
]


class _Ctx:
    """What every texture needs besides the pixel positions: seed and resolution."""

    def __init__(self, seed: int, resolution_m: float):
        self.seed = seed
        self.res = resolution_m

    def key(self, cls: LandCover, layer: int) -> np.uint64:
        return _key(self.seed, 100 * int(cls) + layer)

    def px(self, metres: float, minimum: int = 1) -> int:
        return _px(metres, self.res, minimum)


def _tree_layer(y, x, colour, veg, ctx: _Ctx, cls, cell_m, presence, radius_m):
    """Overlay tree crowns and their shadows on ``colour`` (in place of the ground)."""
    cell = ctx.px(cell_m, 2)
    radius = (max(0.8, radius_m[0] / ctx.res), max(1.0, radius_m[1] / ctx.res))
    key = ctx.key(cls, 7)
    canopy, shade, h = _trees(y, x, cell, presence, radius, key)
    shaded = _shadow(y, x, int(round(radius[1])), lambda yy, xx: _trees(yy, xx, cell, presence, radius, key)[0])
    colour = np.where((shaded & ~canopy)[:, None], colour * _SHADOW, colour)
    tint = _palette([(0, 0, 0, 0), (-10, 6, -4, 10), (10, 4, -6, -8)], h, 5)
    crown = (np.asarray(_CANOPY, dtype=np.float32) + tint) * shade[:, None]
    return _overlay(colour, canopy, crown), np.where(canopy, 1.0, veg)


def _texture_residential(y, x, cls: LandCover, ctx: _Ctx, marks):
    """One building per plot of the class's lattice (denser, larger, taller from sparse to dense).

    Pitched roofs are 1.08x brighter on the sun side of the ridge and 0.86x on
    the other; shadows of length ``height`` fall north-east on the ground
    between them, which is paving (dense) or garden with trees.
    """
    cell_m, fill, presence, height_m, roofs = _RESIDENTIAL_ROOFS[cls]
    ground, tree_cell_m, tree_presence, ground_veg = _RESIDENTIAL_GARDENS[cls]
    cell = ctx.px(cell_m, 4)
    key = ctx.key(cls, 1)
    colour = _ground(ground, y, x, 3, 0.08, ctx.key(cls, 2))
    veg = np.full(y.shape, ground_veg, dtype=np.float32)
    colour, veg = _tree_layer(y, x, colour, veg, ctx, cls, tree_cell_m, tree_presence, (2.0, 3.5))
    roof, h, sunny = _footprints(y, x, cell, fill, presence, key)
    shaded = _shadow(y, x, ctx.px(height_m), lambda yy, xx: _footprints(yy, xx, cell, fill, presence, key)[0])
    colour = np.where((shaded & ~roof)[:, None], colour * _SHADOW, colour)
    roof_colour = _palette(roofs, h, 5) + 24.0 * (_byte(h, 6)[:, None] - 0.5)
    roof_colour *= np.where(sunny, 1.08, 0.86)[:, None]
    return _overlay(colour, roof, roof_colour), np.where(roof, 0.0, veg), roof


def _texture_industrial(y, x, cls, ctx: _Ctx, marks):
    """Large flat bright roofs with rooftop units, on paved yards full of parked cars."""
    cell = ctx.px(50.0, 6)
    key = ctx.key(cls, 1)
    colour = _ground(np.asarray(_PAVING) * 0.88, y, x, 4, 0.06, ctx.key(cls, 2))
    # Parked cars on a lattice of 2.5 m x 5 m bays: small bright or dark specks.
    u, v, hc = _cells(y, x, ctx.px(5.0, 2), ctx.px(2.5, 1), ctx.key(cls, 3))
    car = (_byte(hc, 0) < 0.3) & (u > 0)
    colour = _overlay(colour, car, _palette(_CAR_COLOURS, hc, 1))
    roof, h, _ = _footprints(y, x, cell, (0.5, 0.85), 0.9, key)
    shaded = _shadow(y, x, ctx.px(9.0), lambda yy, xx: _footprints(yy, xx, cell, (0.5, 0.85), 0.9, key)[0])
    colour = np.where((shaded & ~roof)[:, None], colour * _SHADOW, colour)
    # Flat roofs with a grid of rooftop units (vents, skylights) every 8 m.
    vents = (np.remainder(y, ctx.px(8.0, 3)) == 0) & (np.remainder(x, ctx.px(8.0, 3)) == 0)
    roof_colour = _palette(_INDUSTRIAL_ROOFS, h, 5) + 16.0 * (_byte(h, 6)[:, None] - 0.5)
    roof_colour *= np.where(vents, 0.7, 1.0)[:, None]
    return _overlay(colour, roof, roof_colour), np.zeros(y.shape, np.float32), roof


def _texture_roads(y, x, cls, ctx: _Ctx, marks):
    """Patchy asphalt with white dashed centre lines, railway ballast, rails and sleepers where ``marks`` says.

    Ballast is greyish-brown gravel, speckled per pixel (brightness
    ``1 + 0.3 (U - 0.5)``) with a rusty tint on one pixel in eight; rails are
    dark steel with a glint (1.8x) on one pixel in six; sleepers are dark timber.
    """
    colour = _ground(_ASPHALT, y, x, 4, 0.07, ctx.key(cls, 2))
    colour = _overlay(colour, marks == MARK_DASH, np.array([228, 228, 222, 196], np.float32))
    track = marks >= MARK_BALLAST
    if track.any():
        colour[track] = _track(y[track], x[track], marks[track], ctx.key(cls, 4))
    return colour, np.zeros(y.shape, np.float32), None


def _track(y, x, marks, key) -> np.ndarray:
    """Colours of railway pixels: ballast, rails and sleepers (codes 2, 3, 4), each a function of the position."""
    h = _hash(y, x, key)
    speckle = (1.0 + 0.3 * (_byte(h, 0) - 0.5))[:, None]
    ballast = np.asarray(_BALLAST, np.float32) * speckle
    ballast = np.where((_byte(h, 1) < 0.125)[:, None], ballast + np.float32([14, 0, -12, 0]), ballast)
    rail = np.asarray(_RAIL, np.float32) * np.where(_byte(h, 2) < 1 / 6, 1.8, 1.0 + 0.1 * _byte(h, 3))[:, None]
    sleeper = np.asarray(_SLEEPER, np.float32) * speckle
    return np.select([(marks == MARK_RAIL)[:, None], (marks == MARK_SLEEPER)[:, None]], [rail, sleeper], ballast)


def _texture_green(y, x, cls, ctx: _Ctx, marks):
    """Mown lawn (brightness ``1 + 0.05 sin(2 pi x / 6 m)``), gravel paths and scattered trees."""
    # Mowing stripes every 6 m, and gravel paths on a diagonal 60 m grid.
    stripes = 1.0 + 0.05 * np.sin(2 * np.pi * x * ctx.res / 6.0)
    colour = np.asarray(_GRASS, np.float32) * (stripes * _patches(y, x, 3, 0.06, ctx.key(cls, 2)))[:, None]
    path = np.remainder(x + y, ctx.px(60.0, 8)) < ctx.px(3.0)
    colour = _overlay(colour, path, np.array([172, 162, 142, 120], np.float32))
    veg = np.where(path, 0.0, 1.0).astype(np.float32)
    return (*_tree_layer(y, x, colour, veg, ctx, cls, 12.0, 0.35, (2.5, 5.0)), None)


def _texture_forest(y, x, cls, ctx: _Ctx, marks):
    """Closed canopy: a crown in 90 % of 6 m cells, over a dark understory, all 0.85x darker."""
    colour = _ground((40, 62, 38, 112), y, x, 2, 0.1, ctx.key(cls, 2))  # dark understory between crowns
    veg = np.ones(y.shape, np.float32)
    colour, veg = _tree_layer(y, x, colour, veg, ctx, cls, 6.0, 0.9, (2.5, 4.0))
    return colour * 0.85, veg, None


def _texture_agriculture(y, x, cls, ctx: _Ctx, marks):
    """Parcels of one crop each, ploughed in strips: brightness ``1 + 0.12 sin(2 pi s / period)``, hedged."""
    # Parcels of 64 m x 112 m, each with one crop and a ploughing direction.
    u, v, h = _cells(y, x, ctx.px(64.0, 6), ctx.px(112.0, 8), ctx.key(cls, 1))
    crop = (_byte(h, 0) * len(_CROPS)).astype(np.intp)
    colour = np.asarray([c for c, _ in _CROPS], np.float32)[crop]
    veg = np.asarray([g for _, g in _CROPS], np.float32)[crop]
    along = np.where(_byte(h, 1) < 0.5, y, x)
    period = 3.0 + 3.0 * _byte(h, 2)  # strips 3-6 px apart
    colour = colour * (1.0 + 0.12 * np.sin(2 * np.pi * along / period))[:, None]
    hedge = (u == 0) | (v == 0)
    colour = _overlay(colour, hedge, np.array([60, 80, 50, 150], np.float32))
    return colour, np.where(hedge, 1.0, veg), None


def _texture_water(y, x, cls, ctx: _Ctx, marks):
    """Dark water (NIR near 0) with ripples ``1 + 0.1 sin(phase)`` and rare sun glints."""
    # Wind ripples: a plane wave whose phase wanders from one 8 px cell to the next.
    _, _, h = _cells(y, x, 8, 8, ctx.key(cls, 1))
    phase = 2 * np.pi * (0.9 * x + 0.45 * y) / 7.0 + 1.5 * _byte(h, 0)
    colour = np.asarray((38, 66, 84, 14), np.float32) * (1.0 + 0.1 * np.sin(phase))[:, None]
    glint = _byte(_hash(y, x, ctx.key(cls, 2)), 0) > 0.994
    colour = _overlay(colour, glint, np.array([160, 176, 186, 30], np.float32))
    return colour, np.zeros(y.shape, np.float32), None


_TEXTURES = {
    LandCover.DENSE_RESIDENTIAL: _texture_residential,
    LandCover.MEDIUM_RESIDENTIAL: _texture_residential,
    LandCover.SPARSE_RESIDENTIAL: _texture_residential,
    LandCover.INDUSTRIAL_COMMERCIAL: _texture_industrial,
    LandCover.ROADS: _texture_roads,
    LandCover.GREEN_URBAN: _texture_green,
    LandCover.FOREST: _texture_forest,
    LandCover.AGRICULTURE: _texture_agriculture,
    LandCover.WATER: _texture_water,
}


def _tile_illumination(tile_ids: np.ndarray, seed: int, level: float):
    """Per-tile brightness, per-band gain, haze and season (see the module docstring)."""
    h = _hash(np.asarray(tile_ids, dtype=np.int64), np.zeros(len(tile_ids), np.int64), _key(seed, 9001))
    signed = [2.0 * _byte(h, k) - 1.0 for k in range(5)]
    brightness = np.exp(0.25 * level * signed[0])
    gain = np.exp(0.08 * level * np.stack(signed[1:5], axis=1))
    haze = 20.0 * level * _byte(h, 5)
    season = min(level, 1.0) * _byte(h, 6)
    return brightness.astype(np.float32), gain.astype(np.float32), haze.astype(np.float32), season.astype(np.float32)


def render_aerial(
    landcover: np.ndarray,
    markings: np.ndarray,
    *,
    row0: np.ndarray,
    col0: np.ndarray,
    tile_ids: np.ndarray,
    resolution_m: float,
    seed: int,
    illumination_noise: float = 1.0,
    pixel_noise: float = 6.0,
    return_buildings: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render land-cover tiles as 4-band aerial images.

    Parameters
    ----------
    landcover:
        ``(B, H, W)`` class indices (:class:`LandCover`).
    markings:
        ``(B, H, W)`` integer codes of what is painted on ROADS pixels:
        :data:`MARK_NONE` (0, plain asphalt), :data:`MARK_DASH` (1, a white
        centre-line dash), :data:`MARK_BALLAST` (2, railway track bed),
        :data:`MARK_RAIL` (3, a rail), :data:`MARK_SLEEPER` (4, a sleeper).
        A bool mask means dashes where True. Codes on other classes are ignored.
    row0, col0:
        ``(B,)`` global pixel row and column of each tile's upper-left pixel;
        textures are functions of the global position.
    tile_ids:
        ``(B,)`` tile ids, which seed the per-tile illumination and noise.
    resolution_m:
        Ground resolution in metres per pixel; object sizes are in metres.
    seed:
        The city seed.
    illumination_noise, pixel_noise:
        Level ``a`` of the per-tile illumination variation and the standard
        deviation of the per-pixel sensor noise in DN.
    return_buildings:
        Also return where buildings stand.

    Returns
    -------
    ``(B, 4, H, W)`` uint8 image, bands :data:`AERIAL_BANDS`; with
    ``return_buildings``, the pair ``(image, buildings)`` where
    ``buildings`` is a ``(B, H, W)`` bool mask of the pixels painted as a
    roof (the residential houses and the industrial sheds, rooftop units
    included; not their shadows).
    """
    landcover = np.asarray(landcover)
    n, height, width = landcover.shape
    markings = np.asarray(markings)
    if markings.shape != landcover.shape:
        raise ValueError(f"markings have shape {markings.shape}, the land cover {landcover.shape}")
    if markings.dtype != bool and markings.size and (markings.min() < MARK_NONE or markings.max() > MARK_SLEEPER):
        raise ValueError(f"marking codes must lie in {MARK_NONE}..{MARK_SLEEPER}")
    markings = markings.astype(np.uint8)
    ctx = _Ctx(seed, resolution_m)
    rows = np.asarray(row0, np.int64)[:, None, None] + np.arange(height)[None, :, None]
    cols = np.asarray(col0, np.int64)[:, None, None] + np.arange(width)[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)

    scene = np.empty((n, height, width, 4), dtype=np.float32)
    vegetation = np.empty((n, height, width), dtype=np.float32)
    buildings = np.zeros((n, height, width), dtype=bool)
    for cls, texture in _TEXTURES.items():
        where = landcover == cls
        if where.any():
            colour, veg, roof = texture(rows[where], cols[where], cls, ctx, markings[where])
            scene[where] = colour
            vegetation[where] = veg
            if roof is not None:
                buildings[where] = roof

    brightness, gain, haze, season = _tile_illumination(tile_ids, seed, illumination_noise)
    scene += (vegetation * season[:, None, None] * 0.6)[..., None] * (_AUTUMN - scene)
    image = scene.transpose(0, 3, 1, 2) * (brightness[:, None] * gain)[:, :, None, None] + haze[:, None, None, None]
    if pixel_noise > 0:
        # One noise stream per tile, so a tile's pixels do not depend on the batch it was rendered in.
        for tile, tile_id in zip(image, tile_ids, strict=True):
            rng = np.random.default_rng([seed, 9002, int(tile_id)])
            tile += rng.standard_normal(tile.shape, dtype=np.float32) * np.float32(pixel_noise)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return (image, buildings) if return_buildings else image


# ---------------------------------------------------------------------------
# Street-level views.
# ---------------------------------------------------------------------------

# What stands along the street for each class: (height range as a fraction of
# the view, segment width range as a fraction of the view, facade palette).
_FRONTAGE = {
    LandCover.DENSE_RESIDENTIAL: ((0.34, 0.50), (0.16, 0.30), [(214, 200, 170), (190, 150, 120), (170, 170, 168),
                                                                (222, 186, 160), (160, 120, 100)]),
    LandCover.MEDIUM_RESIDENTIAL: ((0.20, 0.30), (0.14, 0.24), [(236, 230, 214), (226, 204, 140), (176, 96, 76),
                                                                 (200, 200, 196)]),
    LandCover.SPARSE_RESIDENTIAL: ((0.10, 0.15), (0.12, 0.20), [(240, 236, 226), (200, 170, 120), (150, 80, 60),
                                                                 (180, 196, 204)]),
    LandCover.INDUSTRIAL_COMMERCIAL: ((0.12, 0.20), (0.26, 0.46), [(170, 174, 180), (120, 136, 160),
                                                                    (196, 196, 190), (140, 120, 110)]),
    LandCover.ROADS: ((0.04, 0.08), (0.10, 0.20), [(150, 160, 176)]),
    LandCover.GREEN_URBAN: ((0.18, 0.34), (0.10, 0.22), [(70, 118, 60)]),
    LandCover.FOREST: ((0.30, 0.46), (0.10, 0.20), [(40, 78, 40)]),
    LandCover.AGRICULTURE: ((0.02, 0.05), (0.18, 0.36), [(70, 96, 60)]),
    LandCover.WATER: ((0.0, 0.0), (0.18, 0.36), [(0, 0, 0)]),
}
# Rows of windows repeat every this many pixels on facades (0: no window rows).
_WINDOW_PERIOD = np.array([5, 6, 0, 9, 0, 0, 0, 0, 0], dtype=np.float32)
# Classes drawn as a solid skyline block (buildings, or a distant low skyline or tree line).
_SOLID = np.array([True, True, True, True, True, False, False, True, False])
_TREE_CLASSES = (LandCover.GREEN_URBAN, LandCover.FOREST)
# What lines the street beside the carriageway, by class: pavement, grass, a field, water.
_VERGE = np.array([(150, 148, 142), (150, 148, 142), (96, 140, 70), (130, 130, 128), (140, 140, 138),
                   (90, 142, 66), (70, 96, 52), (176, 164, 100), (52, 84, 104)], dtype=np.float32)
# Roads around a viewpoint on a road would crowd out what lines it; they count less.
_SKYLINE_WEIGHT = np.array([1, 1, 1, 1, 0.3, 1, 1, 1, 1], dtype=np.float64)


# Kerbside parking and street trees line built-up land and roads, not parks, woods, fields or water.
_KERB = np.array([True, True, True, True, True, False, False, False, False])
_CAR_SLOTS = 6  # kerbside parking slots across a view
# Facades that age with the neighbourhood's affluence (not the distant skyline of a road or a tree line).
_FACADE = np.array([True, True, True, True, False, False, False, False, False])
_NEW_CARS = np.array([(204, 26, 32), (24, 64, 178), (238, 238, 242), (16, 16, 20), (196, 200, 208),
                      (244, 192, 18), (24, 136, 74), (124, 32, 128), (236, 104, 20)], np.float32)
_OLD_CARS = np.array([(152, 142, 122), (112, 102, 88), (130, 128, 124), (122, 76, 60), (92, 98, 88)], np.float32)
_LITTER = np.array([(236, 236, 230), (204, 44, 40), (44, 92, 200), (240, 204, 64), (30, 30, 30)], np.float32)
_DIRT = np.array([76, 70, 58], np.float32)  # grime and rain streaks on facades
_WEEDS = np.array([106, 100, 88], np.float32)  # dry weeds and mud on an untended verge
_BOARDED = np.array([64, 50, 38], np.float32)  # plywood over a window
_GLASS = np.array([50, 58, 70], np.float32)  # grimy glass; clean glass reflects the sky: + q * _SHEEN
_SHEEN = np.array([36, 52, 72], np.float32)
_KERBSTONE = np.array([196, 196, 190], np.float32)
_STREET_TREE = np.array([74, 124, 62], np.float32)


def _logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


def _street_view(fractions: np.ndarray, affluence: float, rng: np.random.Generator, size: int,
                 illumination_noise: float, pixel_noise: float) -> np.ndarray:
    """One ``(3, size, size)`` view: sky, a skyline of segments sampled from ``fractions``, verge and road.

    ``affluence`` only changes how the street is kept (see :func:`render_street_views`); every random
    number is drawn whatever its value, so one rng state gives the same street at any affluence.
    """
    yy = np.arange(size, dtype=np.float32)[:, None]
    xx = np.arange(size, dtype=np.float32)[None, :]
    horizon = int(round(0.58 * size))
    q = float(_logistic(affluence))  # upkeep in (0, 1): 0.5 at affluence 0
    p_tree = 0.7 * float(_logistic(2.0 * affluence - 1.0))
    p_car = 0.2 + 0.55 * q
    p_board = 0.45 * (1.0 - q) ** 2
    p_litter = 0.025 * (1.0 - q)

    # Sky: a vertical gradient, greyer when overcast, with smoothed-noise clouds.
    overcast = rng.uniform() ** 2
    top = (1 - overcast) * np.array([70, 130, 210]) + overcast * np.array([168, 172, 180])
    low = (1 - overcast) * np.array([192, 212, 236]) + overcast * np.array([200, 202, 206])
    t = np.clip(yy / horizon, 0, 1)[..., None]
    image = np.broadcast_to((1 - t) * top + t * low, (size, size, 3)).astype(np.float32)
    clouds = ndimage.zoom(rng.standard_normal((size // 8 + 2, size // 8 + 2)), 8, order=1)[:size, :size]
    cloud = np.clip(clouds - 0.6, 0, 1)[..., None] * (yy < horizon)[..., None]
    image = image + cloud * (np.array([245, 245, 248]) - image)

    # Skyline: consecutive segments left to right, each of one class drawn from the mix.
    weights = np.asarray(fractions, dtype=np.float64) * _SKYLINE_WEIGHT + 1e-9
    classes = rng.choice(len(weights), size=size, p=weights / weights.sum())
    column_class = np.empty(size, dtype=np.intp)
    column_top = np.empty(size, dtype=np.float32)
    column_colour = np.empty((size, 3), dtype=np.float32)
    column_start = np.empty(size, dtype=np.float32)
    trees = []
    street_trees = []
    start = 0
    for cls in classes:
        if start >= size:
            break
        cls = LandCover(int(cls))
        heights, widths, palette = _FRONTAGE[cls]
        stop = min(size, start + max(3, int(round(rng.uniform(*widths) * size))))
        column_class[start:stop] = cls
        column_top[start:stop] = horizon - rng.uniform(*heights) * size
        column_colour[start:stop] = np.asarray(palette[rng.integers(len(palette))], np.float32) * rng.uniform(0.85, 1.1)
        column_start[start:stop] = start
        if cls == LandCover.SPARSE_RESIDENTIAL:
            # A pitched roof: the wall top rises towards the middle of the segment.
            middle = (start + stop - 1) / 2
            column_top[start:stop] -= (stop - start) / 2 - np.abs(np.arange(start, stop) - middle)
        if cls in _TREE_CLASSES or (cls == LandCover.SPARSE_RESIDENTIAL and rng.uniform() < 0.5):
            crown_heights = _FRONTAGE[LandCover.GREEN_URBAN][0]
            for _ in range(rng.integers(1, 4) if cls == LandCover.FOREST else 1):
                trees.append((rng.uniform(start, stop), horizon - rng.uniform(*crown_heights) * size,
                              rng.uniform(0.08, 0.15) * size, cls == LandCover.FOREST))
        # A street tree at the kerb of this segment, with probability p_tree.
        chance, where, height, radius = rng.uniform(size=4)
        if _KERB[cls] and chance < p_tree:
            street_trees.append((start + where * (stop - start), horizon - (0.14 + 0.10 * height) * size,
                                 (0.07 + 0.04 * radius) * size))
        start = stop
    stains = ndimage.zoom(rng.standard_normal((size // 8 + 2, size // 8 + 2)), 8, order=1)[:size, :size]
    streaks = rng.standard_normal(size)
    window_draws = rng.uniform(size=(size, 2 * size))
    car_draws = rng.uniform(size=(_CAR_SLOTS, 5))
    litter_draws = rng.uniform(size=(size, size))

    # Facades in good repair are brighter and more saturated: c' = b (m + s (c - m)), m the grey level.
    facade_column = _FACADE[column_class]
    grey = column_colour.mean(axis=1, keepdims=True)
    kept = (0.85 + 0.3 * q) * (grey + (0.55 + 0.9 * q) * (column_colour - grey))
    column_colour = np.where(facade_column[:, None], np.clip(kept, 0, 255), column_colour)
    built = (yy >= column_top[None, :]) & (yy < horizon) & _SOLID[column_class][None, :]
    image = np.where(built[..., None], column_colour[None, :, :], image)
    # Sparse houses get a darker roof band; flat-roofed buildings get window rows.
    roof = built & (column_class == LandCover.SPARSE_RESIDENTIAL)[None, :] & (yy < column_top[None, :] + 0.06 * size)
    image = np.where(roof[..., None], np.array([140, 70, 56], np.float32) * (0.85 + 0.3 * q), image)
    period = _WINDOW_PERIOD[column_class]
    has_windows = period > 0
    storey = np.remainder(horizon - 1 - yy, np.where(has_windows, period, 1)[None, :])
    bay = np.remainder(xx - column_start[None, :], 4)
    window = (built & has_windows[None, :] & (storey >= 2) & (storey < 4) & (bay >= 1) & (bay < 3)
              & (yy > column_top[None, :] + 2))
    # Each window (storey, bay) is boarded up with probability p_board.
    storey_index = np.floor_divide(horizon - 1 - yy, np.where(has_windows, period, 1)[None, :]).astype(np.intp)
    bay_index = (np.floor_divide(xx - column_start[None, :], 4) + column_start[None, :]).astype(np.intp)
    boarded = window_draws[np.clip(storey_index, 0, size - 1), np.clip(bay_index, 0, 2 * size - 1)] < p_board
    image = np.where(window[..., None], np.where(boarded[..., None], _BOARDED, _GLASS + q * _SHEEN), image)
    # Grime in patches and rain streaks down from the roofline, in proportion to 1 - q.
    facade = built & facade_column[None, :]
    fade = np.clip(1 - (yy - column_top[None, :]) / (0.6 * (horizon - column_top[None, :]) + 1), 0, 1)
    grime = (0.6 * np.clip(stains - 0.2, 0, 1) + 0.5 * np.clip(streaks - 0.6, 0, 1)[None, :] * fade) * (1 - q)
    grime = np.where(facade, np.minimum(grime, 0.8), 0)[..., None]
    image = image + grime * (_DIRT - image)

    # Trees in front of the skyline: a round crown on a trunk.
    for cx, cy, r, dark in trees:
        trunk = (np.abs(xx - cx) < max(1.0, r / 6)) & (yy > cy) & (yy < horizon + 2)
        image = np.where(trunk[..., None], np.array([90, 70, 50], np.float32), image)
        crown = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        green = np.array([40, 80, 42] if dark else [74, 124, 62], np.float32)
        image = np.where(crown[..., None], green * (1.0 + 0.15 * (cy - yy) / r)[..., None], image)

    # Ground: a verge per column's class, and the carriageway in perspective.
    below = yy >= horizon
    # A kept verge (pavement, lawn, field edge; not water) is fresher: c' = b (m + s (c - m)) as facades, milder.
    verge_colour = _VERGE[column_class]
    grey = verge_colour.mean(axis=1, keepdims=True)
    kept = (0.9 + 0.2 * q) * (grey + (0.7 + 0.6 * q) * (verge_colour - grey))
    verge_colour = np.where((column_class != LandCover.WATER)[:, None], kept, verge_colour)
    image = np.where(below[..., None], verge_colour[None, :, :], image)
    depth = (yy - horizon) / (size - horizon)
    half_width = 0.04 * size + depth * 0.42 * size
    off_centre = np.abs(xx - size / 2 + 0.5)
    carriageway = below & (off_centre < half_width)
    verge = below & ~carriageway
    # An untended verge: weeds and mud in patches, litter; a tended one: a clean kerbstone edge.
    weeds = np.where(verge, 0.5 * (1 - q) * np.clip(stains, 0, 1), 0)[..., None]
    image = image + weeds * (_WEEDS - image)
    litter = verge & (litter_draws < p_litter)
    kind = np.minimum(litter_draws / max(p_litter, 1e-9) * len(_LITTER), len(_LITTER) - 1).astype(np.intp)
    image = np.where(litter[..., None], _LITTER[kind], image)
    kerb = verge & (off_centre < half_width + 0.5 + 0.02 * (yy - horizon))
    image = np.where(kerb[..., None], image + q * (_KERBSTONE - image), image)
    image = np.where(carriageway[..., None], np.array([88, 88, 92], np.float32), image)
    # Dashes shorten with distance: alternate on a logarithmic scale of the depth below the horizon.
    dashes = np.remainder(np.floor(8.0 * np.log1p(np.maximum(yy - horizon, 0))), 2) == 0
    centre_line = carriageway & (off_centre < 0.5 + 0.03 * (yy - horizon)) & dashes
    image = np.where(centre_line[..., None], np.array([230, 230, 222], np.float32), image)

    # Street trees at the kerb: a trunk down to the pavement and a crown over the facades.
    kerb_row = horizon + max(1, int(round(0.035 * size)))
    for cx, cy, r in street_trees:
        trunk = (np.abs(xx - cx) < max(0.6, r / 7)) & (yy > cy) & (yy <= kerb_row)
        image = np.where(trunk[..., None], np.array([84, 66, 48], np.float32), image)
        crown = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        image = np.where(crown[..., None], _STREET_TREE * (1.0 + 0.15 * (cy - yy) / r)[..., None], image)

    # Cars parked at the kerb, one per slot with probability p_car; new (glossy, bright) with probability q.
    body = max(2, int(round(0.05 * size)))
    cabin = max(1, int(round(0.04 * size)))
    wheel = max(1, int(round(0.03 * size)))
    road_half = 0.04 * size + (kerb_row - horizon) / (size - horizon) * 0.42 * size
    slot = size / _CAR_SLOTS
    for k, (occupied, new, pick, offset, length) in enumerate(car_draws):
        span = (0.12 + 0.05 * length) * size
        x0 = int(round(k * slot + offset * max(slot - span, 0)))
        x1 = min(size, x0 + int(round(span)))
        centre = min(size - 1, (x0 + x1) // 2)
        on_road = x0 < size / 2 + road_half + 1 and x1 > size / 2 - road_half - 1
        if occupied >= p_car or on_road or not _KERB[column_class[centre]]:
            continue
        if new < q:
            paint = _NEW_CARS[int(pick * len(_NEW_CARS))]
        else:
            paint = _OLD_CARS[int(pick * len(_OLD_CARS))] * 0.9
        top = kerb_row - body
        image[top:kerb_row, x0:x1] = paint
        c0, c1 = x0 + int(round(0.2 * (x1 - x0))), x0 + int(round(0.75 * (x1 - x0)))
        image[top - cabin:top, c0:c1] = paint
        if cabin > 1 and c1 - c0 > 2:
            image[top - cabin + 1:top, c0 + 1:c1 - 1] = _GLASS + q * _SHEEN
        if new < q:  # a gloss highlight along the top of the body
            image[top, x0:x1] = paint + 0.5 * (255 - paint)
        for wx in (x0 + 0.2 * (x1 - x0), x0 + 0.8 * (x1 - x0)):
            w0 = int(round(wx - wheel / 2))
            image[kerb_row - 1:kerb_row + wheel - 1, max(0, w0):w0 + wheel] = 28.0

    level = illumination_noise
    image = image * np.exp(0.2 * level * rng.uniform(-1, 1)) * np.exp(0.06 * level * rng.uniform(-1, 1, size=3))
    image = image + rng.standard_normal(image.shape) * pixel_noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def render_street_views(
    fractions: np.ndarray,
    rng: np.random.Generator,
    *,
    affluence: np.ndarray | None = None,
    size: int = 64,
    illumination_noise: float = 1.0,
    pixel_noise: float = 6.0,
) -> np.ndarray:
    """Render street-level views from the land-cover mix and the affluence around each viewpoint.

    A view looks down a street: sky above the horizon (58 % of the height),
    then a skyline of segments whose classes are drawn with probabilities
    ``fractions[v]`` -- tall facades with window rows for dense residential,
    lower ones for medium, small pitched-roof houses for sparse, wide
    corrugated sheds for industrial, tree crowns for green areas and forest,
    open horizon for fields and water -- and below it a verge coloured by the
    same class and the carriageway with a dashed centre line in perspective.

    ``affluence[v]`` is a standardised factor that is not a land-cover
    property: it changes how the street is kept, not what stands along it.
    With upkeep ``q = logistic(affluence) = 1 / (1 + exp(-affluence))``
    (0.12, 0.5 and 0.88 at -2, 0 and +2):

    * facades (residential and industrial segments): colour ``c`` becomes
      ``(0.85 + 0.3 q) * (m + (0.55 + 0.9 q) * (c - m))`` with ``m`` its grey
      level -- brighter and more saturated paint when kept, darker and greyer
      when not; grime patches and rain streaks from the roofline blend the
      facade towards dirt by up to ``0.6 (1 - q)`` and ``0.5 (1 - q)``; each
      window is boarded up (dark plywood) with probability
      ``p_board = 0.45 (1 - q)^2`` and its glass reflects more sky as ``q`` grows;
    * street trees: each segment of built-up land or road gets one at its
      kerb with probability ``p_tree = 0.7 * logistic(2 affluence - 1)``
      (0.005, 0.19 and 0.67 at -2, 0 and +2);
    * parked cars: each of 6 kerbside slots (in front of built-up land or a
      road, off the carriageway) holds a car with probability
      ``p_car = 0.2 + 0.55 q``; a car is new with probability ``q`` (bright,
      glossy paint from a varied palette, with a highlight along its top)
      and old otherwise (faded, dull paint from a small palette);
    * verge (of any class but water): its colour becomes
      ``(0.9 + 0.2 q) * (m + (0.7 + 0.6 q) * (c - m))`` -- fresher lawn and
      cleaner paving when kept; weeds and mud blend in by up to
      ``0.5 (1 - q)``, each verge pixel is litter with probability
      ``p_litter = 0.025 (1 - q)``, and the kerbstone edge is cleaned
      towards light grey by ``q``.

    Every random number is drawn whatever the affluence, so views rendered
    from the same rng state at different affluence show the same street
    (sky, skyline, road; trees and cars are coupled, appearing in the same
    places as affluence rises); all effects are smooth and monotone in it.

    Parameters
    ----------
    fractions:
        ``(V, K)`` land-cover fractions around each viewpoint, ``K = len(LandCover)``.
    rng:
        Source of all randomness, so the caller controls determinism.
    affluence:
        ``(V,)`` standardised affluence (mean 0, sd 1) at each viewpoint;
        None means 0 everywhere.
    size:
        Side of the square views in pixels.
    illumination_noise, pixel_noise:
        Level of the per-view brightness (``exp(0.2 a U(-1, 1))``) and hue
        (``exp(0.06 a U(-1, 1))`` per band) variation and the standard
        deviation of the per-pixel noise in DN.

    Returns
    -------
    ``(V, 3, size, size)`` uint8, bands :data:`STREET_BANDS`.
    """
    fractions = np.atleast_2d(fractions)
    if len(fractions) == 0:
        return np.zeros((0, 3, size, size), np.uint8)
    if affluence is None:
        affluence = np.zeros(len(fractions))
    affluence = np.asarray(affluence, dtype=np.float64)
    if affluence.shape != (len(fractions),):
        raise ValueError(f"affluence has shape {affluence.shape}, expected ({len(fractions)},)")
    if not np.isfinite(affluence).all():
        raise ValueError("affluence must be finite")
    return np.stack([_street_view(f, a, rng, size, illumination_noise, pixel_noise)
                     for f, a in zip(fractions, affluence, strict=True)])
