"""Parameters of the geo datasets: the ``cities`` and ``maps`` sections of params.yaml.

Each generated city is one entry of ``cities`` (its :class:`lib.data.city_config.CityConfig`);
the ``city@<name>`` stage reads only its own entry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, RootModel, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from lib.data.city_config import CityConfig
from lib.params import Seeded

_CITY_NAME = re.compile(r"[A-Za-z0-9_-]+")  # CityConfig.name's pattern
#: The place name of the OpenStreetMap maps (``datasets/maps/helsinki.nc``); no generated city may take it.
OSM_PLACE = "helsinki"


def _known_projected_crs(entry: Any) -> Any:
    """A city's ``crs`` must exist (pyproj knows it) and be projected (the city is laid out in metres).

    Checked before :class:`CityConfig` sees the entry: pyproj reports an unknown
    CRS with its own exception, which would otherwise escape validation as a
    traceback instead of naming the city's key.
    """
    crs = entry.get("crs") if isinstance(entry, dict) else None
    if isinstance(crs, str):
        try:
            known = CRS.from_user_input(crs)
        except CRSError:
            raise ValueError(f"crs {crs!r} is not a coordinate reference system pyproj knows (e.g. 'EPSG:3067')") from None
        if not known.is_projected:
            raise ValueError(f"crs {crs!r} is not a projected CRS; the city is laid out in metres")
    return entry


class CitiesParams(RootModel[dict[str, Annotated[CityConfig, BeforeValidator(_known_projected_crs)]]]):
    """The ``cities`` section of params.yaml: city name -> its :class:`CityConfig`."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _names_match(self) -> CitiesParams:
        for key, config in self.root.items():
            if config.name != key:
                raise ValueError(f"city {key!r} has name {config.name!r}; use the same name for both")
        return self


class MapsParams(Seeded):
    """The ``maps`` section of params.yaml: map tiles of Helsinki and of the generated cities.

    Every place gets ``n_tiles`` maps of ``size_px`` pixels at ``metres_per_px``
    (``datasets/maps/helsinki.nc`` and ``datasets/maps/<city>.nc``, see
    :func:`lib.studies.geodata.maps.build_map_datasets`). The model cannot see the
    ``cities`` section, so a name in ``cities`` without a built city fails when
    the stage runs, with a ``FileNotFoundError`` naming the missing file and the
    ``city@<name>`` stage that builds it.
    """

    pbf: str = Field(description="the OpenStreetMap extract under data/")
    n_tiles: int = Field(ge=1, description="maps per place")
    size_px: int = Field(ge=8, le=1024)
    metres_per_px: float = Field(gt=0)
    cities: list[str] = Field(
        description="generated cities (datasets/<city>/landcover.tif, buildings.tif, tiles.nc) to render alike"
    )

    @field_validator("cities")
    @classmethod
    def _city_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _CITY_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a city name (letters, digits, '_' and '-', as in the cities section)"
                )
            if name == OSM_PLACE:
                raise ValueError(f"{name!r} is the OpenStreetMap place, not a generated city")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"{duplicates} listed more than once")
        return value
