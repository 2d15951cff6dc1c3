"""Synthetic cities with a known generating process.

Three studies need aerial tiles, land-cover concepts, socioeconomic
outcomes, points of interest, mobility flows and street-level views, *and*
need to know the truth, so that they can check whether an explanation
recovers it. This module generates such a city from a seeded
:class:`CityConfig`; :mod:`lib.data.aerial` renders it.

Generating process
------------------
**Layout** (:class:`CityLayout`). Every pixel gets one :class:`LandCover`
class from pointwise functions of its position, so any window of the city
can be generated on its own. With ``r`` the distance to the centre and
``R`` half the city's shorter side, an urban potential

    u = exp(-(r / 0.62R)^2) + 0.2 * layout_noise * n_density + 0.15 * exp(-d_road / 0.05R)

(``n_*`` are Gaussian-smoothed noise fields of unit variance, ``d_road`` the
distance to a major road) is cut into dense (u > 0.72), medium (> 0.45) and
sparse (> 0.25) residential; below that lie forest (n_rural > 0) and
agriculture. Industrial zones sit where ``n_industrial + 1.2 exp(-d_water /
0.06R) > 1.35`` away from the core, parks where ``n_park > 1`` inside the
urban area and along the water front. A local street grid crosses the
built-up classes; 6-8 radial roads and two ring roads are laid on top. The
``river`` layout has a meandering river crossing the city (bridged by the
major roads), the ``coast`` layout a sea behind a wavy shoreline on one side.

**Outcomes** (:func:`outcome_models`). For tile ``t`` with land-cover
fractions ``f_tk``, distance to the centre ``d_t`` (km) and water proximity
``p_t = exp(-w_t / 0.3 km)`` (``w_t``: distance from the tile centre to the
nearest tile with at least 2 % water)::

    y_t = intercept + sum_k w_k f_tk + w_dist d_t + w_water p_t + sigma * z_t

where ``sigma`` is the outcome's stated noise sd times ``outcome_noise`` and
``z`` is white noise on the tile grid, smoothed by a Gaussian of
``noise_length_tiles`` and rescaled to unit variance. The weights are stored
in the dataset attributes and returned by :func:`outcome_models`; the
noise-free part is stored as ``<outcome>_noise_free``. Since the fractions
sum to one, only ``intercept + w_k`` (or differences ``w_k - w_l``) are
identifiable from data, not the intercept and ``w_k`` separately.

**Regions, POIs, flows, street views.** Regions are blocks of
``region_tiles x region_tiles`` tiles. Each gets ``pois_per_region`` POIs
at pixels drawn with class-dependent weights, typed by the class under
them; ``views_per_region`` street views rendered from the land-cover mix
around viewpoints on its roads; and a population (``population_density``
times area) and job count for the gravity model of flows between regions::

    flow_ij ~ Poisson(K * pop_i^alpha * jobs_j^beta / max(d_ij, d_min)^gamma),  i != j

with ``K`` set so the expected trips total ``trips_per_capita * sum(pop)``.
Trips within a region are not modelled: the flows table has no ``i == j``.

Output
------
:func:`build_city` streams everything to a temporary directory next to the
destination, one region at a time, and renames it into place only when
complete:

* ``tiles.nc`` (:func:`load_city`): ``image`` (tile, band, y, x) uint8 with
  bands red, green, blue, nir; ``landcover`` (tile, y, x) uint8;
  ``fractions`` (tile, landcover_class) float32; ``distance_to_centre_km``,
  ``water_proximity``, and per outcome ``<outcome>`` and
  ``<outcome>_noise_free`` (tile) float32. Coordinates ``tile``, ``row``,
  ``col``, ``region``, ``easting``/``northing`` (tile centres, in the CRS),
  ``lon``/``lat`` and ``spatial_ref`` (the CRS, rioxarray's way). JSON
  attributes: ``config``, ``outcome_weights``, ``outcome_noise_sd``,
  ``outcome_units``, ``layout_geometry``, ``landcover_classes``.
* ``landcover.tif``: the whole city's land cover, with CRS, transform and
  a colour table.
* ``street_views.nc`` (:func:`load_street_views`): ``image`` (region, view,
  band, y, x) uint8 RGB; ``view_easting``, ``view_northing``,
  ``view_heading_deg`` and ``view_fractions`` (the land-cover mix around
  the viewpoint).
* ``regions.parquet``, ``pois.parquet``, ``flows.parquet``
  (:func:`load_tables`) and ``city.json`` (config, outcome models, layout).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import h5netcdf
import h5py
import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from affine import Affine
from pydantic import Field, PositiveInt, field_validator
from pyproj import CRS, Transformer
from rasterio.windows import Window
from scipy import ndimage
from torch.utils.data import Dataset

from lib.data import aerial
from lib.data.aerial import AERIAL_BANDS, STREET_BANDS, URBAN_ATLAS_CODES, LandCover
from lib.params import Params

__all__ = [
    "AERIAL_BANDS",
    "CityBuild",
    "CityConfig",
    "CityLayout",
    "CityTiles",
    "GravityConfig",
    "LANDCOVER_COLOURS",
    "LANDCOVER_NAMES",
    "LandCover",
    "OutcomeModel",
    "POI_TYPES",
    "build_city",
    "coastal_city",
    "load_city",
    "load_street_views",
    "load_tables",
    "outcome_models",
    "river_city",
    "stored_outcome_models",
]

LANDCOVER_NAMES = tuple(c.label for c in LandCover)
_K = len(LandCover)

# Streams of randomness, one per purpose, so adding draws to one does not
# shift the others.
_SALT_LAYOUT, _SALT_OUTCOME, _SALT_POI, _SALT_VIEW, _SALT_FLOW = 11, 12, 13, 14, 15


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


class GravityConfig(Params):
    """Parameters of the gravity model of flows between regions."""

    alpha: float = Field(1.0, ge=0, description="exponent of the origin's population")
    beta: float = Field(1.0, ge=0, description="exponent of the destination's jobs")
    gamma: float = Field(2.0, ge=0, description="distance-decay exponent")
    trips_per_capita: float = Field(0.3, gt=0, description="expected trips between regions per inhabitant")
    min_distance_km: float = Field(0.25, gt=0, description="distances are clipped below this")


class CityConfig(Params):
    """Everything that determines a synthetic city; unknown keys and ill-typed values are errors.

    Sizes: the city is ``grid[0] x grid[1]`` tiles of ``tile_px`` pixels at
    ``resolution_m`` metres per pixel; ``origin`` is the (easting, northing)
    of its north-west corner in ``crs``, which must be projected (metres).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    seed: int = Field(0, ge=0)
    layout: Literal["river", "coast"]
    task: Literal["liveability", "income"]
    crs: str
    origin: tuple[float, float] = Field(strict=False, description="(easting, northing) of the north-west corner")
    resolution_m: float = Field(2.0, gt=0)
    tile_px: int = Field(64, ge=16, le=1024, multiple_of=16, description="a multiple of 16, the GeoTIFF block")
    grid: tuple[PositiveInt, PositiveInt] = Field((32, 32), strict=False, description="tiles (rows, columns)")
    region_tiles: PositiveInt = 4
    pois_per_region: int = Field(8, ge=0)
    views_per_region: int = Field(4, ge=0)
    view_px: int = Field(64, ge=16, le=512)
    layout_noise: float = Field(1.0, ge=0, description="amplitude of the noise in the urban potential")
    outcome_noise: float = Field(1.0, ge=0, description="multiplier of each outcome's noise sd")
    noise_length_tiles: float = Field(2.0, gt=0, description="correlation length of the outcome noise")
    illumination_noise: float = Field(1.0, ge=0, description="per-tile brightness, hue, haze and season level")
    pixel_noise: float = Field(6.0, ge=0, description="per-pixel sensor noise sd in DN")
    gravity: GravityConfig = GravityConfig()

    @field_validator("crs")
    @classmethod
    def _projected(cls, value: str) -> str:
        crs = CRS.from_user_input(value)
        if not crs.is_projected:
            raise ValueError(f"crs {value!r} is not a projected CRS; the city is laid out in metres")
        return crs.to_string()

    @property
    def n_tiles(self) -> int:
        return self.grid[0] * self.grid[1]


