"""OpenStreetMap layers, read once and prepared for drawing maps of any window.

:func:`load_osm_layers` reads the land use, natural areas, leisure areas
(parks), buildings and the street network of an ``.osm.pbf`` extract with
pyrosm (the Helsinki extract ships with it), projects them to a metric CRS
and prepares them for :mod:`lib.data.map_render`:

* every OSM tag value that is drawn gets its style of :data:`lib.data.map_style.STYLES`
  (values not listed stay background, which keeps odd tagging out of the
  land-cover classes);
* roads are buffered once to their real width (casing under roads for
  motor traffic), and drawn again as centre lines so that a road narrower
  than a pixel stays a connected line;
* the sea, which OSM maps only by its coastline (land on its left, water on
  its right), is rebuilt as water polygons;
* every drawable shape goes, in draw order, into one spatial index.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pyrosm
import shapely

from lib.data.map_style import STYLE_CODE

__all__ = ["OsmLayers", "load_osm_layers"]

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
    features["code"] = features["map_style"].map(STYLE_CODE).astype(np.uint8)
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

