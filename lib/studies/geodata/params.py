"""Parameters of the geo datasets: the ``cities`` and ``maps`` sections of params.yaml.

Each generated city is one entry of ``cities`` (its :class:`lib.data.city.CityConfig`);
the ``city@<name>`` stage reads only its own entry.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, RootModel, model_validator

from lib.data.city import CityConfig
from lib.params import Seeded


class CitiesParams(RootModel[dict[str, CityConfig]]):
    """The ``cities`` section of params.yaml: city name -> its :class:`CityConfig`."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _names_match(self) -> CitiesParams:
        for key, config in self.root.items():
            if config.name != key:
                raise ValueError(f"city {key!r} has name {config.name!r}; use the same name for both")
        return self


class MapsParams(Seeded):
    """The ``maps`` section of params.yaml: map tiles of Helsinki and of the generated cities."""

    pbf: str = Field(description="the OpenStreetMap extract under data/")
    n_tiles: int = Field(ge=1, description="maps per place")
    size_px: int = Field(ge=8, le=1024)
    metres_per_px: float = Field(gt=0)
    cities: list[str] = Field(description="generated cities (datasets/<city>/landcover.tif) to render alike")
