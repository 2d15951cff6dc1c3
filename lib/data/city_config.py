"""The configuration of a generated city: everything that determines it, validated before any work.

A light module (pydantic and pyproj only), so that validating ``params.yaml``'s
``cities`` section does not import the generator's raster stack
(:mod:`lib.data.city` builds the city from a :class:`CityConfig`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from lib.params import Params


class GravityConfig(Params):
    """Parameters of the gravity model of flows between regions."""

    alpha: float = Field(1.0, ge=0, description="exponent of the origin's population")
    beta: float = Field(1.0, ge=0, description="exponent of the destination's jobs")
    gamma: float = Field(2.0, ge=0, description="distance-decay exponent")
    accessibility: float = Field(1.5, ge=0, description="eta: weight of origin and destination accessibility")
    noise_sd: float = Field(0.5, ge=0, description="sigma: sd of the lognormal noise per pair")
    trips_per_capita: float = Field(0.3, gt=0, description="expected trips between regions per inhabitant")
    min_distance_km: float = Field(0.25, gt=0, description="distances are clipped below this")


class RegionGrid(Params):
    """The regions: cells of a square or hexagonal grid, ``spacing_m`` between neighbouring centres."""

    shape: Literal["hex", "square"] = "hex"
    spacing_m: float = Field(160.0, gt=0)


class PoiConfig(Params):
    """POI counts: ``Poisson(rate * exp(0.8 commercial) * sum_k rho_k a_k)`` per inhabited region (``a_k``: hectares
    of land-cover class ``k`` in the region, ``rho_k``: its POI intensity, 1 for dense residential)."""

    rate: float = Field(10.0, ge=0, description="expected POIs per hectare of dense residential land of average "
                                                "commercial character")


class CityConfig(Params):
    """Everything that determines a synthetic city; unknown keys and ill-typed values are errors.

    Sizes: the city is ``grid[0] x grid[1]`` tiles of ``tile_px`` pixels at
    ``resolution_m`` metres per pixel; ``origin`` is the (easting, northing)
    of its north-west corner in ``crs``, which must be projected (metres).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    seed: int = Field(0, ge=0)
    layout: Literal["river", "coast", "lake"]
    task: Literal["liveability", "income", "land_price", "population_density", "environment_index"]
    crs: str
    origin: tuple[float, float] = Field(strict=False, description="(easting, northing) of the north-west corner")
    resolution_m: float = Field(2.0, gt=0)
    tile_px: int = Field(64, ge=16, le=1024, multiple_of=16, description="a multiple of 16, the GeoTIFF block")
    grid: tuple[PositiveInt, PositiveInt] = Field((32, 32), strict=False, description="tiles (rows, columns)")
    regions: RegionGrid = RegionGrid()
    pois: PoiConfig = PoiConfig()
    views_per_region: int = Field(4, ge=1)
    view_px: int = Field(64, ge=16, le=512)
    layout_noise: float = Field(1.0, ge=0, description="amplitude of the noise in the urban potential")
    outcome_noise: float = Field(1.0, ge=0, description="multiplier of each outcome's noise sd")
    noise_length_tiles: float = Field(2.0, gt=0, description="correlation length of the tile outcomes' noise")
    illumination_noise: float = Field(1.0, ge=0, description="per-tile brightness, hue, haze and season level")
    pixel_noise: float = Field(6.0, ge=0, description="per-pixel sensor noise sd in DN")
    gravity: GravityConfig = GravityConfig()

    @field_validator("crs")
    @classmethod
    def _projected(cls, value: str) -> str:
        try:
            crs = CRS.from_user_input(value)
        except CRSError as err:
            raise ValueError(f"crs {value!r} is not a coordinate reference system pyproj knows ({err})") from None
        if not crs.is_projected:
            raise ValueError(f"crs {value!r} is not a projected CRS; the city is laid out in metres")
        return crs.to_string()

    @model_validator(mode="after")
    def _room_for_regions(self) -> CityConfig:
        side_m = min(self.grid) * self.tile_px * self.resolution_m
        if 2 * self.regions.spacing_m > side_m:
            raise ValueError(f"regions.spacing_m {self.regions.spacing_m} m is more than half the city's shorter "
                             f"side ({side_m:g} m = grid x tile_px x resolution_m): the grid has room for fewer "
                             "than two regions across")
        if self.regions.spacing_m < 4 * self.resolution_m:
            raise ValueError(f"regions.spacing_m {self.regions.spacing_m} m is under 4 pixels of {self.resolution_m} m")
        return self

    @property
    def n_tiles(self) -> int:
        return self.grid[0] * self.grid[1]


def river_city(**overrides) -> CityConfig:
    """A 32 x 32-tile river city near 60.2 N, 24.9 E (ETRS-TM35FIN), with the liveability task."""
    values = dict(name="river_city", seed=7, layout="river", task="liveability",
                  crs="EPSG:3067", origin=(381_500.0, 6_677_500.0))
    return CityConfig.model_validate(values | overrides)


def coastal_city(**overrides) -> CityConfig:
    """A 32 x 32-tile coastal city near 43.5 N, 16.4 E (UTM 33N), with the income task."""
    values = dict(name="coastal_city", seed=11, layout="coast", task="income",
                  crs="EPSG:32633", origin=(615_200.0, 4_821_600.0))
    return CityConfig.model_validate(values | overrides)


def lake_city(**overrides) -> CityConfig:
    """A 32 x 32-tile lake city near 52.5 N, 13.4 E (UTM 33N), with the environment-index task."""
    values = dict(name="lake_city", seed=23, layout="lake", task="environment_index",
                  crs="EPSG:25833", origin=(389_000.0, 5_822_000.0))
    return CityConfig.model_validate(values | overrides)
