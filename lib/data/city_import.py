"""Import a real city into the dataset format of the generated cities, for the region studies.

A generated city (:mod:`lib.data.city`) comes with its truth; a real one
comes as files. :func:`import_city` reads them, checks them and writes the
files the region studies read from ``datasets/<name>/``, so a real city sits
beside the generated ones:

Inputs
------
* **regions** - a GeoPackage (``.gpkg``) or GeoJSON (``.geojson``, ``.json``)
  of polygons, one feature per region: an id column (``id_column``, default
  ``region_id``; text or integers, unique) and numeric **outcome** columns
  (``outcomes``; default every other column but the geometry). The file must
  carry its CRS. A projected CRS is kept; a geographic one (GeoJSON's WGS84)
  is reprojected to the local UTM zone of the regions' centre (or to
  ``crs``, which must be projected), so areas and distances are in metres.
  Empty outcome cells stay missing (NaN); text that is not a number is an error.
* **POIs** - CSV or Parquet with the columns ``category``, ``name``,
  ``description``, ``lon``, ``lat`` (WGS84 degrees). Each POI belongs to the
  region polygon that contains it; POIs inside no region are left out and
  counted in ``city.json``.
* **aerial images** - one per region, ``<aerial_dir>/<region id>.<ext>``
  (``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``), 8-bit, all with 3
  bands (R, G, B) or all with 4 (R, G, B, NIR).
* **street-level views** - ``<street_dir>/<region id>/<any name>.<ext>``
  (``.png``, ``.jpg``, ``.jpeg``), RGB, at least one per region. Every region
  keeps the same number ``V`` of views, the smallest count over the regions,
  the first ``V`` in file-name order.
* **origin-destination table** - CSV or Parquet with ``origin`` and
  ``destination`` (region ids) and ``trips`` (a number >= 0). Repeated pairs
  are summed; pairs without trips are dropped.

Images are cut to their central square and resampled by area averaging
(PIL's box filter) to ``aerial_px`` and ``view_px``.

Output (the files :mod:`lib.data.city` documents, written atomically)
----------------------------------------------------------------------
``regions.nc`` (``image`` region x band x y x x, CRS), ``street_views.nc``
(``image`` region x view x band x y x x), ``regions.parquet`` (``region``
numbered 0..N-1 in the file's order, ``region_id`` the id as text,
``easting``/``northing`` of the polygon's centroid, ``lon``/``lat``,
``inhabited`` (every imported region), ``land_area_km2``, ``n_pois``, the
outcomes, ``trips_out``/``trips_in``), ``pois.parquet``, ``flows.parquet``
(``origin``, ``destination``, ``distance_km`` between centroids, ``flow``)
and ``city.json``.

An imported city has **no ground truth**: ``city.json`` says
``"ground_truth": false`` and ``"source": "imported"``, and the parts of a
generated city that only a known generating process gives (``config``,
``outcome_models``, ``oracle_r2``, ``hidden_factors``,
``modality_features``, and the tile files ``tiles.nc``, ``landcover.tif``,
``buildings.tif``) are listed under ``"absent"``; those keys are present
but empty, so the loaders read the city unchanged. It also records the
outcomes, the POI categories found (``poi_categories``), the counts, the CRS
and the input files' names and SHA-256 digests.

Every problem raises :class:`lib.data.geotiff.DatasetImportError` naming the
file and the row, column or region at fault; everything is read and checked
before anything is written.

Command line::

    python -m lib.data.city_import NAME --regions regions.gpkg --pois pois.csv \\
        --aerial aerial/ --street street/ --flows od.csv [--out datasets/NAME] [options]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from PIL import Image

from lib.data.geotiff import DatasetImportError

__all__ = ["ABSENT", "ImportedCity", "import_city", "main", "numbers", "read_table"]

_REGION_SUFFIXES = {".gpkg", ".geojson", ".json"}
_TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
_AERIAL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_VIEW_SUFFIXES = (".png", ".jpg", ".jpeg")
_POI_COLUMNS = ("category", "name", "description", "lon", "lat")
_FLOW_COLUMNS = ("origin", "destination", "trips")
#: What a generated city has and an imported one lacks (``city.json``'s ``"absent"``).
ABSENT = ("config", "outcome_models", "oracle_r2", "hidden_factors", "modality_features", "layout",
          "tiles.nc", "landcover.tif", "buildings.tif")
_RESERVED = {"region", "region_id", "grid_row", "grid_col", "easting", "northing", "lon", "lat", "inhabited",
             "land_area_km2", "n_pois", "trips_out", "trips_in"}


@dataclass(frozen=True)
class ImportedCity:
    """What :func:`import_city` wrote: where, how many regions, POIs, views and trips, in which CRS."""

    path: Path
    crs: str
    n_regions: int
    n_pois: int
    views_per_region: int
    n_flow_pairs: int
    outcomes: tuple[str, ...]


# ----------------------------------------------------------------------------- tables


def read_table(path: str | os.PathLike, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV (every cell as text) or Parquet table with at least ``columns``; errors name ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetImportError(f"{what} not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise DatasetImportError(f"{what} {path.name}: unsupported format {suffix!r} (use .csv or .parquet)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as error:  # pandas/pyarrow raise many types for a bad file
        raise DatasetImportError(f"{what} {path.name} cannot be read: {error}") from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetImportError(f"{what} {path.name} has no column(s) {missing}; columns: {list(table.columns)}")
    return table


def numbers(values: pd.Series, file: str, column: str, row_names: Sequence[object] | None = None) -> np.ndarray:
    """``values`` as floats; an empty cell is NaN, anything else that is not a number an error naming its row
    (1-based, or its name in ``row_names``)."""
    text = values.astype(object)
    empty = text.isna() | (text.astype(str).str.strip() == "")
    parsed = pd.to_numeric(text.where(~empty), errors="coerce").astype(float)
    bad = np.flatnonzero(parsed.isna().to_numpy() & ~empty.to_numpy())
    if len(bad):
        i = bad[0]
        where = f"region {row_names[i]!r}" if row_names is not None else f"row {i + 1}"
        raise DatasetImportError(f"{file}: column {column!r} of {where} is {text.iloc[i]!r}, not a number"
                                 f" ({len(bad)} such value(s) in the column)")
    return parsed.to_numpy()


def _read_regions(path: Path, id_column: str, outcomes: Sequence[str] | None, crs: str | None) -> gpd.GeoDataFrame:
    """The region polygons in a projected CRS, with text ids and float outcomes (module docstring)."""
    if not path.is_file():
        raise DatasetImportError(f"regions file not found: {path}")
    if path.suffix.lower() not in _REGION_SUFFIXES:
        raise DatasetImportError(f"regions file {path.name}: unsupported format {path.suffix!r} "
                                 "(use a GeoPackage .gpkg or GeoJSON .geojson)")
    try:
        regions = gpd.read_file(path, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as error:
        raise DatasetImportError(f"regions file {path.name} cannot be read: {error}") from error
    if len(regions) == 0:
        raise DatasetImportError(f"regions file {path.name} holds no regions")
    if id_column not in regions.columns:
        raise DatasetImportError(f"regions file {path.name} has no id column {id_column!r}; "
                                 f"columns: {[c for c in regions.columns if c != regions.geometry.name]}")
    kinds = set(regions.geom_type.dropna())
    if regions.geometry.isna().any() or not kinds <= {"Polygon", "MultiPolygon"}:
        row = int(np.flatnonzero(regions.geometry.isna() | ~regions.geom_type.isin(["Polygon", "MultiPolygon"]))[0])
        raise DatasetImportError(f"regions file {path.name}: region {regions[id_column].iloc[row]!r} (row {row + 1}) "
                                 f"is a {regions.geom_type.iloc[row]}, not a polygon")
    ids = regions[id_column].astype(str).str.strip()
    if (ids == "").any() or regions[id_column].isna().any():
        row = int(np.flatnonzero((ids == "") | regions[id_column].isna())[0])
        raise DatasetImportError(f"regions file {path.name}: row {row + 1} has no {id_column!r}")
    repeated = ids[ids.duplicated()].unique().tolist()
    if repeated:
        raise DatasetImportError(f"regions file {path.name}: {id_column!r} repeats the id(s) {repeated[:10]}")
    regions[id_column] = ids
    columns = [c for c in regions.columns if c not in (id_column, regions.geometry.name)]
    outcomes = list(columns if outcomes is None else outcomes)
    absent = [c for c in outcomes if c not in regions.columns]
    if absent:
        raise DatasetImportError(f"regions file {path.name} has no outcome column(s) {absent}; columns: {columns}")
    clash = sorted(set(outcomes) & _RESERVED)
    if clash:
        raise DatasetImportError(f"regions file {path.name}: outcome column(s) {clash} would overwrite the columns "
                                 "the importer writes; rename them")
    for column in outcomes:
        regions[column] = numbers(regions[column], path.name, column, ids.tolist())
    regions = regions[[id_column, *outcomes, regions.geometry.name]]
    return _projected(regions, path.name, crs)


def _projected(regions: gpd.GeoDataFrame, file: str, crs: str | None) -> gpd.GeoDataFrame:
    """The regions in ``crs``, in their own projected CRS, or in the local UTM zone of a geographic one."""
    if regions.crs is None:
        raise DatasetImportError(f"regions file {file} has no CRS; save it with one (e.g. EPSG:4326 for lon/lat)")
    if crs is not None:
        try:
            target = pyproj.CRS.from_user_input(crs)
        except pyproj.exceptions.CRSError:
            raise DatasetImportError(f"crs {crs!r} is not a coordinate reference system pyproj knows") from None
        if not target.is_projected:
            raise DatasetImportError(f"crs {crs!r} is not projected; the regions need a CRS in metres")
        return regions.to_crs(target)
    if regions.crs.is_projected:
        return regions
    return regions.to_crs(regions.estimate_utm_crs())


def _crs_name(crs: pyproj.CRS) -> str:
    """``EPSG:<code>`` where pyproj finds one, else the WKT."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()


