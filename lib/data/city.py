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

    y_t = intercept + sum_k w_k f_tk + w_dist d_t + w_water p_t + sigma * outcome_noise * z_t

where ``z`` is white noise on the tile grid smoothed by a Gaussian of
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
destination, one row of regions at a time, and renames it into place only
when complete: ``tiles.nc``, ``landcover.tif``, ``street_views.nc``,
``regions.parquet``, ``pois.parquet``, ``flows.parquet`` and ``city.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5netcdf
import numpy as np
import pandas as pd
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from pyproj import CRS, Transformer
from rasterio.windows import Window
from scipy import ndimage
from torch.utils.data import Dataset

from lib.data import aerial
from lib.data.aerial import AERIAL_BANDS, STREET_BANDS, URBAN_ATLAS_CODES, LandCover

__all__ = [
    "AERIAL_BANDS",
    "CityBuild",
    "CityConfig",
    "CityLayout",
    "CityTiles",
    "GravityConfig",
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


class GravityConfig(BaseModel):
    """Parameters of the gravity model of flows between regions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, ge=0, description="exponent of the origin's population")
    beta: float = Field(1.0, ge=0, description="exponent of the destination's jobs")
    gamma: float = Field(2.0, ge=0, description="distance-decay exponent")
    trips_per_capita: float = Field(0.3, gt=0, description="expected trips between regions per inhabitant")
    min_distance_km: float = Field(0.25, gt=0, description="distances are clipped below this")


class CityConfig(BaseModel):
    """Everything that determines a synthetic city; unknown keys are errors.

    Sizes: the city is ``grid[0] x grid[1]`` tiles of ``tile_px`` pixels at
    ``resolution_m`` metres per pixel; ``origin`` is the (easting, northing)
    of its north-west corner in ``crs``, which must be projected (metres).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    seed: int = Field(0, ge=0)
    layout: Literal["river", "coast"]
    task: Literal["liveability", "income"]
    crs: str
    origin: tuple[float, float]
    resolution_m: float = Field(2.0, gt=0)
    tile_px: int = Field(64, ge=8, le=1024)
    grid: tuple[PositiveInt, PositiveInt] = (32, 32)
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
    """``y = intercept + sum_k landcover[k] f_k + distance_km * d + water_proximity * p + noise_sd * z``."""

    name: str
    units: str
    intercept: float
    landcover: dict[str, float]
    distance_km: float
    water_proximity: float
    noise_sd: float

    def terms(self) -> dict[str, float]:
        """Every weight by term name: ``intercept``, the class labels, ``distance_to_centre_km``, ``water_proximity``."""
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


def outcome_models(task: Literal["liveability", "income"]) -> dict[str, OutcomeModel]:
    """The outcome models of a city with this task: the task's outcome, population density, land price."""
    return {name: _OUTCOME_MODELS[name] for name in (task, "population_density", "land_price")}


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
    return (field - field.mean()) / field.std()


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
        spacing = np.zeros(_K)
        for kind, metres in self._STREET_SPACING.items():
            spacing[kind] = metres / self.res
        gap = spacing[cls]
        c, s = np.cos(self.grid_angle), np.sin(self.grid_angle)
        width = max(1.0, 8.0 / self.res)
        with np.errstate(invalid="ignore", divide="ignore"):
            street = (gap > 0) & ((np.remainder(dx * c + dy * s, gap) < width) | (np.remainder(-dx * s + dy * c, gap) < width))
        cls[street] = LandCover.ROADS

        ponds = ((cls == LandCover.GREEN_URBAN) & (noise["park"] > 2.5)) | ((cls == LandCover.FOREST) & (noise["rural"] > 2.4))
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
    return np.stack([(tiles == c).mean(axis=(1, 2), dtype=np.float64) for c in range(_K)], axis=1).astype(np.float32)


class _Geometry:
    """Tile and region bookkeeping of a config: ids, rows and columns, map coordinates."""

    def __init__(self, config: CityConfig):
        self.config = config
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


def _tiles_template(config: CityConfig, geo: _Geometry, layout_info: dict, models, distance_km) -> xr.Dataset:
    """The small part of ``tiles.nc``: coordinates, CRS, attributes; big variables are appended later."""
    ds = xr.Dataset(
        {"distance_to_centre_km": ("tile", distance_km.astype(np.float32),
                                   {"long_name": "distance from the tile centre to the city centre", "units": "km"})},
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
                               "+ w_water * water_proximity + noise_sd * outcome_noise * z, "
                               "z = unit-variance Gaussian-smoothed noise on the tile grid",
            "outcome_weights": json.dumps({name: m.terms() for name, m in models.items()}),
            "outcome_units": json.dumps({name: m.units for name, m in models.items()}),
            "outcome_noise_sd": json.dumps({name: m.noise_sd * config.outcome_noise for name, m in models.items()}),
            "water_proximity_formula": "exp(-d / 0.3 km), d = distance to the nearest tile centre with >= 2% water",
        },
    )
    return _with_crs(ds, config.crs)


