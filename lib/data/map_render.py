"""Map tiles of OpenStreetMap layers around any centre, in the compendium's one map style.

:func:`render_map` / :func:`render_maps` rasterise the features of
:class:`lib.data.osm_layers.OsmLayers` in a ``size_px`` square window around
each centre with :func:`rasterio.features.rasterize`, in draw order (the
style codes of :mod:`lib.data.map_style`): a polygon is burnt where it
covers a pixel centre, a line along a one-pixel path, a later style over an
earlier one. Each map comes with its per-pixel class mask, class fractions
and two building measures taken from the footprints themselves, not from
pixels::

    building_fraction = area(footprints clipped to the window) / area(window)
    building_density  = #{footprints whose representative point lies in the window} / area(window) in km^2

:func:`sample_coordinates` draws centres uniformly over the area an extract
covers. The coordinate helpers (:func:`as_coords`, :func:`project_coords`,
:func:`check_window`, :func:`outside_bounds_error`, :func:`stack_maps`) are
shared with the land-cover renderer (:mod:`lib.data.landcover_maps`).
Everything is deterministic: the same inputs give byte-identical images.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyproj
import rasterio.features
import shapely
from affine import Affine

from lib.data.map_style import MapBatch, MapTile, tile_from_styles

if TYPE_CHECKING:  # the layers come from lib.data.osm_layers, which loads pyrosm
    from lib.data.osm_layers import OsmLayers

__all__ = [
    "as_coords",
    "check_window",
    "outside_bounds_error",
    "project_coords",
    "render_map",
    "render_maps",
    "sample_coordinates",
    "stack_maps",
]


@lru_cache(maxsize=16)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    """A cached CRS transformer; building one costs more than a tile."""
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def _window(center_xy, size_px: int, metres_per_px: float) -> tuple[shapely.Polygon, Affine]:
    """The square window around a centre and the affine transform of its pixel grid."""
    cx, cy = (float(v) for v in center_xy)
    half = size_px * metres_per_px / 2
    transform = Affine(metres_per_px, 0.0, cx - half, 0.0, -metres_per_px, cy + half)
    return shapely.box(cx - half, cy - half, cx + half, cy + half), transform


def check_window(size_px: int, metres_per_px: float) -> None:
    """Refuse window sizes and scales that cannot make an image."""
    if int(size_px) != size_px or size_px < 1:
        raise ValueError(f"size_px must be a positive integer, got {size_px!r}")
    if not metres_per_px > 0:
        raise ValueError(f"metres_per_px must be positive, got {metres_per_px!r}")


def _render_projected(layers: OsmLayers, center_xy, size_px: int, metres_per_px: float) -> MapTile:
    """Render one window around a projected centre (no bounds check)."""
    window, transform = _window(center_xy, size_px, metres_per_px)
    # Features are stored in draw order, so sorted hits rasterise in draw order
    # and later shapes overwrite earlier ones.
    hits = np.sort(layers.tree.query(window))
    codes = layers.features["code"].to_numpy()[hits]

    styles = np.zeros((size_px, size_px), dtype=np.uint8)
    if hits.size:
        rasterio.features.rasterize(
            zip(layers.shapes[hits], codes, strict=True), out=styles, transform=transform, all_touched=False
        )

    window_area = window.area
    building_rows = layers.features["building"].to_numpy()[hits]
    candidates = building_rows[building_rows >= 0]
    footprints = layers.buildings.geometry.to_numpy()[candidates]
    covered = shapely.area(shapely.clip_by_rect(footprints, *window.bounds)).sum()
    inside = shapely.contains_xy(window, *shapely.get_coordinates(layers.building_points[candidates]).T)
    per_km2 = inside.sum() / (window_area / 1e6)
    return tile_from_styles(styles, float(covered / window_area), float(per_km2))


def outside_bounds_error(
    coords: np.ndarray, outside: np.ndarray, bounds, crs_name: str, what: str
) -> ValueError:
    """A ValueError listing (up to ten of) the coordinates outside ``what`` (with its ``bounds``)."""
    indices = np.flatnonzero(outside)
    listed = ", ".join(f"#{i} ({coords[i, 0]:.6g}, {coords[i, 1]:.6g})" for i in indices[:10])
    more = f" and {indices.size - 10} more" if indices.size > 10 else ""
    minx, miny, maxx, maxy = bounds
    return ValueError(
        f"{indices.size} coordinate(s) outside {what} "
        f"(bounds x {minx:.1f}..{maxx:.1f}, y {miny:.1f}..{maxy:.1f} in {crs_name}): {listed}{more}"
    )


def as_coords(coords) -> np.ndarray:
    """``coords`` as a finite float array of shape (n, 2); a single pair becomes one row."""
    coords = np.asarray(coords, dtype=float)
    if coords.ndim == 1 and coords.size == 2:
        coords = coords[None, :]
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (n, 2), got {coords.shape}")
    if not np.isfinite(coords).all():
        raise ValueError(
            f"coords hold non-finite values at rows {np.flatnonzero(~np.isfinite(coords).all(1)).tolist()}"
        )
    return coords


def project_coords(coords: np.ndarray, coords_crs, crs: pyproj.CRS) -> np.ndarray:
    """``coords`` (n, 2) in ``coords_crs`` (None: already in ``crs``) transformed into ``crs``."""
    if coords_crs is None:
        return coords
    src = pyproj.CRS.from_user_input(coords_crs)
    if src == crs:
        return coords
    x, y = _transformer(src.to_wkt(), crs.to_wkt()).transform(coords[:, 0], coords[:, 1])
    return np.column_stack([x, y])


def stack_maps(
    tiles: list[MapTile], xy: np.ndarray, crs: pyproj.CRS, metres_per_px: float, source: str
) -> MapBatch:
    """Stack tiles rendered around the projected centres ``xy`` into a batch."""
    lonlat = project_coords(xy, crs, pyproj.CRS.from_epsg(4326))
    return MapBatch(
        images=np.stack([t.image for t in tiles]),
        masks=np.stack([t.mask for t in tiles]),
        fractions=np.stack([t.fractions for t in tiles]),
        building_fraction=np.array([t.building_fraction for t in tiles]),
        building_density=np.array([t.building_density for t in tiles]),
        easting=xy[:, 0].copy(),
        northing=xy[:, 1].copy(),
        lon=lonlat[:, 0],
        lat=lonlat[:, 1],
        crs=crs,
        metres_per_px=float(metres_per_px),
        source=source,
    )


def render_map(layers: OsmLayers, center_xy, size_px: int = 64, metres_per_px: float = 4.0) -> MapTile:
    """Render the map of a ``size_px`` square window centred on ``center_xy``.

    ``center_xy`` is (easting, northing) in ``layers.crs``; one pixel covers
    ``metres_per_px`` metres (64 px at 4 m: a 256 m window). Raises
    ``ValueError`` when the centre lies outside the area the extract covers.
    """
    return render_maps(
        layers, [center_xy], coords_crs=None, size_px=size_px, metres_per_px=metres_per_px
    ).tile(0)


def render_maps(
    layers: OsmLayers,
    coords,
    coords_crs: str | pyproj.CRS | None = "EPSG:4326",
    size_px: int = 64,
    metres_per_px: float = 4.0,
) -> MapBatch:
    """Render one map per row of ``coords`` (n, 2).

    ``coords`` are (lon, lat) by default; give ``coords_crs`` for other CRSs,
    or ``None`` for coordinates already in ``layers.crs``. Every centre must
    lie inside the area the extract covers (``layers.coverage``), else a
    ``ValueError`` names the offending rows and their coordinates as given. Each map costs one spatial-index
    query and two rasterisations.
    """
    check_window(size_px, metres_per_px)
    given = as_coords(coords)
    xy = project_coords(given, coords_crs, layers.crs)
    outside = ~shapely.intersects_xy(layers.coverage, xy[:, 0], xy[:, 1])
    if outside.any():
        raise outside_bounds_error(given, outside, layers.bounds, layers.crs.to_string(), "the OSM extract")
    tiles = [_render_projected(layers, c, int(size_px), metres_per_px) for c in xy]
    return stack_maps(tiles, xy, layers.crs, metres_per_px, "openstreetmap")


def sample_coordinates(
    layers: OsmLayers,
    n: int,
    seed: int,
    margin_m: float = 0.0,
    coords_crs: str | pyproj.CRS | None = "EPSG:4326",
) -> np.ndarray:
    """``n`` map centres drawn uniformly (by area) over the area the extract covers.

    Points are uniform in ``layers.coverage`` shrunk by ``margin_m`` (use half
    the window width to keep whole windows inside the data), drawn by
    rejection from its bounding box with ``numpy.random.default_rng(seed)``.
    Returned as (n, 2) in ``coords_crs`` (lon/lat by default; ``None`` for
    ``layers.crs``), ready for :func:`render_maps` with the same ``coords_crs``.
    """
    area = layers.coverage.buffer(-margin_m) if margin_m else layers.coverage
    if area.is_empty:
        raise ValueError(f"margin_m={margin_m} leaves no area inside the extract (bounds {layers.bounds})")
    minx, miny, maxx, maxy = area.bounds
    rng = np.random.default_rng(seed)
    accepted = np.empty((0, 2))
    while len(accepted) < n:
        # The area fills most of its box, so 2n candidates a round rarely need a second round.
        draw = np.column_stack([rng.uniform(minx, maxx, 2 * n), rng.uniform(miny, maxy, 2 * n)])
        accepted = np.concatenate([accepted, draw[shapely.intersects_xy(area, draw[:, 0], draw[:, 1])]])
    xy = accepted[:n]
    if coords_crs is None:
        return xy
    return project_coords(xy, layers.crs, pyproj.CRS.from_user_input(coords_crs))

