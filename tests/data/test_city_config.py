"""The generated city's configuration (lib/data/city_config.py): every bad value named before any work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lib.data.city_config import CityConfig, coastal_city, lake_city, river_city


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ValidationError, match="tile_size"):
        river_city(tile_size=64)


def test_config_requires_a_projected_crs():
    with pytest.raises(ValidationError, match="not a projected CRS"):
        river_city(crs="EPSG:4326")


def test_config_requires_tiles_in_multiples_of_16_px():
    with pytest.raises(ValidationError, match="multiple of 16"):
        river_city(tile_px=40)


def test_config_names_a_region_grid_too_coarse_for_the_city():
    with pytest.raises(ValidationError, match=r"regions.spacing_m 400.0 m is more than half .* \(512 m"):
        river_city(grid=(8, 8), tile_px=32, regions={"spacing_m": 400.0})
    with pytest.raises(ValidationError, match="regions.shape"):
        river_city(regions={"shape": "triangle"})


def test_config_names_a_crs_pyproj_does_not_know():
    with pytest.raises(ValidationError, match="crs 'EPSG:99999' is not a coordinate reference system pyproj knows"):
        river_city(crs="EPSG:99999")


def test_presets_are_three_different_places_in_metres():
    presets = (river_city(), coastal_city(), lake_city())
    assert len({(c.layout, c.crs, c.origin) for c in presets}) == 3
    assert all(c.n_tiles == c.grid[0] * c.grid[1] == 1024 for c in presets)
    # the configuration validates as a plain mapping, as params.yaml hands it over
    assert CityConfig.model_validate(river_city().model_dump(mode="json")) == river_city()
