"""Import real aerial imagery: a folder of GeoTIFF tiles plus a label table.

Users bring their own data as one GeoTIFF per tile (all in one CRS, of one
size and band count) and a table of labels keyed by tile id, the file name
without its extension. :func:`import_geotiff_tiles` checks all of it and
builds the same Dataset layout the generated cities' tiles use, so every
stage runs on it unchanged:

- ``image`` (tile, band, y, x), the tiles' dtype (or the one asked for)
- one variable per label column, along ``tile``
- coords ``tile`` (ids), ``band`` (1-based band indexes of the source files),
  ``easting``/``northing`` (tile centres in the tiles' CRS) and ``lon``/``lat``
  (the same centres in WGS84)
- the CRS via rioxarray (``spatial_ref``), attrs ``source="geotiff"``

Every problem raises :class:`DatasetImportError` naming the file, tile or
column at fault. All checks and reads happen before anything is written, and
the output is written atomically, so a failed import leaves no file behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyproj
import rasterio
import rasterio.errors
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

__all__ = ["DatasetImportError", "import_geotiff_tiles", "write_dataset_atomic"]

_TIFF_SUFFIXES = {".tif", ".tiff"}
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}


class DatasetImportError(ValueError):
    """Raised when user-supplied data cannot be imported; the message names what is wrong where."""


def write_dataset_atomic(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to NetCDF (h5netcdf) at ``path`` via a temporary file and a rename.

    The temporary file lives in the target folder so that ``os.replace`` is an
    atomic rename: readers (and DVC) see either the old file or the complete
    new one, never a partial write. Multi-dimensional variables are
    compressed. Read it back with ``xr.open_dataset(path, engine="h5netcdf",
    decode_coords="all")`` so that the CRS variable (``spatial_ref``) comes
    back as a coordinate and ``ds.rio.crs`` finds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Extend, not replace, each variable's own encoding: rioxarray keeps the
    # CRS link (grid_mapping) there.
    encoding = {
        name: {**var.encoding, "zlib": True, "complevel": 4}
        for name, var in ds.data_vars.items()
        if var.ndim >= 2
    }
    # A unique name beside the target (not mkstemp, whose 0600 mode the final
    # file would keep): the new file gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class _Tile:
    """One GeoTIFF, read: its pixels and the georeferencing needed to place it."""

    tile_id: str
    path: Path
    crs: rasterio.crs.CRS
    pixels: np.ndarray  # (band, y, x)
    centre: tuple[float, float]


def _tile_files(tile_dir: Path) -> list[Path]:
    """The GeoTIFFs in ``tile_dir``, sorted, with unique ids (stems)."""
    if not tile_dir.is_dir():
        raise DatasetImportError(f"tile folder not found: {tile_dir}")
    files = sorted(p for p in tile_dir.iterdir() if p.is_file() and p.suffix.lower() in _TIFF_SUFFIXES)
    if not files:
        raise DatasetImportError(f"no GeoTIFF tiles (*.tif, *.tiff) in {tile_dir}")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise DatasetImportError(
                f"two files have tile id {path.stem!r}: {seen[path.stem].name} and {path.name}"
            )
        seen[path.stem] = path
    return files


def _read_label_table(labels_path: Path, id_column: str) -> pd.DataFrame:
    """The label table (CSV or (Geo)Parquet) indexed by tile id as text, geometry dropped."""
    if not labels_path.is_file():
        raise DatasetImportError(f"label table not found: {labels_path}")
    suffix = labels_path.suffix.lower()
    if suffix != ".csv" and suffix not in _PARQUET_SUFFIXES:
        raise DatasetImportError(
            f"label table {labels_path.name}: unsupported format {suffix!r} (use .csv or .parquet)"
        )
    try:
        if suffix == ".csv":
            # Ids are file stems, so read them as text: "007" must stay "007".
            table = pd.read_csv(labels_path, dtype={id_column: str})
        elif b"geo" in (pq.read_schema(labels_path).metadata or {}):
            geo = gpd.read_parquet(labels_path)
            table = pd.DataFrame(geo.drop(columns=geo.geometry.name))
        else:
            table = pd.read_parquet(labels_path)
    except Exception as error:  # pandas/pyarrow raise many types for a bad file
        raise DatasetImportError(f"label table {labels_path.name} cannot be read: {error}") from error

    if id_column not in table.columns:
        raise DatasetImportError(
            f"label table {labels_path.name} has no id column {id_column!r}; columns: {list(table.columns)}"
        )
    table[id_column] = table[id_column].astype(str)
    duplicated = table[id_column][table[id_column].duplicated()].unique().tolist()
    if duplicated:
        raise DatasetImportError(
            f"label table {labels_path.name} lists tile id(s) more than once: {duplicated[:10]}"
        )
    return table.set_index(id_column)


def _select_labels(
    table: pd.DataFrame, tile_ids: list[str], label_columns: Sequence[str] | None, table_name: str
) -> pd.DataFrame:
    """The label rows of ``tile_ids`` in tile order, checked for missing rows and NaNs."""
    columns = list(table.columns) if label_columns is None else list(label_columns)
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise DatasetImportError(
            f"label table {table_name} has no column(s) {absent}; columns: {list(table.columns)}"
        )
    unlabeled = [t for t in tile_ids if t not in table.index]
    if unlabeled:
        listed = ", ".join(repr(t) for t in unlabeled[:10])
        raise DatasetImportError(f"no label in {table_name} for {len(unlabeled)} tile(s): {listed}")
    labels = table.loc[tile_ids, columns]
    missing = labels.isna()
    if missing.to_numpy().any():
        tile, column = next((t, c) for t, row in missing.iterrows() for c in columns if row[c])
        raise DatasetImportError(
            f"label {column!r} of tile {tile!r} is missing (NaN) in {table_name}"
            f" ({int(missing.to_numpy().sum())} missing value(s) in all)"
        )
    return labels


def _read_tile(
    path: Path, bands: Sequence[int] | None
) -> tuple[rasterio.crs.CRS, np.ndarray, tuple[float, float]]:
    """CRS, pixels (band, y, x) and centre of one GeoTIFF; unreadable files raise naming the file."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DatasetImportError(f"{path.name} has no CRS (not a georeferenced GeoTIFF)")
            if bands is not None and max(bands) > src.count:
                raise DatasetImportError(
                    f"{path.name} has {src.count} band(s), "
                    f"expected at least {max(bands)} for bands {list(bands)}"
                )
            pixels = src.read(list(bands) if bands is not None else None)
            centre = src.transform @ (src.width / 2, src.height / 2)
            return src.crs, pixels, (float(centre[0]), float(centre[1]))
    except rasterio.errors.RasterioError as error:
        raise DatasetImportError(f"{path.name} is not a readable GeoTIFF: {error}") from error


