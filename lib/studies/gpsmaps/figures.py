"""Figures of the gpsmaps study: cleaned maps, views, training, probe results, embeddings over space."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

import lib.plots  # noqa: F401  (the compendium's theme)
from lib.data.map_views import MultiCropConfig, multi_crop
from lib.studies.gpsmaps.data import MapSet


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def kept_and_dropped(maps: MapSet, threshold: float, n: int = 8):
    """The lowest-entropy maps that were kept and the highest-entropy ones that were dropped, per row."""
    t = maps.table
    kept = t[t["kept"]].sort_values("entropy").index[:n]
    dropped = t[~t["kept"]].sort_values("entropy", ascending=False).index[:n]
    fig, axes = plt.subplots(2, n, figsize=(1.45 * n, 4.2), squeeze=False)
    for row, (label, rows) in enumerate((("kept", kept), ("dropped", dropped))):
        for k in range(n):
            ax = axes[row, k]
            if k < len(rows):
                i = rows[k]
                _show(ax, maps.images[i].permute(1, 2, 0).numpy(), f"{t.loc[i, 'place'].replace('_', ' ')}\nH = {t.loc[i, 'entropy']:.2f}")
            else:
                ax.set_axis_off()
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"Maps at the entropy threshold {threshold:g} nats: the least varied kept (top), the most varied "
                 f"dropped (bottom); {int((~t['kept']).sum())} of {len(t)} dropped", fontsize=9)
    fig.tight_layout()
    return fig


def views_example(maps: MapSet, views: MultiCropConfig, seed: int, n_maps: int = 3):
    """The global and local views of a few maps, one row per map."""
    rows = np.flatnonzero(maps.table["kept"].to_numpy())[:n_maps]
    crops = multi_crop(maps.images[torch.as_tensor(rows)], views, torch.Generator().manual_seed(seed))
    n_cols = 1 + len(crops)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.35 * n_cols, 1.5 * len(rows)), squeeze=False)
    for r in range(len(rows)):
        _show(axes[r, 0], maps.images[rows[r]].permute(1, 2, 0).numpy(), "map" if r == 0 else None)
        for v, crop in enumerate(crops):
            kind = "global" if v < views.n_global else "local"
            _show(axes[r, 1 + v], crop[r].permute(1, 2, 0).numpy(), f"{kind} {crop.shape[-1]} px" if r == 0 else None)
    fig.tight_layout()
    return fig


def training_history(history: pd.DataFrame, variant: str):
    """Each loss term's weighted magnitude (left, log scale) and the label-free indicators (right) per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for column in [c for c in history if c.startswith("loss_") and c != "loss_total"]:
        term = column.removeprefix("loss_")
        weight = history.get(f"weight_{term}", 1.0)
        left.plot(history["epoch"], history[column] * weight, marker="o", label=f"{term} (weighted)")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_title(f"{variant}: loss terms as they enter the loss", fontsize=10)
    left.legend(fontsize=8, frameon=False)
    if "teacher_entropy" not in history:
        right.plot(history["epoch"], history["embedding_std"], marker="s", color="#c44e52")
        right.set_title("embedding std", fontsize=10)
        right.set_xlabel("epoch")
        fig.tight_layout()
        return fig
    right.plot(history["epoch"], history["teacher_entropy"], marker="o", label="teacher entropy")
    right.axhline(float(history["log_k"].iloc[0]), color="0.5", linestyle="--", linewidth=1, label="log K")
    right.set_xlabel("epoch")
    right.set_ylabel("nats")
    twin = right.twinx()
    twin.plot(history["epoch"], history["embedding_std"], marker="s", color="#c44e52", label="embedding std")
    twin.set_ylabel("std of unit embeddings")
    twin.set_ylim(0, None)
    right.set_title("collapse indicators", fontsize=10)
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    right.legend(handles=handles, fontsize=8, frameon=False, loc="lower right")
    for ax in (left, right):  # whole epochs, at most about ten labels (they collide beyond)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, pd.DataFrame]):
    """Every variant's total loss and teacher entropy per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for name, h in histories.items():
        if "loss_dino" not in h:
            continue
        axes[0].plot(h["epoch"], h["loss_dino"], marker="o", label=name)
        axes[1].plot(h["epoch"], h["teacher_entropy"], marker="o", label=name)
        axes[2].plot(h["epoch"], h["embedding_std"], marker="o", label=name)
    for ax, title in zip(axes, ("DINO loss", "teacher entropy (nats)", "embedding std"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def probe_bars(results: pd.DataFrame, metric_of: dict[str, str], order: list[str]):
    """One panel per target: each feature set's mean over folds with +- 1 sd."""
    targets = list(dict.fromkeys(results["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.4 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        metric = metric_of[results.loc[results["target"] == target, "task"].iloc[0]]
        rows = results[results["target"] == target].set_index("features").reindex(order).dropna(how="all")
        y = np.arange(len(rows))
        colours = ["#4c72b0" if n in ("full", "no_geo", "no_reconstruction", "no_clustering", "dino") else "#8c8c8c"
                   for n in rows.index]
        ax.barh(y, rows[f"{metric}_mean"], xerr=rows[f"{metric}_sd"], color=colours, capsize=2)
        ax.set_yticks(y, [n.replace("_", " ") for n in rows.index], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{target.replace('_', ' ')}: {metric.replace('_', ' ')}", fontsize=10)
        ax.axvline(0, color="0.3", linewidth=0.8)
    fig.text(0.5, -0.02, "Mean over spatial block folds, error bars +- 1 sd. Blue: map embeddings; grey: baselines.",
             ha="center", fontsize=9, color="0.3")
    fig.tight_layout()
    return fig


def embedding_maps(table: pd.DataFrame, rgb: np.ndarray, places: list[str], title: str):
    """Map centres of each place coloured by the first three principal components of their embeddings."""
    fig, axes = plt.subplots(1, len(places), figsize=(3.6 * len(places), 3.6), squeeze=False)
    for ax, place in zip(axes[0], places, strict=True):
        rows = (table["place"] == place).to_numpy()
        x, y = table.loc[rows, "easting"].to_numpy() / 1e3, table.loc[rows, "northing"].to_numpy() / 1e3
        ax.scatter(x - x.min(), y - y.min(), c=rgb[rows], s=14, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(place.replace("_", " "), fontsize=10)
        ax.set_xlabel("km east")
    axes[0, 0].set_ylabel("km north")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ladder_figure(ladder):
    """A ladder's rows bottom-up (trivial at the bottom): mean R^2 and its 95 % interval, coloured by rung."""
    colours = {"trivial": "#8c8c8c", "method": "#c44e52", "variant": "#4c72b0", "bound": "#55a868",
               "ceiling": "#8172b2"}
    rows = [r for r in ladder.rows if r.cell is not None]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))
    means = [r.cell.mean for r in rows]
    low = [r.cell.mean - (r.cell.low if r.cell.low is not None else r.cell.mean) for r in rows]
    high = [(r.cell.high if r.cell.high is not None else r.cell.mean) - r.cell.mean for r in rows]
    ax.barh(y, means, xerr=[low, high], color=[colours[r.rung] for r in rows], capsize=2)
    ax.set_yticks(y, [r.name for r in rows], fontsize=8)
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel(f"{ladder.metric}, mean over spatial folds (seeds averaged), 95 % interval")
    ax.set_title(ladder.title, fontsize=10)
    fig.tight_layout()
    return fig


def budget_figure(points, random_cell=None):
    """Pooled R^2 against training steps for each training (95 % intervals), the random-weight encoder dashed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for training in dict.fromkeys(p.training for p in points):
        mine = [p for p in points if p.training == training]
        steps = [p.step for p in mine]
        means = np.array([p.cell.mean for p in mine])
        lows = np.array([p.cell.low if p.cell.low is not None else p.cell.mean for p in mine])
        highs = np.array([p.cell.high if p.cell.high is not None else p.cell.mean for p in mine])
        ax.errorbar(steps, means, yerr=[means - lows, highs - means], marker="o", capsize=3, label=training)
    if random_cell is not None:
        ax.axhline(random_cell.mean, color="0.4", linestyle="--", label="random weights")
    ax.set_xlabel("training steps")
    ax.set_ylabel("R², mean over outcomes")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
