"""Figures of the map tiles (the ``maps`` stage): maps of every place side by side, labelled centres.

Kept apart from :mod:`lib.studies.geodata.figures` (the cities' figures) so that
the ``maps`` stage depends on map code only.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import lib.plots  # noqa: F401  (the compendium's seaborn theme)


def map_rows(datasets: Mapping[str, xr.Dataset], n: int = 8, scale: float = 1.4):
    """The first ``n`` maps of every place side by side, one row per place (the same style throughout)."""
    fig, axes = plt.subplots(len(datasets), 1, figsize=(scale * n, (scale + 0.25) * len(datasets)), squeeze=False)
    for ax, (place, ds) in zip(axes[:, 0], datasets.items(), strict=True):
        images = ds["image"].values[:n]
        gap = np.full((images.shape[1], 2, 3), 255, dtype=np.uint8)
        ax.imshow(np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"{place.replace('_', ' ')} ({ds.attrs.get('source', '')})", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def centres_by_label(datasets: Mapping[str, xr.Dataset], label: str = "land_price"):
    """Map centres of each place that has ``label`` (km east and north of the place's south-westmost centre),
    coloured by the label; places without the label (the OSM maps) are left out."""
    places = {p: ds for p, ds in datasets.items() if label in ds and np.isfinite(ds[label].values).any()}
    if not places:
        raise ValueError(f"no place has values of {label!r}")
    fig, axes = plt.subplots(1, len(places), figsize=(3.6 * len(places), 3.4), squeeze=False)
    for ax, (place, ds) in zip(axes[0], places.items(), strict=True):
        x, y = ds["easting"].values / 1e3, ds["northing"].values / 1e3
        points = ax.scatter(x - x.min(), y - y.min(), c=ds[label].values, s=10, cmap="viridis")
        ax.set_title(f"{place.replace('_', ' ')} ({ds.attrs.get('crs', '')})", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("km east")
        units = ds[label].attrs.get("units", "")
        fig.colorbar(points, ax=ax, shrink=0.8, label=label.replace("_", " ") + (f"\n({units})" if units else ""))
    axes[0, 0].set_ylabel("km north")
    fig.tight_layout()
    return fig