def _read_tiles(files: list[Path], bands: Sequence[int] | None) -> list[_Tile]:
    """Read every tile and check they agree with the first in CRS, band count and size."""
    tiles: list[_Tile] = []
    for path in files:
        crs, pixels, centre = _read_tile(path, bands)
        tile = _Tile(path.stem, path, crs, pixels, centre)
        if tiles:
            first = tiles[0]
            if tile.crs != first.crs:
                raise DatasetImportError(
                    f"mixed CRS across tiles: {first.path.name} is in {first.crs.to_string()}, "
                    f"{path.name} is in {crs.to_string()}"
                )
            if pixels.shape[0] != first.pixels.shape[0]:
                raise DatasetImportError(
                    f"{path.name} has {pixels.shape[0]} band(s), expected {first.pixels.shape[0]} "
                    f"(as in {first.path.name})"
                )
            if pixels.shape[1:] != first.pixels.shape[1:]:
                raise DatasetImportError(
                    f"tiles of different sizes: {path.name} is {pixels.shape[2]}x{pixels.shape[1]} px, "
                    f"{first.path.name} is {first.pixels.shape[2]}x{first.pixels.shape[1]} px"
                )
        tiles.append(tile)
    return tiles


def _stack_pixels(tiles: list[_Tile], dtype) -> np.ndarray:
    """(tile, band, y, x) in the tiles' common dtype, or cast to ``dtype``.

    A cast to an integer dtype must be exact: values out of range, fractions
    or NaNs name the tile instead of wrapping or truncating silently.
    """
    stacked = np.stack([t.pixels for t in tiles])
    if dtype is None:
        return stacked
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        for tile in tiles:
            if not np.array_equal(tile.pixels.astype(dtype), tile.pixels):
                raise DatasetImportError(
                    f"{tile.path.name} has values ({tile.pixels.min()}..{tile.pixels.max()}) that {dtype} "
                    "cannot hold exactly; rescale the tiles or keep their dtype"
                )
    return stacked.astype(dtype)