def _read_pois(path: Path, regions: gpd.GeoDataFrame) -> tuple[pd.DataFrame, int]:
    """The POIs inside some region, with their region number; and how many lay outside every region."""
    table = read_table(path, "POI table", _POI_COLUMNS)
    lon = numbers(table["lon"], path.name, "lon")
    lat = numbers(table["lat"], path.name, "lat")
    for name, values, bound in (("lon", lon, 180), ("lat", lat, 90)):
        bad = np.flatnonzero(~(np.abs(values) <= bound))
        if len(bad):
            raise DatasetImportError(f"{path.name}: row {bad[0] + 1} has {name} {table[name].iloc[bad[0]]!r}, "
                                     f"not in [-{bound}, {bound}] degrees")
    for column in ("category", "name"):
        empty = np.flatnonzero(table[column].isna().to_numpy() | (table[column].astype(str).str.strip() == ""))
        if len(empty):
            raise DatasetImportError(f"{path.name}: row {empty[0] + 1} has no {column!r}")
    points = gpd.GeoDataFrame({"row": np.arange(len(table))}, geometry=gpd.points_from_xy(lon, lat),
                              crs="EPSG:4326").to_crs(regions.crs)
    polygons = gpd.GeoDataFrame({"region": np.arange(len(regions))}, geometry=regions.geometry.to_numpy(),
                                crs=regions.crs)
    # A POI on a shared border lies in two polygons: it goes to the lower region number.
    hits = gpd.sjoin(points, polygons, how="inner", predicate="intersects").sort_values(["row", "region"])
    hits = hits.drop_duplicates("row")
    pois = table.iloc[hits["row"].to_numpy()].reset_index(drop=True)
    out = pd.DataFrame({
        "poi": np.arange(len(pois), dtype=np.int64),
        "region": hits["region"].to_numpy(np.int32),
        "category": pois["category"].astype(str).to_numpy(),
        "name": pois["name"].astype(str).to_numpy(),
        "description": pois["description"].fillna("").astype(str).to_numpy(),
        "easting": hits.geometry.x.to_numpy(),
        "northing": hits.geometry.y.to_numpy(),
        "lon": lon[hits["row"].to_numpy()],
        "lat": lat[hits["row"].to_numpy()],
    })
    return out, len(table) - len(out)