def _with_crs(ds: xr.Dataset, crs: str) -> xr.Dataset:
    """Record the CRS the rioxarray way (a ``spatial_ref`` coordinate) and as a plain ``crs`` attribute."""
    ds = ds.rio.write_crs(crs)
    ds.attrs["crs"] = crs
    return ds


def _views_template(config: CityConfig, geo: _Geometry) -> xr.Dataset:
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


def _variable(f: h5netcdf.File, name: str, dims: tuple[str, ...], dtype, attrs: dict, chunks=None, compress=False):
    """Create a variable in an open file, tied to the CRS.

    Only what compresses well is compressed: noisy images barely shrink, and
    gzip would cost more time than the rest of the build.
    """
    options = {"chunks": chunks, "compression": "gzip", "compression_opts": 1} if compress else {"chunks": chunks}
    var = f.create_variable(name, dims, dtype=dtype, **options)
    var.attrs.update({"grid_mapping": "spatial_ref", **attrs})
    return var


def _landcover_profile(config: CityConfig, height: int, width: int) -> dict:
    profile = dict(driver="GTiff", height=height, width=width, count=1, dtype="uint8", crs=config.crs,
                   transform=Affine(config.resolution_m, 0.0, config.origin[0], 0.0, -config.resolution_m, config.origin[1]),
                   compress="deflate")
    if config.tile_px % 16 == 0:
        profile.update(tiled=True, blockxsize=config.tile_px, blockysize=config.tile_px)
    return profile


# Class colours for the GeoTIFF's colour table, so GIS viewers show a map.
_MAP_COLOURS = {
    LandCover.DENSE_RESIDENTIAL: (150, 30, 30), LandCover.MEDIUM_RESIDENTIAL: (220, 80, 60),
    LandCover.SPARSE_RESIDENTIAL: (245, 170, 130), LandCover.INDUSTRIAL_COMMERCIAL: (160, 110, 200),
    LandCover.ROADS: (120, 120, 120), LandCover.GREEN_URBAN: (140, 220, 100),
    LandCover.FOREST: (30, 110, 40), LandCover.AGRICULTURE: (240, 225, 120), LandCover.WATER: (60, 120, 220),
}


