"""Figures of the concepts study (lib.concepts_study); each function returns its Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from lib import plots
from lib.concepts_study import VARIANT_LABELS

SPLIT_COLOURS = {"fit": "#c7c7c7", "validation": "#1f77b4", "test": "#ff7f0e"}
METRIC_LABELS = {"r2": "R^2", "kendall_tau": "Kendall tau", "latent_spearman": "distance Spearman", "knn_r2": "kNN R^2"}


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


def tiles_by_outcome(images, outcome: np.ndarray, band_names: Sequence[str], label: str, n: int = 10):
    """``n`` tiles at evenly spaced outcome quantiles, lowest first, titled with their outcome."""
    order = np.argsort(outcome)
    chosen = order[np.linspace(0, len(order) - 1, n).round().astype(int)]
    fig = plots.image_grid(rgb_composite(images[chosen], band_names), titles=[f"{outcome[i]:.3g}" for i in chosen], ncols=n)
    fig.suptitle(f"tiles from the lowest to the highest {label}", y=1 + 0.3 / fig.get_figheight())
    return fig


def _as_grid(easting: np.ndarray, northing: np.ndarray, values: np.ndarray):
    """Values of tiles on a regular grid as an image (north up) and its extent, or None if irregular."""
    xs, ys = np.unique(easting), np.unique(northing)
    if len(xs) * len(ys) > 2 * len(values):
        return None
    image = np.full((len(ys), len(xs)), np.nan)
    image[len(ys) - 1 - np.searchsorted(ys, northing), np.searchsorted(xs, easting)] = values
    dx = (xs[-1] - xs[0]) / max(len(xs) - 1, 1) / 2
    dy = (ys[-1] - ys[0]) / max(len(ys) - 1, 1) / 2
    return image, (xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy)


def _map(ax, easting: np.ndarray, northing: np.ndarray, values: np.ndarray, **style):
    """Tile values at their places: an image when the tiles form a regular grid, else square markers."""
    grid = _as_grid(easting, northing, values)
    if grid is not None:
        return ax.imshow(grid[0], extent=grid[1], interpolation="nearest", **style)
    return ax.scatter(easting, northing, c=values, s=8, marker="s", **style)


def outcome_map(easting: np.ndarray, northing: np.ndarray, outcome: np.ndarray, split: np.ndarray, label: str):
    """The outcome of each tile at its place (left) and the tile's split (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    fig.colorbar(_map(axes[0], easting, northing, outcome, cmap="viridis"), ax=axes[0], shrink=0.8)
    axes[0].set_title(label, fontsize=10)
    names = list(SPLIT_COLOURS)
    codes = np.array([names.index(s) for s in split], dtype=float)
    _map(axes[1], easting, northing, codes, cmap=ListedColormap(list(SPLIT_COLOURS.values())), vmin=-0.5, vmax=2.5)
    handles = [Patch(color=c, label=f"{name} ({(split == name).sum()})") for name, c in SPLIT_COLOURS.items()]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    axes[1].set_title("split (stratified on outcome quantiles)")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlabel("easting (m)")
        ax.ticklabel_format(style="plain", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("northing (m)")
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame):
    """RNC loss, L1 loss and validation R^2 per epoch (the R^2 of the RNC run is its linear probe's)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for ax, variant in zip(axes[:2], ("rnc", "baseline"), strict=True):
        rows = history[history["variant"] == variant]
        ax.plot(rows["epoch"] + 1, rows["loss"], marker="o")
        ax.set_title(f"{VARIANT_LABELS[variant]}: {'RNC' if variant == 'rnc' else 'L1'} loss", fontsize=10)
    for variant, rows in history.groupby("variant", sort=False):
        axes[2].plot(rows["epoch"] + 1, rows["val_score"], marker="o", label=VARIANT_LABELS[variant])
    axes[2].set_title("validation R^2", fontsize=10)
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def metric_bars(metrics: pd.DataFrame, columns: Sequence[str] = tuple(METRIC_LABELS)):
    """Test metrics of each variant side by side, one group of bars per metric."""
    long = (metrics[list(columns)].rename(index=VARIANT_LABELS, columns=METRIC_LABELS)
            .reset_index(names="variant").melt(id_vars="variant", var_name="metric"))
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    sns.barplot(long, x="metric", y="value", hue="variant", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7)
    ax.set_xlabel("")
    ax.set_ylabel("test split")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def tsne_panels(coords: Mapping[str, np.ndarray], outcome: np.ndarray, label: str):
    """t-SNE maps of each variant's test embeddings, points coloured by the true outcome."""
    fig, axes = plt.subplots(1, len(coords), figsize=(4.6 * len(coords), 4.2), squeeze=False)
    for ax, (variant, xy) in zip(axes[0], coords.items(), strict=True):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=outcome, cmap="viridis", s=12)
        ax.set_title(VARIANT_LABELS.get(variant, variant))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes[0].tolist(), shrink=0.8, label=label)
    return fig


