"""The ``maps`` stage: labelled map tiles of OpenStreetMap places and of every generated city.

:func:`build_map_datasets` writes ``datasets/maps/<place>.nc`` per
OpenStreetMap place of ``maps.osm`` (:func:`render_osm_maps`: Helsinki's
extract by default, or any ``.osm.pbf``; labels those OSM provides, building
density, classes at the centre, fractions, and those of an optional label
table of points, :func:`lib.data.map_labels.point_labels_at`) and
``datasets/maps/<city>.nc`` per generated city (:func:`render_city_maps`:
the city's outcomes of the tile under each centre), one schema for all
(:func:`lib.data.map_dataset.build_map_dataset`). Each place's centres come
from its own seed (:func:`place_seed`), so adding a place shifts no other.
:func:`label_summary` and :func:`building_by_centre_class` are the stage's
tables. The methods (loading, rendering, labels) live in the shared
``lib.data`` layer; this module is their glue.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import rioxarray
import xarray as xr

from lib.data.geotiff import DatasetImportError, write_dataset_atomic
from lib.data.landcover_maps import landcover_class_names, render_landcover_maps
from lib.data.map_dataset import build_map_dataset, label_table
from lib.data.map_labels import (
    CITY_LABELS,
    city_labels,
    point_labels_at,
    read_point_labels,
    sample_city_centres,
)
from lib.data.map_render import render_maps, sample_coordinates
from lib.data.map_style import MAP_CLASSES
from lib.data.osm_layers import OsmLayers, load_osm_layers
from lib.io import open_dataset
from lib.studies.geodata.params import OsmPlace

__all__ = [
    "build_map_datasets",
    "building_by_centre_class",
    "check_city_files",
    "label_summary",
    "place_seed",
    "render_city_maps",
    "render_osm_maps",
]

_CITY_FILES = ("landcover.tif", "buildings.tif", "tiles.nc")


def place_seed(seed: int, place: str) -> int:
    """The seed of one place's centres: from the stage's ``seed`` and the place's name, so adding a place shifts no other."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(place.encode())]).generate_state(1)[0])


def _label_variables(n: int, place: str, tile_labels: Mapping[str, np.ndarray] | None, units: Mapping[str, str],
                     landcover_flags: Mapping[str, object] | None) -> dict[str, tuple[np.ndarray, dict]]:
    """The label variables of ``n`` maps of ``place``; NaN / -1 where the place has no such label."""
    tile_labels = tile_labels or {}
    out: dict[str, tuple[np.ndarray, dict]] = {
        "city": (np.full(n, place, dtype=object).astype(str), {"long_name": "place of the map"}),
        "city_tile": (
            np.asarray(tile_labels.get("city_tile", np.full(n, -1)), dtype=np.int32),
            {"long_name": "tile of the city's tiles.nc holding the centre (-1: none)"},
        ),
    }
    for name in CITY_LABELS:
        values = np.asarray(tile_labels.get(name, np.full(n, np.nan)), dtype=np.float32)
        out[name] = (values, {"long_name": f"{name.replace('_', ' ')} of the city tile holding the centre",
                              **({"units": units[name]} if name in units else {})})
    centre_attrs = {"long_name": "land-cover class of the pixel under the centre (-1: none)",
                    **(landcover_flags or {})}
    out["landcover_at_centre"] = (
        np.asarray(tile_labels.get("landcover_at_centre", np.full(n, -1)), dtype=np.int8), centre_attrs,
    )
    return out