def _write_city(config: CityConfig, out: Path) -> None:
    """Generate the city into the (empty) directory ``out``, streaming one row of regions at a time."""
    layout = CityLayout(config)
    geo = _Geometry(config)
    models = outcome_models(config.task)
    info = layout.describe(config)
    distance_km = np.hypot(geo.easting - info["centre_easting"], geo.northing - info["centre_northing"]) / 1000
    tp, cols = geo.tp, geo.cols
    n_views = config.views_per_region

    _tiles_template(config, geo, info, models, distance_km).to_netcdf(out / "tiles.nc", engine="h5netcdf")
    _views_template(config, geo).to_netcdf(out / "street_views.nc", engine="h5netcdf")
    fractions = np.empty((config.n_tiles, _K), dtype=np.float32)
    pois: list[dict] = []

    with h5netcdf.File(out / "tiles.nc", "a") as tiles, h5netcdf.File(out / "street_views.nc", "a") as views, \
            rasterio.open(out / "landcover.tif", "w", **_landcover_profile(config, layout.height, layout.width)) as tif:
        tif.write_colormap(1, {int(c): (*rgb, 255) for c, rgb in _MAP_COLOURS.items()})
        tif.update_tags(1, **{str(int(c)): c.label for c in LandCover})
        image_var = _variable(tiles, "image", ("tile", "band", "y", "x"), "u1",
                              {"long_name": "aerial image (R, G, B, NIR)"}, chunks=(1, 4, tp, tp))
        lc_var = _variable(tiles, "landcover", ("tile", "y", "x"), "u1",
                           {"long_name": "land-cover class", "flag_values": np.arange(_K, dtype=np.uint8),
                            "flag_meanings": " ".join(LANDCOVER_NAMES)}, chunks=(1, tp, tp), compress=True)
        view_image = _variable(views, "image", ("region", "view", "band", "y", "x"), "u1",
                               {"long_name": "street-level view (R, G, B)"},
                               chunks=(1, n_views, 3, config.view_px, config.view_px) if n_views else None)
        view_east = _variable(views, "view_easting", ("region", "view"), "f8", {"units": "m"})
        view_north = _variable(views, "view_northing", ("region", "view"), "f8", {"units": "m"})
        view_heading = _variable(views, "view_heading_deg", ("region", "view"), "f4",
                                 {"long_name": "viewing direction clockwise from north", "units": "degree"})
        view_mix = _variable(views, "view_fractions", ("region", "view", "landcover_class"), "f4",
                             {"long_name": "land-cover fractions within 64 m of the viewpoint"})

        for region_row in range(geo.region_rows):
            r0, r1 = region_row * geo.rt, min(geo.rows, (region_row + 1) * geo.rt)
            y0, y1 = r0 * tp, r1 * tp
            band_classes = np.empty((y1 - y0, layout.width), dtype=np.uint8)
            band_images = np.empty(((r1 - r0) * cols, 4, tp, tp), dtype=np.uint8)
            band_regions = range(region_row * geo.region_cols, (region_row + 1) * geo.region_cols)
            band_views = np.zeros((len(band_regions), n_views, 3, config.view_px, config.view_px), dtype=np.uint8)
            band_view_meta = np.zeros((len(band_regions), n_views, 3 + _K), dtype=np.float64)

            for region_col, region in enumerate(band_regions):
                c0, c1 = region_col * geo.rt, min(cols, (region_col + 1) * geo.rt)
                x0, x1 = c0 * tp, c1 * tp
                classes, markings = layout.landcover(y0, y1, x0, x1)
                band_classes[:, x0:x1] = classes
                tile_rows, tile_cols = np.divmod(np.arange((r1 - r0) * (c1 - c0)), c1 - c0)
                tile_rows += r0
                tile_cols += c0
                band_images[(tile_rows - r0) * cols + tile_cols] = aerial.render_aerial(
                    _tiles_of(classes, tp), _tiles_of(markings, tp), row0=tile_rows * tp, col0=tile_cols * tp,
                    tile_ids=tile_rows * cols + tile_cols, resolution_m=config.resolution_m, seed=config.seed,
                    illumination_noise=config.illumination_noise, pixel_noise=config.pixel_noise)

                poi_rng = np.random.default_rng([config.seed, _SALT_POI, region])
                for poi in _sample_pois(poi_rng, classes, y0, x0, config.pois_per_region, config.resolution_m):
                    pois.append({"region": region, **poi})
                if n_views:
                    view_rng = np.random.default_rng([config.seed, _SALT_VIEW, region])
                    band_views[region_col], band_view_meta[region_col] = _street_views(
                        config, view_rng, classes, y0, x0)

            t0, t1 = r0 * cols, r1 * cols
            image_var[t0:t1] = band_images
            band_tiles = _tiles_of(band_classes, tp)
            lc_var[t0:t1] = band_tiles
            fractions[t0:t1] = _fractions(band_tiles)
            tif.write(band_classes, 1, window=Window(0, y0, layout.width, y1 - y0))
            g0, g1 = band_regions.start, band_regions.stop
            view_image[g0:g1] = band_views
            east, north = _pixel_to_map(config, band_view_meta[..., 0], band_view_meta[..., 1])
            view_east[g0:g1] = east
            view_north[g0:g1] = north
            view_heading[g0:g1] = band_view_meta[..., 2]
            view_mix[g0:g1] = band_view_meta[..., 3:]

        _variable(tiles, "fractions", ("tile", "landcover_class"), "f4",
                  {"long_name": "land-cover fractions (concept ground truth)"})[:] = fractions
        water_proximity = _water_proximity(fractions[:, LandCover.WATER].reshape(geo.rows, geo.cols), geo.tile_km)
        _variable(tiles, "water_proximity", ("tile",), "f4",
                  {"long_name": "proximity to water", "formula": "exp(-d / 0.3 km)"})[:] = water_proximity
        outcomes = {}
        for index, (name, model) in enumerate(models.items()):
            noise_free = model.predict(fractions, distance_km, water_proximity)
            rng = np.random.default_rng([config.seed, _SALT_OUTCOME, index])
            noise = _smooth_noise(rng, (geo.rows, geo.cols), config.noise_length_tiles).ravel()
            outcomes[name] = noise_free + model.noise_sd * config.outcome_noise * noise
            attrs = {"units": model.units, "weights": json.dumps(model.terms())}
            _variable(tiles, name, ("tile",), "f4", attrs | {"long_name": name.replace("_", " ")})[:] = outcomes[name]
            _variable(tiles, f"{name}_noise_free", ("tile",), "f4",
                      attrs | {"long_name": f"{name} without noise"})[:] = noise_free

    regions = _regions_table(config, geo, fractions, outcomes, pois)
    regions.to_parquet(out / "regions.parquet", index=False)
    _pois_table(config, geo, pois).to_parquet(out / "pois.parquet", index=False)
    _flows_table(config, regions).to_parquet(out / "flows.parquet", index=False)
    (out / "city.json").write_text(json.dumps({
        "config": config.model_dump(mode="json"),
        "outcome_models": {name: {"units": m.units, "noise_sd": m.noise_sd, "weights": m.terms()}
                           for name, m in models.items()},
        "layout": info,
    }, indent=2) + "\n")


