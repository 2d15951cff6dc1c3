"""Generated cities with a known generating process, for the place studies.

Three studies need aerial tiles, land-cover concepts, socioeconomic outcomes,
points of interest, mobility flows and street-level views, *and* need to know
the truth, so that they can check whether a model or an explanation recovers
it. This module generates such a city from a seeded :class:`CityConfig`.

Generating process
------------------
* **Layout** (:mod:`lib.data.city_layout`): land cover per pixel (dense,
  medium and sparse residential, industry, roads, parks, forest, fields,
  water) from an urban potential, organic district street grids, radial and
  ring roads, a railway, a river / coast / lake and a port; and three hidden
  factors, smooth fields that no aerial image shows: **affluence**,
  **commercial character** and **accessibility** (from a transit network of
  stations that is not drawn).
* **Appearance**: 4-band aerial images (R, G, B, NIR) rendered from the
  land cover (:mod:`lib.data.aerial`); street-level views rendered from the
  land-cover mix around a viewpoint, *the affluence there* (facades, street
  trees, parked cars) *and the accessibility there* (road width, traffic,
  buses, a transit stop; :mod:`lib.data.street_views`).
* **Units**: tiles (``tile_px`` squares, for the concepts study) and regions
  (cells of a square or hexagonal grid of ``regions.spacing_m``, for the
  region studies). A unit whose water fraction is 0.5 or more is
  uninhabited: its outcomes are NaN, it has no POIs, views or flows.
* **Outcomes** (:mod:`lib.data.city_outcomes`): population density, land
  price, income, liveability and an environment index, each a stated
  function of land cover and the hidden factors plus noise of known sd,
  with an interval-dependent effect of green space in income and
  liveability; evaluated for tiles and for regions. The in-sample oracle R^2
  of groups of the generating model's factors and the ceiling are stored per
  outcome (``oracle_r2``, see below).
* **POIs**: per inhabited region ``n ~ Poisson(lambda)``,
  ``lambda = rate * exp(0.8 C) * sum_k rho_k a_k`` (``a_k``: hectares of
  class ``k`` in the region, ``rho``: POI intensity per class, 1 for dense
  residential, ``C``: commercial character; ``rate`` POIs per hectare of dense
  fabric of average character, 10 by default: tens per dense central region
  of 2.2 ha, a few or none in the periphery), at distinct land pixels drawn
  with weights ``rho``; category (43, with a long tail of rare ones), name and
  description from :mod:`lib.data.poi_text`, whose vocabulary carries ``C``;
  "by the water" when water lies within 60 m, measured on the whole city's
  water at 16 m steps.
* **Street views**: ``views_per_region`` per inhabited region, at distinct
  street pixels of the region (never rail, never water; land pixels only if
  the region has too few street pixels); each records the cues it drew.
* **Mobility**: between inhabited regions, a gravity model with the
  accessibility ``S`` and lognormal noise::

      E[flow_ij] = K pop_i^alpha jobs_j^beta exp(eta (S_i + S_j) + sigma eps_ij - sigma^2 / 2)
                   / max(d_ij, d_min)^gamma,      flow_ij ~ Poisson(E[flow_ij]),  i != j

  with ``K`` set so the expected trips total ``trips_per_capita * sum(pop)``.
  Population and jobs are free of the outcome noise:
  ``pop_i = 1000 area_i max(0, population_density_noise_free_i)`` (a region
  whose stated density is at or below 0 has no inhabitants and sends no
  trips) and ``jobs_j = 1000 area_j sum_k J_k f_jk exp(0.5 C_j) + 5 lambda_j``
  (the expected POIs). Only pairs with at least one trip are stored.

Output (``build_city``, atomically, streamed)
---------------------------------------------
* ``tiles.nc`` (:func:`load_city`): ``image`` (tile, band, y, x) uint8 R, G,
  B, NIR; ``landcover`` (tile, y, x); ``fractions`` (tile, landcover_class);
  ``inhabited``; the factors; per outcome ``<outcome>``,
  ``<outcome>_noise_free`` and, with an interval effect,
  ``<outcome>_slope_<concept>`` (the true ``g`` per tile). Coordinates
  ``tile``, ``row``, ``col``, ``easting``/``northing``, ``lon``/``lat``, CRS.
* ``regions.nc`` (:func:`load_regions`): one aerial ``image`` per region,
  ``tile_px`` wide, centred on the region's centre (shifted inside the city).
* ``street_views.nc`` (:func:`load_street_views`): ``image`` (region, view,
  band, y, x) RGB, with viewpoints, headings, the affluence and land-cover mix there.
* ``landcover.tif`` and ``buildings.tif`` (1 on roof pixels): GeoTIFFs.
* ``regions.parquet``, ``pois.parquet``, ``flows.parquet`` (:func:`load_tables`)
  and ``city.json``: config, outcome models, oracle R^2, counts, layout, and
  the contract below.

Contract: what each modality renders (``city.json``)
---------------------------------------------------
``"modality_features"`` maps each modality to the ``regions.parquet`` columns
that hold, per region, the true quantities it renders (finite for every
inhabited region; :func:`modality_features`):

* ``aerial``: ``image_fraction_<class>``, the land cover of the region's
  aerial image (a ``tile_px`` window, not the region's own cell);
* ``street_view``: means over the region's views of what they draw:
  ``sv_affluence`` (the upkeep), the accessibility cues ``sv_road_width``,
  ``sv_transit_stop`` (share of views with a stop), ``sv_vehicles``,
  ``sv_buses``, and ``sv_fraction_<class>`` (the land-cover mix the skylines
  are drawn from);
* ``poi``: ``n_pois``, ``poi_count_<category>`` and ``poi_vocabulary_score``
  (the mean commercial vocabulary score of the region's POI texts, 0 without
  POIs: the commercial character as the texts express it);
* ``mobility``: ``trips_out``, ``trips_in``, ``trips_out_per_capita``,
  ``trips_in_per_job`` and ``trip_km_out`` (mean length of the trips out), 0
  where undefined (no inhabitants, no jobs, no trips).

``"hidden_factors"`` lists the outcome models' inputs no modality renders
(:data:`HIDDEN_FACTORS`: water proximity, distance to the centre);
``"generating_factors"`` every input of the outcome models (the full design:
``fraction_<class>``, affluence, commercial, accessibility, water proximity,
distance). An observable ceiling fits an outcome on the union of the
modality lists, the full one on the generating factors (and the interval
term); both should be computed out-of-fold by the study that probes.
``"oracle_r2"`` keeps the in-sample R^2 of the generating model's factor
groups (``"modality_factors"``), as ``"oracle_r2_definition"`` states.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window
from scipy import ndimage
from scipy.stats import spearmanr
from torch.utils.data import Dataset

from lib.data import aerial, poi_text
from lib.data.aerial import AERIAL_BANDS, URBAN_ATLAS_CODES, LandCover
from lib.data.city_config import (  # noqa: F401  (re-exported)
    CityConfig,
    GravityConfig,
    PoiConfig,
    RegionGrid,
    coastal_city,
    lake_city,
    river_city,
)
from lib.data.city_layout import MARK_BALLAST, MARK_RAIL, CityLayout, smooth_noise
from lib.data.city_outcomes import (
    MODALITY_FACTORS,
    UNINHABITED_WATER_FRACTION,
    OutcomeModel,
    oracle_r2,
    outcome_models,
    with_thresholds,
)
from lib.data.street_views import STREET_BANDS, STREET_CUES, render_street_views
from lib.io import open_dataset, read_parquet

__all__ = [
    "AERIAL_BANDS",
    "GENERATING_FACTORS",
    "HIDDEN_FACTORS",
    "LANDCOVER_COLOURS",
    "LANDCOVER_NAMES",
    "MODALITY_FACTORS",
    "CityBuild",
    "CityConfig",
    "CityLayout",
    "CityTiles",
    "GravityConfig",
    "LandCover",
    "OutcomeModel",
    "PoiConfig",
    "RegionGrid",
    "build_city",
    "coastal_city",
    "flow_matrix",
    "lake_city",
    "load_city",
    "load_regions",
    "load_street_views",
    "load_tables",
    "modality_features",
    "rendered_truth",
    "river_city",
    "stored_outcome_models",
]

LANDCOVER_NAMES = tuple(c.label for c in LandCover)
_K = len(LandCover)
_FRACTION_COLUMNS = [f"fraction_{n}" for n in LANDCOVER_NAMES]

# Streams of randomness, one per purpose, so adding draws to one does not shift the others.
_SALT_OUTCOME, _SALT_POI, _SALT_VIEW, _SALT_FLOW, _SALT_REGION_NOISE = 12, 13, 14, 15, 16
_COARSE_PX = 8  # step of the city-wide water raster (16 m at 2 m per pixel)
_NEAR_WATER_M = 60.0


# The configuration (CityConfig and its parts) lives in lib.data.city_config; it is re-exported here.


def stored_outcome_models(ds: xr.Dataset) -> dict[str, OutcomeModel]:
    """The outcome models recorded in a city dataset's attributes."""
    return {name: OutcomeModel.from_json(name, data) for name, data in json.loads(ds.attrs["outcome_models"]).items()}


