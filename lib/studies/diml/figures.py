"""Figures of the DIML study: training curves, retrieval bars and the re-ranking depth sweep over seeds,
structural matches; each returns its Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.eval.intervals import IntervalCell
from lib.plots import curves


def training_curves(history: pd.DataFrame):
    """Training loss and validation MAP@R per epoch: the mean over seeds, one line per model (loss / objective)."""
    mean = history.groupby(["model", "epoch"], sort=False)[["loss", "val_score"]].mean().reset_index()
    return curves.training_curves(mean, {"loss": "training loss (mean over seeds)",
                                         "val_score": "validation MAP@R (train digits, held out)"}, hue="model")


def _errors(cells) -> tuple[np.ndarray, np.ndarray]:
    """Means and the (2, n) distances below and above them of interval cells (0 without an interval)."""
    means = np.array([c.mean for c in cells])
    low = np.array([c.mean if c.low is None else c.low for c in cells])
    high = np.array([c.mean if c.high is None else c.high for c in cells])
    return means, np.stack([means - low, high - means])


def metric_bars(table: pd.DataFrame, retrieval: Mapping[str, Mapping[str, Mapping[str, IntervalCell]]],
                metrics: Sequence[str]):
    """One panel per metric: per loss and variant, the mean over seeds with its 95 % interval (the summary's
    ``retrieval`` cells, :mod:`lib.studies.diml.summary`), and the seeds of ``table`` as dots."""
    variants = list(dict.fromkeys(table["variant"]))
    losses = list(dict.fromkeys(table["loss"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), squeeze=False)
    step = 0.8 / len(variants)
    for ax, metric in zip(axes[0], metrics):
        labelled, shown = set(), []
        for i, variant in enumerate(variants):
            for j, loss in enumerate(losses):
                cell = retrieval.get(loss, {}).get(variant, {}).get(metric)
                if cell is None:
                    continue
                x = j - 0.4 + (i + 0.5) * step
                mean, error = _errors([cell])
                ax.errorbar(x, mean, yerr=error, fmt="o", color=f"C{i}", capsize=3,
                            label=None if variant in labelled else variant)
                labelled.add(variant)
                shown.append(cell)
                seeds = table[(table.loss == loss) & (table.variant == variant)][metric]
                ax.plot(np.full(len(seeds), x + step / 3), seeds, ".", color=f"C{i}", ms=3, alpha=0.6)
        ax.set_xticks(range(len(losses)), [loss.replace("_", "-") for loss in losses])
        ax.set_title(metric.replace("_at_", "@").replace("_", " "), fontsize=10)
        _limits(ax, shown)
    axes[0, -1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _limits(ax, cells, pad: float = 0.02) -> None:
    """Y limits around the intervals, within [0, 1] (the range of every metric, which the intervals respect)."""
    means, error = _errors(cells)
    low, high = (means - error[0]).min(), (means + error[1]).max()
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))


def rerank_depth(sweep: Mapping[str, Mapping[str, Mapping[str, Mapping[str, IntervalCell]]]],
                 metrics: Sequence[str] = ("recall_at_1", "r_precision", "map_at_r")):
    """Metric against the re-ranking depth K (0 = global ranking): mean over seeds with 95 % intervals, from the
    summary's ``depth_sweep.metrics`` cells (loss -> variant -> K -> metric).

    One row of panels per loss, one panel per metric, one line per swept variant;
    K on an evenly spaced axis labelled with its values.
    """
    losses = list(sweep)
    depths = sorted({int(k) for variants in sweep.values() for by_k in variants.values() for k in by_k})
    position = {k: i for i, k in enumerate(depths)}
    fig, axes = plt.subplots(len(losses), len(metrics), figsize=(3.6 * len(metrics), 2.8 * len(losses)),
                             squeeze=False, sharex=True)
    for r, loss in enumerate(losses):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            shown = []
            for i, (variant, by_k) in enumerate(sweep[loss].items()):
                ks = sorted(int(k) for k in by_k)
                cells = [by_k[str(k)][metric] for k in ks]
                means, error = _errors(cells)
                x = np.array([position[k] for k in ks]) + (i - 0.5) * 0.08
                ax.errorbar(x, means, yerr=error, marker="o", ms=3, capsize=2, color=f"C{i}",
                            label=f"{variant} model" if variant != "rerank" else "global model")
                shown += cells
            ax.set_title(f"{loss.replace('_', '-')}: {metric.replace('_at_', '@').replace('_', ' ')}", fontsize=9)
            _limits(ax, shown)
            ax.set_xticks(range(len(depths)), [str(k) for k in depths])
            if r == len(losses) - 1:
                ax.set_xlabel("re-ranking depth K")
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


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


def validation_curves(history: pd.DataFrame):
    """Validation MAP@R per epoch of every training (one thin line per seed), one panel per set; a dot marks
    the epoch each training kept. ``history``: rows of set, model, seed, epoch, val_score."""
    sets = list(dict.fromkeys(history["set"]))
    models = list(dict.fromkeys(history["model"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        labelled = set()
        for (model, _), run in history[history["set"] == name].groupby(["model", "seed"], sort=False):
            run = run.sort_values("epoch")
            best = run.loc[run["val_score"].idxmax()]
            ax.plot(run["epoch"] + 1, run["val_score"], color=colours[model], lw=1, alpha=0.8,
                    label=None if model in labelled else model)
            labelled.add(model)
            ax.plot(best["epoch"] + 1, best["val_score"], "o", color=colours[model], ms=4)
        ax.set(title=name, xlabel="epoch", ylabel="validation MAP@R")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