def render_osm_maps(
    layers: OsmLayers,
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
    place: str = "helsinki",
    labels: str | os.PathLike | None = None,
    max_distance_m: float = 50.0,
) -> xr.Dataset:
    """``n`` maps of an OSM extract, centres uniform over its coverage, as a labelled map dataset.

    The OSM maps serve self-supervised training; their labels are what
    OpenStreetMap itself provides: ``building_density`` and
    ``building_fraction`` (from the footprints), ``map_class_at_centre``, the
    class ``fractions``, ``lon``/``lat``, and ``city`` = ``place``. The
    socioeconomic labels of :data:`CITY_LABELS` are NaN, ``city_tile`` and
    ``landcover_at_centre`` -1: OSM knows none of them. Centres are drawn with
    :func:`sample_coordinates` (whole maps inside the extract) seeded by
    :func:`place_seed`.

    With a ``labels`` table of points (:func:`lib.data.map_labels.read_point_labels`),
    each map also takes the labels of the point nearest its centre within
    ``max_distance_m`` (NaN where none is), and ``label_distance_m``; a label
    column named like one of :data:`CITY_LABELS` fills that variable, any
    other becomes a variable of its own (listed in the ``label_columns`` attribute).
    """
    margin = size_px * metres_per_px / 2
    xy = sample_coordinates(layers, n, seed=place_seed(seed, place), margin_m=margin, coords_crs=None)
    maps = render_maps(layers, xy, coords_crs=None, size_px=size_px, metres_per_px=metres_per_px)
    variables = _label_variables(n, place, None, {}, None)
    attrs = {
        "place": place,
        "labels": "OpenStreetMap's own: building_density, building_fraction, map_class_at_centre, fractions; "
                  "no socioeconomic labels (NaN): for self-supervised training",
    }
    if labels is not None:
        points = read_point_labels(labels, layers.crs)
        taken = {"image", "mask", "fractions", "building_fraction", "building_density", "map_class_at_centre",
                 "tile", "lon", "lat", "easting", "northing", "label_distance_m", *variables}
        clash = sorted(set(points.values) & (taken - set(CITY_LABELS)))
        if clash:
            raise DatasetImportError(f"label table {points.file}: column(s) {clash} would replace the maps' own "
                                     "variables; rename them")
        values, distance = point_labels_at(points, xy, max_distance_m)
        for name, column in values.items():
            variables[name] = (column, {"long_name": f"{name} of the labelled point nearest the centre "
                                                     f"(within {max_distance_m} m; from {points.file})"})
        variables["label_distance_m"] = (distance, {"long_name": "distance from the centre to that point",
                                                    "units": "m"})
        attrs |= {"labels": f"OpenStreetMap's own, and from {points.file}: the labels of the nearest labelled "
                            f"point within {max_distance_m} m of each centre (NaN where none is)",
                  "label_columns": " ".join(values), "labelled_maps": int(np.isfinite(distance).sum())}
    return build_map_dataset(maps, labels=variables, attrs=attrs)


def check_city_files(city_dir: str | os.PathLike) -> dict[str, Path]:
    """The paths of a generated city's ``landcover.tif``, ``buildings.tif`` and ``tiles.nc``.

    Raises ``FileNotFoundError`` naming the first missing file and the
    ``city@<name>`` stage that builds it.
    """
    city_dir = Path(city_dir)
    paths = {name: city_dir / name for name in _CITY_FILES}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the city {city_dir.name!r} (in maps.cities) is not built; it needs an entry "
                f"under `cities` in params.yaml and a run of its `city@{city_dir.name}` stage "
                f"(dvc repro city@{city_dir.name})"
            )
    return paths


def render_city_maps(
    city_dir: str | os.PathLike,
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
) -> xr.Dataset:
    """``n`` labelled maps of the generated city in ``city_dir`` (its name: the folder's name).

    Centres are uniform over the inhabited tiles with whole maps inside the
    city (:func:`sample_city_centres`, seeded by :func:`place_seed`); the maps
    draw ``landcover.tif`` with the footprints of ``buildings.tif`` in the OSM
    style (:func:`render_landcover_maps`). Labels per map: ``city``,
    ``lon``/``lat``/``easting``/``northing``, :data:`CITY_LABELS` (the values
    of the tile holding the centre, ``city_tile``), ``landcover_at_centre``
    (LandCover code of the pixel under the centre), ``map_class_at_centre``,
    ``fractions``, ``building_density`` and ``building_fraction``.
    """
    paths = check_city_files(city_dir)
    place = Path(city_dir).name
    landcover = rioxarray.open_rasterio(paths["landcover.tif"], mask_and_scale=False).squeeze("band", drop=True)
    buildings = rioxarray.open_rasterio(paths["buildings.tif"], mask_and_scale=False).squeeze("band", drop=True)
    with open_dataset(paths["tiles.nc"], engine="h5netcdf", decode_coords="all") as opened:
        names = ["tile", "row", "col", "inhabited", *(v for v in CITY_LABELS if v in opened)]
        tiles = opened[names].load()
    margin = size_px * metres_per_px / 2
    xy = sample_city_centres(tiles, n, seed=place_seed(seed, place), margin_m=margin)
    maps = render_landcover_maps(
        landcover, xy, size_px=size_px, metres_per_px=metres_per_px, buildings=buildings
    )
    units = {v: tiles[v].attrs["units"] for v in CITY_LABELS if v in tiles and "units" in tiles[v].attrs}
    names = landcover_class_names(landcover)
    flags = {"flag_values": np.array(sorted(names), dtype=np.int8),
             "flag_meanings": " ".join(names[c] for c in sorted(names))}
    labels = _label_variables(n, place, city_labels(tiles, xy, landcover), units, flags)
    return build_map_dataset(maps, labels=labels, attrs={
        "place": place,
        "labels": "the city's outcomes of the tile holding the centre, land cover under the centre, "
                  "building measures from buildings.tif",
    })


