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

from lib.eval.intervals import IntervalCell
from lib.plots.grids import image_grid, rgb_composite
from lib.plots.maps import tile_map
from lib.studies.concepts.model import VARIANT_LABELS

def _errors(cells: Sequence[IntervalCell | None]) -> tuple[np.ndarray, np.ndarray]:
    """Means (NaN for a missing cell) and the (2, n) distances below and above them (0 without an interval)."""
    means = np.array([np.nan if c is None else c.mean for c in cells], float)
    low = np.array([np.nan if c is None else c.mean if c.low is None else c.low for c in cells], float)
    high = np.array([np.nan if c is None else c.mean if c.high is None else c.high for c in cells], float)
    return means, np.nan_to_num(np.stack([means - low, high - means]))


def _rho(cell: IntervalCell | None) -> str:
    return "undefined" if cell is None else cell.format(digits=2)


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
    axes[1].set_title("split (whole spatial blocks)")
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
    """RNC loss, L1 loss and validation R^2 per epoch, one line per seed (the R^2 of the RNC run is its probe's)."""
    panels = {"rnc": ("loss", f"{VARIANT_LABELS['rnc']}: RNC loss"),
              "baseline": ("loss", f"{VARIANT_LABELS['baseline']}: L1 loss")}
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 3.2))
    for colour, variant in enumerate(VARIANT_LABELS):
        for seed, rows in history[history["variant"] == variant].groupby("seed"):
            epochs = rows["epoch"] + 1
            label = VARIANT_LABELS[variant] if seed == history["seed"].min() else None
            axes[colour].plot(epochs, rows[panels[variant][0]], marker="o", color=f"C{colour}", alpha=0.8)
            axes[2].plot(epochs, rows["val_score"], marker="o", color=f"C{colour}", alpha=0.8, label=label)
        axes[colour].set_title(panels[variant][1], fontsize=10)
    axes[2].set_title("validation R^2", fontsize=10)
    axes[2].legend(fontsize=8, frameon=False)
    epochs = np.sort(history["epoch"].unique()) + 1
    for ax in axes:
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"one line per seed ({history['seed'].nunique()} seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def metric_bars(summary_variants: Mapping[str, Mapping[str, IntervalCell | None]],
                columns: Sequence[str] = tuple(METRIC_LABELS)):
    """Test metrics of each variant side by side: bars at the mean over seeds, 95 % interval, one dot per seed
    (``summary_variants``: the summary's ``variants`` cells, :mod:`lib.studies.concepts.summary`)."""
    variants = list(summary_variants)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(variants)
    for k, variant in enumerate(variants):
        x = np.arange(len(columns)) + (k - (len(variants) - 1) / 2) * width
        cells = [summary_variants[variant][m] for m in columns]
        means, errors = _errors(cells)
        ax.bar(x, means, width * 0.95, color=f"C{k}", alpha=0.75, label=VARIANT_LABELS.get(variant, variant),
               yerr=errors, capsize=3, error_kw={"lw": 1})
        for xi, c in zip(x, cells, strict=True):
            seeds = [] if c is None else c.values
            ax.scatter(np.full(len(seeds), xi), seeds, s=9, color="black", zorder=3)
        for xi, m in zip(x, means, strict=True):  # the mean at the foot of the panel, clear of bars and whiskers
            ax.annotate(f"{m:.2f}", (xi, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(columns)), [METRIC_LABELS.get(c, c) for c in columns])
    ax.set_ylabel("test split")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("mean over seeds, 95 % interval, dots: seeds", fontsize=9)
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


