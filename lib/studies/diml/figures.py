"""Figures of the DIML study: training curves, retrieval bars, structural matches; each returns its Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.plots import curves


def training_curves(history: pd.DataFrame):
    """Training loss and validation MAP@R per epoch, one line per model (loss / objective)."""
    return curves.training_curves(history, {"loss": "training loss",
                                            "val_score": "validation MAP@R (train classes, held out)"}, hue="model")


def _centres(grid: int, size: int) -> np.ndarray:
    """Pixel centres (row, col) of the cells of a grid x grid map over a size x size image."""
    step = size / grid
    c = (np.arange(grid) + 0.5) * step - 0.5
    rows, cols = np.meshgrid(c, c, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def matching_flows(ax, query: np.ndarray, match: np.ndarray, plan: np.ndarray, grid: int, top: int = 12, gap: int = 6):
    """Two images side by side with the ``top`` largest transport flows T_ij drawn as lines.

    ``plan`` is (N, M) over row-major grid locations of the query and the match;
    line width and opacity grow with the flow.
    """
    h, w = query.shape[:2]
    canvas = np.full((h, 2 * w + gap), np.nan)
    canvas[:, :w], canvas[:, w + gap :] = query, match
    ax.imshow(canvas, cmap="gray")
    centres = _centres(grid, h)
    flat = plan.ravel()
    strongest = np.argsort(flat)[::-1][:top]
    scale = flat[strongest].max() if len(strongest) else 1.0
    for idx in strongest:
        i, j = divmod(int(idx), plan.shape[1])
        (r0, c0), (r1, c1) = centres[i], centres[j]
        weight = flat[idx] / scale
        ax.plot([c0, c1 + w + gap], [r0, r1], color="tab:orange", lw=0.5 + 2.5 * weight, alpha=0.3 + 0.7 * weight)
    ax.axis("off")


def contribution_overlay(ax, image: np.ndarray, contributions: np.ndarray, grid: int, vmax: float | None = None):
    """An image overlaid with its per-location contributions (a grid x grid heat map)."""
    h, w = image.shape[:2]
    ax.imshow(image, cmap="gray")
    im = ax.imshow(
        contributions.reshape(grid, grid), cmap="magma", alpha=0.55, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
        interpolation="nearest", vmin=0, vmax=vmax,
    )
    ax.axis("off")
    return im


def metric_bars(table: pd.DataFrame, metrics: Sequence[str]):
    """One bar panel per metric: loss on the x axis, variant as hue."""
    long = table.melt(id_vars=["loss", "variant"], value_vars=list(metrics), var_name="metric")
    grid = sns.catplot(long, kind="bar", x="loss", y="value", hue="variant", col="metric", height=3.2, aspect=1.2, sharey=False)
    for ax in grid.axes.flat:
        for container in ax.containers:
            ax.bar_label(container, fmt="%.3f", fontsize=7)
    return grid.figure


def structural_matches(queries: np.ndarray, matches: np.ndarray, match, grid: int, titles: Sequence[str] | None = None, top: int = 12):
    """Rows of (flows between query and match | query contributions | match contributions).

    ``match`` is a StructuralMatch of the pairs; contributions of location i of
    the query are sum_j T_ij S_ij, of location j of the match sum_i T_ij S_ij.
    """
    plan = match.plan.detach().cpu().numpy()
    contrib = match.contributions.detach().cpu().numpy()
    n = len(queries)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.3 * n), squeeze=False, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    vmax = max(contrib.sum(axis=2).max(), contrib.sum(axis=1).max())
    for r in range(n):
        matching_flows(axes[r, 0], queries[r], matches[r], plan[r], grid, top=top)
        axes[r, 0].set_title((titles[r] + ": " if titles else "") + f"s = {contrib[r].sum():.3f}", fontsize=9)
        contribution_overlay(axes[r, 1], queries[r], contrib[r].sum(axis=1), grid, vmax)
        im = contribution_overlay(axes[r, 2], matches[r], contrib[r].sum(axis=0), grid, vmax)
    axes[0, 1].set_title("query: sum_j T S", fontsize=9)
    axes[0, 2].set_title("match: sum_i T S", fontsize=9)
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.6, label="contribution")
    return fig
