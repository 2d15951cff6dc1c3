"""Street-level views of a synthetic city: the land cover, the affluence and the accessibility at a viewpoint.

The city generator (:mod:`lib.data.city`) places viewpoints on streets; this
module draws what a camera there would see, so that a model has to read a
neighbourhood from its facades, its upkeep and its street rather than from a
colour per class. A view looks down a street (:func:`render_street_views`):

1. the sky, a gradient with clouds (:func:`_sky`);
2. a skyline of segments whose classes are drawn from the land-cover mix,
   with trees and street trees (:func:`_skyline`);
3. the wear of the street, random fields drawn whatever the affluence
   (:func:`_wear`), so that one random state shows the same street at any
   affluence;
4. the facades, kept or worn by the upkeep ``q = logistic(affluence)``
   (:func:`_paint_facades`), then the trees in front of them (:func:`_paint_trees`);
5. the verge and the carriageway, as wide as the street's accessibility makes
   it (:func:`_paint_street`), the street trees (:func:`_paint_street_trees`)
   and the parked cars (:func:`_park_cars`);
6. the accessibility cues: traffic on the carriageway, buses among it
   (:func:`_paint_traffic`), and a transit stop at the kerb (:func:`_paint_stop`);
7. the camera: brightness, hue and sensor noise (:func:`_camera`).

The formulas of each effect of the affluence and of the accessibility are in
:func:`render_street_views`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lib.data.aerial import LandCover

__all__ = ["STREET_BANDS", "STREET_CUES", "render_street_views"]

STREET_BANDS = ("red", "green", "blue")
#: What :func:`render_street_views` reports it drew per view (``return_cues=True``), in this order.
STREET_CUES = ("road_width", "transit_stop", "vehicles", "buses")

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
_ASPHALT = np.array([88, 88, 92], np.float32)
_TRAFFIC_SLOTS = 4  # places on the carriageway where a vehicle may drive, from the horizon down
_TRAFFIC_DEPTH = np.array([0.3, 0.5, 0.7, 0.9])  # their depth below the horizon (0 horizon, 1 bottom row)
_TRAFFIC_CARS = np.concatenate([_NEW_CARS, _OLD_CARS])
_BUS = np.array([206, 40, 36], np.float32)  # city buses are red with a dark window band
_SHELTER_FRAME = np.array([60, 64, 70], np.float32)
_SHELTER_GLASS = np.array([170, 196, 210], np.float32)
_STOP_SIGN = np.array([250, 196, 20], np.float32)  # a yellow disc on a pole: the stop's sign




def _logistic(z):
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class _Upkeep:
    """How well a street is kept at one affluence: ``q = logistic(affluence)`` and the chances it sets."""

    q: float  # upkeep in (0, 1): 0.5 at affluence 0
    p_tree: float  # a street tree at a segment's kerb
    p_car: float  # a car in a kerbside slot
    p_board: float  # a window boarded up
    p_litter: float  # a verge pixel littered

    @classmethod
    def at(cls, affluence: float) -> _Upkeep:
        q = float(_logistic(affluence))
        return cls(q=q, p_tree=0.7 * float(_logistic(2.0 * affluence - 1.0)), p_car=0.2 + 0.55 * q,
                   p_board=0.45 * (1.0 - q) ** 2, p_litter=0.025 * (1.0 - q))


@dataclass(frozen=True)
class _Access:
    """How a street looks at one accessibility ``a`` in [0, 1], given the view's draws ``u_width`` and ``u_stop``."""

    width: float  # the carriageway's half-width relative to a plain street's
    stop: bool  # a transit stop at the kerb
    p_vehicle: float  # a vehicle in a traffic slot
    p_bus: float  # a vehicle is a bus

    @classmethod
    def at(cls, accessibility: float, u_width: float, u_stop: float) -> _Access:
        a = float(np.clip(accessibility, 0.0, 1.0))
        return cls(width=0.7 + 0.6 * a + 0.5 * (u_width - 0.5), stop=bool(u_stop < a**2),
                   p_vehicle=0.1 + 0.7 * a, p_bus=0.6 * a)