def sensitivity_heatmaps(cells: pd.DataFrame, n_intervals: int, n_seeds: int, statistic: str, label: str):
    """Concept x outcome-interval heat maps of the TCAV ``statistic``, one per variant.

    ``cells``: :func:`lib.studies.concepts.summary.tcav_cells_over_seeds`.
    A cell shows the mean over seeds (of the mean over random runs) where the
    concept was significant in a majority of the seeds, and under it in how
    many; grey cells were significant in fewer. 0.5 (white) is no preference;
    red cells raise the prediction along the concept, blue lower it.
    """
    variants = list(dict.fromkeys(cells["variant"]))
    concepts = list(dict.fromkeys(cells["concept"]))
    ticks = [f"Q{i + 1}" if n_intervals == 4 else f"{i + 1}/{n_intervals}" for i in range(n_intervals)]
    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 + 1.3 * n_intervals * len(variants), 0.5 * len(concepts) + 1.8),
                             squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants, strict=True):
        rows = cells[cells["variant"] == variant]
        mean = rows.pivot(index="concept", columns="interval", values="mean").reindex(index=concepts, columns=range(n_intervals))
        count = rows.pivot(index="concept", columns="interval", values="significant_seeds").reindex(
            index=concepts, columns=range(n_intervals))
        shown = mean.where(count > n_seeds / 2).astype(float)
        text = np.full(mean.shape, "", dtype=object)
        for i, j in np.ndindex(mean.shape):
            m, k = mean.iat[i, j], count.iat[i, j]
            if np.isfinite(k):
                text[i, j] = (f"{m:.2f}\n" if k > n_seeds / 2 else "") + f"{int(k)}/{n_seeds}"
        sns.heatmap(shown, ax=ax, cmap="RdBu_r", vmin=0, vmax=1, center=0.5, annot=text, fmt="", cbar=ax is axes[0, -1],
                    cbar_kws={"label": f"TCAV {statistic}"}, linewidths=0.5, linecolor="white", annot_kws={"fontsize": 7})
        ax.set_facecolor("#e6e6e6")
        ax.set_title(VARIANT_LABELS.get(variant, variant))
        ax.set_xticklabels(ticks, rotation=0, fontsize=8)
        ax.set_xlabel(f"{label} quantile interval (test tiles)")
        ax.set_ylabel("")
    fig.suptitle(f"mean over {n_seeds} seeds where significant in most; k/{n_seeds}: seeds significant", fontsize=9)
    fig.tight_layout()
    return fig


def agreement_scatter(sensitivity: Mapping[str, pd.DataFrame], true_effects: pd.Series, agreement: Mapping,
                      statistic: str):
    """Each concept's mean TCAV ``statistic`` against its true weight in the generator, per variant.

    ``sensitivity[variant]``: concepts x seeds; points at the mean over seeds
    with the seeds' range as a bar. ``agreement``: the summary's
    ``ground_truth_agreement`` (:class:`lib.studies.concepts.summary.Agreement`: Spearman's rho with its
    95 % interval over seeds).
    """
    fig, axes = plt.subplots(1, len(sensitivity), figsize=(4.8 * len(sensitivity), 4), squeeze=False, sharey=True)
    for ax, (variant, values) in zip(axes[0], sensitivity.items(), strict=True):
        common = sorted((c for c in values.index if c in true_effects.index), key=lambda c: true_effects[c])
        mean = values.loc[common].mean(axis=1)
        low, high = values.loc[common].min(axis=1), values.loc[common].max(axis=1)
        ax.errorbar(true_effects[common], mean, yerr=[mean - low, high - mean], fmt="o", color="tab:blue", capsize=2)
        for rank, concept in enumerate(common):  # labels alternate above and below, so neighbours do not overlap
            ax.annotate(concept.replace("_", " "), (true_effects[concept], mean[concept]), fontsize=7,
                        xytext=(3, 4 if rank % 2 else -10), textcoords="offset points")
        ax.axhline(0.5, color="grey", lw=0.6, ls="--")
        ax.axvline(0, color="grey", lw=0.6, ls="--")
        rho = agreement[variant].spearman
        title = "too few concepts" if rho is None else f"Spearman {rho.format(digits=2)}"
        ax.set_title(f"{VARIANT_LABELS.get(variant, variant)}\n{title}", fontsize=10)
        ax.set_xlabel("true weight of the class in the generator")
    axes[0, 0].set_ylabel(f"mean TCAV {statistic} (all intervals; bar: seeds' range)")
    fig.tight_layout()
    return fig


