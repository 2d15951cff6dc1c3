"""Figures of the musecl study: semantic pairs, training, attention over the city, the ladders of results."""

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


def supervised_curves(histories: dict[int, pd.DataFrame]):
    """The supervised bound's training per fold (``histories``: fold -> its history): the loss, and the
    held-out R^2 (mean over outcomes) that decides the plateau."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for fold, h in histories.items():
        axes[0].plot(h["epoch"], h["loss"], label=f"fold {fold}")
        axes[1].plot(h["epoch"], h["heldout_r2"], marker="o", ms=3, label=f"fold {fold}")
    axes[0].set(xlabel="epoch", ylabel="MSE of standardised outcomes", title="supervised bound: training loss")
    axes[1].axhline(0.0, color="grey", lw=0.8, ls="--")
    axes[1].set(xlabel="epoch", ylabel="R², mean over outcomes", title="held-out regions of the training part")
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


def ladder_figure(ladder):
    """A :class:`lib.eval.claims.Ladder` as horizontal bars read from the bottom (trivial) up (ceilings): the mean
    and its 95 % interval over the repetitions, coloured by rung; rows without a number are left out."""
    rows = [r for r in ladder.rows if r.cell is not None]
    colours = {"trivial": "tab:grey", "method": "tab:red", "variant": "tab:blue", "bound": "tab:green",
               "ceiling": "black"}
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rows) + 1.0))
    y = np.arange(len(rows))
    means = np.array([r.cell.mean for r in rows])
    low = np.array([r.cell.low if r.cell.low is not None else r.cell.mean for r in rows])
    high = np.array([r.cell.high if r.cell.high is not None else r.cell.mean for r in rows])
    ax.barh(y, means, xerr=[means - low, high - means], color=[colours[r.rung] for r in rows], capsize=2)
    ax.set_yticks(y, [r.name for r in rows], fontsize=7)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel(ladder.metric)
    ax.set_title(ladder.title, fontsize=8)
    fig.tight_layout()
    return fig