def _street_views(config: CityConfig, rng: np.random.Generator, classes: np.ndarray, y0: int, x0: int):
    """Render a region's street views from viewpoints on its roads (any land pixel if it has none).

    Returns the views and, per view, ``(row_px, col_px, heading, fractions...)``.
    """
    on_road = np.flatnonzero(classes == LandCover.ROADS)
    land = np.flatnonzero(classes != LandCover.WATER)
    candidates = on_road if on_road.size else land if land.size else np.arange(classes.size)
    picks = rng.choice(candidates, size=config.views_per_region)
    rows, cols = np.divmod(picks, classes.shape[1])
    reach = max(1, int(round(64.0 / config.resolution_m)))
    mix = np.empty((len(picks), _K))
    for v, (row, col) in enumerate(zip(rows, cols, strict=True)):
        around = classes[max(0, row - reach):row + reach + 1, max(0, col - reach):col + reach + 1]
        mix[v] = np.bincount(around.ravel(), minlength=_K) / around.size
    images = aerial.render_street_views(mix, rng, size=config.view_px, illumination_noise=config.illumination_noise,
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


# Jobs per km2 (thousands) of each class, for the attractiveness of regions.
_JOB_DENSITY = np.array([8.0, 3.0, 0.8, 12.0, 0.5, 0.3, 0.05, 0.1, 0.0])
_JOBS_PER_POI = 20.0


def _regions_table(config, geo: _Geometry, fractions, outcomes, pois) -> pd.DataFrame:
    """One row per region: position, land-cover mix, population, jobs, mean outcomes, POI count."""
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
    table["dominant_landcover"] = np.array(LANDCOVER_NAMES)[
        table[[f"fraction_{n}" for n in LANDCOVER_NAMES]].to_numpy().argmax(axis=1)]
    table["lon"], table["lat"] = geo.to_lonlat.transform(table["easting"].to_numpy(), table["northing"].to_numpy())
    # Bounding boxes in map coordinates (the last row and column of regions may be cut short).
    side = geo.rt * geo.tp * config.resolution_m
    table["min_easting"] = config.origin[0] + table["region_col"] * side
    table["max_northing"] = config.origin[1] - table["region_row"] * side
    table["max_easting"] = np.minimum(table["min_easting"] + side, config.origin[0] + geo.cols * geo.tp * config.resolution_m)
    table["min_northing"] = np.maximum(table["max_northing"] - side, config.origin[1] - geo.rows * geo.tp * config.resolution_m)
    first = ["region", "region_row", "region_col", "n_tiles", "easting", "northing", "lon", "lat",
             "min_easting", "min_northing", "max_easting", "max_northing", "population", "jobs", "n_pois",
             "dominant_landcover"]
    return table[first + [c for c in table if c not in first]]


def _pois_table(config, geo: _Geometry, pois: list[dict]) -> pd.DataFrame:
    columns = ["poi", "region", "tile", "type", "name", "landcover", "description", "easting", "northing", "lon", "lat"]
    if not pois:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("type", "name", "landcover", "description") else float)
                             for c in columns})
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
    distance = np.hypot(east[:, None] - east[None, :], north[:, None] - north[None, :])
    affinity = pop[:, None] ** g.alpha * jobs[None, :] ** g.beta / np.maximum(distance, g.min_distance_km) ** g.gamma
    np.fill_diagonal(affinity, 0.0)
    total = affinity.sum()
    expected = affinity * (g.trips_per_capita * pop.sum() / total) if total > 0 else affinity
    flows = np.random.default_rng([config.seed, _SALT_FLOW]).poisson(expected)
    origin, destination = np.nonzero(~np.eye(len(pop), dtype=bool))
    return pd.DataFrame({
        "origin": origin.astype(np.int32),
        "destination": destination.astype(np.int32),
        "distance_km": distance[origin, destination],
        "expected": expected[origin, destination],
        "flow": flows[origin, destination].astype(np.int64),
    })


def _replace_dir(source: Path, target: Path) -> None:
    """Move the finished ``source`` to ``target``, replacing an older build there."""
    if not target.exists():
        os.rename(source, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, trash / target.name)
    os.rename(source, target)
    shutil.rmtree(trash)


def build_city(config: CityConfig, out_dir: str | os.PathLike[str]) -> CityBuild:
    """Generate the city of ``config`` into ``out_dir``, atomically.

    Everything is written to a temporary directory beside ``out_dir`` and
    renamed into place at the end, so a failure leaves ``out_dir`` as it was
    (absent, or the previous build). Tile images, land cover and street
    views are rendered and written one row of regions at a time; only the
    per-tile tables (fractions, outcomes) stay in memory.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write_city(config, work)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    geo = _Geometry(config)
    return CityBuild(out_dir, config, outcome_models(config.task), config.n_tiles, geo.n_regions,
                     time.perf_counter() - start)


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