def build_map_datasets(
    osm: Mapping[str, OsmPlace],
    cities: list[str] | tuple[str, ...],
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
    datasets_dir: str | os.PathLike = "datasets",
    out_dir: str | os.PathLike | None = "datasets/maps",
) -> dict[str, xr.Dataset]:
    """The ``maps`` stage: ``n`` labelled maps of each OpenStreetMap place and of each generated city.

    Writes one file per place, ``<out_dir>/<place>.nc`` for each entry of
    ``osm`` (:func:`render_osm_maps`, its extract drawn in its ``crs``, with
    its label table if it has one) and ``<out_dir>/<city>.nc``
    (:func:`render_city_maps`, reading ``<datasets_dir>/<city>/``), all with
    the schema of :func:`build_map_dataset` and the same label variables, so
    :func:`load_map_datasets` / :func:`label_table` combine them. Every city's
    files are checked before anything is rendered or written. Returns the
    datasets by place (nothing is written when ``out_dir`` is None).
    """
    shared = sorted(set(osm) & set(cities))
    if shared:
        raise ValueError(f"{shared} named both as an OpenStreetMap place and as a generated city")
    for city in cities:
        check_city_files(Path(datasets_dir) / city)
    datasets = {}
    for place, source in osm.items():
        layers = load_osm_layers(source.pbf, crs=source.crs)
        datasets[place] = render_osm_maps(layers, n, seed, size_px, metres_per_px, place, source.labels,
                                          source.max_distance_m)
    for city in cities:
        datasets[city] = render_city_maps(Path(datasets_dir) / city, n, seed, size_px, metres_per_px)
    if out_dir is not None:
        for place, ds in datasets.items():
            write_dataset_atomic(ds, Path(out_dir) / f"{place}.nc")
    return datasets


def label_summary(datasets: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Per place: maps, centre lon/lat, mean of each label, share of residential centres."""
    table = label_table(datasets)
    summary = table.groupby("city", sort=False).agg(
        maps=("tile", "size"),
        lon=("lon", "mean"),
        lat=("lat", "mean"),
        **{name: (name, "mean") for name in CITY_LABELS[:3]},
        building_density=("building_density", "mean"),
        building_fraction=("building_fraction", "mean"),
        residential_centre=("map_class_at_centre", lambda c: float((c == "residential").mean())),
    )
    return summary


def building_by_centre_class(datasets: Mapping[str, xr.Dataset], measure: str = "building_density") -> pd.DataFrame:
    """Mean ``measure`` of maps by the class under their centre, per place and for all generated cities together.

    ``measure`` is ``building_density`` (buildings per km^2) or
    ``building_fraction`` (roof share). Columns: the generated cities' land-cover
    class under the centre (``landcover_at_centre``: dense, medium, sparse
    residential, industrial/commercial), then the map class of the centre
    pixel (``map: residential``, ``map: buildings``), which OSM maps have too;
    ``all maps`` the mean over every map. Rows: places, then ``generated``
    (the maps of every place drawn from land cover, pooled). NaN where no map
    qualifies.
    """
    columns = ["dense_residential", "medium_residential", "sparse_residential", "industrial_commercial"]

    def row(ds_list: list[xr.Dataset]) -> dict[str, float]:
        value = np.concatenate([ds[measure].values.astype(np.float64) for ds in ds_list])
        out = {}
        for name in columns:
            hits = []
            for ds in ds_list:
                centre = ds["landcover_at_centre"]
                meanings = str(centre.attrs.get("flag_meanings", "")).split()
                codes = dict(zip(meanings, np.atleast_1d(centre.attrs.get("flag_values", [])).tolist(), strict=False))
                hits.append(centre.values == codes.get(name, -2))
            hit = np.concatenate(hits)
            out[name] = float(value[hit].mean()) if hit.any() else np.nan
        for map_class in ("residential", "buildings"):
            hit = np.concatenate([ds["map_class_at_centre"].values == MAP_CLASSES.index(map_class) for ds in ds_list])
            out[f"map: {map_class}"] = float(value[hit].mean()) if hit.any() else np.nan
        out["all maps"] = float(value.mean())
        return out

    rows = {place: row([ds]) for place, ds in datasets.items()}
    generated = [ds for ds in datasets.values() if ds.attrs.get("source") == "landcover"]
    if generated:
        rows["generated"] = row(generated)
    return pd.DataFrame.from_dict(rows, orient="index")
