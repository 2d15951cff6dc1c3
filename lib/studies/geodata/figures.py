"""Figures of the generated cities: the whole city, each modality of a few regions, hidden factors and
outcomes over the regions, what each modality can know of an outcome, and the interval effect of green space.

Every function returns its matplotlib figure. They read a built city as
:mod:`lib.data.city` writes it: ``ds`` is ``tiles.nc`` (:func:`~lib.data.city.load_city`),
``regions`` the regions table (:func:`~lib.data.city.load_tables`), ``info`` the parsed
``city.json`` (config, outcome models, oracle R^2, counts, layout geometry).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.collections import PolyCollection
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from scipy import ndimage

from lib.data.city import LANDCOVER_COLOURS, CityConfig, CityLayout, LandCover
from lib.data.city_layout import MARK_BALLAST, MARK_RAIL
from lib.plots.grids import mosaic

#: The modalities of ``city.json``'s oracle R^2, in plotting order, with the factor each one carries.
MODALITIES = {
    "aerial": "aerial image (land cover, water, centre)",
    "street_view": "street views (affluence)",
    "poi": "POIs (commercial character)",
    "mobility": "mobility (accessibility)",
    "all_factors": "all factors, linear",
    "ceiling": "ceiling (true model)",
}
_MODALITY_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8c8c8c", "#222222")
FACTORS = {
    "affluence": "affluence\n(street views show it)",
    "commercial": "commercial character\n(POIs carry it)",
    "accessibility": "accessibility\n(shapes the trips)",
}
_BUILT = ("dense_residential", "medium_residential", "sparse_residential", "industrial_commercial")


def _landcover_cmap() -> ListedColormap:
    return ListedColormap([np.array(LANDCOVER_COLOURS[c]) / 255 for c in LandCover])


def _landcover_legend() -> list[Patch]:
    return [Patch(color=np.array(LANDCOVER_COLOURS[c]) / 255, label=c.label.replace("_", " ")) for c in LandCover]


def _label(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------


def _config(info: dict) -> CityConfig:
    return CityConfig.model_validate(info["config"])


def _extent(config: CityConfig) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) of the city in map coordinates (m), for ``imshow``."""
    east0, north0 = config.origin
    height = config.grid[0] * config.tile_px * config.resolution_m
    width = config.grid[1] * config.tile_px * config.resolution_m
    return east0, east0 + width, north0 - height, north0


def region_polygons(regions: pd.DataFrame, info: dict) -> np.ndarray:
    """``(n, 6 or 4, 2)`` vertices (easting, northing) of each region's cell: the hexagon or square around its centre."""
    grid = info["config"]["regions"]
    spacing = float(grid["spacing_m"])
    if grid["shape"] == "hex":  # nearest-centre cells of rows offset by half a spacing: pointy-top hexagons
        angles = np.deg2rad(90 + 60 * np.arange(6))
        offsets = spacing / np.sqrt(3) * np.column_stack([np.cos(angles), np.sin(angles)])
    else:
        offsets = spacing / 2 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    centres = regions[["easting", "northing"]].to_numpy(float)
    return centres[:, None, :] + offsets[None, :, :]


