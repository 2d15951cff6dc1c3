"""The one cartographic style of every map tile: palette, draw order and land-cover classes.

Maps of OpenStreetMap (:mod:`lib.data.map_render`) and of land-cover rasters
(:mod:`lib.data.landcover_maps`) are drawn alike, so that a model trained on
one place can be evaluated on another. A renderer paints a raster of style
codes (indices into :data:`STYLES`, later styles over earlier ones);
:func:`tile_from_styles` turns it into the RGB image, the per-pixel class
mask over :data:`MAP_CLASSES` and the class fractions::

    image[y, x] = STYLES[s[y, x]].rgb
    mask[y, x]  = MAP_CLASSES.index(STYLES[s[y, x]].map_class)
    fractions_k = #{pixels with mask = k} / size^2

A :class:`MapTile` is one such map, a :class:`MapBatch` maps around ``n``
centres with their coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyproj

__all__ = [
    "BUILDING_CLASS",
    "MAP_CLASSES",
    "STYLES",
    "STYLE_CLASS",
    "STYLE_CODE",
    "STYLE_RGB",
    "MapBatch",
    "MapStyle",
    "MapTile",
    "tile_from_styles",
]

#: The land-cover classes every map pixel belongs to, in mask-code order.
MAP_CLASSES: tuple[str, ...] = (
    "residential",
    "commercial_industrial",
    "green_park",
    "forest",
    "water",
    "roads",
    "buildings",
    "other",
)


@dataclass(frozen=True)
class MapStyle:
    """One drawable style: its name, fill colour and the land-cover class it counts as."""

    name: str
    rgb: tuple[int, int, int]
    map_class: str


#: The cartographic style, in draw order: a later style is painted over an
#: earlier one. The index of a style is its code in the style raster; code 0 is
#: the background (no mapped feature). Colours follow the conventions of the
#: standard OpenStreetMap map so that the tiles read like the maps people know.
STYLES: tuple[MapStyle, ...] = (
    MapStyle("background", (242, 239, 233), "other"),
    MapStyle("residential", (222, 220, 220), "residential"),
    MapStyle("commercial", (242, 212, 212), "commercial_industrial"),
    MapStyle("industrial", (232, 212, 230), "commercial_industrial"),
    MapStyle("civic", (236, 230, 205), "other"),
    MapStyle("railway", (214, 206, 214), "other"),
    MapStyle("construction", (199, 199, 180), "other"),
    MapStyle("farmland", (238, 240, 213), "other"),
    MapStyle("grass", (205, 235, 176), "green_park"),
    MapStyle("park", (196, 244, 200), "green_park"),
    MapStyle("pitch", (160, 218, 196), "green_park"),
    MapStyle("forest", (163, 204, 148), "forest"),
    MapStyle("water", (160, 205, 222), "water"),
    MapStyle("building", (214, 203, 194), "buildings"),
    MapStyle("building_outline", (185, 170, 158), "buildings"),
    MapStyle("road_casing", (176, 170, 165), "roads"),
    MapStyle("path", (238, 156, 138), "roads"),
    MapStyle("road_service", (255, 255, 255), "roads"),
    MapStyle("road_minor", (255, 255, 255), "roads"),
    MapStyle("road_secondary", (246, 242, 170), "roads"),
    MapStyle("road_major", (250, 196, 130), "roads"),
)

#: Style name -> its code in a style raster (its index in :data:`STYLES`).
STYLE_CODE: dict[str, int] = {style.name: code for code, style in enumerate(STYLES)}
#: (len(STYLES), 3) uint8: the colour of each style code.
STYLE_RGB = np.array([style.rgb for style in STYLES], dtype=np.uint8)
#: (len(STYLES),) uint8: the :data:`MAP_CLASSES` code of each style code.
STYLE_CLASS = np.array([MAP_CLASSES.index(style.map_class) for style in STYLES], dtype=np.uint8)
#: The mask code of ``buildings``.
BUILDING_CLASS = MAP_CLASSES.index("buildings")


@dataclass(frozen=True)
class MapTile:
    """One rendered map.

    ``image`` is (size, size, 3) uint8 RGB, ``mask`` (size, size) uint8 codes
    into :data:`MAP_CLASSES`, ``fractions`` the share of pixels of each class.
    ``building_fraction`` is the building footprint area over the window area
    and ``building_density`` the number of buildings per km^2 (footprints whose
    representative point lies in the window); both come from the footprint
    geometries, not from pixels (NaN count where no footprints exist, as for
    land-cover rasters).
    """

    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray
    building_fraction: float
    building_density: float


@dataclass(frozen=True)
class MapBatch:
    """Maps rendered around ``n`` centres, stacked along the first axis.

    ``easting``/``northing`` are the centres in ``crs``, ``lon``/``lat`` the
    same in WGS84; the other fields stack :class:`MapTile`'s.
    """

    images: np.ndarray
    masks: np.ndarray
    fractions: np.ndarray
    building_fraction: np.ndarray
    building_density: np.ndarray
    easting: np.ndarray
    northing: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    crs: pyproj.CRS
    metres_per_px: float
    source: str

    def tile(self, i: int) -> MapTile:
        """The ``i``-th map of the batch as a :class:`MapTile`."""
        return MapTile(
            image=self.images[i],
            mask=self.masks[i],
            fractions=self.fractions[i],
            building_fraction=float(self.building_fraction[i]),
            building_density=float(self.building_density[i]),
        )


def tile_from_styles(styles: np.ndarray, building_fraction: float, building_density: float) -> MapTile:
    """Colour a (size, size) style-code raster and derive its land-cover mask and fractions."""
    mask = STYLE_CLASS[styles]
    fractions = np.bincount(mask.ravel(), minlength=len(MAP_CLASSES)) / mask.size
    return MapTile(
        image=STYLE_RGB[styles],
        mask=mask,
        fractions=fractions,
        building_fraction=building_fraction,
        building_density=building_density,
    )
