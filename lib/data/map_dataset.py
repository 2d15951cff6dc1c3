"""The map dataset: a batch of maps and their labels as one xarray Dataset (NetCDF), and back.

:func:`build_map_dataset` stores a :class:`lib.data.map_style.MapBatch` with
one schema for every place (OSM or land cover) and writes it atomically;
:func:`load_map_datasets` reads a folder of them by place and
:func:`label_table` flattens their labels into one table (no images).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from lib.data.geotiff import write_dataset_atomic
from lib.data.map_style import MAP_CLASSES, MapBatch
from lib.io import open_dataset

__all__ = ["build_map_dataset", "label_table", "load_map_datasets", "map_class_at_centre"]


def map_class_at_centre(maps: MapBatch) -> np.ndarray:
    """The :data:`MAP_CLASSES` code of each map's centre pixel (n,).

    The centre pixel is ``mask[size // 2, size // 2]``: for an even size, the
    pixel whose north-west corner is the map's centre.
    """
    size = maps.masks.shape[1]
    return maps.masks[:, size // 2, size // 2].copy()


def build_map_dataset(
    maps: MapBatch,
    out_path: str | os.PathLike | None = None,
    labels: Mapping[str, np.ndarray | tuple[np.ndarray, Mapping]] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Store a batch of maps as an xarray Dataset, written to NetCDF if ``out_path`` is given.

    Schema (``n`` tiles of ``s`` x ``s`` pixels):

    - ``image`` (tile, y, x, band) uint8 RGB; ``band`` = ["red", "green", "blue"]
    - ``mask`` (tile, y, x) uint8 codes into the ``map_class`` coordinate
    - ``fractions`` (tile, map_class) float32, pixel share of each class
    - ``building_fraction`` (tile) float32, footprint area / window area
    - ``building_density`` (tile) float32, buildings per km^2 (NaN for rasters
      drawn without footprints)
    - ``map_class_at_centre`` (tile) uint8, the mask code of the centre pixel
      (:func:`map_class_at_centre`)
    - ``labels``: one more (tile) variable per entry, an array or
      ``(array, attrs)`` (e.g. :data:`lib.data.map_labels.CITY_LABELS`)
    - coords ``tile`` (0..n-1), ``lon``/``lat`` (WGS84) and ``easting``/
      ``northing`` (map centres in the dataset CRS) along tile; ``y``/``x``
      pixel-centre offsets from the map centre in metres (y grows north);
      ``map_class`` names, ``band`` names
    - attrs ``metres_per_px``, ``size_px``, ``source`` ("openstreetmap" or
      "landcover"), ``crs`` (also via rioxarray: ``spatial_ref``) and ``attrs``.

    The file is written with h5netcdf to a temporary name and renamed into
    place, so a failed write leaves no partial file; read it with
    ``lib.io.open_dataset(path, engine="h5netcdf", decode_coords="all")``.
    """
    n, size = maps.images.shape[:2]
    offsets = (np.arange(size) + 0.5 - size / 2) * maps.metres_per_px
    ds = xr.Dataset(
        data_vars={
            "image": (("tile", "y", "x", "band"), maps.images.astype(np.uint8)),
            "mask": (("tile", "y", "x"), maps.masks.astype(np.uint8)),
            "fractions": (("tile", "map_class"), maps.fractions.astype(np.float32)),
            "building_fraction": ("tile", maps.building_fraction.astype(np.float32)),
            "building_density": ("tile", maps.building_density.astype(np.float32)),
            "map_class_at_centre": ("tile", map_class_at_centre(maps)),
        },
        coords={
            "tile": np.arange(n),
            "y": offsets[::-1].copy(),
            "x": offsets,
            "band": ["red", "green", "blue"],
            "map_class": list(MAP_CLASSES),
            "lon": ("tile", maps.lon),
            "lat": ("tile", maps.lat),
            "easting": ("tile", maps.easting),
            "northing": ("tile", maps.northing),
        },
        attrs={
            "metres_per_px": maps.metres_per_px,
            "size_px": int(size),
            "source": maps.source,
        },
    )
    for name in ("mask", "map_class_at_centre"):
        ds[name].attrs["flag_values"] = np.arange(len(MAP_CLASSES), dtype=np.uint8)
        ds[name].attrs["flag_meanings"] = " ".join(MAP_CLASSES)
    ds["building_density"].attrs["units"] = "km-2"
    ds["y"].attrs["units"] = ds["x"].attrs["units"] = "m"
    for name, value in (labels or {}).items():
        values, var_attrs = value if isinstance(value, tuple) else (value, {})
        ds[name] = xr.Variable("tile", np.asarray(values), attrs=dict(var_attrs))
    ds.attrs.update(attrs or {})
    # The authority code where there is one (see lib.data.landcover_maps.raster_grid), else WKT.
    ds = ds.rio.write_crs(maps.crs.to_string())
    ds.attrs["crs"] = maps.crs.to_string()
    if out_path is not None:
        write_dataset_atomic(ds, out_path)
    return ds


def load_map_datasets(directory: str | os.PathLike = "datasets/maps", places=None) -> dict[str, xr.Dataset]:
    """The map datasets ``<directory>/<place>.nc`` (as the ``maps`` stage writes them), loaded, by place.

    ``places`` defaults to every ``*.nc`` of ``directory``, in name order.
    """
    directory = Path(directory)
    places = places if places is not None else sorted(p.stem for p in directory.glob("*.nc"))
    out = {}
    for place in places:
        with open_dataset(directory / f"{place}.nc", engine="h5netcdf", decode_coords="all") as ds:
            out[place] = ds.load()
    return out


def label_table(datasets: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """One row per map of every place: ``city``, ``tile``, coordinates and every label (no images).

    ``map_class_at_centre`` comes as its :data:`MAP_CLASSES` name; the class
    fractions as ``fraction_<class>`` columns. ``easting``/``northing`` are in
    each place's own CRS; compare places by ``lon``/``lat``.
    """
    frames = []
    for place, ds in datasets.items():
        scalars = [v for v in ds.data_vars if ds[v].dims == ("tile",)]
        frame = ds[scalars].reset_coords(["lon", "lat", "easting", "northing"]).drop_vars(
            "spatial_ref", errors="ignore").to_dataframe().reset_index()
        frame["city"] = place
        frame["map_class_at_centre"] = np.asarray(MAP_CLASSES)[frame["map_class_at_centre"].to_numpy()]
        fractions = pd.DataFrame(ds["fractions"].values, columns=[f"fraction_{c}" for c in MAP_CLASSES])
        frames.append(pd.concat([frame, fractions], axis=1))
    return pd.concat(frames, ignore_index=True)