def _read_flows(path: Path, ids: pd.Index, centres: np.ndarray) -> pd.DataFrame:
    """The OD table as region numbers, trips summed per pair, pairs without trips dropped."""
    table = read_table(path, "origin-destination table", _FLOW_COLUMNS)
    ends = {}
    for column in ("origin", "destination"):
        values = table[column].astype(str).str.strip()
        number = ids.get_indexer(values)
        unknown = np.flatnonzero(number < 0)
        if len(unknown):
            raise DatasetImportError(f"{path.name}: row {unknown[0] + 1} names {column} {values.iloc[unknown[0]]!r}, "
                                     f"which is not a region of the regions file ({len(unknown)} such row(s))")
        ends[column] = number
    trips = numbers(table["trips"], path.name, "trips")
    bad = np.flatnonzero(~(trips >= 0))
    if len(bad):
        raise DatasetImportError(f"{path.name}: row {bad[0] + 1} has trips {table['trips'].iloc[bad[0]]!r}; "
                                 "trips must be a number >= 0")
    pairs = pd.DataFrame({"origin": ends["origin"], "destination": ends["destination"], "flow": trips})
    pairs = pairs.groupby(["origin", "destination"], as_index=False, sort=True)["flow"].sum()
    pairs = pairs[pairs["flow"] > 0].reset_index(drop=True)
    o, d = pairs["origin"].to_numpy(), pairs["destination"].to_numpy()
    distance = np.hypot(*(centres[o] - centres[d]).T) / 1000
    flow = pairs["flow"].to_numpy()
    integral = np.array_equal(flow, np.round(flow))
    return pd.DataFrame({"origin": o.astype(np.int32), "destination": d.astype(np.int32), "distance_km": distance,
                         "flow": flow.astype(np.int64) if integral else flow})


