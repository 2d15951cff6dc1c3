"""The geo datasets that the place studies share: generated cities and map tiles.

Not a study of its own but built like one: ``city@<city>`` generates each city
of params.yaml's ``cities`` section into ``datasets/<city>/``
(:func:`lib.data.city.build_city`), ``maps`` renders map tiles of Helsinki's
OpenStreetMap extract and of the cities' land cover into ``datasets/maps/``
(:mod:`lib.studies.geodata.maps`). The generators and renderers live in the
shared ``lib.data`` layer, so every study reads the same datasets; this
package keeps the stages' glue.
"""

from lib.data.city_config import CityConfig
from lib.stage import Stage
from lib.studies.geodata.params import CitiesParams, MapsParams

TITLE = "Datasets: generated cities and map tiles"
QUESTION = (
    "The places the region and map studies read: cities generated with known ground truth, and "
    "map tiles of Helsinki and of the cities."
)
FIGURES = (  # under results/, for the front page
    "cities/*/mosaic.png",
    "cities/*/modalities.png",
    "cities/*/oracle_r2.png",
    "maps/figures/map_rows.png",
)
SECTIONS = {"cities": CitiesParams, "maps": MapsParams}
STAGES = (
    Stage("city", "geodata", "cities", CityConfig, {"city": "cities"}, entry="city", each={"city": "cities"},
          outs=("datasets/{city}", "results/cities/{city}")),
    Stage("maps", "geodata", "maps", MapsParams,
          deps=("data/osm",
                *(f"datasets/{{maps.cities}}/{layer}" for layer in ("landcover.tif", "buildings.tif", "tiles.nc"))),
          outs=("datasets/maps", "results/maps/figures")),
)
PAPER = ("results/cities/*", "results/maps/figures")  # what paper/sections/cities.typ reads
