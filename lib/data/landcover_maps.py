"""Land-cover rasters (the generated cities' ``landcover.tif``) drawn as maps in the OSM style.

:func:`render_landcover_map` / :func:`render_landcover_maps` resample a
single-band class raster (nearest neighbour at pixel centres) onto each map
window and draw every class in a style of :data:`lib.data.map_style.STYLES`
through a class-to-style table (:func:`landcover_class_to_style`, from the
raster's CF ``flag_values``/``flag_meanings``). With the city's
``buildings.tif`` (:class:`Footprints`) the footprints are drawn as OSM draws
buildings: every residential density is ``residential`` land use
(:data:`LANDCOVER_STYLES_WITH_FOOTPRINTS`), told apart by its roofs (big
blocks, smaller blocks, detached houses), roofs get a one-pixel outline and
roads a casing, and the building measures are those of the OSM maps::

    building_fraction = roof area in the window (raster pixels clipped exactly) / window area
    building_density  = #{buildings whose point lies in the window} / window area in km^2

Without footprints the old table (:data:`LANDCOVER_STYLES`, dense
residential drawn as roof) applies and ``building_density`` is NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from scipy import ndimage

from lib.data.map_render import as_coords, check_window, outside_bounds_error, project_coords, stack_maps
from lib.data.map_style import BUILDING_CLASS, STYLE_CLASS, STYLE_CODE, STYLES, MapBatch, MapTile, tile_from_styles

__all__ = [
    "LANDCOVER_STYLES",
    "LANDCOVER_STYLES_WITH_FOOTPRINTS",
    "Footprints",
    "landcover_class_names",
    "landcover_class_to_style",
    "landcover_grid",
    "raster_grid",
    "render_landcover_map",
    "render_landcover_maps",
    "sample_nearest",
    "sample_raster_coordinates",
]


def sample_raster_coordinates(raster: xr.DataArray, n: int, seed: int, margin_m: float = 0.0) -> np.ndarray:
    """``n`` centres (x, y) in the raster's CRS drawn uniformly inside its bounds shrunk by ``margin_m``."""
    minx, miny, maxx, maxy = raster.rio.bounds()
    if maxx - minx <= 2 * margin_m or maxy - miny <= 2 * margin_m:
        raise ValueError(f"margin_m={margin_m} leaves no area inside the raster bounds {(minx, miny, maxx, maxy)}")
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.uniform(minx + margin_m, maxx - margin_m, n), rng.uniform(miny + margin_m, maxy - margin_m, n),
    ])


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


def landcover_class_names(landcover: xr.DataArray) -> dict[int, str]:
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
    for code, name in landcover_class_names(landcover).items():
        if name not in styles:
            raise ValueError(f"land-cover class {name!r} (code {code}) has no style; known: {sorted(styles)}")
        table[code] = styles[name]
    return table


def _style_lookup(class_to_style: Mapping[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted raster codes and their style codes, for vectorised lookup."""
    unknown = sorted(set(class_to_style.values()) - set(STYLE_CODE))
    if unknown:
        raise ValueError(f"unknown style name(s) {unknown}; styles are {[s.name for s in STYLES]}")
    codes = np.array(sorted(class_to_style), dtype=np.int64)
    styles = np.array([STYLE_CODE[class_to_style[c]] for c in codes], dtype=np.uint8)
    return codes, styles


def raster_grid(raster: xr.DataArray, what: str) -> tuple[np.ndarray, Affine, pyproj.CRS, float | None]:
    """The 2-D array of a single-band raster (rioxarray) with its transform, CRS and nodata.

    ``what`` names the raster in the errors: no CRS, a CRS that is not projected, more than one band.
    """
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


def landcover_grid(landcover: xr.DataArray) -> tuple[np.ndarray, Affine, pyproj.CRS, float | None]:
    """The 2-D class array of a land-cover raster with its transform, CRS and nodata."""
    return raster_grid(landcover, "landcover")


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
        values, transform, crs, nodata = raster_grid(buildings, "buildings")
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


def sample_nearest(values: np.ndarray, transform: Affine, x: np.ndarray, y: np.ndarray, fill):
    """``values`` (a raster on ``transform``) at the points (x, y), nearest neighbour.

    Returns ``(sampled, inside)``, both shaped like ``x``: ``sampled`` is ``fill``
    and ``inside`` False where a point lies beyond the raster.
    """
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
    values, inside = sample_nearest(classes, transform, x, y, 0)
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
        building_fraction = float((STYLE_CLASS[styles] == BUILDING_CLASS).mean())
        return tile_from_styles(styles, building_fraction, float("nan"))

    # Roads get their grey casing along their edges, as OSM's streets do.
    road = _ROAD_STYLES[styles]
    styles[_edge(road)] = STYLE_CODE["road_casing"]
    # Roofs are painted over land use and under roads (the draw order of STYLES),
    # with a darker one-pixel outline along their edges.
    roof, _ = sample_nearest(footprints.roof, footprints.transform, x, y, False)
    drawn = roof & (styles < STYLE_CODE["building"])
    styles[drawn] = STYLE_CODE["building"]
    styles[_edge(drawn)] = STYLE_CODE["building_outline"]
    styles = styles[pad : pad + size_px, pad : pad + size_px]

    window = (cx - half, cy - half, cx + half, cy + half)
    per_km2 = footprints.count(window) / ((2 * half) ** 2 / 1e6)
    return tile_from_styles(styles, footprints.area_fraction(window), float(per_km2))


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
    check_window(size_px, metres_per_px)
    classes, transform, crs, nodata = landcover_grid(landcover)
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
    given = as_coords(coords)
    xy = project_coords(given, coords_crs, crs)
    bounds = landcover.rio.bounds()
    outside = (
        (xy[:, 0] < bounds[0]) | (xy[:, 0] > bounds[2]) | (xy[:, 1] < bounds[1]) | (xy[:, 1] > bounds[3])
    )
    if outside.any():
        raise outside_bounds_error(given, outside, bounds, crs.to_string(), "the land-cover raster")
    tiles = [
        _render_landcover_projected(classes, transform, nodata, lookup, c, int(size_px), metres_per_px, footprints)
        for c in xy
    ]
    return stack_maps(tiles, xy, crs, metres_per_px, "landcover")

