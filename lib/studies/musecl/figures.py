"""Figures of the musecl study: semantic pairs, training, attention over the city, results against the truth."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import lib.plots  # noqa: F401  (the compendium's theme)


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _rgb(image) -> np.ndarray:
    return np.asarray(image)[:3].transpose(1, 2, 0)


def example_pairs(aerial, street, triplets_aerial, triplets_street, sim_aerial, sim_street, n: int = 3):
    """Rows of (anchor, positive, negative): aerial images paired by POIs, street views by mobility.

    Titles give each region's similarity to the anchor (cosine of POI
    histograms, or of flow profiles).
    """
    fig, axes = plt.subplots(2 * n, 3, figsize=(4.6, 3.0 * n), squeeze=False)
    for block, (images, triplets, sim, kind) in enumerate(
            ((aerial, triplets_aerial, sim_aerial, "POI"), (street, triplets_street, sim_street, "mobility"))):
        a, p, neg = triplets
        for r in range(n):
            row = block * n + r
            for c, (label, region) in enumerate((("anchor", a[r]), ("positive", p[r]), ("negative", neg[r]))):
                image = images[region] if images.dim() == 4 else images[region, 0]
                value = sim[a[r], region]
                shown = f"{value:.2f}" if np.isfinite(value) else "none"
                title = label if c == 0 else f"{label}\n{kind} sim {shown}"
                _show(axes[row, c], _rgb(image), title)
            axes[row, 0].set_ylabel("aerial" if block == 0 else "street", fontsize=8)
    fig.suptitle("Semantic pairs: aerial images by POI similarity (top), street views by mobility (bottom)",
                 fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, pd.DataFrame]):
    """Loss per epoch of every encoder and fusion, and the held-out triplet ranking of the triplet encoders."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, h in histories.items():
        axes[0].plot(h["epoch"], h["loss"] / h["loss"].iloc[0], label=name)
        if "heldout_triplets_ranked" in h:
            axes[1].plot(h["epoch"], h["heldout_triplets_ranked"], marker="o", ms=3, label=name)
    axes[0].set(xlabel="epoch", ylabel="loss / first epoch's", title="training loss")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set(xlabel="epoch", ylabel="share ranked d(a,p) < d(a,n)", title="held-out triplets", ylim=(0, 1))
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def attention_map(table: pd.DataFrame, weights: np.ndarray, modalities: list[str], title: str):
    """Region centres coloured by the attention weight of the first modality (the other's is one minus it)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    sc = axes[0].scatter(table["easting"], table["northing"], c=weights[:, 0], s=14, marker="h", cmap="coolwarm",
                         vmin=0, vmax=1)
    axes[0].set_aspect("equal")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    fig.colorbar(sc, ax=axes[0], label=f"weight of {modalities[0]}")
    axes[1].hist(weights[:, 0], bins=30, color="tab:blue")
    axes[1].set(xlabel=f"weight of {modalities[0]} (1 - weight of {modalities[1]})", ylabel="regions")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def embedding_map(table: pd.DataFrame, rgb: np.ndarray, title: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(table["easting"], table["northing"], c=rgb, s=16, marker="h")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def results_against_truth(results: pd.DataFrame, truth: dict[str, pd.DataFrame], order: list[str], probe: str):
    """R^2 (mean +- sd over folds) of each feature set per city and outcome; the oracle R^2 as lines.

    Dashed: the noise ceiling; dotted: all true factors; coloured ticks: each single modality's true factors.
    """
    cities = list(truth)
    targets = list(dict.fromkeys(results["target"]))
    fig, axes = plt.subplots(len(cities), len(targets), figsize=(2.3 * len(targets), 2.6 * len(cities)),
                             squeeze=False, sharey=True)
    sub = results[results["probe"] == probe]
    colours = plt.get_cmap("tab10")
    for r, city in enumerate(cities):
        for c, target in enumerate(targets):
            ax = axes[r, c]
            part = sub[(sub["city"] == city) & (sub["target"] == target)].set_index("features").reindex(order)
            x = np.arange(len(order))
            ax.bar(x, part["r2_mean"].clip(lower=-0.2), yerr=part["r2_sd"], color=[colours(i % 10) for i in x],
                   capsize=2)
            oracle = truth[city].loc[target]
            ax.axhline(oracle["ceiling"], color="black", ls="--", lw=1)
            ax.axhline(oracle["all_factors"], color="black", ls=":", lw=1)
            ax.set_xticks(x, order, rotation=90, fontsize=7)
            ax.set_ylim(-0.2, 1.0)
            if r == 0:
                ax.set_title(target.replace("_", " "), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{city.replace('_', ' ')}\nR² ({probe})", fontsize=8)
    fig.suptitle("Region embeddings under spatial block CV (bars: mean ± sd over folds); "
                 "dashed: noise ceiling, dotted: all true factors", fontsize=9)
    fig.tight_layout()
    return fig