def concept_examples(images, band_names: Sequence[str], members: Mapping[str, np.ndarray], n: int = 6):
    """A row of example tiles for each concept."""
    names = list(members)
    fig, axes = plt.subplots(len(names), n, figsize=(1.2 * n + 1.6, 1.25 * len(names)), squeeze=False)
    shown = [members[name][:n] for name in names]
    # One stretch for all rows, so colours compare across concepts.
    rgb = dict(zip(names, np.split(rgb_composite(images[np.concatenate(shown)], band_names),
                                   np.cumsum([len(s) for s in shown])[:-1]), strict=True))
    for r, name in enumerate(names):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if c < len(rgb[name]):
                ax.imshow(rgb[name][c])
        axes[r, 0].set_ylabel(name.replace("_", "\n"), rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return fig


def sensitivity_heatmaps(matrices: Mapping[str, pd.DataFrame], edges: np.ndarray, statistic: str, label: str):
    """Concept x outcome-interval heat maps of the TCAV ``statistic``, one per variant.

    Cells hold the mean over random runs where the concept is significant in
    that interval; blank cells are not significant. 0.5 (white) is no
    preference; red cells raise the prediction along the concept, blue lower it.
    """
    concepts = list(dict.fromkeys(c for m in matrices.values() for c in m.index))
    n_intervals = len(edges) - 1
    ticks = [f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(n_intervals)]
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 + 1.3 * n_intervals * len(matrices), 0.45 * len(concepts) + 1.6),
                             squeeze=False, sharey=True)
    for ax, (variant, matrix) in zip(axes[0], matrices.items(), strict=True):
        full = matrix.reindex(index=concepts, columns=range(n_intervals)).astype(float)
        sns.heatmap(full, ax=ax, cmap="RdBu_r", vmin=0, vmax=1, center=0.5, annot=True, fmt=".2f", cbar=ax is axes[0, -1],
                    cbar_kws={"label": f"TCAV {statistic}"}, linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8})
        ax.set_facecolor("#f2f2f2")
        ax.set_title(VARIANT_LABELS.get(variant, variant))
        ax.set_xticklabels(ticks, rotation=0, fontsize=8)
        ax.set_xlabel(f"{label} interval (test tiles)")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def agreement_scatter(sensitivity: Mapping[str, pd.Series], true_effects: pd.Series, agreement: pd.DataFrame, statistic: str):
    """Each concept's mean TCAV ``statistic`` against its true weight in the generator, per variant."""
    fig, axes = plt.subplots(1, len(sensitivity), figsize=(4.8 * len(sensitivity), 4), squeeze=False, sharey=True)
    rows = agreement[agreement["statistic"] == statistic].set_index("variant")
    for ax, (variant, values) in zip(axes[0], sensitivity.items(), strict=True):
        common = sorted((c for c in values.index if c in true_effects.index), key=lambda c: true_effects[c])
        ax.scatter(true_effects[common], values[common], color="tab:blue")
        for rank, concept in enumerate(common):  # labels alternate above and below, so neighbours do not overlap
            ax.annotate(concept.replace("_", " "), (true_effects[concept], values[concept]), fontsize=7,
                        xytext=(3, 4 if rank % 2 else -10), textcoords="offset points")
        ax.axhline(0.5, color="grey", lw=0.6, ls="--")
        ax.axvline(0, color="grey", lw=0.6, ls="--")
        r = rows.loc[variant]
        rank = f"Spearman {r['spearman']:.2f}, Kendall {r['kendall']:.2f}" if np.isfinite(r["spearman"]) else "too few concepts"
        ax.set_title(f"{VARIANT_LABELS.get(variant, variant)}\n{rank}", fontsize=10)
        ax.set_xlabel("true weight of the class in the generator")
    axes[0, 0].set_ylabel(f"mean TCAV {statistic} (all intervals)")
    fig.tight_layout()
    return fig