def _pool(images: np.ndarray, step: int) -> np.ndarray:
    """Block means of ``step`` x ``step`` pixels of ``(n, y, x, band)`` images (no aliasing, unlike striding)."""
    if step <= 1:
        return images
    n, h, w, b = images.shape
    h, w = h - h % step, w - w % step
    blocks = images[:, :h, :w].reshape(n, h // step, step, w // step, step, b).astype(np.float32)
    return blocks.mean(axis=(2, 4))


def _railway(layout: CityLayout, step: int) -> np.ndarray:
    """Where the railway runs, sampled every ``step`` pixels (bool raster of the whole city)."""
    ys = np.arange(0, layout.height, step) + step / 2
    xs = np.arange(0, layout.width, step) + step / 2
    rows = []
    for y0 in range(0, len(ys), 64):  # a band of rows at a time
        _, marks = layout.classify(ys[y0:y0 + 64], xs)
        rows.append((marks == MARK_BALLAST) | (marks == MARK_RAIL))
    return ndimage.binary_dilation(np.concatenate(rows), iterations=1)


def _port_window(cover: np.ndarray, rail: np.ndarray, centre_rc: tuple[float, float], step: int,
                 size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A ``size``-pixel window (y0, y1, x0, x1, full resolution) on the port: where the railway nearest the
    centre meets the water; on the centre when the railway meets no water."""
    water = cover == LandCover.WATER
    near = rail & ndimage.binary_dilation(water, iterations=3)
    if near.any():
        ys, xs = np.nonzero(near)
        k = np.argmin(np.hypot(ys * step - centre_rc[0], xs * step - centre_rc[1]))
        cy, cx = ys[k] * step + step / 2, xs[k] * step + step / 2
    else:
        cy, cx = centre_rc
    y0 = int(np.clip(cy - size / 2, 0, max(0, shape[0] - size)))
    x0 = int(np.clip(cx - size / 2, 0, max(0, shape[1] - size)))
    return y0, min(shape[0], y0 + size), x0, min(shape[1], x0 + size)


def _full_resolution(ds: xr.Dataset, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels ``y0:y1, x0:x1`` of the whole city's aerial image (RGB), from the tiles that cover them."""
    tp = ds.sizes["y"]
    cols = int(ds.col.max()) + 1
    tr = range(y0 // tp, (y1 - 1) // tp + 1)
    tc = range(x0 // tp, (x1 - 1) // tp + 1)
    ids = [r * cols + c for r in tr for c in tc]
    tiles = ds.image.isel(tile=ids, band=[0, 1, 2]).values.transpose(0, 2, 3, 1)
    block = mosaic(tiles, len(tr), len(tc))
    oy, ox = tr.start * tp, tc.start * tp
    return block[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


def _region_layers(ax, regions: pd.DataFrame, info: dict, outline: str = "white") -> list:
    """The region cells (thin outlines) and the uninhabited ones (hatched) on ``ax``; the legend handles."""
    polygons = region_polygons(regions, info)
    ax.add_collection(PolyCollection(polygons, facecolors="none", edgecolors=outline, linewidths=0.25, alpha=0.6))
    lost = ~regions["inhabited"].to_numpy(bool)
    shape = info["config"]["regions"]["shape"]
    handles = [Patch(facecolor="0.9", edgecolor="0.4", linewidth=0.6, label=f"region ({shape} grid, outlined)")]
    if lost.any():
        ax.add_collection(PolyCollection(polygons[lost], facecolors=(0.35, 0.35, 0.35, 0.35), edgecolors="black",
                                         linewidths=0.3, hatch="/////"))
        handles.append(Patch(facecolor=(0.35, 0.35, 0.35, 0.35), edgecolor="black", hatch="/////",
                             label="uninhabited region (outcomes NaN)"))
    return handles


def _stations(ax, info: dict, size: float = 22) -> Line2D:
    stations = np.asarray(info["layout"].get("transit_stations", []), float).reshape(-1, 2)
    ax.scatter(stations[:, 0], stations[:, 1], s=size, marker="o", facecolor="white", edgecolor="black",
               linewidth=0.9, zorder=5)
    return Line2D([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="black",
                  label="transit station (not drawn in any image)")


# ---------------------------------------------------------------------------
# The whole city
# ---------------------------------------------------------------------------


def city_mosaic(ds: xr.Dataset, step: int = 2, regions: pd.DataFrame | None = None, info: dict | None = None,
                detail_px: int = 320):
    """The whole city: aerial RGB, false-colour NIR, land cover and a full-resolution detail.

    Images are block means of ``step`` x ``step`` pixels. With ``info``
    (``city.json``) the land-cover panel also shows the railway, the transit
    stations (which no image shows) and the port detail (``detail_px``
    pixels around where the railway meets the water, at full resolution);
    with ``regions`` as well, the region grid with its uninhabited cells hatched.
    """
    rows, cols = int(ds.row.max()) + 1, int(ds.col.max()) + 1
    image = _pool(ds.image.values.transpose(0, 2, 3, 1), step)  # (tile, y, x, band)
    rgb = mosaic(image[..., :3], rows, cols) / 255
    nir = mosaic(image[..., [3, 0, 1]], rows, cols) / 255
    cover = mosaic(ds.landcover.values[:, step // 2::step, step // 2::step], rows, cols)
    n_panels = 4 if info is not None else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 5.9))
    config = _config(info) if info is not None else None
    extent = _extent(config) if config is not None else None
    for ax, img, title in zip(axes, (rgb, nir), ("aerial image (R, G, B)", "false colour (NIR, R, G)"), strict=False):
        ax.imshow(np.clip(img, 0, 1), interpolation="antialiased", extent=extent)
        ax.set_title(title)
    ax = axes[2]
    ax.imshow(cover, cmap=_landcover_cmap(), vmin=-0.5, vmax=len(LandCover) - 0.5, interpolation="nearest",
              extent=extent)
    ax.set_title("land cover (the concepts' ground truth)")
    handles = _landcover_legend()
    if info is not None:
        layout = CityLayout(config)
        rail = _railway(layout, step)
        rail = rail[:cover.shape[0], :cover.shape[1]]
        overlay = np.zeros((*rail.shape, 4))
        overlay[rail] = (0.05, 0.05, 0.05, 1.0)
        ax.imshow(overlay, interpolation="nearest", extent=extent)
        handles.append(Patch(color=(0.05, 0.05, 0.05), label="railway"))
        if regions is not None:
            handles += _region_layers(ax, regions, info)
        handles.append(_stations(ax, info))
        # The port detail, at full resolution.
        height, width = rows * ds.sizes["y"], cols * ds.sizes["x"]
        size = min(detail_px, height, width)
        y0, y1, x0, x1 = _port_window(cover, rail, layout.centre, step, size, (height, width))
        detail = _full_resolution(ds, y0, y1, x0, x1)
        res = config.resolution_m
        east0, north0 = config.origin
        box = (east0 + x0 * res, north0 - y1 * res, (x1 - x0) * res, (y1 - y0) * res)
        for a in axes[:3]:
            a.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, edgecolor="yellow", linewidth=1.4, zorder=6))
        axes[3].imshow(detail, interpolation="nearest")
        axes[3].set_title(f"detail (yellow box): {(x1 - x0) * res:.0f} m at {res:g} m per pixel")
        for a in axes[:3]:
            a.set_xlim(extent[0], extent[1])
            a.set_ylim(extent[2], extent[3])
    fig.legend(handles=handles, loc="lower center", ncol=min(7, len(handles)), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def tiles_with_masks(ds: xr.Dataset, tiles: Sequence[int], outcome: str):
    """Sample tiles (RGB) above their land-cover masks, titled with their outcome (uninhabited: NaN)."""
    fig, axes = plt.subplots(2, len(tiles), figsize=(1.8 * len(tiles), 3.9), squeeze=False)
    for k, t in enumerate(tiles):
        tile = ds.isel(tile=int(t))
        value = float(tile[outcome])
        axes[0, k].imshow(tile.image.values[:3].transpose(1, 2, 0))
        axes[0, k].set_title(f"{_label(outcome)}\n" + ("uninhabited" if np.isnan(value) else f"{value:.2f}"), fontsize=8)
        axes[1, k].imshow(tile.landcover.values, cmap=_landcover_cmap(), vmin=-0.5, vmax=len(LandCover) - 0.5,
                          interpolation="nearest")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def outcome_maps(ds: xr.Dataset, outcomes: Sequence[str]):
    """One map per outcome over the tile grid; uninhabited tiles (NaN) grey."""
    rows, cols = int(ds.row.max()) + 1, int(ds.col.max()) + 1
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.6 * len(outcomes), 4), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.8")
    for ax, name in zip(axes[0], outcomes, strict=True):
        grid = np.full((rows, cols), np.nan)
        grid[ds.row.values, ds.col.values] = ds[name].values
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap)
        ax.set_title(f"{_label(name)} ({ds[name].attrs.get('units', '')})".replace(" ()", ""), fontsize=10)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Each modality of a few regions
# ---------------------------------------------------------------------------


def choose_regions(regions: pd.DataFrame, k: int = 4) -> dict[str, int]:
    """Up to ``k`` contrasting regions, label -> region id: the most and least affluent, the most and least
    commercial built-up regions with POIs and trips (the conditions relax on a small city)."""
    live = regions[regions["inhabited"]]
    built = live[[f"fraction_{c}" for c in _BUILT]].sum(axis=1)
    pool = live
    for min_built, min_pois, min_trips in ((0.5, 3, 1), (0.3, 1, 1), (0.0, 0, 0)):
        pool = live[(built >= min_built) & (live["n_pois"] >= min_pois) & (live["trips_out"] >= min_trips)]
        if len(pool) >= k:
            break
    picks = {}
    for label, column, largest in (("most affluent", "affluence", True), ("most commercial", "commercial", True),
                                   ("least affluent", "affluence", False), ("least commercial", "commercial", False)):
        order = pool.sort_values(column, ascending=not largest)["region"]
        region = next((int(r) for r in order if int(r) not in picks.values()), None)
        if region is not None and len(picks) < k:
            picks[label] = region
    return picks


def _shorten(text: str, width: int) -> str:
    return textwrap.shorten(text, width=width, placeholder=" ...")


def _poi_lines(pois: pd.DataFrame, n: int, width: int) -> list[tuple[str, str]]:
    """(heading, description shortened to one line) of the first ``n`` POIs."""
    return [(_shorten(f"{_label(p['category'])}: {p['name']}", width), _shorten(p["description"], width))
            for _, p in pois.head(n).iterrows()]


def modalities(regions: pd.DataFrame, region_images: xr.Dataset, views: xr.Dataset, pois: pd.DataFrame,
               flows: pd.DataFrame, picks: dict[str, int], outcome: str, info: dict | None = None,
               n_pois: int = 3):
    """Each modality of a few regions side by side, one row per region: its aerial image, its street views,
    its first POIs as text and its trips out on a map of the city (destinations sized by trips; with
    ``info``, the transit stations too); the row's title gives the hidden factors behind them and the
    region's ``outcome``."""
    n_views = views.sizes["view"]
    widths = [1.0] * (1 + n_views) + [3.9, 1.3]
    fig, axes = plt.subplots(len(picks), len(widths), figsize=(1.25 * sum(widths), 1.75 * len(picks)),
                             squeeze=False, gridspec_kw={"width_ratios": widths, "wspace": 0.05, "hspace": 0.42})
    table = regions.set_index("region")
    live = regions[regions["inhabited"]]
    by_region = pois.groupby("region")
    stations = np.asarray((info or {}).get("layout", {}).get("transit_stations", []), float).reshape(-1, 2)
    headers = {0: "aerial image", 1: "street views (affluence: upkeep, street trees, cars)",
               1 + n_views: "points of interest (commercial character)", 2 + n_views: "trips out (accessibility)"}
    ids = list(picks.values())
    images = region_images.image.sel(region=ids).values
    view_images = views.image.sel(region=ids).values
    for i, (label, region) in enumerate(picks.items()):
        r = table.loc[region]
        row = axes[i]
        row[0].imshow(images[i, :3].transpose(1, 2, 0))
        for v in range(n_views):
            row[1 + v].imshow(view_images[i, v].transpose(1, 2, 0))
        title = (f"{label}: region {region}, {_label(r['dominant_landcover'])}.   affluence {r['affluence']:+.2f},  "
                 f"commercial {r['commercial']:+.2f},  accessibility {r['accessibility']:.2f}   "
                 f"\u2192  {_label(outcome)} {r[outcome]:.1f}")
        row[0].text(0, 1.05, title, transform=row[0].transAxes, ha="left", va="bottom", fontsize=10,
                    fontweight="bold")
        # POIs as text.
        ax = row[1 + n_views]
        mine = by_region.get_group(region) if region in by_region.groups else pois.iloc[:0]
        lines = _poi_lines(mine, n_pois, 66)
        ax.annotate(f"{len(mine)} POIs" + (f", the first {len(lines)}:" if lines else ""), (0, 1),
                    xycoords="axes fraction", fontsize=8, va="top", color="0.35")
        for k, (heading, body) in enumerate(lines):  # lines placed in points, whatever the row's height
            y = -13 - 21 * k
            ax.annotate(heading, (0, 1), xycoords="axes fraction", xytext=(0, y), textcoords="offset points",
                        fontsize=8, va="top", fontweight="bold")
            ax.annotate(body, (0, 1), xycoords="axes fraction", xytext=(0, y - 9.5), textcoords="offset points",
                        fontsize=7.5, va="top")
        # Mobility: where the region's trips go, on a map of the inhabited region centres.
        ax = row[2 + n_views]
        ax.scatter(live["easting"], live["northing"], s=0.5, color="0.8", linewidths=0)
        if len(stations):
            ax.scatter(stations[:, 0], stations[:, 1], s=6, facecolor="none", edgecolor="0.3", linewidths=0.5)
        out = flows[flows["origin"] == region]
        ends = table.loc[out["destination"], ["easting", "northing"]].to_numpy().reshape(-1, 2)
        trips = out["flow"].to_numpy(float)
        for (e, n), t in zip(ends, trips, strict=True):
            ax.plot([r["easting"], e], [r["northing"], n], color="#c44e52", linewidth=0.4, alpha=0.5)
        ax.scatter(ends[:, 0], ends[:, 1], s=3 + 25 * trips / max(1.0, trips.max(initial=1.0)), color="#c44e52",
                   linewidths=0, zorder=4)
        ax.scatter([r["easting"]], [r["northing"]], s=40, marker="*", color="black", zorder=5)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{int(r['trips_out'])} trips out, {int(r['trips_in'])} in", fontsize=8, labelpad=2)
        for a in row:
            a.set_xticks([])
            a.set_yticks([])
        for a in row[:2 + n_views]:
            a.set_axis_off()
        for spine in row[2 + n_views].spines.values():
            spine.set_color("0.8")
    for row in axes:  # the text and the map span the height of the (square) images
        row[0].apply_aspect()
        top = row[0].get_position()
        for a in row[1 + n_views:]:
            p = a.get_position()
            a.set_position([p.x0, top.y0, p.width, top.height])
    for k, header in headers.items():
        axes[0, k].annotate(header, (0, 1), xycoords="axes fraction", xytext=(0, 24), textcoords="offset points",
                            fontsize=9, color="0.3", ha="left", va="bottom", style="italic")
    return fig


# ---------------------------------------------------------------------------
# Hidden factors and outcomes over the regions
# ---------------------------------------------------------------------------


def factor_maps(regions: pd.DataFrame, info: dict, outcomes: Sequence[str], task: str | None = None):
    """The hidden factors and the outcomes over the region cells; uninhabited regions grey, stations on the
    accessibility map. The task outcome's title is starred."""
    names = [*FACTORS, *outcomes]
    n_cols = 4
    n_rows = int(np.ceil(len(names) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.3 * n_cols, 4.0 * n_rows), squeeze=False)
    polygons = region_polygons(regions, info)
    extent = _extent(_config(info))
    units = {name: m["units"] for name, m in info["outcome_models"].items()}
    lost = ~regions["inhabited"].to_numpy(bool)
    for ax, name in zip(axes.flat, names, strict=False):
        values = regions[name].to_numpy(float)
        cmap = "RdBu_r" if name in ("affluence", "commercial") else ("magma" if name == "accessibility" else "viridis")
        coll = PolyCollection(polygons, array=np.ma.masked_invalid(values), cmap=cmap, edgecolors="face",
                              linewidths=0.2)
        if name in ("affluence", "commercial"):
            bound = np.nanmax(np.abs(values))
            coll.set_clim(-bound, bound)
        ax.add_collection(coll)
        if lost.any():
            ax.add_collection(PolyCollection(polygons[lost], facecolors="0.82", edgecolors="0.82", linewidths=0.2))
        if name == "accessibility":
            _stations(ax, info, size=12)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_axis_off()
        if name in FACTORS:
            title = f"hidden factor: {FACTORS[name]}"
        else:
            title = f"{'* ' if name == task else ''}{_label(name)}\n({units.get(name, '')})"
        ax.set_title(title, fontsize=10)
        fig.colorbar(coll, ax=ax, shrink=0.75, pad=0.02)
    for ax in axes.flat[len(names):]:
        ax.set_axis_off()
    fig.tight_layout(rect=(0, 0.03, 1, 1), h_pad=2.0)
    fig.text(0.5, 0.01, "Grey: uninhabited regions (water fraction >= 0.5, outcomes NaN).  Dots on the accessibility "
             "map: transit stations." + ("  * the task outcome." if task else ""), ha="center", fontsize=10,
             color="0.3")
    return fig


# ---------------------------------------------------------------------------
# What each modality can know of each outcome
# ---------------------------------------------------------------------------


def oracle_r2(info: dict, unit: str = "region", task: str | None = None):
    """Grouped bars: the R^2 of least-squares fits of each outcome on one modality's true factors, on all of
    them, and on the true model (the ceiling), from ``city.json``'s ``oracle_r2``."""
    table = info["oracle_r2"][unit]
    outcomes = list(table)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(MODALITIES)
    x = np.arange(len(outcomes))
    for k, (modality, label) in enumerate(MODALITIES.items()):
        values = [table[o].get(modality, np.nan) for o in outcomes]
        ax.bar(x + (k - (len(MODALITIES) - 1) / 2) * width, values, width, label=label, color=_MODALITY_COLOURS[k])
    ax.set_xticks(x, [("* " if o == task else "") + _label(o).replace(" ", "\n", 1) for o in outcomes])
    ax.set_ylim(0, 1)
    ax.set_ylabel("oracle $R^2$")
    ax.set_title(f"What each modality's true factors explain of each outcome ({unit}s, inhabited"
                 + (", * the task)" if task else ")"), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# The interval-dependent effect of green space
# ---------------------------------------------------------------------------


def interval_effect(ds: xr.Dataset, models: dict[str, dict]):
    """For each outcome with an interval effect (``models``: ``city.json``'s outcome models), over the
    inhabited tiles: the outcome against the fraction of the interval's concept (left), and the same with
    everything but the interval term taken off (right: ``y - b = g f + noise``), coloured by whether the
    rest of the outcome ``b`` lies at or below the threshold (slope ``g_low``) or above it (``g_high``)."""
    names = [n for n, m in models.items() if m.get("interval")]
    fig, axes = plt.subplots(max(1, len(names)), 2, figsize=(10, 3.6 * max(1, len(names))), squeeze=False)
    inhabited = ds.inhabited.values.astype(bool)
    colours = {"below": "#4c72b0", "above": "#dd8452"}
    for row, name in zip(axes, names, strict=False):
        effect = models[name]["interval"]
        concept = effect["concept"]
        f = ds.fractions.sel(landcover_class=concept).values.astype(float)[inhabited]
        y = ds[name].values.astype(float)[inhabited]
        g = ds[f"{name}_slope_{concept}"].values.astype(float)[inhabited]
        b = ds[f"{name}_noise_free"].values.astype(float)[inhabited] - g * f
        upper = b > effect["threshold"]
        for key, mask in (("below", ~upper), ("above", upper)):
            label = (f"b {'<=' if key == 'below' else '>'} t = {effect['threshold']:.1f}: slope {effect[key]:g}"
                     f" ({mask.sum()} tiles)")
            row[0].scatter(f[mask], y[mask], s=5, alpha=0.5, color=colours[key], label=label, linewidths=0)
            row[1].scatter(f[mask], y[mask] - b[mask], s=5, alpha=0.5, color=colours[key], linewidths=0)
            grid = np.linspace(0, max(f.max(), 1e-6), 20)
            row[1].plot(grid, effect[key] * grid, color=colours[key], linewidth=2, label=f"stated slope {effect[key]:g}")
        units = models[name]["units"]
        row[0].set_ylabel(f"{_label(name)}\n({units})", fontsize=9)
        row[0].set_title(f"{_label(name)} against the {_label(concept)} fraction", fontsize=10)
        row[1].set_title(f"the same, less everything but the {_label(concept)} term", fontsize=10)
        row[1].set_ylabel("$y - b$", fontsize=9)
        for ax in row:
            ax.set_xlabel(f"{_label(concept)} fraction of the tile", fontsize=9)
            ax.legend(fontsize=8, frameon=False, loc="upper left", markerscale=3)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
    if not names:
        for ax in axes.flat:
            ax.set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no outcome has an interval effect", ha="center", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    return fig