# ----------------------------------------------------------------------------- images


def _square(pixels: np.ndarray, px: int) -> np.ndarray:
    """``(bands, H, W)`` uint8 cut to its central square and box-resampled to ``(bands, px, px)``."""
    h, w = pixels.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = pixels[:, top:top + side, left:left + side]
    return np.stack([np.asarray(Image.fromarray(band).resize((px, px), Image.Resampling.BOX)) for band in square])


def _read_image(path: Path) -> np.ndarray:
    """An 8-bit image as ``(bands, H, W)``: a GeoTIFF's bands, or a PNG/JPEG as RGB (RGBA keeps its alpha out)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with rasterio.open(path) as src:
                if src.dtypes[0] != "uint8":
                    raise DatasetImportError(f"image {path}: {src.dtypes[0]} pixels; the importer reads 8-bit images")
                return src.read()
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "L", "P"):
                raise DatasetImportError(f"image {path}: mode {image.mode}; the importer reads 8-bit images")
            return np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
    except (OSError, rasterio.errors.RasterioError) as error:
        raise DatasetImportError(f"image {path} cannot be read: {error}") from error


def _aerial_images(folder: Path, ids: Sequence[str], px: int) -> np.ndarray:
    """``(N, bands, px, px)``: ``<folder>/<id>.<ext>`` per region, one band count for all."""
    if not folder.is_dir():
        raise DatasetImportError(f"aerial image folder not found: {folder}")
    found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in _AERIAL_SUFFIXES}
    missing = [i for i in ids if i not in found]
    if missing:
        raise DatasetImportError(f"no aerial image in {folder} for region(s) {missing[:10]} "
                                 f"(expected <region id>{{{','.join(_AERIAL_SUFFIXES)}}})")
    images = []
    for region in ids:
        pixels = _read_image(found[region])
        if pixels.shape[0] not in (3, 4):
            raise DatasetImportError(f"image {found[region]}: {pixels.shape[0]} bands; aerial images need "
                                     "3 (R, G, B) or 4 (R, G, B, NIR)")
        if images and pixels.shape[0] != images[0].shape[0]:
            raise DatasetImportError(f"image {found[region]}: {pixels.shape[0]} bands, the aerial image of region "
                                     f"{ids[0]!r} has {images[0].shape[0]}; all need the same bands")
        images.append(_square(pixels, px))
    return np.stack(images)


def _street_views(folder: Path, ids: Sequence[str], px: int) -> np.ndarray:
    """``(N, V, 3, px, px)``: the first ``V`` views (name order) of ``<folder>/<id>/``, ``V`` the fewest any has."""
    if not folder.is_dir():
        raise DatasetImportError(f"street-view folder not found: {folder}")
    files = {}
    for region in ids:
        sub = folder / region
        views = sorted(p for p in sub.iterdir() if p.suffix.lower() in _VIEW_SUFFIXES) if sub.is_dir() else []
        if not views:
            raise DatasetImportError(f"no street-level view of region {region!r}: expected images "
                                     f"({', '.join(_VIEW_SUFFIXES)}) in {sub}")
        files[region] = views
    n_views = min(len(v) for v in files.values())
    return np.stack([np.stack([_square(_read_image(p), px) for p in files[region][:n_views]]) for region in ids])


# ----------------------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _with_crs(ds: xr.Dataset, crs: str) -> xr.Dataset:
    ds = ds.rio.write_crs(crs)
    ds.attrs["crs"] = crs
    return ds


def _write(work: Path, name: str, crs: str, table: pd.DataFrame, aerial: np.ndarray, views: np.ndarray,
           pois: pd.DataFrame, flows: pd.DataFrame, summary: dict) -> None:
    region = table["region"].to_numpy(np.int32)
    bands = ["R", "G", "B", "NIR"][: aerial.shape[1]]
    place = {"easting": ("region", table["easting"].to_numpy(), {"units": "m"}),
             "northing": ("region", table["northing"].to_numpy(), {"units": "m"}),
             "lon": ("region", table["lon"].to_numpy()), "lat": ("region", table["lat"].to_numpy()),
             "region_id": ("region", table["region_id"].to_numpy(str))}
    regions_nc = xr.Dataset(
        {"image": (("region", "band", "y", "x"), aerial, {"long_name": "aerial image of the region"})},
        coords={"region": region, "band": bands, "y": np.arange(aerial.shape[2], dtype=np.int16),
                "x": np.arange(aerial.shape[3], dtype=np.int16), **place},
        attrs={"title": f"aerial images of the regions of {name} (imported)"})
    _with_crs(regions_nc, crs).to_netcdf(work / "regions.nc", engine="h5netcdf")
    views_nc = xr.Dataset(
        {"image": (("region", "view", "band", "y", "x"), views, {"long_name": "street-level view (R, G, B)"})},
        coords={"region": region, "view": np.arange(views.shape[1], dtype=np.int32), "band": ["R", "G", "B"],
                "y": np.arange(views.shape[3], dtype=np.int16), "x": np.arange(views.shape[4], dtype=np.int16)},
        attrs={"title": f"street-level views of {name} (imported)"})
    _with_crs(views_nc, crs).to_netcdf(work / "street_views.nc", engine="h5netcdf")
    table.to_parquet(work / "regions.parquet", index=False)
    pois.to_parquet(work / "pois.parquet", index=False)
    flows.to_parquet(work / "flows.parquet", index=False)
    (work / "city.json").write_text(json.dumps(summary, indent=2) + "\n")


def _replace_dir(source: Path, target: Path) -> None:
    """Rename the finished ``source`` to ``target``, replacing an earlier import there."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rename(target, trash / target.name)
        os.rename(source, target)
        shutil.rmtree(trash)
    else:
        os.rename(source, target)


