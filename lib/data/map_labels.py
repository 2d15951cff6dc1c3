"""Labels of map centres in a generated city: where to centre maps, and the truth under each centre.

A generated city (:mod:`lib.data.city`) knows its outcomes per tile
(``tiles.nc``). :func:`sample_city_centres` draws map centres uniformly over
its inhabited tiles, keeping whole maps inside the city; :func:`city_labels`
reads, for each centre, the outcomes of the tile that holds it
(:data:`CITY_LABELS`) and the land-cover class of the pixel under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
import xarray as xr

from lib.data.landcover_maps import landcover_grid, sample_nearest
from lib.data.map_render import as_coords

__all__ = ["CITY_LABELS", "CityGrid", "city_labels", "sample_city_centres"]

#: The outcomes of a generated city stored with each of its maps: the value of
#: the city tile that holds the map's centre. ``land_price``,
#: ``population_density`` and ``environment_index`` are the map study's
#: labels; ``income`` and ``liveability`` come along at no cost.
CITY_LABELS: tuple[str, ...] = ("land_price", "population_density", "environment_index", "income", "liveability")


@dataclass(frozen=True)
class CityGrid:
    """The tile grid of a generated city (from its ``tiles.nc``).

    Tiles are ``tile_m`` squares in ``rows`` x ``cols``, row-major from the
    north-west corner (``origin_easting``, ``origin_northing``) in ``crs``;
    ``tile_id[row, col]`` is the ``tile`` coordinate of each, ``inhabited``
    (rows, cols) whether its water fraction is under 0.5.
    """

    name: str
    crs: pyproj.CRS
    origin_easting: float
    origin_northing: float
    tile_m: float
    tile_id: np.ndarray
    inhabited: np.ndarray

    @classmethod
    def from_tiles(cls, tiles: xr.Dataset) -> CityGrid:
        rows, cols = tiles["row"].values.astype(np.int64), tiles["col"].values.astype(np.int64)
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        tile_id = np.full(shape, -1, dtype=np.int64)
        tile_id[rows, cols] = tiles["tile"].values
        inhabited = np.zeros(shape, dtype=bool)
        inhabited[rows, cols] = tiles["inhabited"].values.astype(bool)
        return cls(
            name=str(tiles.attrs.get("city", "")),
            crs=pyproj.CRS.from_user_input(str(tiles.attrs["crs"])),
            origin_easting=float(tiles.attrs["origin_easting"]),
            origin_northing=float(tiles.attrs["origin_northing"]),
            tile_m=float(tiles.attrs["tile_px"]) * float(tiles.attrs["resolution_m"]),
            tile_id=tile_id,
            inhabited=inhabited,
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the whole city."""
        rows, cols = self.tile_id.shape
        return (
            self.origin_easting,
            self.origin_northing - rows * self.tile_m,
            self.origin_easting + cols * self.tile_m,
            self.origin_northing,
        )

    def row_col(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of the tile holding each point (n, 2), and whether it lies in the city."""
        xy = np.asarray(xy, dtype=float)
        col = np.floor((xy[:, 0] - self.origin_easting) / self.tile_m).astype(np.int64)
        row = np.floor((self.origin_northing - xy[:, 1]) / self.tile_m).astype(np.int64)
        inside = (row >= 0) & (row < self.tile_id.shape[0]) & (col >= 0) & (col < self.tile_id.shape[1])
        return row, col, inside


def sample_city_centres(tiles: xr.Dataset, n: int, seed: int, margin_m: float = 0.0) -> np.ndarray:
    """``n`` map centres (x, y) in the city's CRS, uniform over its inhabited tiles.

    Each centre picks an inhabited tile uniformly (``numpy.random.default_rng(seed)``),
    then a uniform point inside the part of that tile at least ``margin_m``
    from the city's edge (half the map width keeps every whole map inside the
    city). Tiles with no such part are never picked; if no inhabited tile has
    one, ``ValueError``.
    """
    grid = CityGrid.from_tiles(tiles)
    minx, miny, maxx, maxy = grid.bounds
    rows, cols = np.nonzero(grid.inhabited)  # row-major: the order of the tile ids
    # Per candidate tile, the allowed x range and the allowed range of the
    # distance below the north edge (so that a draw never reaches the next tile).
    x_lo = np.maximum(minx + cols * grid.tile_m, minx + margin_m)
    x_hi = np.minimum(minx + (cols + 1) * grid.tile_m, maxx - margin_m)
    d_lo = np.maximum(rows * grid.tile_m, margin_m)
    d_hi = np.minimum((rows + 1) * grid.tile_m, (maxy - miny) - margin_m)
    usable = (x_hi > x_lo) & (d_hi > d_lo)
    if not usable.any():
        raise ValueError(
            f"no inhabited tile of {grid.name or 'the city'} has room for a centre {margin_m} m from the city's edge"
        )
    x_lo, x_hi, d_lo, d_hi = x_lo[usable], x_hi[usable], d_lo[usable], d_hi[usable]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, usable.sum(), size=n)
    u, v = rng.random(n), rng.random(n)
    # u, v < 1: a point stays west of the tile's east edge and north of its south edge.
    x = np.minimum(x_lo[pick] + u * (x_hi[pick] - x_lo[pick]), np.nextafter(x_hi[pick], -np.inf))
    d = np.minimum(d_lo[pick] + v * (d_hi[pick] - d_lo[pick]), np.nextafter(d_hi[pick], -np.inf))
    return np.column_stack([x, maxy - d])


def city_labels(tiles: xr.Dataset, xy, landcover: xr.DataArray | None = None) -> dict[str, np.ndarray]:
    """The labels of map centres ``xy`` (n, 2, in the city's CRS) of a generated city.

    ``city_tile`` is the tile holding each centre (-1 outside the city), each
    of :data:`CITY_LABELS` that tile's value (NaN outside or where
    uninhabited), ``landcover_at_centre`` the class code of the ``landcover``
    pixel under the centre (-1 outside it, or without a raster).
    """
    xy = as_coords(xy)
    grid = CityGrid.from_tiles(tiles)
    row, col, inside = grid.row_col(xy)
    tile = np.full(len(xy), -1, dtype=np.int64)
    tile[inside] = grid.tile_id[row[inside], col[inside]]
    position = {int(t): i for i, t in enumerate(tiles["tile"].values)}
    index = np.array([position.get(int(t), -1) for t in tile], dtype=np.int64)
    labels: dict[str, np.ndarray] = {"city_tile": tile.astype(np.int32)}
    for name in CITY_LABELS:
        values = np.full(len(xy), np.nan, dtype=np.float32)
        if name in tiles:
            found = index >= 0
            values[found] = tiles[name].values[index[found]]
        labels[name] = values
    centre = np.full(len(xy), -1, dtype=np.int8)
    if landcover is not None:
        classes, transform, _, nodata = landcover_grid(landcover)
        values, within = sample_nearest(classes, transform, xy[:, 0], xy[:, 1], 0)
        keep = within if nodata is None else within & (values != nodata)
        centre[keep] = values[keep]
    labels["landcover_at_centre"] = centre
    return labels

