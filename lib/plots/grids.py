"""Images in grids and mosaics."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

import lib.plots  # noqa: F401  (the compendium's seaborn theme)


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, ncols: int = 10, cmap: str = "gray"):
    """A grid of images (N, H, W) or (N, H, W, 3) with optional titles."""
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def mosaic(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, h, w, ...) tiles in row-major order -> one (rows*h, cols*w, ...) image."""
    h, w = tiles.shape[1:3]
    rest = tiles.shape[3:]
    grid = tiles.reshape(rows, cols, h, w, *rest).swapaxes(1, 2)
    return grid.reshape(rows * h, cols * w, *rest)


def image_mosaic(images: np.ndarray, ncols: int = 8, title: str | None = None):
    """A grid of (n, h, w, 3) images without gaps (map tiles, street views)."""
    n = (len(images) // ncols) * ncols
    fig, ax = plt.subplots(figsize=(2 * ncols, 2 * n / ncols))
    ax.imshow(mosaic(images[:n], n // ncols, ncols))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def rgb_composite(images: torch.Tensor | np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    """(n, C, H, W) tiles -> (n, H, W, 3) true-colour images in [0, 1].

    Bands named red, green and blue are used when present, else the first
    three (one band: grey); each is stretched between its 2nd and 98th
    percentile over the tiles shown, so real data of any scale displays.
    """
    images = np.asarray(images, dtype=np.float64)
    names = [n.lower() for n in band_names]
    if {"red", "green", "blue"} <= set(names):
        order = [names.index(b) for b in ("red", "green", "blue")]
    else:
        order = [0, 1, 2] if images.shape[1] >= 3 else [0, 0, 0]
    rgb = images[:, order].transpose(0, 2, 3, 1)
    low, high = np.percentile(rgb, [2, 98], axis=(0, 1, 2))
    return np.clip((rgb - low) / np.maximum(high - low, 1e-12), 0, 1)
