"""Labels of map centres: the truth under each centre of a generated city, or a user's labelled points.

A generated city (:mod:`lib.data.city`) knows its outcomes per tile
(``tiles.nc``). :func:`sample_city_centres` draws map centres uniformly over
its inhabited tiles, keeping whole maps inside the city; :func:`city_labels`
reads, for each centre, the outcomes of the tile that holds it
(:data:`CITY_LABELS`) and the land-cover class of the pixel under it.

A real place's labels come as a table of points (:func:`read_point_labels`:
CSV or Parquet, ``lon``/``lat`` in WGS84 or ``easting``/``northing`` in the
maps' CRS, and numeric label columns); :func:`point_labels_at` gives each map
the labels of the point nearest its centre, if one lies within
``max_distance_m``::

    label_c(map m) = value_c(p*),  p* = argmin_p ||centre_m - xy_p||,  if ||centre_m - xy_{p*}|| <= max_distance_m
                     NaN otherwise
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyproj
import xarray as xr
from scipy.spatial import cKDTree

from lib.data.city_import import numbers, read_table
from lib.data.geotiff import DatasetImportError
from lib.data.landcover_maps import landcover_grid, sample_nearest
from lib.data.map_render import as_coords

__all__ = ["CITY_LABELS", "CityGrid", "PointLabels", "city_labels", "point_labels_at", "read_point_labels",
           "sample_city_centres"]

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



@dataclass(frozen=True)
class PointLabels:
    """Numeric labels at points: ``xy`` (n, 2) in the maps' CRS, ``values`` label -> (n,) floats, read from ``file``."""

    file: str
    xy: np.ndarray
    values: dict[str, np.ndarray]


def read_point_labels(path: str | os.PathLike, crs: str | pyproj.CRS, columns=None) -> PointLabels:
    """A label table of points (module docstring), its coordinates projected to ``crs``.

    Coordinates are ``lon``/``lat`` (WGS84 degrees) where the table has both,
    else ``easting``/``northing`` (already in ``crs``). ``columns`` are the
    labels (default: every other column). Raises :class:`DatasetImportError`
    naming the file, the column and the row of a missing coordinate, a value
    that is not a number, or a missing column.
    """
    path = Path(path)
    table = read_table(path, "label table", ())
    pair = ("lon", "lat") if {"lon", "lat"} <= set(table.columns) else ("easting", "northing")
    if not set(pair) <= set(table.columns):
        raise DatasetImportError(f"label table {path.name} needs coordinate columns lon and lat (WGS84) or easting "
                                 f"and northing (in the maps' CRS); columns: {list(table.columns)}")
    coordinate_columns = {"lon", "lat", "easting", "northing"}
    columns = [c for c in table.columns if c not in coordinate_columns] if columns is None else list(columns)
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise DatasetImportError(f"label table {path.name} has no column(s) {absent}; columns: {list(table.columns)}")
    if not columns:
        raise DatasetImportError(f"label table {path.name} has no label column besides the coordinates")
    xy = np.column_stack([numbers(table[c], path.name, c) for c in pair])
    missing = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if len(missing):
        raise DatasetImportError(f"label table {path.name}: row {missing[0] + 1} has no {pair[0]}/{pair[1]}")
    if pair == ("lon", "lat"):
        xy = np.column_stack(pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(xy[:, 0], xy[:, 1]))
    return PointLabels(path.name, xy, {c: numbers(table[c], path.name, c) for c in columns})


def point_labels_at(labels: PointLabels, centres_xy, max_distance_m: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each centre's labels from the nearest labelled point within ``max_distance_m`` (module docstring).

    Returns ``(label -> (n,) float32, NaN where no point is near enough,
    distance_m (n,) float32 to that point, NaN likewise)``. Several centres
    may take the same point. Raises :class:`DatasetImportError` when no centre
    has a point within ``max_distance_m``.
    """
    centres = as_coords(centres_xy)
    distance, nearest = cKDTree(labels.xy).query(centres, distance_upper_bound=max_distance_m)
    matched = np.isfinite(distance)
    if not matched.any():
        closest = cKDTree(labels.xy).query(centres)[0].min()
        raise DatasetImportError(f"label table {labels.file}: no labelled point lies within {max_distance_m} m of any "
                                 f"of the {len(centres)} map centres (the closest is {closest:.0f} m away); check "
                                 "the coordinates' CRS or raise max_distance_m")
    out = {}
    for name, values in labels.values.items():
        column = np.full(len(centres), np.nan, dtype=np.float32)
        column[matched] = values[nearest[matched]]
        out[name] = column
    return out, np.where(matched, distance, np.nan).astype(np.float32)