def river_city(**overrides) -> CityConfig:
    """A 32 x 32-tile river city near 60.2 N, 24.9 E (ETRS-TM35FIN), with the liveability task."""
    values = dict(
        name="river_city", seed=7, layout="river", task="liveability",
        crs="EPSG:3067", origin=(381_500.0, 6_677_500.0),
    )
    return CityConfig.model_validate(values | overrides)


def coastal_city(**overrides) -> CityConfig:
    """A 32 x 32-tile coastal city near 43.5 N, 16.4 E (UTM 33N), with the income task."""
    values = dict(
        name="coastal_city", seed=11, layout="coast", task="income",
        crs="EPSG:32633", origin=(615_200.0, 4_821_600.0),
    )
    return CityConfig.model_validate(values | overrides)


# ---------------------------------------------------------------------------
# Outcome models
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeModel:
    """``y = intercept + sum_k landcover[k] f_k + distance_km * d + water_proximity * p + noise_sd * z``.

    ``z`` is unit-variance, spatially smoothed noise; ``noise_sd`` is the sd
    the city was built with (the stated sd times ``CityConfig.outcome_noise``).
    """

    name: str
    units: str
    intercept: float
    landcover: dict[str, float]
    distance_km: float
    water_proximity: float
    noise_sd: float

    def terms(self) -> dict[str, float]:
        """Every weight by term name.

        Terms: ``intercept``, the class labels, ``distance_to_centre_km`` and ``water_proximity``.
        """
        return {"intercept": self.intercept, **self.landcover,
                "distance_to_centre_km": self.distance_km, "water_proximity": self.water_proximity}

    def predict(self, fractions: np.ndarray, distance_km: np.ndarray, water_proximity: np.ndarray) -> np.ndarray:
        """The noise-free outcome for fractions ``(n, K)`` and location terms ``(n,)``."""
        weights = np.array([self.landcover[name] for name in LANDCOVER_NAMES])
        return (self.intercept + np.asarray(fractions, np.float64) @ weights
                + self.distance_km * np.asarray(distance_km, np.float64)
                + self.water_proximity * np.asarray(water_proximity, np.float64))

    @classmethod
    def from_terms(cls, name: str, units: str, terms: dict[str, float], noise_sd: float) -> OutcomeModel:
        return cls(name, units, terms["intercept"], {k: terms[k] for k in LANDCOVER_NAMES},
                   terms["distance_to_centre_km"], terms["water_proximity"], noise_sd)


def _model(name, units, intercept, weights, distance_km, water_proximity, noise_sd) -> OutcomeModel:
    return OutcomeModel(name, units, intercept, dict(zip(LANDCOVER_NAMES, weights, strict=True)),
                        distance_km, water_proximity, noise_sd)


# Weights in class order: dense, medium, sparse residential, industrial,
# roads, green urban, forest, agriculture, water. Stated, not fitted: the
# signs follow the usual story (people live in residential fabric, pay for
# centrality and water, and like parks more than industry).
_OUTCOME_MODELS = {
    "population_density": _model("population_density", "thousand inhabitants per km2", 0.5,
                                 [14.0, 7.0, 2.5, 0.3, 0.5, 0.0, 0.0, 0.1, 0.0], -0.15, 0.0, 0.5),
    "land_price": _model("land_price", "thousand EUR per m2", 1.0,
                         [3.0, 2.0, 1.2, 0.8, 0.0, 0.5, 0.2, 0.1, 0.0], -0.35, 1.0, 0.3),
    "liveability": _model("liveability", "index points", 50.0,
                          [-2.0, 6.0, 8.0, -15.0, -10.0, 20.0, 12.0, 2.0, 5.0], -2.0, 8.0, 3.0),
    "income": _model("income", "thousand EUR per capita and year", 30.0,
                     [4.0, 8.0, 12.0, -6.0, -4.0, 6.0, 3.0, -2.0, 2.0], -1.0, 6.0, 2.0),
}


def outcome_models(task: Literal["liveability", "income"], outcome_noise: float = 1.0) -> dict[str, OutcomeModel]:
    """The outcome models of a city with this task: the task's outcome, population density, land price.

    ``outcome_noise`` (:attr:`CityConfig.outcome_noise`) scales each model's stated noise sd.
    """
    names = (task, "population_density", "land_price")
    return {name: replace(_OUTCOME_MODELS[name], noise_sd=_OUTCOME_MODELS[name].noise_sd * outcome_noise)
            for name in names}


def stored_outcome_models(ds: xr.Dataset) -> dict[str, OutcomeModel]:
    """The outcome models recorded in a city dataset's attributes."""
    weights = json.loads(ds.attrs["outcome_weights"])
    units = json.loads(ds.attrs["outcome_units"])
    noise = json.loads(ds.attrs["outcome_noise_sd"])
    return {name: OutcomeModel.from_terms(name, units[name], terms, noise[name]) for name, terms in weights.items()}


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma`` cells, rescaled to zero mean and unit variance."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    spread = field.std()
    # A single cell has no spread to rescale; it gets no noise.
    return (field - field.mean()) / spread if spread > 0 else np.zeros(shape)


