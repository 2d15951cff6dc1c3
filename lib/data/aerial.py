"""Aerial rendering of a synthetic city from its land cover, and the land-cover classes themselves.

The city generator (:mod:`lib.data.city`) decides *what* is where -- one
land-cover class per pixel. This module decides how it *looks*, so that a
model has to learn visual features (roof shapes, shadows, canopy blobs,
field strips, ripples) rather than a colour per class.

:func:`render_aerial` turns land-cover tiles (classes :class:`LandCover`)
into 4-band (R, G, B, NIR) ``uint8`` images at the city's ground resolution,
and on request the mask of the pixels it painted as roofs (building
footprints, for maps). Street-level views are drawn by
:mod:`lib.data.street_views`.

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

__all__ = [
    "AERIAL_BANDS",
    "MARK_BALLAST",
    "MARK_DASH",
    "MARK_NONE",
    "MARK_RAIL",
    "MARK_SLEEPER",
    "URBAN_ATLAS_CODES",
    "LandCover",
    "render_aerial",
]

AERIAL_BANDS = ("red", "green", "blue", "nir")
# Codes of the ``markings`` passed to :func:`render_aerial` (painted on ROADS pixels only).
MARK_NONE, MARK_DASH, MARK_BALLAST, MARK_RAIL = 0, 1, 2, 3
MARK_SLEEPER = 4


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
