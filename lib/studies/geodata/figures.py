"""Figures of the geo datasets: city mosaics, tiles with masks, outcome maps."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from lib.data.city import LANDCOVER_COLOURS, LandCover
from lib.plots.grids import mosaic


def _landcover_cmap() -> ListedColormap:
    return ListedColormap([np.array(LANDCOVER_COLOURS[c]) / 255 for c in LandCover])


def city_mosaic(ds: xr.Dataset, step: int = 2):
    """The whole city: aerial RGB, false-colour NIR and land cover side by side (every ``step``-th pixel)."""
    rows, cols = int(ds.row.max()) + 1, int(ds.col.max()) + 1
    image = ds.image.values[:, :, ::step, ::step].transpose(0, 2, 3, 1)  # (tile, y, x, band)
    rgb = mosaic(image[..., :3], rows, cols)
    nir = mosaic(image[..., [3, 0, 1]], rows, cols)
    cover = mosaic(ds.landcover.values[:, ::step, ::step], rows, cols)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
    for ax, img, title in zip(axes, (rgb, nir), ("aerial RGB", "false colour (NIR, R, G)"), strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
    axes[2].imshow(cover, cmap=_landcover_cmap(), vmin=-0.5, vmax=len(LandCover) - 0.5, interpolation="nearest")
    axes[2].set_title("land cover (the concepts' ground truth)")
    axes[2].legend(handles=_landcover_legend(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _landcover_legend() -> list[Patch]:
    return [Patch(color=np.array(LANDCOVER_COLOURS[c]) / 255, label=c.label.replace("_", " ")) for c in LandCover]


def tiles_with_masks(ds: xr.Dataset, tiles: Sequence[int], outcome: str):
    """Sample tiles (RGB) above their land-cover masks, titled with their outcome."""
    fig, axes = plt.subplots(2, len(tiles), figsize=(1.8 * len(tiles), 3.9), squeeze=False)
    for k, t in enumerate(tiles):
        tile = ds.isel(tile=int(t))
        axes[0, k].imshow(tile.image.values[:3].transpose(1, 2, 0))
        axes[0, k].set_title(f"{outcome}\n{float(tile[outcome]):.2f}", fontsize=8)
        axes[1, k].imshow(tile.landcover.values, cmap=_landcover_cmap(), vmin=-0.5, vmax=len(LandCover) - 0.5,
                          interpolation="nearest")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def outcome_maps(ds: xr.Dataset, outcomes: Sequence[str]):
    """One map per outcome over the tile grid."""
    rows, cols = int(ds.row.max()) + 1, int(ds.col.max()) + 1
    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.6 * len(outcomes), 4), squeeze=False)
    for ax, name in zip(axes[0], outcomes, strict=True):
        grid = np.full((rows, cols), np.nan)
        grid[ds.row.values, ds.col.values] = ds[name].values
        im = ax.imshow(grid, cmap="viridis")
        ax.set_title(f"{name} ({ds[name].attrs.get('units', '')})".replace(" ()", ""))
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