def import_geotiff_tiles(
    tile_dir: str | os.PathLike,
    labels_path: str | os.PathLike,
    id_column: str = "tile_id",
    label_columns: Sequence[str] | None = None,
    bands: Sequence[int] | None = None,
    out_path: str | os.PathLike | None = None,
    dtype: str | np.dtype | None = None,
) -> xr.Dataset:
    """Build a tile Dataset from a folder of GeoTIFFs and a label table.

    ``tile_dir`` holds one ``.tif``/``.tiff`` per tile; its stem is the tile
    id. ``labels_path`` is a CSV or (Geo)Parquet table with an ``id_column``
    and the labels; ``label_columns`` picks some (default: all but the id and
    geometry). Rows for tiles not in the folder are ignored. ``bands`` picks
    1-based band indexes (default: all, and every tile must have as many as
    the first). ``dtype`` casts the pixels (e.g. ``"uint8"``) when all values
    fit; by default the tiles' dtype is kept.

    Returns the Dataset described in the module docstring and, when
    ``out_path`` is given, writes it there as NetCDF (atomically, only after
    everything was read and checked). Raises :class:`DatasetImportError` for
    an empty or missing folder, an unreadable file, mixed CRSs, band counts or
    tile sizes, a label table without the id column, and missing or NaN labels.
    """
    if bands is not None:
        bands = [int(b) for b in bands]
        if not bands or min(bands) < 1 or len(set(bands)) != len(bands):
            raise DatasetImportError(f"bands must be distinct 1-based band indexes, got {bands}")

    labels_path = Path(labels_path)
    files = _tile_files(Path(tile_dir))
    tile_ids = [p.stem for p in files]
    table = _read_label_table(labels_path, id_column)
    labels = _select_labels(table, tile_ids, label_columns, labels_path.name)
    tiles = _read_tiles(files, bands)
    pixels = _stack_pixels(tiles, dtype)

    # Through the authority code ("EPSG:3067") where there is one: GDAL's WKT
    # of some CRSs (TM35FIN) matches another EPSG code and loses the identity.
    crs = pyproj.CRS.from_user_input(tiles[0].crs.to_string())
    if not crs.is_projected:  # the studies measure in metres (spatial blocks, gaps), as generated cities do
        raise DatasetImportError(f"{tiles[0].path.name} is in {crs.to_string()}, a CRS that is not projected: "
                                 "reproject the tiles to a projected CRS in metres (e.g. UTM) first")
    easting = np.array([t.centre[0] for t in tiles])
    northing = np.array([t.centre[1] for t in tiles])
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(easting, northing)

    band_index = bands if bands is not None else list(range(1, pixels.shape[1] + 1))
    ds = xr.Dataset(
        data_vars={"image": (("tile", "band", "y", "x"), pixels)},
        coords={
            "tile": tile_ids,
            "band": band_index,
            "easting": ("tile", easting),
            "northing": ("tile", northing),
            "lon": ("tile", np.asarray(lon, dtype=float)),
            "lat": ("tile", np.asarray(lat, dtype=float)),
        },
        attrs={"source": "geotiff"},
    )
    for column in labels.columns:
        values = labels[column].to_numpy()
        # Text labels come out of pandas as objects; NetCDF stores them as strings.
        ds[str(column)] = ("tile", values.astype(str) if values.dtype == object else values)
    ds = ds.rio.write_crs(crs.to_string())
    if out_path is not None:
        write_dataset_atomic(ds, out_path)
    return ds