@dataclass(frozen=True)
class _Grid:
    """The pixel grid of a view: row and column coordinates (broadcastable) and the horizon's row."""

    size: int
    yy: np.ndarray  # (size, 1)
    xx: np.ndarray  # (1, size)
    horizon: int

    @classmethod
    def of(cls, size: int) -> _Grid:
        return cls(size, np.arange(size, dtype=np.float32)[:, None], np.arange(size, dtype=np.float32)[None, :],
                   int(round(0.58 * size)))


def _sky(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """A vertical gradient, greyer when overcast, with smoothed-noise clouds: the (size, size, 3) starting image."""
    size, yy, horizon = grid.size, grid.yy, grid.horizon
    overcast = rng.uniform() ** 2
    top = (1 - overcast) * np.array([70, 130, 210]) + overcast * np.array([168, 172, 180])
    low = (1 - overcast) * np.array([192, 212, 236]) + overcast * np.array([200, 202, 206])
    t = np.clip(yy / horizon, 0, 1)[..., None]
    image = np.broadcast_to((1 - t) * top + t * low, (size, size, 3)).astype(np.float32)
    clouds = ndimage.zoom(rng.standard_normal((size // 8 + 2, size // 8 + 2)), 8, order=1)[:size, :size]
    cloud = np.clip(clouds - 0.6, 0, 1)[..., None] * (yy < horizon)[..., None]
    return image + cloud * (np.array([245, 245, 248]) - image)


@dataclass
class _Skyline:
    """What stands along the street, per column: its class, wall top, colour and segment start; and the trees.

    ``trees`` are (x, y, radius, dark) crowns on the skyline, ``street_trees``
    (x, y, radius) crowns at the kerb.
    """

    column_class: np.ndarray
    column_top: np.ndarray
    column_colour: np.ndarray
    column_start: np.ndarray
    trees: list[tuple]
    street_trees: list[tuple]


def _skyline(fractions: np.ndarray, rng: np.random.Generator, grid: _Grid, p_tree: float) -> _Skyline:
    """Consecutive segments left to right, each of one class drawn from the mix ``fractions``."""
    size, horizon = grid.size, grid.horizon
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
    return _Skyline(column_class, column_top, column_colour, column_start, trees, street_trees)


@dataclass(frozen=True)
class _Wear:
    """The random fields of a street's wear, drawn whatever its upkeep (which only scales them)."""

    stains: np.ndarray  # (size, size) smoothed noise: grime on facades, weeds on the verge
    streaks: np.ndarray  # (size,) rain streaks per column
    window_draws: np.ndarray  # (size, 2 size) one uniform per (storey, bay): boarded up?
    car_draws: np.ndarray  # (_CAR_SLOTS, 5) per slot: occupied, new, paint, offset, length
    litter_draws: np.ndarray  # (size, size) one uniform per verge pixel
    street_draws: np.ndarray  # (3,) the road width, whether a stop stands, and its side and place
    traffic_draws: np.ndarray  # (_TRAFFIC_SLOTS, 4) per slot: occupied, bus, paint, lane


def _wear(rng: np.random.Generator, size: int) -> _Wear:
    stains = ndimage.zoom(rng.standard_normal((size // 8 + 2, size // 8 + 2)), 8, order=1)[:size, :size]
    streaks = rng.standard_normal(size)
    window_draws = rng.uniform(size=(size, 2 * size))
    car_draws = rng.uniform(size=(_CAR_SLOTS, 5))
    litter_draws = rng.uniform(size=(size, size))
    return _Wear(stains, streaks, window_draws, car_draws, litter_draws, rng.uniform(size=3),
                 rng.uniform(size=(_TRAFFIC_SLOTS, 4)))


def _paint_facades(image: np.ndarray, grid: _Grid, skyline: _Skyline, wear: _Wear, upkeep: _Upkeep) -> np.ndarray:
    """The skyline's blocks: facades kept or worn, roofs of the small houses, windows (some boarded up), grime."""
    size, yy, xx, horizon = grid.size, grid.yy, grid.xx, grid.horizon
    column_class, column_top, column_start = skyline.column_class, skyline.column_top, skyline.column_start
    q = upkeep.q
    # Facades in good repair are brighter and more saturated: c' = b (m + s (c - m)), m the grey level.
    facade_column = _FACADE[column_class]
    grey = skyline.column_colour.mean(axis=1, keepdims=True)
    kept = (0.85 + 0.3 * q) * (grey + (0.55 + 0.9 * q) * (skyline.column_colour - grey))
    column_colour = np.where(facade_column[:, None], np.clip(kept, 0, 255), skyline.column_colour)
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
    boarded = (wear.window_draws[np.clip(storey_index, 0, size - 1), np.clip(bay_index, 0, 2 * size - 1)]
               < upkeep.p_board)
    image = np.where(window[..., None], np.where(boarded[..., None], _BOARDED, _GLASS + q * _SHEEN), image)
    # Grime in patches and rain streaks down from the roofline, in proportion to 1 - q.
    facade = built & facade_column[None, :]
    fade = np.clip(1 - (yy - column_top[None, :]) / (0.6 * (horizon - column_top[None, :]) + 1), 0, 1)
    grime = (0.6 * np.clip(wear.stains - 0.2, 0, 1) + 0.5 * np.clip(wear.streaks - 0.6, 0, 1)[None, :] * fade) * (1 - q)
    grime = np.where(facade, np.minimum(grime, 0.8), 0)[..., None]
    return image + grime * (_DIRT - image)


def _paint_trees(image: np.ndarray, grid: _Grid, trees: list[tuple]) -> np.ndarray:
    """Trees in front of the skyline: a round crown on a trunk."""
    yy, xx, horizon = grid.yy, grid.xx, grid.horizon
    for cx, cy, r, dark in trees:
        trunk = (np.abs(xx - cx) < max(1.0, r / 6)) & (yy > cy) & (yy < horizon + 2)
        image = np.where(trunk[..., None], np.array([90, 70, 50], np.float32), image)
        crown = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        green = np.array([40, 80, 42] if dark else [74, 124, 62], np.float32)
        image = np.where(crown[..., None], green * (1.0 + 0.15 * (cy - yy) / r)[..., None], image)
    return image


def _road_half_width(grid: _Grid, rows, width: float):
    """Half the carriageway's width (px) at image ``rows`` below the horizon: ``width (0.04 + 0.42 depth) size``."""
    depth = (np.asarray(rows, np.float32) - grid.horizon) / (grid.size - grid.horizon)
    return width * (0.04 + 0.42 * depth) * grid.size


def _paint_street(image: np.ndarray, grid: _Grid, column_class: np.ndarray, wear: _Wear,
                  upkeep: _Upkeep, access: _Access) -> np.ndarray:
    """The ground: a verge per column's class, kept or untended, and the carriageway in perspective."""
    size, yy, xx, horizon = grid.size, grid.yy, grid.xx, grid.horizon
    q, p_litter = upkeep.q, upkeep.p_litter
    below = yy >= horizon
    # A kept verge (pavement, lawn, field edge; not water) is fresher: c' = b (m + s (c - m)) as facades, milder.
    verge_colour = _VERGE[column_class]
    grey = verge_colour.mean(axis=1, keepdims=True)
    kept = (0.9 + 0.2 * q) * (grey + (0.7 + 0.6 * q) * (verge_colour - grey))
    verge_colour = np.where((column_class != LandCover.WATER)[:, None], kept, verge_colour)
    image = np.where(below[..., None], verge_colour[None, :, :], image)
    half_width = _road_half_width(grid, yy, access.width)
    off_centre = np.abs(xx - size / 2 + 0.5)
    carriageway = below & (off_centre < half_width)
    verge = below & ~carriageway
    # An untended verge: weeds and mud in patches, litter; a tended one: a clean kerbstone edge.
    weeds = np.where(verge, 0.5 * (1 - q) * np.clip(wear.stains, 0, 1), 0)[..., None]
    image = image + weeds * (_WEEDS - image)
    litter = verge & (wear.litter_draws < p_litter)
    kind = np.minimum(wear.litter_draws / max(p_litter, 1e-9) * len(_LITTER), len(_LITTER) - 1).astype(np.intp)
    image = np.where(litter[..., None], _LITTER[kind], image)
    kerb = verge & (off_centre < half_width + 0.5 + 0.02 * (yy - horizon))
    image = np.where(kerb[..., None], image + q * (_KERBSTONE - image), image)
    image = np.where(carriageway[..., None], _ASPHALT, image)
    # Dashes shorten with distance: alternate on a logarithmic scale of the depth below the horizon.
    dashes = np.remainder(np.floor(8.0 * np.log1p(np.maximum(yy - horizon, 0))), 2) == 0
    centre_line = carriageway & (off_centre < 0.5 + 0.03 * (yy - horizon)) & dashes
    return np.where(centre_line[..., None], np.array([230, 230, 222], np.float32), image)


def _kerb_row(grid: _Grid) -> int:
    """The image row of the kerb, where street trees and parked cars stand."""
    return grid.horizon + max(1, int(round(0.035 * grid.size)))


def _paint_street_trees(image: np.ndarray, grid: _Grid, street_trees: list[tuple]) -> np.ndarray:
    """Street trees at the kerb: a trunk down to the pavement and a crown over the facades."""
    yy, xx = grid.yy, grid.xx
    kerb_row = _kerb_row(grid)
    for cx, cy, r in street_trees:
        trunk = (np.abs(xx - cx) < max(0.6, r / 7)) & (yy > cy) & (yy <= kerb_row)
        image = np.where(trunk[..., None], np.array([84, 66, 48], np.float32), image)
        crown = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        image = np.where(crown[..., None], _STREET_TREE * (1.0 + 0.15 * (cy - yy) / r)[..., None], image)
    return image


def _park_cars(image: np.ndarray, grid: _Grid, column_class: np.ndarray, car_draws: np.ndarray,
               upkeep: _Upkeep, access: _Access) -> np.ndarray:
    """Cars parked at the kerb, one per slot with probability p_car; new (glossy, bright) with probability q.

    Paints into ``image`` (and returns it).
    """
    size = grid.size
    q = upkeep.q
    kerb_row = _kerb_row(grid)
    body = max(2, int(round(0.05 * size)))
    cabin = max(1, int(round(0.04 * size)))
    wheel = max(1, int(round(0.03 * size)))
    road_half = float(_road_half_width(grid, kerb_row, access.width))
    slot = size / _CAR_SLOTS
    for k, (occupied, new, pick, offset, length) in enumerate(car_draws):
        span = (0.12 + 0.05 * length) * size
        x0 = int(round(k * slot + offset * max(slot - span, 0)))
        x1 = min(size, x0 + int(round(span)))
        centre = min(size - 1, (x0 + x1) // 2)
        on_road = x0 < size / 2 + road_half + 1 and x1 > size / 2 - road_half - 1
        if occupied >= upkeep.p_car or on_road or not _KERB[column_class[centre]]:
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
    return image


def _paint_traffic(image: np.ndarray, grid: _Grid, draws: np.ndarray, access: _Access) -> tuple[np.ndarray, int, int]:
    """Vehicles seen from behind on the carriageway: ``(image, vehicles, buses)``.

    Slot ``k`` lies at depth ``_TRAFFIC_DEPTH[k]`` below the horizon, in the
    left or the right lane; it holds a vehicle with probability ``p_vehicle``,
    a bus (tall, red, a window band) with probability ``p_bus`` and a car
    otherwise (paint from every car colour, whatever the affluence). Vehicles
    grow with depth (perspective). Paints into ``image`` (and returns it).
    """
    size, horizon = grid.size, grid.horizon
    vehicles = buses = 0
    for depth, (occupied, bus, pick, lane) in zip(_TRAFFIC_DEPTH, draws, strict=True):
        if occupied >= access.p_vehicle:
            continue
        base = int(round(horizon + depth * (size - horizon)))
        half_road = float(_road_half_width(grid, base, access.width))
        width = max(2, int(round((0.05 + 0.2 * depth) * size)))
        is_bus = bus < access.p_bus
        height = max(2, int(round(width * (1.0 if is_bus else 0.55))))
        centre = size / 2 + (0.5 if lane < 0.5 else -0.5) * half_road
        x0 = int(np.clip(round(centre - width / 2), 0, size - 1))
        x1 = min(size, x0 + width)
        top = max(horizon, base - height)
        if is_bus:
            image[top:base, x0:x1] = _BUS
            band = top + max(1, (base - top) // 4)
            image[band:band + max(1, (base - top) // 4), x0 + 1:max(x0 + 2, x1 - 1)] = _GLASS
            buses += 1
        else:
            image[top:base, x0:x1] = _TRAFFIC_CARS[min(int(pick * len(_TRAFFIC_CARS)), len(_TRAFFIC_CARS) - 1)]
        image[max(top, base - 1):base, x0:x1] = 28.0  # tyres and shadow
        vehicles += 1
    return image, vehicles, buses


def _paint_stop(image: np.ndarray, grid: _Grid, draws: np.ndarray, access: _Access) -> np.ndarray:
    """A transit stop at the kerb, if ``access.stop``: a glass shelter and a pole with a yellow sign.

    It stands on the left or the right pavement (``draws[1]``), at a place
    along it (``draws[2]``). Paints into ``image`` (and returns it).
    """
    if not access.stop:
        return image
    size = grid.size
    kerb_row = _kerb_row(grid)
    width = max(3, int(round(0.16 * size)))
    height = max(3, int(round(0.18 * size)))
    span = 0.3 * size - width
    x0 = int(round(0.03 * size + draws[2] * span))
    if draws[1] >= 0.5:
        x0 = size - x0 - width
    top = kerb_row - height
    image[top:kerb_row, x0:x0 + width] = _SHELTER_FRAME
    image[top + 1:kerb_row - 1, x0 + 1:x0 + width - 1] = _SHELTER_GLASS
    pole = x0 + width + 1 if draws[1] < 0.5 else x0 - 2
    pole = int(np.clip(pole, 0, size - 1))
    sign = max(2, int(round(0.06 * size)))
    image[top - sign:kerb_row, pole] = _SHELTER_FRAME
    image[top - sign:top, max(0, pole - sign // 2):pole + sign // 2 + 1] = _STOP_SIGN
    return image


def _camera(image: np.ndarray, rng: np.random.Generator, illumination_noise: float, pixel_noise: float) -> np.ndarray:
    """Per-view brightness ``exp(0.2 a U(-1, 1))``, hue ``exp(0.06 a U(-1, 1))`` per band and sensor noise; uint8 (3, H, W)."""
    level = illumination_noise
    image = image * np.exp(0.2 * level * rng.uniform(-1, 1)) * np.exp(0.06 * level * rng.uniform(-1, 1, size=3))
    image = image + rng.standard_normal(image.shape) * pixel_noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _street_view(fractions: np.ndarray, affluence: float, accessibility: float, rng: np.random.Generator,
                 size: int, illumination_noise: float, pixel_noise: float) -> tuple[np.ndarray, tuple]:
    """One ``(3, size, size)`` view (sky, a skyline of segments sampled from ``fractions``, verge and road)
    and its cues in :data:`STREET_CUES` order.

    ``affluence`` only changes how the street is kept, ``accessibility`` only its width, traffic and
    stop (see :func:`render_street_views`); every random number is drawn whatever their values, in the
    order of the steps, so one rng state gives the same street at any affluence and accessibility.
    """
    grid = _Grid.of(size)
    upkeep = _Upkeep.at(affluence)
    image = _sky(rng, grid)
    skyline = _skyline(fractions, rng, grid, upkeep.p_tree)
    wear = _wear(rng, size)
    access = _Access.at(accessibility, wear.street_draws[0], wear.street_draws[1])
    image = _paint_facades(image, grid, skyline, wear, upkeep)
    image = _paint_trees(image, grid, skyline.trees)
    image = _paint_street(image, grid, skyline.column_class, wear, upkeep, access)
    image = _paint_street_trees(image, grid, skyline.street_trees)
    image = _park_cars(image, grid, skyline.column_class, wear.car_draws, upkeep, access)
    image, vehicles, buses = _paint_traffic(image, grid, wear.traffic_draws, access)
    image = _paint_stop(image, grid, wear.street_draws, access)
    return _camera(image, rng, illumination_noise, pixel_noise), (access.width, float(access.stop), vehicles, buses)


def render_street_views(
    fractions: np.ndarray,
    rng: np.random.Generator,
    *,
    affluence: np.ndarray | None = None,
    accessibility: np.ndarray | None = None,
    size: int = 64,
    illumination_noise: float = 1.0,
    pixel_noise: float = 6.0,
    return_cues: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render street-level views from the land-cover mix, the affluence and the accessibility at each viewpoint.

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

    ``accessibility[v]`` in [0, 1] (the transit accessibility of
    :mod:`lib.data.city_layout`, 1 at a station) is not a land-cover property
    either: it changes the street itself. With ``a`` clipped to [0, 1] and
    uniforms ``u`` drawn per view:

    * road width: the carriageway's half-width at depth ``t`` below the
      horizon (0 at the horizon, 1 at the bottom row) is
      ``w (0.04 + 0.42 t) size`` with ``w = 0.7 + 0.6 a + 0.5 (u - 0.5)``
      (a narrow side street far from transit, an arterial at a station);
    * transit stop: a glass shelter and a pole with a yellow sign stand at the
      kerb with probability ``p_stop = a^2`` (0.11 at 500 m from a station);
    * traffic: each of 4 places on the carriageway (depths 0.3, 0.5, 0.7,
      0.9) holds a vehicle seen from behind with probability
      ``p_vehicle = 0.1 + 0.7 a``, a red bus with a window band with
      probability ``p_bus = 0.6 a`` and a car otherwise (any car colour).

    Every random number is drawn whatever the affluence and the
    accessibility, so views rendered from the same rng state at different
    values show the same street (sky, skyline, road; trees, cars, vehicles and
    the stop are coupled, appearing in the same places as the factor rises).

    Parameters
    ----------
    fractions:
        ``(V, K)`` land-cover fractions around each viewpoint, ``K = len(LandCover)``.
    rng:
        Source of all randomness, so the caller controls determinism.
    affluence:
        ``(V,)`` standardised affluence (mean 0, sd 1) at each viewpoint;
        None means 0 everywhere.
    accessibility:
        ``(V,)`` accessibility in [0, 1] at each viewpoint; None means 0 everywhere.
    size:
        Side of the square views in pixels.
    illumination_noise, pixel_noise:
        Level of the per-view brightness (``exp(0.2 a U(-1, 1))``) and hue
        (``exp(0.06 a U(-1, 1))`` per band) variation and the standard
        deviation of the per-pixel noise in DN.
    return_cues:
        Also return what was drawn of the accessibility per view.

    Returns
    -------
    ``(V, 3, size, size)`` uint8, bands :data:`STREET_BANDS`; with
    ``return_cues`` also ``(V, 4)`` float cues in :data:`STREET_CUES` order:
    the road width ``w``, 1 if a transit stop stands, the vehicles and the
    buses on the carriageway.
    """
    fractions = np.atleast_2d(fractions)
    affluence = _per_view("affluence", affluence, len(fractions))
    accessibility = _per_view("accessibility", accessibility, len(fractions))
    if ((accessibility < 0) | (accessibility > 1)).any():
        raise ValueError(f"accessibility must lie in [0, 1], got values from {accessibility.min()} "
                         f"to {accessibility.max()}")
    views = np.zeros((len(fractions), 3, size, size), np.uint8)
    cues = np.zeros((len(fractions), len(STREET_CUES)))
    for v, (f, a, s) in enumerate(zip(fractions, affluence, accessibility, strict=True)):
        views[v], cues[v] = _street_view(f, a, s, rng, size, illumination_noise, pixel_noise)
    return (views, cues) if return_cues else views


def _per_view(name: str, values: np.ndarray | None, n: int) -> np.ndarray:
    """``values`` as a finite ``(n,)`` float array (zeros for None), or a ``ValueError`` naming ``name``."""
    if values is None:
        return np.zeros(n)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {values.shape}, expected ({n},)")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite")
    return values