def import_city(
    name: str,
    regions: str | os.PathLike,
    pois: str | os.PathLike,
    aerial_dir: str | os.PathLike,
    street_dir: str | os.PathLike,
    flows: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    id_column: str = "region_id",
    outcomes: Sequence[str] | None = None,
    crs: str | None = None,
    aerial_px: int = 64,
    view_px: int = 64,
) -> ImportedCity:
    """Import a real city's files into ``out_dir`` (default ``datasets/<name>``) as the module docstring says.

    Raises :class:`DatasetImportError` naming the file and the row, column or
    region at fault; nothing is written then.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise DatasetImportError(f"city name {name!r}: use letters, digits, '_' and '-' (it names datasets/<name>)")
    for key, px in (("aerial_px", aerial_px), ("view_px", view_px)):
        if not 8 <= px <= 1024:
            raise DatasetImportError(f"{key} {px}: choose a size from 8 to 1024 pixels")
    paths = {k: Path(v) for k, v in {"regions": regions, "pois": pois, "aerial": aerial_dir, "street": street_dir,
                                     "flows": flows}.items()}
    polygons = _read_regions(paths["regions"], id_column, outcomes, crs)
    crs_name = _crs_name(polygons.crs)
    ids = pd.Index(polygons[id_column].tolist())
    outcome_columns = [c for c in polygons.columns if c not in (id_column, polygons.geometry.name)]
    centroids = polygons.geometry.centroid
    centres = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
    lonlat = gpd.GeoSeries(centroids, crs=polygons.crs).to_crs("EPSG:4326")
    poi_table, outside = _read_pois(paths["pois"], polygons)
    flow_table = _read_flows(paths["flows"], ids, centres)
    aerial = _aerial_images(paths["aerial"], list(ids), aerial_px)
    views = _street_views(paths["street"], list(ids), view_px)

    n = len(ids)
    table = pd.DataFrame({"region": np.arange(n, dtype=np.int32), "region_id": list(ids),
                          "easting": centres[:, 0], "northing": centres[:, 1],
                          "lon": lonlat.x.to_numpy(), "lat": lonlat.y.to_numpy(),
                          "inhabited": np.ones(n, bool), "land_area_km2": polygons.geometry.area.to_numpy() / 1e6,
                          "n_pois": np.bincount(poi_table["region"], minlength=n).astype(np.int64)})
    for column in outcome_columns:
        table[column] = polygons[column].to_numpy(float)
    table["trips_out"] = np.bincount(flow_table["origin"], weights=flow_table["flow"], minlength=n)
    table["trips_in"] = np.bincount(flow_table["destination"], weights=flow_table["flow"], minlength=n)
    summary = {
        "name": name,
        "source": "imported",
        "ground_truth": False,
        "absent": list(ABSENT),
        "crs": crs_name,
        "outcomes": outcome_columns,
        "missing_outcomes": {c: int(np.isnan(table[c]).sum()) for c in outcome_columns},
        "poi_categories": sorted(poi_table["category"].unique().tolist()),
        "image_px": {"aerial": aerial_px, "street_view": view_px},
        "aerial_bands": ["R", "G", "B", "NIR"][: aerial.shape[1]],
        "counts": {"regions": n, "inhabited_regions": n, "pois": len(poi_table), "pois_outside_regions": outside,
                   "views_per_region": int(views.shape[1]), "flow_pairs": len(flow_table),
                   "trips": float(flow_table["flow"].sum())},
        "inputs": {k: {"file": p.name, "sha256": _sha256(p)} for k, p in paths.items() if p.is_file()}
                  | {k: {"folder": paths[k].name} for k in ("aerial", "street")},
        "outcome_models": {},
        "oracle_r2": {"region": {}},
        "hidden_factors": [],
        "modality_features": {},
    }
    out = Path(out_dir) if out_dir is not None else Path("datasets") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _write(work, name, crs_name, table, aerial, views, poi_table, flow_table, summary)
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ImportedCity(out, crs_name, n, len(poi_table), int(views.shape[1]), len(flow_table),
                        tuple(outcome_columns))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lib.data.city_import``: exit 0 on success, 1 with the error's message."""
    parser = argparse.ArgumentParser(prog="python -m lib.data.city_import",
                                     description="Import a real city into datasets/<name>/ (lib.data.city_import).")
    parser.add_argument("name", help="the city's name: datasets/<name>, and its name in the region studies")
    parser.add_argument("--regions", required=True, help="GeoPackage or GeoJSON of region polygons with outcomes")
    parser.add_argument("--pois", required=True, help="CSV/Parquet: category, name, description, lon, lat")
    parser.add_argument("--aerial", required=True, help="folder of <region id>.png|jpg|tif aerial images")
    parser.add_argument("--street", required=True, help="folder of <region id>/ folders of street-level views")
    parser.add_argument("--flows", required=True, help="CSV/Parquet: origin, destination, trips")
    parser.add_argument("--out", help="output folder (default datasets/<name>)")
    parser.add_argument("--id-column", default="region_id", help="the regions' id column (default region_id)")
    parser.add_argument("--outcomes", nargs="+", help="outcome columns (default: every other column)")
    parser.add_argument("--crs", help="projected CRS to use (default: the file's, or the local UTM zone)")
    parser.add_argument("--aerial-px", type=int, default=64)
    parser.add_argument("--view-px", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        city = import_city(args.name, args.regions, args.pois, args.aerial, args.street, args.flows, args.out,
                           id_column=args.id_column, outcomes=args.outcomes, crs=args.crs,
                           aerial_px=args.aerial_px, view_px=args.view_px)
    except DatasetImportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{city.path}: {city.n_regions} regions, {city.n_pois} POIs, {city.views_per_region} street views each, "
          f"{city.n_flow_pairs} origin-destination pairs; outcomes {list(city.outcomes)}; CRS {city.crs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