def _bilinear(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``field`` on the product grid ``rows x cols`` (fractional indices).

    Separable: interpolate between lattice rows first, then between columns.
    """
    i0 = np.clip(np.floor(rows).astype(np.intp), 0, field.shape[0] - 2)
    j0 = np.clip(np.floor(cols).astype(np.intp), 0, field.shape[1] - 2)
    wi = np.clip(rows - i0, 0, 1)[:, None]
    wj = np.clip(cols - j0, 0, 1)[None, :]
    span = slice(j0[0], j0[-1] + 2)
    between_rows = field[i0, span] * (1 - wi) + field[i0 + 1, span] * wi
    j = j0 - j0[0]
    return between_rows[:, j] * (1 - wj) + between_rows[:, j + 1] * wj


class CityLayout:
    """The geometry of one city: centre, water, roads and noise fields.

    :meth:`landcover` evaluates any pixel window from these, pointwise, so
    windows can be generated in any order and always agree where they meet.
    Pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)`` pixels from the
    north-west corner; row ``i`` grows southwards.
    """

    # Urban-potential thresholds of dense, medium and sparse residential.
    _THRESHOLDS = (0.72, 0.45, 0.25)
    # Local street spacing (m) per built-up class; others get no local streets.
    _STREET_SPACING = {LandCover.DENSE_RESIDENTIAL: 80.0, LandCover.MEDIUM_RESIDENTIAL: 100.0,
                       LandCover.SPARSE_RESIDENTIAL: 130.0, LandCover.INDUSTRIAL_COMMERCIAL: 170.0}

    def __init__(self, config: CityConfig):
        rng = np.random.default_rng([config.seed, _SALT_LAYOUT])
        self.layout = config.layout
        self.res = config.resolution_m
        self.layout_noise = config.layout_noise
        self.height = config.grid[0] * config.tile_px
        self.width = config.grid[1] * config.tile_px
        radius = self.radius = 0.5 * min(self.height, self.width)
        self.centre = (self.height / 2 + rng.uniform(-0.06, 0.06) * self.height,
                       self.width / 2 + rng.uniform(-0.06, 0.06) * self.width)

        # Water: a river roughly west-east through the centre, or a shore
        # whose seaward side faces roughly south, in a frame rotated by
        # `water_angle`; meanders are two sines along that frame.
        if config.layout == "river":
            self.water_angle = rng.uniform(-0.5, 0.5)
            self.water_offset = rng.uniform(-0.15, 0.15) * radius
        else:
            self.water_angle = rng.uniform(-0.7, 0.7)
            self.water_offset = rng.uniform(0.28, 0.4) * radius
        self.meander = [(rng.uniform(0.08, 0.16) * radius, rng.uniform(1.6, 2.4) * radius, rng.uniform(0, 2 * np.pi)),
                        (rng.uniform(0.02, 0.05) * radius, rng.uniform(0.5, 0.8) * radius, rng.uniform(0, 2 * np.pi))]
        self.river_half_width = max(6.0, 0.022 * radius, 10.0 / self.res)

        # Roads: radial rays from the centre, two wobbly rings, a rotated local grid.
        n_radial = int(rng.integers(6, 9))
        self.radial_angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n_radial) / n_radial \
            + rng.uniform(-0.2, 0.2, n_radial)
        self.rings = [(f * radius * rng.uniform(0.95, 1.05), rng.uniform(0, 2 * np.pi)) for f in (0.3, 0.62)]
        self.road_half_width = max(1.5, 7.0 / self.res)
        self.grid_angle = rng.uniform(-0.35, 0.35)
        self.street_gap = np.zeros(_K, dtype=np.float32)  # px between local streets, per class
        for kind, metres in self._STREET_SPACING.items():
            self.street_gap[kind] = metres / self.res
        self.street_width = max(1.0, 8.0 / self.res)

        # Noise fields on a coarse lattice, interpolated to pixels on demand.
        self.step = max(2, int(radius // 40))
        shape = (self.height // self.step + 2, self.width // self.step + 2)
        scales = {"density": 0.18, "industrial": 0.10, "park": 0.06, "rural": 0.12, "front": 0.05}
        self.fields = {name: _smooth_noise(rng, shape, scale * radius / self.step).astype(np.float32)
                       for name, scale in scales.items()}

    def _water_frame(self, dy, dx):
        """Signed distance (px) to the river centre line or shoreline; positive to the south/seaward."""
        c, s = np.cos(self.water_angle), np.sin(self.water_angle)
        along = dx * c + dy * s
        across = -dx * s + dy * c
        curve = np.full_like(along, self.water_offset)
        slope = np.zeros_like(along)
        for amplitude, wavelength, phase in self.meander:
            k = 2 * np.pi / wavelength
            curve = curve + amplitude * np.sin(k * along + phase)
            slope = slope + amplitude * k * np.cos(k * along + phase)
        return (across - curve) / np.sqrt(1 + slope**2)

    def _major_roads(self, dy, dx, r):
        """Distance (px) to the nearest major road and the position along it (px), for dashes."""
        best = np.full(np.broadcast(dy, dx).shape, np.inf)
        along = np.zeros_like(best)
        for angle in self.radial_angles:
            t = dx * np.cos(angle) + dy * np.sin(angle)
            d = np.where(t > 0, np.abs(-dx * np.sin(angle) + dy * np.cos(angle)), r)
            closer = d < best
            best = np.where(closer, d, best)
            along = np.where(closer, t, along)
        psi = np.arctan2(dy, dx)
        for ring_radius, phase in self.rings:
            d = np.abs(r - ring_radius * (1 + 0.05 * np.sin(3 * psi + phase)))
            closer = d < best
            best = np.where(closer, d, best)
            along = np.where(closer, psi * ring_radius, along)
        return best, along

    def landcover(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """Land cover of pixel rows ``y0:y1`` and columns ``x0:x1``.

        Returns ``(classes, markings)``: uint8 :class:`LandCover` indices and
        a bool mask of the dashed centre lines of the major roads.
        """
        # float32 halves the work of the many full-window operations below.
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5
        noise = {name: _bilinear(f, ys / self.step, xs / self.step) for name, f in self.fields.items()}
        dy = (ys - self.centre[0])[:, None]
        dx = (xs - self.centre[1])[None, :]
        r = np.hypot(dx, dy)
        R = self.radius

        across = self._water_frame(dy, dx)
        if self.layout == "river":
            water = np.abs(across) < self.river_half_width
            to_water = np.abs(across) - self.river_half_width
        else:
            water = across > 0
            to_water = -across
        d_road, along = self._major_roads(dy, dx, r)

        potential = (np.exp(-((r / (0.62 * R)) ** 2)) + 0.2 * self.layout_noise * noise["density"]
                     + 0.15 * np.exp(-d_road / (0.05 * R)))
        rural = np.where(noise["rural"] > 0, LandCover.FOREST, LandCover.AGRICULTURE)
        cls = np.select([potential > t for t in self._THRESHOLDS],
                        [LandCover.DENSE_RESIDENTIAL, LandCover.MEDIUM_RESIDENTIAL, LandCover.SPARSE_RESIDENTIAL],
                        default=rural).astype(np.uint8)

        industrial = ((noise["industrial"] + 1.2 * np.exp(-np.maximum(to_water, 0) / (0.06 * R)) > 1.35)
                      & (r > 0.22 * R) & (potential > 0.15))
        cls[industrial] = LandCover.INDUSTRIAL_COMMERCIAL
        urban = potential > self._THRESHOLDS[2]
        park = (urban & (noise["park"] > 1.0)) | ((to_water < 0.04 * R) & (potential > 0.3) & (noise["front"] > 0))
        cls[park] = LandCover.GREEN_URBAN

        # Local streets: a rotated grid whose spacing depends on the class it crosses.
        gap = self.street_gap[cls]
        c, s = np.cos(self.grid_angle), np.sin(self.grid_angle)
        with np.errstate(invalid="ignore", divide="ignore"):  # classes without streets have gap 0
            on_grid = ((np.remainder(dx * c + dy * s, gap) < self.street_width)
                       | (np.remainder(-dx * s + dy * c, gap) < self.street_width))
        cls[(gap > 0) & on_grid] = LandCover.ROADS

        ponds = (((cls == LandCover.GREEN_URBAN) & (noise["park"] > 2.5))
                 | ((cls == LandCover.FOREST) & (noise["rural"] > 2.4)))
        cls[water | ponds] = LandCover.WATER
        # Major roads cross the river on bridges but stop at the sea.
        major = d_road < self.road_half_width
        if self.layout == "coast":
            major &= ~water
        cls[major] = LandCover.ROADS
        dashes = np.remainder(along * self.res, 12.0) < 6.0
        markings = major & (d_road < 0.5) & dashes
        return cls, markings

    def describe(self, config: CityConfig) -> dict:
        """The layout's geometry in map coordinates, for the dataset attributes."""
        east, north = _pixel_to_map(config, np.array([self.centre[0]]), np.array([self.centre[1]]))
        return {
            "centre_easting": float(east[0]),
            "centre_northing": float(north[0]),
            "radius_m": self.radius * self.res,
            "water": "river" if self.layout == "river" else "sea",
            # Direction (degrees clockwise from north) of the river's course, or towards the open sea.
            "water_bearing_deg": float(np.degrees(np.pi / 2 + self.water_angle) % 360) if self.layout == "river"
            else float(np.degrees(np.pi + self.water_angle) % 360),
            "radial_road_bearings_deg": [float(np.degrees(np.pi / 2 + a) % 360) for a in self.radial_angles],
            "ring_road_radii_m": [ring * self.res for ring, _ in self.rings],
        }