# ---------------------------------------------------------------------------
# Geometry: tiles and regions
# ---------------------------------------------------------------------------


def _pixel_to_map(config: CityConfig, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(easting, northing) of fractional pixel positions (rows grow southwards)."""
    east0, north0 = config.origin
    return east0 + np.asarray(cols) * config.resolution_m, north0 - np.asarray(rows) * config.resolution_m


class _Regions:
    """The region grid in pixels: centres row by row, and the region of any pixel (its nearest centre).

    Hexagonal: rows ``spacing * sqrt(3) / 2`` apart, odd rows shifted by half
    a spacing, so the nearest-centre cells are hexagons; square: a plain grid.
    Only centres inside the city are regions, numbered row by row.
    """

    def __init__(self, config: CityConfig, height: int, width: int):
        s = config.regions.spacing_m / config.resolution_m
        self.hex = config.regions.shape == "hex"
        self.dy = s * np.sqrt(3) / 2 if self.hex else s
        self.dx = s
        self.height, self.width = height, width
        self.n_rows = int(np.ceil(height / self.dy - 0.5))
        rows, cols, first = [], [], []
        for i in range(self.n_rows):
            shift = 0.5 * (i % 2) if self.hex else 0.0
            n = int(np.ceil(width / self.dx - 0.5 - shift))
            first.append(len(rows))
            rows.extend([i] * n)
            cols.extend(range(n))
        self.first = np.array(first + [len(rows)])
        self.row = np.array(rows, np.int64)
        self.col = np.array(cols, np.int64)
        self.cy = (self.row + 0.5) * self.dy
        self.cx = (self.col + 0.5 + (0.5 * (self.row % 2) if self.hex else 0.0)) * self.dx
        self.n = len(self.row)
        # Farthest a pixel of a cell lies from its centre: the hexagon's circumradius (s / sqrt 3) or half a diagonal.
        self.reach = s / np.sqrt(3) + 1 if self.hex else s / np.sqrt(2) + 1

    def centre_of_row(self, i: int) -> np.ndarray:
        return np.arange(self.first[i], self.first[i + 1])

    def assign(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Region id of every pixel of the product grid ``ys x xs`` (pixel centres, px)."""
        row_guess = np.floor(ys / self.dy).astype(np.int64)
        best = np.full((len(ys), len(xs)), np.inf)
        ids = np.zeros((len(ys), len(xs)), np.int64)
        for offset in (-1, 0, 1):
            r = np.clip(row_guess + offset, 0, self.n_rows - 1)
            shift = (0.5 * (r % 2) if self.hex else np.zeros_like(r, dtype=float))
            n_in_row = self.first[r + 1] - self.first[r]
            for c_offset in (-1, 0, 1):
                c = np.floor(xs[None, :] / self.dx - shift[:, None]).astype(np.int64) + c_offset
                c = np.clip(c, 0, n_in_row[:, None] - 1)
                cy = (r[:, None] + 0.5) * self.dy
                cx = (c + 0.5 + shift[:, None]) * self.dx
                d = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2
                closer = d < best
                best = np.where(closer, d, best)
                ids = np.where(closer, self.first[r][:, None] + c, ids)
        return ids


class _Tiles:
    """Tile bookkeeping: ids row-major (``row * cols + col``), positions, map coordinates."""

    def __init__(self, config: CityConfig):
        self.rows, self.cols = config.grid
        self.tp = config.tile_px
        self.tile_row, self.tile_col = np.divmod(np.arange(config.n_tiles), self.cols)
        self.cy = (self.tile_row + 0.5) * self.tp
        self.cx = (self.tile_col + 0.5) * self.tp
        self.easting, self.northing = _pixel_to_map(config, self.cy, self.cx)
        self.to_lonlat = Transformer.from_crs(config.crs, "EPSG:4326", always_xy=True)
        self.lon, self.lat = self.to_lonlat.transform(self.easting, self.northing)
        self.block = 4  # tiles per side of a rendering block


def _tiles_of(raster: np.ndarray, size: int) -> np.ndarray:
    """Cut a ``(h, w)`` raster into ``(h/size * w/size, size, size)`` tiles in row-major order."""
    h, w = raster.shape
    return raster.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def _fractions(tiles: np.ndarray) -> np.ndarray:
    """Land-cover fractions ``(n, K)`` of ``(n, s, s)`` class tiles (one comparison per class: a byte per pixel)."""
    shares = [(tiles == c).mean(axis=(1, 2), dtype=np.float64) for c in range(_K)]
    return np.stack(shares, axis=1).astype(np.float32)


def _with_crs(ds: xr.Dataset, crs: str) -> xr.Dataset:
    """Record the CRS the rioxarray way (a ``spatial_ref`` coordinate) and as a plain ``crs`` attribute."""
    ds = ds.rio.write_crs(crs)
    ds.attrs["crs"] = crs
    return ds


# Class colours for the GeoTIFF's colour table, so GIS viewers show a map.
LANDCOVER_COLOURS = {
    LandCover.DENSE_RESIDENTIAL: (150, 30, 30), LandCover.MEDIUM_RESIDENTIAL: (220, 80, 60),
    LandCover.SPARSE_RESIDENTIAL: (245, 170, 130), LandCover.INDUSTRIAL_COMMERCIAL: (160, 110, 200),
    LandCover.ROADS: (120, 120, 120), LandCover.GREEN_URBAN: (140, 220, 100),
    LandCover.FOREST: (30, 110, 40), LandCover.AGRICULTURE: (240, 225, 120), LandCover.WATER: (60, 120, 220),
}

# POI intensity per class (rho), and jobs per km2 in thousands (J).
_POI_INTENSITY = np.array([1.0, 0.6, 0.25, 0.5, 0.2, 0.15, 0.02, 0.03, 0.0])
_POI_COMMERCIAL = 0.8  # kappa: POI counts grow by exp(kappa C) with the commercial character C
_JOB_DENSITY = np.array([8.0, 3.0, 0.8, 12.0, 0.5, 0.3, 0.05, 0.1, 0.0])
_JOBS_PER_POI = 5.0
# Per-view metadata kept in pass 2: viewpoint, heading, the factors there, the cues drawn, then the land-cover mix.
_VIEW_META = ("row_px", "col_px", "heading_deg", "affluence", "accessibility", *STREET_CUES)


# ---------------------------------------------------------------------------
# Streamed files
# ---------------------------------------------------------------------------


def _variable(f, name, dims, dtype, attrs, chunks=None, compress=False):
    """Declare a netCDF variable (h5netcdf); only what compresses well is compressed."""
    options = {"compression": "gzip", "compression_opts": 1} if compress else {}
    f.create_variable(name, dims, dtype=dtype, chunks=chunks, **options).attrs.update(
        {"grid_mapping": "spatial_ref", **attrs})


class _CityFiles:
    """The streamed outputs of a build, open for writing.

    The NetCDF files start as templates written by xarray (coordinates, CRS,
    attributes); h5netcdf declares the big variables at full size and the
    data go in through h5py, whose writes cost a fraction of h5netcdf's.
    """

    def __init__(self, out: Path, config: CityConfig, tiles: _Tiles, regions: _Regions, height: int, width: int):
        self.config, self.t = config, tiles
        tp, vp, n_views = config.tile_px, config.view_px, config.views_per_region
        with h5netcdf.File(out / "tiles.nc", "a") as f:
            _variable(f, "image", ("tile", "band", "y", "x"), "u1", {"long_name": "aerial image (R, G, B, NIR)"},
                      chunks=(1, 4, tp, tp))
            _variable(f, "landcover", ("tile", "y", "x"), "u1",
                      {"long_name": "land-cover class", "flag_values": np.arange(_K, dtype=np.uint8),
                       "flag_meanings": " ".join(LANDCOVER_NAMES)}, chunks=(1, tp, tp), compress=True)
        with h5netcdf.File(out / "regions.nc", "a") as f:
            _variable(f, "image", ("region", "band", "y", "x"), "u1",
                      {"long_name": "aerial image centred on the region (R, G, B, NIR)"}, chunks=(1, 4, tp, tp))
        with h5netcdf.File(out / "street_views.nc", "a") as f:
            per_view = ("region", "view")
            _variable(f, "image", (*per_view, "band", "y", "x"), "u1", {"long_name": "street-level view (R, G, B)"},
                      chunks=(1, n_views, 3, vp, vp))
            for name, attrs in (("view_easting", {"units": "m"}), ("view_northing", {"units": "m"}),
                                ("view_heading_deg", {"long_name": "viewing direction clockwise from north",
                                                      "units": "degree"}),
                                ("view_affluence", {"long_name": "affluence factor at the viewpoint"}),
                                ("view_accessibility", {"long_name": "accessibility factor at the viewpoint"}),
                                ("view_road_width", {"long_name": "carriageway half-width relative to a plain "
                                                                  "street's (drawn)"}),
                                ("view_transit_stop", {"long_name": "1 where a transit stop is drawn"}),
                                ("view_vehicles", {"long_name": "vehicles drawn on the carriageway"}),
                                ("view_buses", {"long_name": "buses among them"})):
                _variable(f, name, per_view, "f8", attrs)
            _variable(f, "view_fractions", (*per_view, "landcover_class"), "f4",
                      {"long_name": "land-cover fractions around the viewpoint (within 64 m, inside the region's band)"})
        self._stack = contextlib.ExitStack()
        self.tiles = self._stack.enter_context(h5py.File(out / "tiles.nc", "a"))
        self.regions = self._stack.enter_context(h5py.File(out / "regions.nc", "a"))
        self.views = self._stack.enter_context(h5py.File(out / "street_views.nc", "a"))
        transform = Affine(config.resolution_m, 0.0, config.origin[0], 0.0, -config.resolution_m, config.origin[1])
        profile = dict(driver="GTiff", height=height, width=width, count=1, dtype="uint8", crs=config.crs,
                       transform=transform, compress="deflate", tiled=True, blockxsize=tp, blockysize=tp)
        # One GeoTIFF block per tile, so each block's window covers whole blocks.
        self.tif = self._stack.enter_context(rasterio.open(out / "landcover.tif", "w", **profile))
        self.tif.write_colormap(1, {int(c): (*rgb, 255) for c, rgb in LANDCOVER_COLOURS.items()})
        self.tif.update_tags(1, **{str(int(c)): c.label for c in LandCover})
        # CF-style class table, read by lib.data.landcover_maps to draw the city as a map.
        self.tif.update_tags(flag_values=" ".join(str(int(c)) for c in LandCover),
                             flag_meanings=" ".join(c.label for c in LandCover))
        self.buildings = self._stack.enter_context(rasterio.open(out / "buildings.tif", "w", **profile, nbits=1))
        self.buildings.update_tags(description="1 where a roof (building footprint) is, 0 elsewhere")

    def write_block(self, r0: int, r1: int, c0: int, c1: int, classes, images, roofs) -> None:
        """Write a block of tiles (one slice per tile row), its land cover and its footprints."""
        tp, cols = self.t.tp, self.t.cols
        width = c1 - c0
        class_tiles = _tiles_of(classes, tp)
        for i, tile_row in enumerate(range(r0, r1)):
            first = tile_row * cols + c0
            self.tiles["image"][first:first + width] = images[i * width:(i + 1) * width]
            self.tiles["landcover"][first:first + width] = class_tiles[i * width:(i + 1) * width]
        window = Window(c0 * tp, r0 * tp, width * tp, (r1 - r0) * tp)
        self.tif.write(classes, 1, window=window)
        self.buildings.write(roofs.astype(np.uint8), 1, window=window)

    def __enter__(self) -> _CityFiles:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


# ---------------------------------------------------------------------------
# Pass 1: tiles
# ---------------------------------------------------------------------------


def _render_block(config: CityConfig, layout: CityLayout, t: _Tiles, r0, r1, c0, c1):
    """Land cover, aerial images and roof masks of tiles ``r0:r1 x c0:c1``."""
    tp = t.tp
    classes, markings = layout.landcover(r0 * tp, r1 * tp, c0 * tp, c1 * tp)
    tile_rows, tile_cols = np.divmod(np.arange((r1 - r0) * (c1 - c0)), c1 - c0)
    tile_rows += r0
    tile_cols += c0
    images, roofs = aerial.render_aerial(
        _tiles_of(classes, tp), _tiles_of(markings, tp), row0=tile_rows * tp, col0=tile_cols * tp,
        tile_ids=tile_rows * t.cols + tile_cols, resolution_m=config.resolution_m, seed=config.seed,
        illumination_noise=config.illumination_noise, pixel_noise=config.pixel_noise, return_buildings=True)
    # Back from tiles to the block's raster for the GeoTIFF.
    h, w = (r1 - r0), (c1 - c0)
    roof_raster = roofs.reshape(h, w, tp, tp).swapaxes(1, 2).reshape(h * tp, w * tp)
    return classes, images, roof_raster


# ---------------------------------------------------------------------------
# Pass 2: regions (aerial image, land cover, POIs, street views)
# ---------------------------------------------------------------------------


@dataclass
class _RegionRow:
    """What one row of regions renders to."""

    ids: np.ndarray
    fractions: np.ndarray  # (n, K)
    land_px: np.ndarray  # (n,) land pixels inside the city
    images: np.ndarray  # (n, 4, tp, tp)
    image_fractions: np.ndarray  # (n, K) land cover of each aerial image
    views: np.ndarray  # (n, V, 3, vp, vp)
    view_meta: np.ndarray  # (n, V, len(_VIEW_META) + K): _VIEW_META, then the land-cover mix
    expected_pois: np.ndarray  # (n,) the Poisson mean of each region's POI count
    pois: list[dict]


class _WaterDistance:
    """Distance (m) to the nearest water anywhere in the city, from a raster at every ``_COARSE_PX``-th pixel."""

    def __init__(self, layout: CityLayout, resolution_m: float):
        water = layout.coarse_water(_COARSE_PX)
        self.metres = (ndimage.distance_transform_edt(~water) * _COARSE_PX * resolution_m if water.any()
                       else np.full(water.shape, np.inf)).astype(np.float32)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        i = np.clip((np.asarray(rows) // _COARSE_PX).astype(np.intp), 0, self.metres.shape[0] - 1)
        j = np.clip((np.asarray(cols) // _COARSE_PX).astype(np.intp), 0, self.metres.shape[1] - 1)
        return self.metres[i, j]


def _render_region_row(config: CityConfig, layout: CityLayout, g: _Regions, water: _WaterDistance, i: int,
                       n_tiles: int) -> _RegionRow:
    """Render one row of regions: the band of pixel rows around it, each region's land-cover fractions,
    its aerial image, POIs (:func:`_region_pois`) and street views (:func:`_region_street_views`)."""
    tp, vp, n_views = config.tile_px, config.view_px, config.views_per_region
    ids = g.centre_of_row(i)
    half = tp / 2
    y0 = int(max(0, np.floor(g.cy[ids].min() - max(g.reach, half) - 1)))
    y1 = int(min(g.height, np.ceil(g.cy[ids].max() + max(g.reach, half) + 1)))
    if y1 - y0 < tp:  # near the city's edge: widen the band to hold a whole image
        y0, y1 = (0, min(g.height, tp)) if y0 == 0 else (max(0, y1 - tp), y1)
    ys = np.arange(y0, y1) + 0.5
    xs = np.arange(g.width) + 0.5
    classes, markings = layout.classify(ys, xs)
    owner = g.assign(ys, xs)

    # Fractions of each region's pixels inside the city.
    local = owner - ids[0]
    mine = (local >= 0) & (local < len(ids))
    counts = np.bincount(local[mine] * _K + classes[mine], minlength=len(ids) * _K).reshape(len(ids), _K)
    total = counts.sum(axis=1, keepdims=True)
    fractions = (counts / np.maximum(total, 1)).astype(np.float32)
    land_px = total[:, 0] - counts[:, LandCover.WATER]

    # One aerial image per region, centred on it and shifted inside the city (and the band).
    top = np.clip(np.round(g.cy[ids] - half).astype(np.int64), y0, y1 - tp)
    left = np.clip(np.round(g.cx[ids] - half).astype(np.int64), 0, g.width - tp)
    windows = np.stack([classes[t - y0:t - y0 + tp, x:x + tp] for t, x in zip(top, left, strict=True)])
    marks = np.stack([markings[t - y0:t - y0 + tp, x:x + tp] for t, x in zip(top, left, strict=True)])
    images = aerial.render_aerial(windows, marks, row0=top, col0=left, tile_ids=n_tiles + ids,
                                  resolution_m=config.resolution_m, seed=config.seed,
                                  illumination_noise=config.illumination_noise, pixel_noise=config.pixel_noise)

    views = np.zeros((len(ids), n_views, 3, vp, vp), np.uint8)
    view_meta = np.full((len(ids), n_views, len(_VIEW_META) + _K), np.nan)
    expected_pois = np.zeros(len(ids))
    pois: list[dict] = []
    hectares = total[:, 0] * config.resolution_m**2 / 1e4
    for k, region in enumerate(ids):
        if fractions[k, LandCover.WATER] >= UNINHABITED_WATER_FRACTION or land_px[k] == 0:
            continue
        pixels = _RegionPixels.of(owner == region, classes, markings, y0)
        commercial = layout.factors_at(np.array([g.cy[region]]), np.array([g.cx[region]]))["commercial"][0]
        expected_pois[k] = _expected_pois(config, fractions[k], hectares[k], commercial)
        pois += _region_pois(config, int(region), expected_pois[k], commercial, pixels, water)
        views[k], view_meta[k] = _region_street_views(config, layout, int(region), pixels, classes)
    return _RegionRow(ids, fractions, land_px, images, _fractions(windows), views, view_meta, expected_pois, pois)


@dataclass(frozen=True)
class _RegionPixels:
    """The pixels of one region in a band of rows starting at row ``y0``: positions in the band, class, marking."""

    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray
    markings: np.ndarray
    y0: int

    @classmethod
    def of(cls, mine: np.ndarray, classes: np.ndarray, markings: np.ndarray, y0: int) -> _RegionPixels:
        rows, cols = np.nonzero(mine)
        return cls(rows, cols, classes[rows, cols], markings[rows, cols], y0)


def _expected_pois(config: CityConfig, fractions: np.ndarray, hectares: float, commercial: float) -> float:
    """``lambda = rate * exp(kappa C) * sum_k rho_k a_k``: the mean POI count of a region with ``a_k = f_k *
    hectares`` hectares of class ``k`` and commercial character ``C``."""
    return float(config.pois.rate * np.exp(_POI_COMMERCIAL * commercial) * hectares * (fractions @ _POI_INTENSITY))


def _region_pois(config: CityConfig, region: int, lam: float, commercial: float, pixels: _RegionPixels,
                 water: _WaterDistance) -> list[dict]:
    """The POIs of one region: ``Poisson(lam)`` (:func:`_expected_pois`) at distinct land pixels drawn with
    weights ``rho``, their texts from :mod:`lib.data.poi_text` ("by the water" within 60 m)."""
    rng = np.random.default_rng([config.seed, _SALT_POI, region])
    cls = pixels.classes
    weights = _POI_INTENSITY[cls]
    n = min(int(rng.poisson(lam)), int(np.count_nonzero(weights)))
    if not n:
        return []
    picks = rng.choice(len(cls), size=n, replace=False, p=weights / weights.sum())
    py, px = pixels.rows[picks] + pixels.y0, pixels.cols[picks]
    near = water.at(py, px) <= _NEAR_WATER_M
    labels = [LANDCOVER_NAMES[c] for c in cls[picks]]
    return [{"region": region, **poi, "landcover": label, "row_px": int(row), "col_px": int(col)}
            for poi, row, col, label in zip(poi_text.draw_pois(rng, labels, float(commercial), near),
                                            py, px, labels, strict=True)]


def _region_street_views(config: CityConfig, layout: CityLayout, region: int, pixels: _RegionPixels,
                         classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The street views of one region and their metadata (:data:`_VIEW_META`, then the land-cover mix).

    Viewpoints are distinct street pixels (never rail, never water; land pixels
    only if the region has too few street pixels); each view shows the
    land-cover mix within 64 m (inside the band ``classes``, which starts at
    row ``pixels.y0`` of the city), the affluence and the accessibility at its
    viewpoint (:mod:`lib.data.street_views`), and records the cues it drew.
    """
    n_views, y0 = config.views_per_region, pixels.y0
    reach = max(1, int(round(64.0 / config.resolution_m)))
    cls, mark = pixels.classes, pixels.markings
    rng = np.random.default_rng([config.seed, _SALT_VIEW, region])
    street = np.flatnonzero((cls == LandCover.ROADS) & (mark != MARK_BALLAST) & (mark != MARK_RAIL))
    if len(street) >= n_views:
        picks = rng.choice(street, size=n_views, replace=False)
    else:
        land = np.setdiff1d(np.flatnonzero(cls != LandCover.WATER), street)
        pool = land if len(land) else street
        picks = np.concatenate([street, rng.choice(pool, size=n_views - len(street),
                                                   replace=len(pool) < n_views - len(street))])
    vy, vx = pixels.rows[picks], pixels.cols[picks]
    mix = np.empty((n_views, _K))
    for v, (row, col) in enumerate(zip(vy, vx, strict=True)):
        around = classes[max(0, row - reach):row + reach + 1, max(0, col - reach):col + reach + 1]
        mix[v] = np.bincount(around.ravel(), minlength=_K) / around.size
    factors = layout.factors_at(vy + y0 + 0.5, vx + 0.5)
    views, cues = render_street_views(mix, rng, affluence=factors["affluence"], accessibility=factors["accessibility"],
                                      size=config.view_px, illumination_noise=config.illumination_noise,
                                      pixel_noise=config.pixel_noise, return_cues=True)
    meta = np.column_stack([vy + y0 + 0.5, vx + 0.5, rng.uniform(0, 360, n_views), factors["affluence"],
                            factors["accessibility"], cues, mix])
    return views, meta


# ---------------------------------------------------------------------------
# Outcomes, tables, flows
# ---------------------------------------------------------------------------


def _design(fractions: np.ndarray, factors: dict[str, np.ndarray], water_m: np.ndarray,
            distance_km: np.ndarray) -> dict[str, np.ndarray]:
    """The true factors of a set of units, by name (see :mod:`lib.data.city_outcomes`)."""
    design = {c: fractions[:, k].astype(np.float64) for k, c in enumerate(_FRACTION_COLUMNS)}
    design.update({name: np.asarray(v, np.float64) for name, v in factors.items()})
    design["water_proximity"] = np.exp(-np.asarray(water_m, np.float64) / 300.0)
    design["distance_to_centre_km"] = np.asarray(distance_km, np.float64)
    return design


def _evaluate(models: dict[str, OutcomeModel], design: dict[str, np.ndarray], inhabited: np.ndarray,
              noise: Callable[[int], np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per outcome: ``noise_free``, ``noisy`` (NaN where uninhabited) and the interval ``slope``."""
    result = {}
    for index, (name, m) in enumerate(models.items()):
        noise_free = m.predict(design)
        noisy = noise_free + m.noise_sd * noise(index)
        result[name] = {"noise_free": np.where(inhabited, noise_free, np.nan),
                        "noisy": np.where(inhabited, noisy, np.nan),
                        "slope": np.where(inhabited, m.slope(design), np.nan)}
    return result


def _oracle(models, design, outcomes, inhabited) -> dict[str, dict[str, float]]:
    if inhabited.sum() < 3:
        return {}
    sub = {k: v[inhabited] for k, v in design.items()}
    return {name: {k: round(v, 4) for k, v in oracle_r2(m, sub, outcomes[name]["noisy"][inhabited]).items()}
            for name, m in models.items()}


def _flows(config: CityConfig, regions: pd.DataFrame, out: Path) -> int:
    """Write the gravity-model flows (pairs with at least one trip) to ``flows.parquet``, origin by origin chunk.

    Memory: one chunk of origins times all destinations at a time, never the full matrix.
    """
    g = config.gravity
    live = regions[regions["inhabited"] & (regions["population"] > 0)]
    ids = live["region"].to_numpy(np.int32)
    pop = live["population"].to_numpy()
    jobs = live["jobs"].to_numpy()
    access = live["accessibility"].to_numpy()
    east = live["easting"].to_numpy() / 1000
    north = live["northing"].to_numpy() / 1000
    rng = np.random.default_rng([config.seed, _SALT_FLOW])
    chunk = max(1, 2_000_000 // max(1, len(ids)))

    def affinity(rows: slice, eps: np.ndarray | None):
        d = np.hypot(east[rows, None] - east[None, :], north[rows, None] - north[None, :])
        a = (pop[rows, None] ** g.alpha * jobs[None, :] ** g.beta
             * np.exp(g.accessibility * (access[rows, None] + access[None, :]))
             / np.maximum(d, g.min_distance_km) ** g.gamma)
        if eps is not None:
            a = a * np.exp(g.noise_sd * eps - g.noise_sd**2 / 2)
        a[np.arange(a.shape[0]), np.arange(rows.start, rows.start + a.shape[0])] = 0.0  # no trips within a region
        return a, d

    # The normalising constant uses the noise-free affinity (the noise has mean one).
    total = sum(float(affinity(slice(s, min(s + chunk, len(ids))), None)[0].sum()) for s in range(0, len(ids), chunk))
    scale = g.trips_per_capita * pop.sum() / total if total > 0 else 0.0
    schema = pa.schema([("origin", pa.int32()), ("destination", pa.int32()), ("distance_km", pa.float64()),
                        ("expected", pa.float64()), ("flow", pa.int64())])
    n_rows = 0
    with pq.ParquetWriter(out / "flows.parquet", schema) as writer:
        for s in range(0, len(ids), chunk):
            rows = slice(s, min(s + chunk, len(ids)))
            eps = rng.standard_normal((rows.stop - rows.start, len(ids)))
            a, d = affinity(rows, eps)
            expected = a * scale
            flow = rng.poisson(expected)
            o, dst = np.nonzero(flow)
            n_rows += len(o)
            writer.write_table(pa.table({
                "origin": ids[rows][o], "destination": ids[dst], "distance_km": d[o, dst],
                "expected": expected[o, dst], "flow": flow[o, dst].astype(np.int64)}, schema=schema))
        if not len(ids):
            writer.write_table(schema.empty_table())
    return n_rows


def flow_matrix(flows: pd.DataFrame, n_regions: int) -> np.ndarray:
    """The ``(n_regions, n_regions)`` origin-destination matrix of trips: row ``i`` out-flows, column ``j`` in-flows."""
    matrix = np.zeros((n_regions, n_regions), dtype=np.float64)
    np.add.at(matrix, (flows["origin"].to_numpy(), flows["destination"].to_numpy()), flows["flow"].to_numpy())
    return matrix


# ---------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CityBuild:
    """What :func:`build_city` made: where, from what, with which outcome models, and how fast."""

    path: Path
    config: CityConfig
    outcome_models: dict[str, OutcomeModel]
    n_tiles: int
    n_regions: int
    n_inhabited_regions: int
    seconds: float


def _templates(out: Path, config: CityConfig, t: _Tiles, g: _Regions, info: dict) -> None:
    """The small parts of the NetCDF files: coordinates, CRS, attributes; big variables come later."""
    tp = config.tile_px
    tiles = xr.Dataset(coords={
        "tile": ("tile", np.arange(config.n_tiles, dtype=np.int32)),
        "band": ("band", list(AERIAL_BANDS)),
        "y": ("y", np.arange(tp, dtype=np.int16), {"long_name": "pixel row within the tile"}),
        "x": ("x", np.arange(tp, dtype=np.int16), {"long_name": "pixel column within the tile"}),
        "landcover_class": ("landcover_class", list(LANDCOVER_NAMES)),
        "row": ("tile", t.tile_row.astype(np.int32)),
        "col": ("tile", t.tile_col.astype(np.int32)),
        "easting": ("tile", t.easting, {"long_name": "tile centre easting", "units": "m"}),
        "northing": ("tile", t.northing, {"long_name": "tile centre northing", "units": "m"}),
        "lon": ("tile", np.asarray(t.lon), {"units": "degrees_east"}),
        "lat": ("tile", np.asarray(t.lat), {"units": "degrees_north"}),
    }, attrs={
        "title": f"synthetic city {config.name}",
        "city": config.name,
        "layout": config.layout,
        "task": config.task,
        "resolution_m": config.resolution_m,
        "tile_px": tp,
        "origin_easting": config.origin[0],
        "origin_northing": config.origin[1],
        "config": config.model_dump_json(),
        "layout_geometry": json.dumps(info),
        "landcover_classes": json.dumps(LANDCOVER_NAMES),
        "urban_atlas_codes": json.dumps({c.label: code for c, code in URBAN_ATLAS_CODES.items()}),
        "uninhabited": f"water fraction >= {UNINHABITED_WATER_FRACTION}: outcomes NaN",
    })
    _with_crs(tiles, config.crs).to_netcdf(out / "tiles.nc", engine="h5netcdf")
    east, north = _pixel_to_map(config, g.cy, g.cx)
    lon, lat = t.to_lonlat.transform(east, north)
    region = np.arange(g.n, dtype=np.int32)
    regions = xr.Dataset(coords={
        "region": ("region", region), "band": ("band", list(AERIAL_BANDS)),
        "y": ("y", np.arange(tp, dtype=np.int16)), "x": ("x", np.arange(tp, dtype=np.int16)),
        "easting": ("region", east, {"long_name": "region centre easting", "units": "m"}),
        "northing": ("region", north, {"long_name": "region centre northing", "units": "m"}),
        "lon": ("region", lon), "lat": ("region", lat),
    }, attrs={"title": f"aerial images of the regions of synthetic city {config.name}",
              "config": config.model_dump_json()})
    _with_crs(regions, config.crs).to_netcdf(out / "regions.nc", engine="h5netcdf")
    views = xr.Dataset(coords={
        "region": ("region", region),
        "view": ("view", np.arange(config.views_per_region, dtype=np.int32)),
        "band": ("band", list(STREET_BANDS)),
        "y": ("y", np.arange(config.view_px, dtype=np.int16)),
        "x": ("x", np.arange(config.view_px, dtype=np.int16)),
        "landcover_class": ("landcover_class", list(LANDCOVER_NAMES)),
    }, attrs={"title": f"street-level views of synthetic city {config.name}", "config": config.model_dump_json(),
              "uninhabited": "regions without views have all-zero images and NaN viewpoints"})
    _with_crs(views, config.crs).to_netcdf(out / "street_views.nc", engine="h5netcdf")


def _write_tile_variables(path: Path, variables: dict[str, tuple[np.ndarray, dict]], dims=("tile",)) -> None:
    with h5netcdf.File(path, "a") as f:
        for name, (values, attrs) in variables.items():
            var_dims = dims if values.ndim == 1 else (*dims, "landcover_class")
            f.create_variable(name, var_dims, data=values).attrs.update({"grid_mapping": "spatial_ref", **attrs})


def _write_city(config: CityConfig, out: Path, progress: Callable[[int, int], None] | None) -> dict:
    """Generate the city into the (empty) directory ``out``, streaming; returns its summary (``city.json``).

    The steps, in the order they write: the small parts of the files
    (:func:`_templates`); pass 1, the tiles a block at a time (:func:`_write_tiles`);
    pass 2, the regions a row at a time (:func:`_write_regions`); the true
    factors of every unit (:func:`_unit_designs`) and the outcomes drawn from
    them (:func:`_draw_outcomes`); the tiles' outcome variables
    (:func:`_write_tile_outcomes`); the region, flow and POI tables
    (:func:`_write_tables`); the summary (:func:`_write_summary`).
    """
    layout = CityLayout(config)
    t = _Tiles(config)
    g = _Regions(config, layout.height, layout.width)
    info = layout.describe(lambda r, c: _pixel_to_map(config, r, c))
    _templates(out, config, t, g, info)
    water = _WaterDistance(layout, config.resolution_m)
    tick = _Progress(progress, -(-t.rows // t.block) * -(-t.cols // t.block) + g.n_rows)
    with _CityFiles(out, config, t, g, layout.height, layout.width) as files:
        tile_fractions = _write_tiles(config, layout, t, files, tick)
        regions = _write_regions(config, layout, g, water, files, tick)
    units = _unit_designs(config, layout, t, g, water, tile_fractions, regions.fractions)
    models = with_thresholds(outcome_models(config.outcome_noise), units["tile"].design, units["tile"].inhabited)
    outcomes = _draw_outcomes(config, g, models, units)
    _write_tile_outcomes(out / "tiles.nc", models, units["tile"], tile_fractions, outcomes["tile"])
    counts = _write_tables(config, out, t, g, models, units["region"], regions, outcomes["region"])
    return _write_summary(config, out, models, units, outcomes, info, counts)


class _Progress:
    """Calls ``progress(steps_done, steps_total)`` once per finished step (nothing without a callback)."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _write_tiles(config: CityConfig, layout: CityLayout, t: _Tiles, files: _CityFiles, tick: _Progress) -> np.ndarray:
    """Pass 1: render and write the tiles a block of ``t.block`` x ``t.block`` at a time; their land-cover fractions."""
    tile_fractions = np.empty((config.n_tiles, _K), dtype=np.float32)
    for br in range(-(-t.rows // t.block)):
        for bc in range(-(-t.cols // t.block)):
            r0, r1 = br * t.block, min(t.rows, (br + 1) * t.block)
            c0, c1 = bc * t.block, min(t.cols, (bc + 1) * t.block)
            classes, images, roofs = _render_block(config, layout, t, r0, r1, c0, c1)
            files.write_block(r0, r1, c0, c1, classes, images, roofs)
            ids = (np.arange(r0, r1)[:, None] * t.cols + np.arange(c0, c1)[None, :]).ravel()
            tile_fractions[ids] = _fractions(_tiles_of(classes, t.tp))
            tick()
    return tile_fractions


@dataclass
class _RegionPass:
    """What pass 2 keeps in memory of every region: land cover, land pixels, POIs, what the views drew."""

    fractions: np.ndarray  # (n, K)
    land_px: np.ndarray  # (n,)
    image_fractions: np.ndarray  # (n, K) land cover of the region's aerial image
    view_meta: np.ndarray  # (n, V, len(_VIEW_META) - 3 + K): factors and cues at the viewpoints, mix
    expected_pois: np.ndarray  # (n,)
    pois: list[dict]


def _write_regions(config: CityConfig, layout: CityLayout, g: _Regions, water: _WaterDistance, files: _CityFiles,
                   tick: _Progress) -> _RegionPass:
    """Pass 2: render and write the regions a row at a time (aerial image, street views and their viewpoints)."""
    totals = _RegionPass(np.empty((g.n, _K), dtype=np.float32), np.zeros(g.n, np.int64),
                         np.zeros((g.n, _K), dtype=np.float32),
                         np.full((g.n, config.views_per_region, len(_VIEW_META) - 3 + _K), np.nan), np.zeros(g.n), [])
    for i in range(g.n_rows):
        if g.first[i + 1] == g.first[i]:
            continue
        row = _render_region_row(config, layout, g, water, i, config.n_tiles)
        files.regions["image"][row.ids[0]:row.ids[-1] + 1] = row.images
        files.views["image"][row.ids[0]:row.ids[-1] + 1] = row.views
        span = slice(row.ids[0], row.ids[-1] + 1)
        meta = dict(zip(_VIEW_META, np.moveaxis(row.view_meta[..., :len(_VIEW_META)], -1, 0), strict=True))
        files.views["view_easting"][span], files.views["view_northing"][span] = _pixel_to_map(
            config, meta.pop("row_px"), meta.pop("col_px"))
        for name, values in meta.items():
            files.views[f"view_{name}"][span] = values
        files.views["view_fractions"][span] = row.view_meta[..., len(_VIEW_META):]
        totals.fractions[row.ids] = row.fractions
        totals.land_px[row.ids] = row.land_px
        totals.image_fractions[row.ids] = row.image_fractions
        totals.view_meta[row.ids] = row.view_meta[..., 3:]
        totals.expected_pois[row.ids] = row.expected_pois
        totals.pois.extend(row.pois)
        tick()
    return totals


@dataclass(frozen=True)
class _Units:
    """One kind of unit (tiles or regions): its true factors by name, whether inhabited, the hidden factors."""

    design: dict[str, np.ndarray]
    inhabited: np.ndarray
    factors: dict[str, np.ndarray]


def _unit_designs(config: CityConfig, layout: CityLayout, t: _Tiles, g: _Regions, water: _WaterDistance,
                  tile_fractions: np.ndarray, region_fractions: np.ndarray) -> dict[str, _Units]:
    """The true factors of the tiles and of the regions, at their centres (see :mod:`lib.data.city_outcomes`)."""
    centre = (layout.centre[0], layout.centre[1])
    units = {}
    for unit, fractions, cy, cx in (("tile", tile_fractions, t.cy, t.cx), ("region", region_fractions, g.cy, g.cx)):
        factors = layout.factors_at(cy, cx)
        distance_km = np.hypot(cy - centre[0], cx - centre[1]) * config.resolution_m / 1000
        design = _design(fractions, factors, water.at(cy, cx), distance_km)
        inhabited = fractions[:, LandCover.WATER] < UNINHABITED_WATER_FRACTION
        units[unit] = _Units(design, inhabited, factors)
    return units


def _draw_outcomes(config: CityConfig, g: _Regions, models: dict[str, OutcomeModel],
                   units: dict[str, _Units]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Every outcome of the tiles (spatially smooth noise) and of the regions (independent noise), by unit."""

    def tile_noise(index):
        rng = np.random.default_rng([config.seed, _SALT_OUTCOME, index])
        return smooth_noise(rng, config.grid, config.noise_length_tiles).ravel()

    def region_noise(index):
        return np.random.default_rng([config.seed, _SALT_REGION_NOISE, index]).standard_normal(g.n)

    return {"tile": _evaluate(models, units["tile"].design, units["tile"].inhabited, tile_noise),
            "region": _evaluate(models, units["region"].design, units["region"].inhabited, region_noise)}


def _write_tile_outcomes(path: Path, models: dict[str, OutcomeModel], tiles: _Units, tile_fractions: np.ndarray,
                         tile_out: dict[str, dict[str, np.ndarray]]) -> None:
    """The per-tile variables of ``tiles.nc``: fractions, factors, and each outcome noisy, noise-free and its slope."""
    variables = {
        "fractions": (tile_fractions, {"long_name": "land-cover fractions (concept ground truth)"}),
        "inhabited": (tiles.inhabited.astype(np.uint8), {"long_name": "1 = inhabited (water fraction < 0.5)"}),
        "water_proximity": (tiles.design["water_proximity"].astype(np.float32),
                            {"long_name": "proximity to water", "formula": "exp(-d / 300 m), d city-wide"}),
        "distance_to_centre_km": (tiles.design["distance_to_centre_km"].astype(np.float32), {"units": "km"}),
    }
    for name in ("affluence", "commercial", "accessibility"):
        variables[name] = (tiles.factors[name].astype(np.float32), {"long_name": f"hidden factor: {name}"})
    for name, m in models.items():
        attrs = {"units": m.units, "model": json.dumps(m.to_json())}
        variables[name] = (tile_out[name]["noisy"].astype(np.float32), attrs | {"long_name": name.replace("_", " ")})
        variables[f"{name}_noise_free"] = (tile_out[name]["noise_free"].astype(np.float32),
                                           attrs | {"long_name": f"{name} without noise"})
        if m.interval is not None:
            variables[f"{name}_slope_{m.interval.concept}"] = (
                tile_out[name]["slope"].astype(np.float32),
                {"long_name": f"true effect of the {m.interval.concept} fraction on {name} at this tile"})
    _write_tile_variables(path, variables)


def _write_tables(config: CityConfig, out: Path, t: _Tiles, g: _Regions, models: dict[str, OutcomeModel],
                  units: _Units, regions: _RegionPass, region_out: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
    """``regions.parquet`` (factors, population, jobs, outcomes, trips), ``flows.parquet`` and ``pois.parquet``.

    Returns the counts of :func:`_write_summary`: POIs, flow pairs and trips.
    """
    area_km2 = regions.land_px * config.resolution_m**2 / 1e6
    east, north = _pixel_to_map(config, g.cy, g.cx)
    lon, lat = t.to_lonlat.transform(east, north)
    table = pd.DataFrame({"region": np.arange(g.n, dtype=np.int32), "grid_row": g.row.astype(np.int32),
                          "grid_col": g.col.astype(np.int32), "easting": east, "northing": north,
                          "lon": lon, "lat": lat, "inhabited": units.inhabited, "land_area_km2": area_km2})
    for k, c in enumerate(_FRACTION_COLUMNS):
        table[c] = regions.fractions[:, k]
    for name in ("affluence", "commercial", "accessibility", "water_proximity", "distance_to_centre_km"):
        table[name] = units.design[name]
    table["n_pois"] = np.bincount(np.array([p["region"] for p in regions.pois], dtype=np.intp), minlength=g.n)
    table["expected_pois"] = regions.expected_pois
    # Who lives and works there, free of the outcome noise: the trips start from these.
    density = np.nan_to_num(np.maximum(region_out["population_density"]["noise_free"], 0))
    table["population"] = np.where(units.inhabited, density * 1000 * area_km2, 0.0)
    table["jobs"] = np.where(units.inhabited, 1000 * area_km2 * (regions.fractions @ _JOB_DENSITY)
                             * np.exp(0.5 * units.factors["commercial"]) + _JOBS_PER_POI * regions.expected_pois, 0.0)
    for name, m in models.items():
        table[name] = region_out[name]["noisy"]
        table[f"{name}_noise_free"] = region_out[name]["noise_free"]
        if m.interval is not None:
            table[f"{name}_slope_{m.interval.concept}"] = region_out[name]["slope"]
    table["dominant_landcover"] = np.array(LANDCOVER_NAMES)[regions.fractions.argmax(axis=1)]
    n_flows = _flows(config, table, out)
    flows = pd.read_parquet(out / "flows.parquet", columns=["origin", "destination", "distance_km", "flow"])
    features = {**_aerial_features(regions), **_street_view_features(regions), **_poi_features(regions.pois, g.n),
                **_mobility_features(flows, table)}
    table = pd.concat([table, pd.DataFrame(features)], axis=1)
    table.to_parquet(out / "regions.parquet", index=False)
    _pois_table(config, t, regions.pois).to_parquet(out / "pois.parquet", index=False)
    return {"pois": len(regions.pois), "distinct_poi_descriptions": len({p["description"] for p in regions.pois}),
            "flow_pairs": n_flows, "trips": int(flows["flow"].sum())}


# ---------------------------------------------------------------------------
# What each modality renders (the contract of city.json's modality_features)
# ---------------------------------------------------------------------------


def _aerial_features(regions: _RegionPass) -> dict[str, np.ndarray]:
    """``image_fraction_<class>``: the land cover of each region's aerial image (what the image is rendered from)."""
    return {f"image_{c}": regions.image_fractions[:, k].astype(np.float64) for k, c in enumerate(_FRACTION_COLUMNS)}


def _street_view_features(regions: _RegionPass) -> dict[str, np.ndarray]:
    """Means over a region's views of what they draw: affluence (upkeep), the accessibility cues, the land-cover mix.

    ``sv_affluence``, ``sv_road_width``, ``sv_transit_stop`` (share of views
    with a stop), ``sv_vehicles``, ``sv_buses`` and ``sv_fraction_<class>``;
    0 for uninhabited regions (no views). The accessibility at the viewpoints
    is not among them: the views show it only through the cues.
    """
    viewed = np.isfinite(regions.view_meta).all(axis=(1, 2))  # a region has all its views or none
    means = np.zeros(regions.view_meta.shape[::2])
    means[viewed] = regions.view_meta[viewed].mean(axis=1)
    columns = dict(zip(_VIEW_META[3:], means[:, :len(_VIEW_META) - 3].T, strict=True))
    columns.pop("accessibility")
    mix = means[:, len(_VIEW_META) - 3:]
    return {f"sv_{n}": v for n, v in columns.items()} | {f"sv_{c}": mix[:, k] for k, c in enumerate(_FRACTION_COLUMNS)}


def _poi_features(pois: list[dict], n_regions: int) -> dict[str, np.ndarray]:
    """``poi_count_<category>`` per region, and ``poi_vocabulary_score``: the mean over the region's POIs of
    :func:`lib.data.poi_text.commercial_vocabulary_score` of name and description (0 without POIs)."""
    region = np.array([p["region"] for p in pois], dtype=np.intp)
    index = {c: k for k, c in enumerate(poi_text.POI_CATEGORIES)}
    category = np.array([index[p["category"]] for p in pois], dtype=np.intp)
    n_categories = len(poi_text.POI_CATEGORIES)
    counts = np.bincount(region * n_categories + category, minlength=n_regions * n_categories)
    counts = counts.reshape(n_regions, n_categories).astype(np.float64)
    score = np.array([poi_text.commercial_vocabulary_score(f"{p['name']} {p['description']}") for p in pois])
    total = np.bincount(region, weights=score, minlength=n_regions)
    n = counts.sum(axis=1)
    features = {f"poi_count_{c}": counts[:, k] for k, c in enumerate(poi_text.POI_CATEGORIES)}
    features["poi_vocabulary_score"] = np.divide(total, n, out=np.zeros(n_regions), where=n > 0)
    return features


def _mobility_features(flows: pd.DataFrame, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Trip volumes and what they carry per region: ``trips_out``, ``trips_in``, ``trips_out_per_capita``
    (per inhabitant), ``trips_in_per_job``, ``trip_km_out`` (mean distance of the trips out); 0 where undefined."""
    n = len(table)
    out = np.bincount(flows["origin"], weights=flows["flow"], minlength=n)
    into = np.bincount(flows["destination"], weights=flows["flow"], minlength=n)
    km = np.bincount(flows["origin"], weights=flows["flow"] * flows["distance_km"], minlength=n)
    population, jobs = table["population"].to_numpy(), table["jobs"].to_numpy()
    return {"trips_out": out, "trips_in": into,
            "trips_out_per_capita": np.divide(out, population, out=np.zeros(n), where=population > 0),
            "trips_in_per_job": np.divide(into, jobs, out=np.zeros(n), where=jobs > 0),
            "trip_km_out": np.divide(km, out, out=np.zeros(n), where=out > 0)}


def modality_features() -> dict[str, list[str]]:
    """The columns of ``regions.parquet`` that hold what each modality renders (``city.json``'s contract)."""
    street = [f"sv_{n}" for n in _VIEW_META[3:] if n != "accessibility"]
    return {
        "aerial": [f"image_{c}" for c in _FRACTION_COLUMNS],
        "street_view": street + [f"sv_{c}" for c in _FRACTION_COLUMNS],
        "poi": ["n_pois", *(f"poi_count_{c}" for c in poi_text.POI_CATEGORIES), "poi_vocabulary_score"],
        "mobility": ["trips_out", "trips_in", "trips_out_per_capita", "trips_in_per_job", "trip_km_out"],
    }


#: Inputs of the outcome models that no modality renders: the aerial image shows water only within its
#: window, and nothing shows the distance to the centre. Affluence, commercial character and accessibility
#: are rendered (noisily, at the viewpoints, through the POIs and the trips), so they are not hidden.
HIDDEN_FACTORS = ("water_proximity", "distance_to_centre_km")
#: The regions.parquet columns the outcome models read (the full, generating design).
GENERATING_FACTORS = (*_FRACTION_COLUMNS, "affluence", "commercial", "accessibility", "water_proximity",
                      "distance_to_centre_km")


def rendered_truth(regions: pd.DataFrame, pois: pd.DataFrame) -> dict:
    """How much of the hidden factors the modalities render, over the inhabited regions of a built city.

    ``pois``: POIs per inhabited region (median, and median over regions whose
    land is at least half dense residential), regions with any, categories,
    the share of the five commonest, distinct descriptions. ``spearman``: rank
    correlations of a rendered quantity with the factor it shows
    (``<column>~<factor>``): the street-view cues and the trips per capita and
    per job with accessibility, the views' affluence with affluence, the POI
    texts' vocabulary score and the POI count with commercial character.
    """
    live = regions[regions["inhabited"]]
    dense = live["fraction_dense_residential"] >= 0.5
    shares = pois["category"].value_counts(normalize=True).to_numpy()
    pairs = [(c, "accessibility") for c in ("sv_road_width", "sv_transit_stop", "sv_vehicles", "sv_buses",
                                             "trips_out_per_capita", "trips_in_per_job")]
    pairs += [("sv_affluence", "affluence"), ("poi_vocabulary_score", "commercial"), ("n_pois", "commercial")]
    return {
        "pois": {"per_region_median": float(live["n_pois"].median()),
                 "dense_regions": int(dense.sum()),
                 "per_dense_region_median": float(live.loc[dense, "n_pois"].median()) if dense.any() else None,
                 "regions_with_pois": int((live["n_pois"] > 0).sum()),
                 "categories": int(pois["category"].nunique()),
                 "top5_category_share": round(float(shares[:5].sum()), 4),
                 "distinct_descriptions": int(pois["description"].nunique())},
        "spearman": {f"{column}~{factor}": round(float(spearmanr(live[column], live[factor]).statistic), 4)
                     for column, factor in pairs},
    }


def _write_summary(config: CityConfig, out: Path, models: dict[str, OutcomeModel], units: dict[str, _Units],
                   outcomes: dict[str, dict[str, dict[str, np.ndarray]]], info: dict, counts: dict[str, int]) -> dict:
    """``city.json`` (config, outcome models, oracle R^2, counts, layout) and the outcome attributes of ``tiles.nc``."""
    oracle = {unit: _oracle(models, units[unit].design, outcomes[unit], units[unit].inhabited)
              for unit in ("tile", "region")}
    summary = {
        "config": config.model_dump(mode="json"),
        "outcome_models": {name: m.to_json() for name, m in models.items()},
        "modality_factors": {k: list(v) for k, v in MODALITY_FACTORS.items()},
        "oracle_r2": oracle,
        "oracle_r2_definition": _ORACLE_DEFINITION,
        "modality_features": modality_features(),
        "hidden_factors": list(HIDDEN_FACTORS),
        "generating_factors": list(GENERATING_FACTORS),
        "counts": {"tiles": config.n_tiles, "inhabited_tiles": int(units["tile"].inhabited.sum()),
                   "regions": len(units["region"].inhabited),
                   "inhabited_regions": int(units["region"].inhabited.sum()), **counts},
        "layout": info,
    }
    with h5netcdf.File(out / "tiles.nc", "a") as f:
        f.attrs["outcomes"] = json.dumps(list(models))
        f.attrs["outcome_models"] = json.dumps(summary["outcome_models"])
        f.attrs["outcome_units"] = json.dumps({name: m.units for name, m in models.items()})
        f.attrs["oracle_r2"] = json.dumps(oracle["tile"])
    (out / "city.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


_ORACLE_DEFINITION = (
    "in-sample R^2 of least-squares fits of each noisy outcome on groups of the generating model's factors "
    "(modality_factors), on all of them and on the full generating design (ceiling), fitted and scored on the "
    "same inhabited units; not what a modality renders (see modality_features) and not out-of-fold")


def _pois_table(config, t: _Tiles, pois: list[dict]) -> pd.DataFrame:
    columns = ["poi", "region", "tile", "category", "name", "description", "landcover", "easting", "northing",
               "lon", "lat"]
    if not pois:
        text = ("category", "name", "description", "landcover")
        return pd.DataFrame({c: pd.Series(dtype=object if c in text else float) for c in columns})
    table = pd.DataFrame(pois)
    table["poi"] = np.arange(len(table))
    table["tile"] = (table["row_px"] // t.tp) * t.cols + table["col_px"] // t.tp
    table["easting"], table["northing"] = _pixel_to_map(config, table["row_px"] + 0.5, table["col_px"] + 0.5)
    table["lon"], table["lat"] = t.to_lonlat.transform(table["easting"].to_numpy(), table["northing"].to_numpy())
    return table[columns]


def _replace_dir(source: Path, target: Path) -> None:
    """Move the finished ``source`` to ``target``, replacing an older build there."""
    if not target.exists():
        os.rename(source, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, trash / target.name)
    os.rename(source, target)
    shutil.rmtree(trash)


def _remove_leftovers(out_dir: Path) -> None:
    """Delete what a build of ``out_dir`` killed mid-way left beside it (``.<name>.*.partial``, ``.old``).

    A killed process cannot clean up after itself; the next build does. Builds
    of one city do not run side by side (DVC runs a stage once at a time).
    """
    for leftover in [*out_dir.parent.glob(f".{out_dir.name}.*.partial"), *out_dir.parent.glob(f".{out_dir.name}.*.old")]:
        shutil.rmtree(leftover, ignore_errors=True)


def build_city(config: CityConfig, out_dir: str | os.PathLike[str],
               progress: Callable[[int, int], None] | None = None) -> CityBuild:
    """Generate the city of ``config`` into ``out_dir``, atomically.

    Everything is written to a temporary directory beside ``out_dir`` and
    renamed into place at the end, so a failure leaves ``out_dir`` as it was
    (absent, or the previous build); the temporary directories of a build that
    was killed are removed by the next one. Tiles are rendered and written a
    block of 4 x 4 tiles at a time, regions a row of regions at a time; only
    per-unit tables (fractions, outcomes, POIs) stay in memory, and flows are
    written a chunk of origins at a time.

    ``progress``, if given, is called as ``progress(steps_done, steps_total)``
    after each block of tiles and each row of regions.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        summary = _write_city(config, work, progress)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    models = {name: OutcomeModel.from_json(name, data) for name, data in summary["outcome_models"].items()}
    return CityBuild(out_dir, config, models, config.n_tiles, summary["counts"]["regions"],
                     summary["counts"]["inhabited_regions"], time.perf_counter() - start)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _open_netcdf(path: Path) -> xr.Dataset:
    return open_dataset(path, engine="h5netcdf", decode_coords="all")


def load_city(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a built city's ``tiles.nc`` lazily (``path``: the city directory or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tiles.nc"
    return _open_netcdf(path)


def load_regions(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a built city's ``regions.nc`` (one aerial image per region) lazily."""
    return _open_netcdf(Path(path) / "regions.nc")


def load_street_views(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a built city's ``street_views.nc`` lazily."""
    return _open_netcdf(Path(path) / "street_views.nc")


def load_tables(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The city's ``regions``, ``pois`` and ``flows`` tables."""
    return {name: read_parquet(Path(path) / f"{name}.parquet") for name in ("regions", "pois", "flows")}


class CityTiles(Dataset):
    """Inhabited aerial tiles of a built city as ``(image, outcome, fractions)`` tensors.

    ``image`` is float ``(4, H, W)`` in [0, 1] (R, G, B, NIR), ``outcome`` a
    float scalar of the chosen outcome (``noise_free=True``: its noise-free
    part) and ``fractions`` the ``(K,)`` land-cover fractions. ``tiles``
    defaults to every inhabited tile; uninhabited ones have no outcome.
    Images are read per item from a file handle that each process opens anew.
    """

    def __init__(self, path: str | os.PathLike[str], outcome: str, tiles=None, noise_free: bool = False):
        self.path = Path(path)
        with load_city(self.path) as ds:
            variable = f"{outcome}_noise_free" if noise_free else outcome
            if variable not in ds:
                raise KeyError(f"{self.path} has no outcome {variable!r}; it has {json.loads(ds.attrs['outcomes'])}")
            inhabited = ds["inhabited"].values.astype(bool)
            self.tiles = np.flatnonzero(inhabited) if tiles is None else np.asarray(tiles)
            if not inhabited[self.tiles].all():
                raise ValueError(f"{self.path}: tiles {self.tiles[~inhabited[self.tiles]][:5].tolist()} are "
                                 "uninhabited (open water) and have no outcome")
            self.targets = ds[variable].values[self.tiles].astype(np.float32)
            self.fractions = ds["fractions"].values[self.tiles].astype(np.float32)
        self._ds: xr.Dataset | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int):
        if self._ds is None or self._pid != os.getpid():
            self._ds, self._pid = load_city(self.path), os.getpid()
        pixels = self._ds["image"][int(self.tiles[index])].values
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0)
        return image, torch.tensor(self.targets[index]), torch.from_numpy(self.fractions[index])

    def __getstate__(self):
        # Open file handles do not pickle; a worker opens its own.
        return {**self.__dict__, "_ds": None, "_pid": -1}
