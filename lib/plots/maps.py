"""Values of tiles drawn at their places (easting, northing)."""

from __future__ import annotations

import numpy as np


def regular_grid(easting: np.ndarray, northing: np.ndarray, values: np.ndarray):
    """Values of tiles on a regular grid as an image (north up) and its extent, or None if irregular."""
    xs, ys = np.unique(easting), np.unique(northing)
    if len(xs) * len(ys) > 2 * len(values):
        return None
    image = np.full((len(ys), len(xs)), np.nan)
    image[len(ys) - 1 - np.searchsorted(ys, northing), np.searchsorted(xs, easting)] = values
    dx = (xs[-1] - xs[0]) / max(len(xs) - 1, 1) / 2
    dy = (ys[-1] - ys[0]) / max(len(ys) - 1, 1) / 2
    return image, (xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy)


def tile_map(ax, easting: np.ndarray, northing: np.ndarray, values: np.ndarray, **style):
    """Tile values at their places: an image when the tiles form a regular grid, else square markers."""
    grid = regular_grid(easting, northing, values)
    if grid is not None:
        return ax.imshow(grid[0], extent=grid[1], interpolation="nearest", **style)
    return ax.scatter(easting, northing, c=values, s=8, marker="s", **style)


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """The first three principal components of ``features`` (N, D), each scaled to [0, 1] (robustly: 2-98 %).

    Colours places by their embeddings: places whose embeddings are alike get alike colours.
    """
    centred = features - features.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:3].T
    low, high = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    return np.clip((pcs - low) / np.where(high > low, high - low, 1), 0, 1)