def _pixel_to_map(config: CityConfig, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(easting, northing) of fractional pixel positions (rows grow southwards)."""
    east0, north0 = config.origin
    return east0 + cols * config.resolution_m, north0 - rows * config.resolution_m


# ---------------------------------------------------------------------------
# POIs
# ---------------------------------------------------------------------------

# How likely a POI is to stand on each class, and which types it can be there.
_POI_WEIGHT = np.array([4.0, 3.0, 1.5, 3.0, 0.3, 1.0, 0.2, 0.3, 0.0])
POI_TYPES: dict[str, dict[str, float]] = {
    "dense_residential": {"bakery": 2, "cafe": 3, "restaurant": 2, "supermarket": 1.5, "pharmacy": 1,
                          "bookshop": 1, "clinic": 1, "school": 0.5},
    "medium_residential": {"school": 1.5, "kindergarten": 1.5, "bakery": 1, "supermarket": 1.5, "clinic": 1,
                           "pharmacy": 1, "cafe": 1},
    "sparse_residential": {"kindergarten": 1.5, "school": 1, "church": 1, "garden centre": 1, "bakery": 0.5},
    "industrial_commercial": {"factory": 3, "warehouse": 3, "car repair": 1.5, "office": 1.5, "retail park": 1},
    "roads": {"petrol station": 2, "bus stop": 2},
    "green_urban": {"park": 2, "playground": 1.5, "sports field": 1.5, "cafe": 0.5},
    "forest": {"trailhead": 1, "campsite": 0.5, "nature reserve": 1},
    "agriculture": {"farm": 3, "farm shop": 1, "riding stable": 1},
    "water": {},
}
_POI_PLACES = {
    "dense_residential": ("in a dense city-centre block", "on a busy street of apartment blocks"),
    "medium_residential": ("on a residential street", "among low-rise apartment buildings"),
    "sparse_residential": ("among detached houses with gardens", "on a quiet suburban street"),
    "industrial_commercial": ("in an industrial estate", "next to warehouses and depots"),
    "roads": ("by a main road", "at a busy junction"),
    "green_urban": ("in a city park", "beside a park lawn"),
    "forest": ("at the edge of a forest", "on a woodland trail"),
    "agriculture": ("among farm fields", "on a country road between fields"),
}
_NAME_STEMS = ("Linden", "Harbour", "Mill", "Oak", "Station", "Market", "Birch", "North", "Castle", "Meadow",
               "Elm", "Bridge", "Rose", "Old Town", "Maple", "Willow", "Hill", "Park", "Corner", "Lake",
               "Pine", "Chapel", "Quay", "Garden")
# A POI whose pixel is within this distance of water gets "by the water" in its text.
_NEAR_WATER_M = 60.0


def _sample_pois(rng: np.random.Generator, cls: np.ndarray, y0: int, x0: int, n: int, resolution_m: float):
    """Draw ``n`` POIs in a region window ``cls`` whose upper-left pixel is ``(y0, x0)``.

    A pixel is drawn with probability proportional to ``_POI_WEIGHT`` of its
    class, then the POI's type with the weights of :data:`POI_TYPES` for
    that class. Regions that are all water get none.
    """
    weights = _POI_WEIGHT[cls].ravel()
    if n == 0 or weights.sum() == 0:
        return []
    picks = rng.choice(weights.size, size=n, p=weights / weights.sum())
    wet = cls == LandCover.WATER
    to_water = ndimage.distance_transform_edt(~wet) * resolution_m if wet.any() else np.full(cls.shape, np.inf)
    rows, cols = np.divmod(picks, cls.shape[1])
    pois = []
    for row, col in zip(rows, cols, strict=True):
        label = LANDCOVER_NAMES[cls[row, col]]
        types = POI_TYPES[label]
        p = np.array(list(types.values()))
        kind = list(types)[rng.choice(len(types), p=p / p.sum())]
        place = _POI_PLACES[label][rng.integers(2)]
        near = " by the water" if to_water[row, col] < _NEAR_WATER_M else ""
        pois.append({
            "type": kind,
            "name": f"{_NAME_STEMS[rng.integers(len(_NAME_STEMS))]} {kind.title()}",
            "landcover": label,
            "description": f"{kind} {place}{near}",
            "row_px": int(y0 + row),
            "col_px": int(x0 + col),
        })
    return pois


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CityBuild:
    """What :func:`build_city` made: where, from what, with which outcome weights, and how fast."""

    path: Path
    config: CityConfig
    outcome_models: dict[str, OutcomeModel]
    n_tiles: int
    n_regions: int
    seconds: float


def _tiles_of(raster: np.ndarray, size: int) -> np.ndarray:
    """Cut a ``(h, w)`` raster into ``(h/size * w/size, size, size)`` tiles in row-major order."""
    h, w = raster.shape
    return raster.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)


def _fractions(tiles: np.ndarray) -> np.ndarray:
    """Land-cover fractions ``(n, K)`` of ``(n, s, s)`` class tiles.

    One comparison per class keeps the temporaries at a byte per pixel.
    """
    shares = [(tiles == c).mean(axis=(1, 2), dtype=np.float64) for c in range(_K)]
    return np.stack(shares, axis=1).astype(np.float32)


class _Geometry:
    """Tile and region bookkeeping of a config: ids, rows and columns, map coordinates.

    Tiles are numbered row-major: tile ``row * cols + col``.
    """

    def __init__(self, config: CityConfig):
        self.rows, self.cols = config.grid
        self.tp = config.tile_px
        self.rt = config.region_tiles
        self.region_rows = -(-self.rows // self.rt)
        self.region_cols = -(-self.cols // self.rt)
        self.n_regions = self.region_rows * self.region_cols
        self.tile_row, self.tile_col = np.divmod(np.arange(config.n_tiles), self.cols)
        self.tile_region = (self.tile_row // self.rt) * self.region_cols + self.tile_col // self.rt
        self.easting, self.northing = _pixel_to_map(config, (self.tile_row + 0.5) * self.tp,
                                                    (self.tile_col + 0.5) * self.tp)
        self.to_lonlat = Transformer.from_crs(config.crs, "EPSG:4326", always_xy=True)
        self.lon, self.lat = self.to_lonlat.transform(self.easting, self.northing)
        self.tile_km = self.tp * config.resolution_m / 1000

    def tile_rows_of(self, region_row: int) -> tuple[int, int]:
        """The first and one-past-last tile row of a row of regions."""
        return region_row * self.rt, min(self.rows, (region_row + 1) * self.rt)

    def tile_cols_of(self, region_col: int) -> tuple[int, int]:
        return region_col * self.rt, min(self.cols, (region_col + 1) * self.rt)


def _with_crs(ds: xr.Dataset, crs: str) -> xr.Dataset:
    """Record the CRS the rioxarray way (a ``spatial_ref`` coordinate) and as a plain ``crs`` attribute."""
    ds = ds.rio.write_crs(crs)
    ds.attrs["crs"] = crs
    return ds


def _tiles_template(config: CityConfig, geo: _Geometry, layout_info: dict, models, distance_km) -> xr.Dataset:
    """The small part of ``tiles.nc``: coordinates, CRS, attributes; big variables are appended later."""
    ds = xr.Dataset(
        {"distance_to_centre_km": ("tile", distance_km.astype(np.float32),
                                   {"long_name": "distance from the tile centre to the city centre",
                                    "units": "km"})},
        coords={
            "tile": ("tile", np.arange(config.n_tiles, dtype=np.int32)),
            "band": ("band", list(AERIAL_BANDS)),
            "y": ("y", np.arange(geo.tp, dtype=np.int16), {"long_name": "pixel row within the tile"}),
            "x": ("x", np.arange(geo.tp, dtype=np.int16), {"long_name": "pixel column within the tile"}),
            "landcover_class": ("landcover_class", list(LANDCOVER_NAMES)),
            "row": ("tile", geo.tile_row.astype(np.int32)),
            "col": ("tile", geo.tile_col.astype(np.int32)),
            "region": ("tile", geo.tile_region.astype(np.int32)),
            "easting": ("tile", geo.easting, {"long_name": "tile centre easting", "units": "m"}),
            "northing": ("tile", geo.northing, {"long_name": "tile centre northing", "units": "m"}),
            "lon": ("tile", np.asarray(geo.lon), {"units": "degrees_east"}),
            "lat": ("tile", np.asarray(geo.lat), {"units": "degrees_north"}),
        },
        attrs={
            "title": f"synthetic city {config.name}",
            "city": config.name,
            "layout": config.layout,
            "task": config.task,
            "resolution_m": config.resolution_m,
            "tile_px": config.tile_px,
            "origin_easting": config.origin[0],
            "origin_northing": config.origin[1],
            "config": config.model_dump_json(),
            "layout_geometry": json.dumps(layout_info),
            "landcover_classes": json.dumps(LANDCOVER_NAMES),
            "urban_atlas_codes": json.dumps({c.label: code for c, code in URBAN_ATLAS_CODES.items()}),
            "outcomes": json.dumps(list(models)),
            "outcome_formula": "y = intercept + sum_k w_k * fraction_k + w_dist * distance_to_centre_km "
                               "+ w_water * water_proximity + noise_sd * z, "
                               "z = unit-variance Gaussian-smoothed noise on the tile grid",
            "outcome_weights": json.dumps({name: m.terms() for name, m in models.items()}),
            "outcome_units": json.dumps({name: m.units for name, m in models.items()}),
            "outcome_noise_sd": json.dumps({name: m.noise_sd for name, m in models.items()}),
            "water_proximity_formula": "exp(-d / 0.3 km), d = distance to the nearest tile centre "
                                       "with >= 2% water",
        },
    )
    return _with_crs(ds, config.crs)


def _views_template(config: CityConfig, geo: _Geometry) -> xr.Dataset:
    """The small part of ``street_views.nc``: coordinates, CRS, attributes."""
    region = np.arange(geo.n_regions)
    ds = xr.Dataset(coords={
        "region": ("region", region.astype(np.int32)),
        "view": ("view", np.arange(config.views_per_region, dtype=np.int32)),
        "band": ("band", list(STREET_BANDS)),
        "y": ("y", np.arange(config.view_px, dtype=np.int16)),
        "x": ("x", np.arange(config.view_px, dtype=np.int16)),
        "landcover_class": ("landcover_class", list(LANDCOVER_NAMES)),
        "region_row": ("region", (region // geo.region_cols).astype(np.int32)),
        "region_col": ("region", (region % geo.region_cols).astype(np.int32)),
    }, attrs={"title": f"street-level views of synthetic city {config.name}", "config": config.model_dump_json()})
    return _with_crs(ds, config.crs)


# Class colours for the GeoTIFF's colour table, so GIS viewers show a map.
LANDCOVER_COLOURS = {
    LandCover.DENSE_RESIDENTIAL: (150, 30, 30), LandCover.MEDIUM_RESIDENTIAL: (220, 80, 60),
    LandCover.SPARSE_RESIDENTIAL: (245, 170, 130), LandCover.INDUSTRIAL_COMMERCIAL: (160, 110, 200),
    LandCover.ROADS: (120, 120, 120), LandCover.GREEN_URBAN: (140, 220, 100),
    LandCover.FOREST: (30, 110, 40), LandCover.AGRICULTURE: (240, 225, 120), LandCover.WATER: (60, 120, 220),
}


@dataclass
class _Region:
    """What one region renders to, held until it is written."""

    index: int
    tile_rows: tuple[int, int]  # first and one-past-last tile row
    tile_cols: tuple[int, int]
    classes: np.ndarray  # (pixel rows, pixel columns) land cover
    images: np.ndarray  # (tiles, 4, tp, tp), row-major within the region
    views: np.ndarray  # (views, 3, vp, vp)
    view_meta: np.ndarray  # (views, 3 + K): pixel row, pixel column, heading, land-cover mix
    pois: list[dict]

    def tile_ids(self, cols: int) -> np.ndarray:
        """Ids of the region's tiles, in the order of ``images``."""
        rows = np.arange(*self.tile_rows)[:, None]
        return (rows * cols + np.arange(*self.tile_cols)[None, :]).ravel()


class _CityFiles:
    """The streamed outputs of a build, open for writing: ``tiles.nc``, ``street_views.nc``, ``landcover.tif``.

    The NetCDF files start as templates written by xarray (coordinates, CRS,
    attributes). h5netcdf then declares every remaining variable at full
    size, with its netCDF dimensions and attributes, and the data go in
    through h5py -- a netCDF-4 file is an HDF5 file, and h5py's writes cost
    a fraction of h5netcdf's per call. Region by region, tiles are written
    one slice per tile row of the region, the GeoTIFF one window per region.
    """

    def __init__(self, out: Path, config: CityConfig, geo: _Geometry, models: dict[str, OutcomeModel],
                 height: int, width: int):
        self.config, self.geo = config, geo
        self._declare(out, config, geo, models)
        self._stack = contextlib.ExitStack()
        self.tiles = self._stack.enter_context(h5py.File(out / "tiles.nc", "a"))
        self.views = self._stack.enter_context(h5py.File(out / "street_views.nc", "a"))
        transform = Affine(config.resolution_m, 0.0, config.origin[0], 0.0, -config.resolution_m, config.origin[1])
        # One GeoTIFF block per tile, so each region's window covers whole blocks.
        self.tif = self._stack.enter_context(rasterio.open(
            out / "landcover.tif", "w", driver="GTiff", height=height, width=width, count=1, dtype="uint8",
            crs=config.crs, transform=transform, compress="deflate", tiled=True, blockxsize=geo.tp,
            blockysize=geo.tp))
        self.tif.write_colormap(1, {int(c): (*rgb, 255) for c, rgb in LANDCOVER_COLOURS.items()})
        self.tif.update_tags(1, **{str(int(c)): c.label for c in LandCover})
        # CF-style class table, read by lib.data.osm_maps to draw the city as a map
        self.tif.update_tags(
            flag_values=" ".join(str(int(c)) for c in LandCover), flag_meanings=" ".join(c.label for c in LandCover)
        )

    @staticmethod
    def _declare(out: Path, config: CityConfig, geo: _Geometry, models: dict[str, OutcomeModel]) -> None:
        """Create the big and the late variables, empty, with their dimensions and attributes."""
        tp, vp, n_views = geo.tp, config.view_px, config.views_per_region

        def variable(f, name, dims, dtype, attrs, chunks=None, compress=False):
            # Only what compresses well is compressed: noisy images barely
            # shrink, and gzip would cost more time than rendering them.
            options = {"compression": "gzip", "compression_opts": 1} if compress else {}
            f.create_variable(name, dims, dtype=dtype, chunks=chunks, **options).attrs.update(
                {"grid_mapping": "spatial_ref", **attrs})

        with h5netcdf.File(out / "tiles.nc", "a") as f:
            variable(f, "image", ("tile", "band", "y", "x"), "u1", {"long_name": "aerial image (R, G, B, NIR)"},
                     chunks=(1, 4, tp, tp))
            variable(f, "landcover", ("tile", "y", "x"), "u1",
                     {"long_name": "land-cover class", "flag_values": np.arange(_K, dtype=np.uint8),
                      "flag_meanings": " ".join(LANDCOVER_NAMES)}, chunks=(1, tp, tp), compress=True)
            variable(f, "fractions", ("tile", "landcover_class"), "f4",
                     {"long_name": "land-cover fractions (concept ground truth)"})
            variable(f, "water_proximity", ("tile",), "f4",
                     {"long_name": "proximity to water", "formula": "exp(-d / 0.3 km)"})
            for name, model in models.items():
                attrs = {"units": model.units, "weights": json.dumps(model.terms())}
                variable(f, name, ("tile",), "f4", attrs | {"long_name": name.replace("_", " ")})
                variable(f, f"{name}_noise_free", ("tile",), "f4", attrs | {"long_name": f"{name} without noise"})
        with h5netcdf.File(out / "street_views.nc", "a") as f:
            per_view = ("region", "view")
            variable(f, "image", (*per_view, "band", "y", "x"), "u1", {"long_name": "street-level view (R, G, B)"},
                     chunks=(1, n_views, 3, vp, vp) if n_views else None)
            variable(f, "view_easting", per_view, "f8", {"units": "m"})
            variable(f, "view_northing", per_view, "f8", {"units": "m"})
            variable(f, "view_heading_deg", per_view, "f4",
                     {"long_name": "viewing direction clockwise from north", "units": "degree"})
            variable(f, "view_fractions", (*per_view, "landcover_class"), "f4",
                     {"long_name": "land-cover fractions within 64 m of the viewpoint"})

    def write_region(self, region: _Region) -> None:
        """Write a region's tiles (one slice per tile row), its land-cover window and its views."""
        tp, cols = self.geo.tp, self.geo.cols
        (r0, r1), (c0, c1) = region.tile_rows, region.tile_cols
        width = c1 - c0
        classes = _tiles_of(region.classes, tp)
        for i, tile_row in enumerate(range(r0, r1)):
            first = tile_row * cols + c0
            self.tiles["image"][first:first + width] = region.images[i * width:(i + 1) * width]
            self.tiles["landcover"][first:first + width] = classes[i * width:(i + 1) * width]
        self.tif.write(region.classes, 1, window=Window(c0 * tp, r0 * tp, width * tp, (r1 - r0) * tp))
        if len(region.views):
            g = region.index
            east, north = _pixel_to_map(self.config, region.view_meta[:, 0], region.view_meta[:, 1])
            self.views["image"][g] = region.views
            self.views["view_easting"][g] = east
            self.views["view_northing"][g] = north
            self.views["view_heading_deg"][g] = region.view_meta[:, 2]
            self.views["view_fractions"][g] = region.view_meta[:, 3:]

    def write_tile_variable(self, name: str, values: np.ndarray) -> None:
        """Fill one of the per-tile variables declared up front."""
        self.tiles[name][...] = values

    def __enter__(self) -> _CityFiles:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def _render_region(config: CityConfig, layout: CityLayout, geo: _Geometry, index: int) -> _Region:
    """Land cover, aerial tiles, POIs and street views of one region."""
    tp = geo.tp
    region_row, region_col = divmod(index, geo.region_cols)
    (r0, r1), (c0, c1) = geo.tile_rows_of(region_row), geo.tile_cols_of(region_col)
    y0, x0 = r0 * tp, c0 * tp
    classes, markings = layout.landcover(y0, r1 * tp, x0, c1 * tp)
    tile_rows, tile_cols = np.divmod(np.arange((r1 - r0) * (c1 - c0)), c1 - c0)
    tile_rows += r0
    tile_cols += c0
    images = aerial.render_aerial(
        _tiles_of(classes, tp), _tiles_of(markings, tp), row0=tile_rows * tp, col0=tile_cols * tp,
        tile_ids=tile_rows * geo.cols + tile_cols, resolution_m=config.resolution_m, seed=config.seed,
        illumination_noise=config.illumination_noise, pixel_noise=config.pixel_noise)

    poi_rng = np.random.default_rng([config.seed, _SALT_POI, index])
    pois = [{"region": index, **poi}
            for poi in _sample_pois(poi_rng, classes, y0, x0, config.pois_per_region, config.resolution_m)]
    view_rng = np.random.default_rng([config.seed, _SALT_VIEW, index])
    views, view_meta = _street_views(config, view_rng, classes, y0, x0)
    return _Region(index, (r0, r1), (c0, c1), classes, images, views, view_meta, pois)


def _street_views(config: CityConfig, rng: np.random.Generator, classes: np.ndarray, y0: int, x0: int):
    """Render a region's street views from viewpoints on its roads (any land pixel if it has none).

    Returns the views and, per view, ``(row_px, col_px, heading, fractions...)``.
    """
    n, vp = config.views_per_region, config.view_px
    if n == 0:
        return np.zeros((0, 3, vp, vp), np.uint8), np.zeros((0, 3 + _K))
    on_road = np.flatnonzero(classes == LandCover.ROADS)
    land = np.flatnonzero(classes != LandCover.WATER)
    candidates = on_road if on_road.size else land if land.size else np.arange(classes.size)
    picks = rng.choice(candidates, size=n)
    rows, cols = np.divmod(picks, classes.shape[1])
    reach = max(1, int(round(64.0 / config.resolution_m)))
    mix = np.empty((len(picks), _K))
    for v, (row, col) in enumerate(zip(rows, cols, strict=True)):
        around = classes[max(0, row - reach):row + reach + 1, max(0, col - reach):col + reach + 1]
        mix[v] = np.bincount(around.ravel(), minlength=_K) / around.size
    images = aerial.render_street_views(mix, rng, size=vp, illumination_noise=config.illumination_noise,
                                        pixel_noise=config.pixel_noise)
    meta = np.column_stack([y0 + rows + 0.5, x0 + cols + 0.5, rng.uniform(0, 360, len(picks)), mix])
    return images, meta


def _water_proximity(water_fraction: np.ndarray, tile_km: float) -> np.ndarray:
    """``exp(-d / 0.3 km)`` with ``d`` the distance to the nearest tile holding at least 2 % water."""
    wet = water_fraction >= 0.02
    if not wet.any():
        return np.zeros(water_fraction.size, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~wet) * tile_km
    return np.exp(-distance / 0.3).ravel().astype(np.float32)


def _outcomes(config: CityConfig, geo: _Geometry, models: dict[str, OutcomeModel], fractions, distance_km,
              water_proximity) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (noise_free, noisy)}`` per outcome model (see the module docstring)."""
    result = {}
    for index, (name, model) in enumerate(models.items()):
        noise_free = model.predict(fractions, distance_km, water_proximity)
        rng = np.random.default_rng([config.seed, _SALT_OUTCOME, index])
        z = _smooth_noise(rng, (geo.rows, geo.cols), config.noise_length_tiles).ravel()
        result[name] = noise_free, noise_free + model.noise_sd * z
    return result


# Jobs per km2 (thousands) of each class, for the attractiveness of regions.
_JOB_DENSITY = np.array([8.0, 3.0, 0.8, 12.0, 0.5, 0.3, 0.05, 0.1, 0.0])
_JOBS_PER_POI = 20.0


def _regions_table(config, geo: _Geometry, fractions, outcomes, pois) -> pd.DataFrame:
    """One row per region: position, land-cover mix, population, jobs, mean outcomes, POI count.

    ``population = max(population_density, 0) * 1000 * area`` summed over the
    region's tiles, ``jobs = sum_k JOB_DENSITY_k * fraction_k * 1000 * area``
    plus 20 per POI.
    """
    area = geo.tile_km**2
    frame = pd.DataFrame(fractions, columns=[f"fraction_{n}" for n in LANDCOVER_NAMES])
    frame["region"] = geo.tile_region
    frame["n_tiles"] = 1
    frame["population"] = np.maximum(outcomes["population_density"], 0) * 1000 * area
    frame["jobs"] = fractions @ _JOB_DENSITY * 1000 * area
    for name, values in outcomes.items():
        frame[f"mean_{name}"] = values
    frame["easting"], frame["northing"] = geo.easting, geo.northing
    sums = ["n_tiles", "population", "jobs"]
    table = frame.groupby("region").agg({c: ("sum" if c in sums else "mean") for c in frame if c != "region"})
    table = table.reset_index()
    table["n_pois"] = np.bincount(np.array([p["region"] for p in pois], dtype=np.intp), minlength=geo.n_regions)
    table["jobs"] += _JOBS_PER_POI * table["n_pois"]
    table["region_row"], table["region_col"] = np.divmod(table["region"].to_numpy(), geo.region_cols)
    mix = table[[f"fraction_{n}" for n in LANDCOVER_NAMES]].to_numpy()
    table["dominant_landcover"] = np.array(LANDCOVER_NAMES)[mix.argmax(axis=1)]
    table["lon"], table["lat"] = geo.to_lonlat.transform(table["easting"].to_numpy(), table["northing"].to_numpy())
    # Bounding boxes in map coordinates (the last row and column of regions may be cut short).
    side = geo.rt * geo.tp * config.resolution_m
    east0, north0 = config.origin
    table["min_easting"] = east0 + table["region_col"] * side
    table["max_northing"] = north0 - table["region_row"] * side
    table["max_easting"] = np.minimum(table["min_easting"] + side, east0 + geo.cols * geo.tp * config.resolution_m)
    table["min_northing"] = np.maximum(table["max_northing"] - side, north0 - geo.rows * geo.tp * config.resolution_m)
    first = ["region", "region_row", "region_col", "n_tiles", "easting", "northing", "lon", "lat",
             "min_easting", "min_northing", "max_easting", "max_northing", "population", "jobs", "n_pois",
             "dominant_landcover"]
    return table[first + [c for c in table if c not in first]]


def _pois_table(config, geo: _Geometry, pois: list[dict]) -> pd.DataFrame:
    columns = ["poi", "region", "tile", "type", "name", "landcover", "description", "easting", "northing",
               "lon", "lat"]
    if not pois:
        text = ("type", "name", "landcover", "description")
        return pd.DataFrame({c: pd.Series(dtype=object if c in text else float) for c in columns})
    table = pd.DataFrame(pois)
    table["poi"] = np.arange(len(table))
    table["tile"] = (table["row_px"] // geo.tp) * geo.cols + table["col_px"] // geo.tp
    table["easting"], table["northing"] = _pixel_to_map(config, table["row_px"] + 0.5, table["col_px"] + 0.5)
    table["lon"], table["lat"] = geo.to_lonlat.transform(table["easting"].to_numpy(), table["northing"].to_numpy())
    return table[columns]


def _flows_table(config: CityConfig, regions: pd.DataFrame) -> pd.DataFrame:
    """Poisson-sampled gravity-model flows between distinct regions (see the module docstring)."""
    g = config.gravity
    pop = regions["population"].to_numpy()
    jobs = regions["jobs"].to_numpy()
    east = regions["easting"].to_numpy() / 1000
    north = regions["northing"].to_numpy() / 1000
    origin, destination = np.nonzero(~np.eye(len(pop), dtype=bool))
    distance = np.hypot(east[origin] - east[destination], north[origin] - north[destination])
    affinity = pop[origin] ** g.alpha * jobs[destination] ** g.beta / np.maximum(distance, g.min_distance_km) ** g.gamma
    total = affinity.sum()
    expected = affinity * (g.trips_per_capita * pop.sum() / total) if total > 0 else affinity
    return pd.DataFrame({
        "origin": origin.astype(np.int32),
        "destination": destination.astype(np.int32),
        "distance_km": distance,
        "expected": expected,
        "flow": np.random.default_rng([config.seed, _SALT_FLOW]).poisson(expected).astype(np.int64),
    })


def _write_city(config: CityConfig, out: Path, progress: Callable[[int, int], None] | None) -> None:
    """Generate the city into the (empty) directory ``out``, streaming one region at a time."""
    layout = CityLayout(config)
    geo = _Geometry(config)
    models = outcome_models(config.task, config.outcome_noise)
    info = layout.describe(config)
    distance_km = np.hypot(geo.easting - info["centre_easting"], geo.northing - info["centre_northing"]) / 1000

    _tiles_template(config, geo, info, models, distance_km).to_netcdf(out / "tiles.nc", engine="h5netcdf")
    _views_template(config, geo).to_netcdf(out / "street_views.nc", engine="h5netcdf")
    fractions = np.empty((config.n_tiles, _K), dtype=np.float32)
    pois: list[dict] = []
    with _CityFiles(out, config, geo, models, layout.height, layout.width) as files:
        for index in range(geo.n_regions):
            region = _render_region(config, layout, geo, index)
            files.write_region(region)
            fractions[region.tile_ids(geo.cols)] = _fractions(_tiles_of(region.classes, geo.tp))
            pois.extend(region.pois)
            if progress is not None:
                progress(index + 1, geo.n_regions)

        water_proximity = _water_proximity(fractions[:, LandCover.WATER].reshape(geo.rows, geo.cols), geo.tile_km)
        outcomes = _outcomes(config, geo, models, fractions, distance_km, water_proximity)
        files.write_tile_variable("fractions", fractions)
        files.write_tile_variable("water_proximity", water_proximity)
        for name, (noise_free, noisy) in outcomes.items():
            files.write_tile_variable(name, noisy)
            files.write_tile_variable(f"{name}_noise_free", noise_free)

    regions = _regions_table(config, geo, fractions, {name: noisy for name, (_, noisy) in outcomes.items()}, pois)
    regions.to_parquet(out / "regions.parquet", index=False)
    _pois_table(config, geo, pois).to_parquet(out / "pois.parquet", index=False)
    _flows_table(config, regions).to_parquet(out / "flows.parquet", index=False)
    (out / "city.json").write_text(json.dumps({
        "config": config.model_dump(mode="json"),
        "outcome_models": {name: {"units": m.units, "noise_sd": m.noise_sd, "weights": m.terms()}
                           for name, m in models.items()},
        "layout": info,
    }, indent=2) + "\n")


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
    was killed are removed by the next one. Tile images, land cover and street
    views are rendered and written one region at a time; only per-tile and
    per-region tables (fractions, outcomes, POIs) stay in memory.

    ``progress``, if given, is called as ``progress(regions_done, regions_total)``
    after each region is written, e.g. to drive a progress bar.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write_city(config, work, progress)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CityBuild(out_dir, config, outcome_models(config.task, config.outcome_noise), config.n_tiles,
                     _Geometry(config).n_regions, time.perf_counter() - start)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_city(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a built city's ``tiles.nc`` lazily (``path``: the city directory or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tiles.nc"
    return xr.open_dataset(path, engine="h5netcdf", decode_coords="all")


def load_street_views(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a built city's ``street_views.nc`` lazily."""
    return xr.open_dataset(Path(path) / "street_views.nc", engine="h5netcdf", decode_coords="all")


def load_tables(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The city's ``regions``, ``pois`` and ``flows`` tables."""
    return {name: pd.read_parquet(Path(path) / f"{name}.parquet") for name in ("regions", "pois", "flows")}


class CityTiles(Dataset):
    """Aerial tiles of a built city as ``(image, outcome, fractions)`` tensors.

    ``image`` is float ``(4, H, W)`` in [0, 1] (R, G, B, NIR), ``outcome`` a
    float scalar of the chosen outcome (``noise_free=True``: its noise-free
    part) and ``fractions`` the ``(K,)`` land-cover fractions. Targets and
    fractions are read at construction; images are read per item from a
    file handle that each process (e.g. each DataLoader worker) opens anew.
    """

    def __init__(self, path: str | os.PathLike[str], outcome: str, tiles=None, noise_free: bool = False):
        self.path = Path(path)
        with load_city(self.path) as ds:
            variable = f"{outcome}_noise_free" if noise_free else outcome
            if variable not in ds:
                raise KeyError(f"{self.path} has no outcome {variable!r}; it has {json.loads(ds.attrs['outcomes'])}")
            self.tiles = np.arange(ds.sizes["tile"]) if tiles is None else np.asarray(tiles)
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
