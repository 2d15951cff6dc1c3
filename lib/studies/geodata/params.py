"""Parameters of the geo datasets: the ``cities`` and ``maps`` sections of params.yaml.

Each generated city is one entry of ``cities`` (its :class:`lib.data.city_config.CityConfig`);
the ``city@<name>`` stage reads only its own entry. Each OpenStreetMap place
of the ``maps`` stage is one entry of ``maps.osm`` (:class:`OsmPlace`).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    field_validator,
    model_validator,
)
from pyproj import CRS
from pyproj.exceptions import CRSError

from lib.data.city_config import CityConfig
from lib.params import Params, Seeded

_CITY_NAME = re.compile(r"[A-Za-z0-9_-]+")  # CityConfig.name's pattern
#: Where the ``maps`` stage's OpenStreetMap extracts and label tables lie (its declared input).
OSM_FOLDER = "data/osm"


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


class OsmPlace(Params):
    """One OpenStreetMap place of the ``maps`` stage: its extract, the CRS its maps are drawn in, optional labels.

    Both files lie under ``data/osm/``, the folder the stage declares as its
    input, so DVC reruns ``maps`` when they change (record them with
    ``dvc add data``).
    """

    pbf: str = Field(description="the .osm.pbf extract, under data/osm/")
    crs: str = Field(description="projected CRS (metres) the maps are drawn in: EPSG:3067 for Helsinki, "
                                 "elsewhere e.g. the place's UTM zone")
    labels: str | None = Field(default=None, description="optional label table under data/osm/ (CSV or Parquet): "
                                                          "lon/lat or easting/northing (in crs) and numeric labels")
    max_distance_m: float = Field(default=50.0, gt=0, description="a map takes the labels of the nearest "
                                                                  "labelled point within this distance of its centre")

    @field_validator("pbf", "labels")
    @classmethod
    def _under_input_folder(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_relative_to(OSM_FOLDER):
            raise ValueError(f"{value!r} is not under {OSM_FOLDER}/, the folder the maps stage reads (dvc.yaml)")
        return value

    @field_validator("crs")
    @classmethod
    def _projected(cls, value: str) -> str:
        _known_projected_crs({"crs": value})
        return value


class MapsParams(Seeded):
    """The ``maps`` section of params.yaml: map tiles of OpenStreetMap places and of the generated cities.

    Every place gets ``n_tiles`` maps of ``size_px`` pixels at ``metres_per_px``
    (``datasets/maps/<place>.nc`` for each entry of ``osm`` and each city, see
    :func:`lib.studies.geodata.maps.build_map_datasets`). The model cannot see the
    ``cities`` section, so a name in ``cities`` without a built city fails when
    the stage runs, with a ``FileNotFoundError`` naming the missing file and the
    ``city@<name>`` stage that builds it.
    """

    osm: dict[str, OsmPlace] = Field(min_length=1, description="OpenStreetMap places: name -> extract (and labels)")
    n_tiles: int = Field(ge=1, description="maps per place")
    size_px: int = Field(ge=8, le=1024)
    metres_per_px: float = Field(gt=0)
    cities: list[str] = Field(
        description="generated cities (datasets/<city>/landcover.tif, buildings.tif, tiles.nc) to render alike"
    )

    @field_validator("osm")
    @classmethod
    def _place_names(cls, value: dict[str, OsmPlace]) -> dict[str, OsmPlace]:
        for name in value:
            if not _CITY_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a place name (letters, digits, '_' and '-')")
        return value

    @field_validator("cities")
    @classmethod
    def _city_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _CITY_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a city name (letters, digits, '_' and '-', as in the cities section)"
                )
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"{duplicates} listed more than once")
        return value

    @model_validator(mode="after")
    def _distinct_places(self) -> MapsParams:
        shared = sorted(set(self.osm) & set(self.cities))
        if shared:
            raise ValueError(f"{shared} named both in osm (an OpenStreetMap place) and in cities; "
                             "each place writes datasets/maps/<name>.nc, so the names must differ")
        return self
