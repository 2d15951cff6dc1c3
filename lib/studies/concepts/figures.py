"""Figures of the concepts study; each function returns its Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns

from lib.plots.curves import training_curves as training_curves_of
from lib.plots.grids import image_grid, rgb_composite
from lib.plots.maps import tile_map
from lib.studies.concepts.model import VARIANT_LABELS

SPLIT_COLOURS = {"fit": "#c7c7c7", "validation": "#1f77b4", "test": "#ff7f0e"}
METRIC_LABELS = {"r2": "R^2", "kendall_tau": "Kendall tau", "latent_spearman": "distance Spearman", "knn_r2": "kNN R^2"}


def tiles_by_outcome(images, outcome: np.ndarray, band_names: Sequence[str], label: str, n: int = 10):
    """``n`` tiles at evenly spaced outcome quantiles, lowest first, titled with their outcome."""
    order = np.argsort(outcome)
    chosen = order[np.linspace(0, len(order) - 1, n).round().astype(int)]
    fig = image_grid(rgb_composite(images[chosen], band_names), titles=[f"{outcome[i]:.3g}" for i in chosen], ncols=n)
    fig.suptitle(f"tiles from the lowest to the highest {label}", y=1 + 0.3 / fig.get_figheight())
    return fig


def outcome_map(easting: np.ndarray, northing: np.ndarray, outcome: np.ndarray, split: np.ndarray, label: str):
    """The outcome of each tile at its place (left) and the tile's split (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    fig.colorbar(tile_map(axes[0], easting, northing, outcome, cmap="viridis"), ax=axes[0], shrink=0.8)
    axes[0].set_title(label, fontsize=10)
    names = list(SPLIT_COLOURS)
    codes = np.array([names.index(s) for s in split], dtype=float)
    tile_map(axes[1], easting, northing, codes, cmap=ListedColormap(list(SPLIT_COLOURS.values())), vmin=-0.5, vmax=2.5)
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
    panels = history.assign(rnc_loss=history["loss"].where(history["variant"] == "rnc"),
                            l1_loss=history["loss"].where(history["variant"] == "baseline"))
    return training_curves_of(panels, {"rnc_loss": f"{VARIANT_LABELS['rnc']}: RNC loss",
                                       "l1_loss": f"{VARIANT_LABELS['baseline']}: L1 loss",
                                       "val_score": "validation R^2"}, hue="variant", labels=VARIANT_LABELS)


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