def interval_truth(truth: Mapping, statistic: str, label: str):
    """The interval concept's true effect per outcome interval (left) and its TCAV ``statistic`` (right).

    ``truth``: the summary's ``interval_truth``
    (:class:`lib.studies.concepts.summary.IntervalTruthSummary`); both panels
    show the mean over seeds with its 95 % interval.
    """
    k = len(truth.true_slope)
    x = np.arange(k)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4))

    def draw(ax, cells, **style):
        means, errors = _errors(cells)
        ax.errorbar(x, means, yerr=errors, capsize=3, marker="o", **style)

    draw(axes[0], truth.true_slope, color="black")
    axes[0].set_title(f"true effect of the {truth.concept.replace('_', ' ')} fraction\n(mean over the test tiles)", fontsize=10)
    axes[0].set_ylabel(f"d {label} / d fraction")
    for colour, (variant, row) in enumerate(truth.variants.items()):
        draw(axes[1], row.tcav, color=f"C{colour}", label=f"{VARIANT_LABELS.get(variant, variant)} (rho {_rho(row.spearman)})")
    axes[1].axhline(0.5, color="grey", lw=0.6, ls="--")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_title(f"TCAV {statistic} of {truth.concept.replace('_', ' ')}", fontsize=10)
    axes[1].legend(fontsize=8, frameon=False)
    for ax in axes:
        ax.set_xticks(x, [f"Q{i + 1}" if k == 4 else f"{i + 1}/{k}" for i in range(k)])
        ax.set_xlabel(f"{label} quantile interval (test tiles)")
    fig.tight_layout()
    return fig


def positive_control(control, n_seeds: int, statistic: str):
    """TCAV's positive control per outcome interval of the control's output: the model's true response to more of
    the concept (left: finite difference, mean and 95 % interval over seeds) and TCAV's reading (right: mean
    statistic, 0.5 = no preference), with in how many seeds TCAV was significant and recovered the planted cell.
    ``control``: :class:`lib.studies.concepts.summary.ControlSummary`."""
    k = len(control.tcav)
    x = np.arange(k)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.3))
    for ax, cells, title in ((axes[0], control.finite_difference, "true response to more " + control.concept),
                             (axes[1], control.tcav, f"TCAV {statistic} of {control.concept}")):
        means, errors = _errors(cells)
        ax.bar(x, means, 0.6, yerr=errors, capsize=3, color="C2", alpha=0.75)
        for xi, c in zip(x, cells, strict=True):
            values = [] if c is None else c.values
            ax.scatter(np.full(len(values), xi), values, s=9, color="black", zorder=3)
        ax.set_xticks(x, [f"{i + 1}/{k}" for i in range(k)])
        ax.set_xlabel("interval of the control's output")
        ax.set_title(title, fontsize=9)
    axes[1].axhline(0.5, color="black", lw=0.6, ls="--")
    axes[1].set_ylim(0, 1.12)
    axes[1].set_xlim(-0.5, k - 0.5)
    for xi, (sig, rec) in enumerate(zip(control.significant_seeds, control.recovered_seeds, strict=True)):
        axes[1].annotate(f"sig {sig}/{n_seeds}\nrec {rec}/{n_seeds}", (xi, 1.0), ha="center", fontsize=7)
    axes[0].axhline(0, color="black", lw=0.6)
    fig.tight_layout()
    return fig


def ladder_bars(ladder):
    """A ladder (:class:`lib.eval.claims.Ladder`) as horizontal bars, bottom rung at the bottom: mean over seeds,
    95 % interval, one dot per seed."""
    rows = ladder.rows
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    means, errors = _errors([r.cell for r in rows])
    y = np.arange(len(rows))
    colours = {"trivial": "#999999", "method": "C0", "variant": "C0", "bound": "C1", "ceiling": "C2"}
    ax.barh(y, means, xerr=errors, color=[colours[r.rung] for r in rows], alpha=0.8, capsize=3)
    for yi, r in zip(y, rows, strict=True):
        values = [] if r.cell is None else r.cell.values
        ax.scatter(values, np.full(len(values), yi), s=9, color="black", zorder=3)
    ax.set_yticks(y, [f"{r.name} [{r.rung}]" for r in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(ladder.metric)
    ax.set_title(ladder.title, fontsize=9)
    fig.tight_layout()
    return fig
