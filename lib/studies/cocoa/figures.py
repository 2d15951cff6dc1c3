"""Figures of the COCOA study (matplotlib + seaborn); each returns its Figure.

Attribution maps are drawn with a diverging map centred at zero (red: raises
the explained score, blue: lowers it), scaled per map to its 99th percentile of
|a| so that one outlier pixel does not wash out the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle
from torch import Tensor

from lib.plots.curves import training_curves

TARGET_LABELS = {
    "label_free": "label-free",
    "contrastive_label_free": "contrastive label-free",
    "corpus": "corpus",
    "cocoa": "COCOA",
    "random": "random",
}
TARGETS_AND_RANDOM = tuple(TARGET_LABELS)
METHOD_LABELS = {"integrated_gradients": "Integrated Gradients", "gradient_shap": "GradientShap", "rise": "RISE"}


def _image(ax, image: Tensor | np.ndarray, title: str | None = None) -> None:
    ax.imshow(np.asarray(image).squeeze(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title or "", fontsize=8)
    ax.axis("off")


def _attribution(ax, attribution: Tensor | np.ndarray, title: str | None = None) -> None:
    a = np.asarray(attribution).reshape(-1, *np.asarray(attribution).shape[-2:]).sum(axis=0)
    limit = np.percentile(np.abs(a), 99) or 1.0
    ax.imshow(a, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title or "", fontsize=8)
    ax.axis("off")


def _box(ax, box, color: str) -> None:
    top, left, bottom, right = (int(v) for v in box)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec=color, lw=1.2))


def loss_curves(histories: Mapping[str, Mapping[int, Sequence[dict]]], column: str = "loss"):
    """A history's ``column`` per epoch (the training loss, or ``val_score``, the validation score early stopping
    reads), one panel per model ({title: {seed: history}}), one line per seed."""
    frames = [pd.DataFrame(h).assign(model=name, seed=f"seed {seed}")
              for name, by_seed in histories.items() for seed, h in by_seed.items()]
    frame = pd.concat(frames, ignore_index=True)
    wide = frame.assign(**{name: frame[column].where(frame["model"] == name) for name in histories})
    return training_curves(wide, {name: name for name in histories}, hue="seed")


def augmented_views(originals: Tensor, views: Sequence[Tensor]):
    """Each original digit (first column) and several random SimCLR views of it."""
    n, k = len(originals), len(views)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1), 1.4 * n), squeeze=False)
    for i in range(n):
        _image(axes[i, 0], originals[i], "original" if i == 0 else None)
        for j, view in enumerate(views):
            _image(axes[i, j + 1], view[i], f"view {j + 1}" if i == 0 else None)
    fig.tight_layout()
    return fig


def scene_grid(scenes, n: int = 10, captions: Sequence[str] | None = None):
    """Scenes with the named digit's box (red) and other digits' boxes (cyan), titled by the digit or caption."""
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        label = int(scenes.labels[i])
        _image(ax, scenes.images[i], captions[label] if captions else str(label))
        _box(ax, scenes.boxes[i], "tab:red")
        for other in scenes.other_boxes[i]:
            _box(ax, other, "tab:cyan")
    fig.tight_layout()
    return fig


def caption_similarity(embeddings: Tensor, captions: Sequence[str]):
    """Cosine similarities between the caption embeddings."""
    e = np.asarray(embeddings, dtype=float)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    sns.heatmap(e @ e.T, annot=True, fmt=".2f", annot_kws={"fontsize": 7}, cmap="viridis", ax=ax,
                xticklabels=[c.split()[-1] for c in captions], yticklabels=captions)
    ax.set_title("MiniLM: cosine similarity of the captions")
    fig.tight_layout()
    return fig


def removal_curves(curves: pd.DataFrame, method: str):
    """Insertion and deletion curves of one attribution method, averaged over explicands and seeds: rows metrics,
    columns setting x curve, one line per target (the tables hold the intervals)."""
    data = curves[curves.method.isin([method, "random"])].assign(
        target=lambda d: d.target.map(TARGET_LABELS),
        metric=lambda d: d.metric.str.replace("_", " "),
        panel=lambda d: d.setting.str.replace("_", "-") + ", " + d.curve,
    )
    grid = sns.relplot(
        data, kind="line", x="fraction", y="score", hue="target", row="metric", col="panel",
        errorbar=None, height=2.6, aspect=1.15, facet_kws={"sharey": "row"},
        hue_order=[TARGET_LABELS[t] for t in TARGETS_AND_RANDOM],
    )
    grid.set_titles("{row_name}\n{col_name}", size=8)
    grid.set_axis_labels("fraction of pixels", "score")
    grid.figure.suptitle(f"{METHOD_LABELS.get(method, method)}: insertion and deletion curves", y=1.03)
    return grid.figure


def attribution_examples(examples: Mapping[str, tuple[Tensor, Mapping[tuple[str, str], Tensor]]], methods: Sequence[str]):
    """For one explicand per setting: the image, then its attribution under each target (columns), per method (rows)."""
    targets = [t for t in TARGET_LABELS if t != "random"]
    rows = [(setting, method) for setting in examples for method in methods]
    fig, axes = plt.subplots(len(rows), len(targets) + 1, figsize=(1.6 * (len(targets) + 1), 1.7 * len(rows)), squeeze=False)
    for r, (setting, method) in enumerate(rows):
        image, maps = examples[setting]
        _image(axes[r, 0], image, f"{setting.replace('_', '-')}\n{METHOD_LABELS.get(method, method)}")
        for c, target in enumerate(targets):
            _attribution(axes[r, c + 1], maps[target, method], TARGET_LABELS[target] if r == 0 else None)
    fig.tight_layout()
    return fig


def augmentation_attributions(study):
    """Per image: a row of views (the original first) and below it the COCOA attribution of each view
    (corpus: the original; foil: random digits), titled with the view's contrastive corpus similarity."""
    names = list(study.views)
    n = len(study.originals)
    sim = study.similarity.set_index(["image", "augmentation"]).similarity
    fig, axes = plt.subplots(2 * n, len(names) + 1, figsize=(1.5 * (len(names) + 1), 3.0 * n), squeeze=False)
    for i in range(n):
        _image(axes[2 * i, 0], study.originals[i], "original")
        axes[2 * i + 1, 0].axis("off")
        for j, name in enumerate(names):
            _image(axes[2 * i, j + 1], study.views[name][i], name)
            _attribution(axes[2 * i + 1, j + 1], study.attributions[name][i], f"f = {sim[i, name]:.2f}")
    fig.tight_layout()
    return fig


def localisation_examples(
    scene_sets: Mapping[str, object], maps: Mapping[str, Mapping[tuple[str, str], Tensor]], method: str, n: int = 3
):
    """For ``n`` scenes of each set: the scene, then each target's attribution (one method), boxes drawn
    (red: the named digit, cyan: other digits)."""
    targets = [t for t in TARGET_LABELS if t != "random"]
    rows = [(name, i) for name in scene_sets for i in range(n)]
    fig, axes = plt.subplots(len(rows), len(targets) + 1, figsize=(1.7 * (len(targets) + 1), 1.8 * len(rows)), squeeze=False)
    for r, (name, i) in enumerate(rows):
        scenes_ = scene_sets[name]
        _image(axes[r, 0], scenes_.images[i], f"{name}: '{int(scenes_.labels[i])}'")
        for c, target in enumerate(targets):
            _attribution(axes[r, c + 1], maps[name][target, method][i], TARGET_LABELS[target] if r == 0 else None)
        for ax in axes[r]:
            _box(ax, scenes_.boxes[i], "tab:red")
            for other in scenes_.other_boxes[i]:
                _box(ax, other, "tab:cyan")
    fig.suptitle(f"{METHOD_LABELS.get(method, method)} attributions of image-caption similarity", y=1.0)
    fig.tight_layout()
    return fig


def _errors(rows: pd.DataFrame) -> np.ndarray:
    """(2, n) distances of the intervals' ends (``low``, ``high``) below and above the means (0 without one)."""
    mean = rows["mean"].to_numpy(float)
    low = rows["low"].astype(float).fillna(rows["mean"]).to_numpy()
    high = rows["high"].astype(float).fillna(rows["mean"]).to_numpy()
    return np.stack([mean - low, high - mean])


def localisation_scores(summary: pd.DataFrame, shares: Mapping[str, float]):
    """Pointing game and mass in box per target (bars) and method (hue), one row per scene set: means over seeds
    with their 95% intervals (:func:`lib.studies.cocoa.localisation.summarise_localisation`); the dashed line is
    chance for the mass in box (the box's share of the canvas)."""
    scores = ("pointing_game", "mass_in_box")
    sets = list(dict.fromkeys(summary.scenes))
    methods = [m for m in METHOD_LABELS if m in set(summary.method)]
    targets = [t for t in TARGET_LABELS if t in set(summary.target)]
    fig, axes = plt.subplots(len(sets), len(scores), figsize=(11, 3.2 * len(sets)), squeeze=False)
    width = 0.8 / len(methods)
    for r, name in enumerate(sets):
        for c, score in enumerate(scores):
            ax = axes[r, c]
            rows = summary[(summary.scenes == name) & (summary.score == score)]
            for k, method in enumerate(methods):
                by = rows[rows.method.isin([method, "random"])].set_index("target")
                x = np.arange(len(targets)) + (k - (len(methods) - 1) / 2) * width
                ax.bar(x, by.loc[targets, "mean"], width, yerr=_errors(by.loc[targets]),
                       label=METHOD_LABELS[method], capsize=2)
            if score == "mass_in_box":
                ax.axhline(shares[name], ls="--", color="k", lw=1)
            ax.set_xticks(np.arange(len(targets)), [TARGET_LABELS[t] for t in targets], rotation=20, fontsize=8)
            ax.set(ylim=(0, 1), title=f"{name} scenes: {score.replace('_', ' ')}")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def sanity_correlations(summary: pd.DataFrame, threshold: float):
    """The model-randomisation check: rank correlation between trained and randomised-encoder maps per target
    (bars) and method (hue), signed and absolute, means over seeds with 95% intervals; the dashed line is the
    pass bound fixed in advance."""
    kinds = {"rank_correlation": "signed maps", "rank_correlation_abs": "absolute maps"}
    methods = [m for m in METHOD_LABELS if m in set(summary.method)]
    targets = [t for t in TARGET_LABELS if t in set(summary.target)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(11, 3.4), squeeze=False)
    width = 0.8 / len(methods)
    for ax, (kind, title) in zip(axes[0], kinds.items(), strict=True):
        rows = summary[summary.correlation == kind]
        for k, method in enumerate(methods):
            by = rows[rows.method == method].set_index("target")
            x = np.arange(len(targets)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(x, by.loc[targets, "mean"], width, yerr=_errors(by.loc[targets]),
                   label=METHOD_LABELS[method], capsize=2)
        ax.axhline(threshold, ls="--", color="k", lw=1)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(np.arange(len(targets)), [TARGET_LABELS[t] for t in targets], rotation=20, fontsize=8)
        ax.set(ylim=(min(-0.2, float(rows["mean"].min()) - 0.1), 1.05), ylabel="Spearman rank correlation",
               title=f"trained vs randomised encoder, {title}")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def sanity_examples(example, methods: Sequence[str]):
    """One explicand, and per method (rows) each target's map from the trained encoder next to the map from
    the randomised encoder (columns)."""
    image, trained, randomised = example
    targets = [t for t in TARGET_LABELS if t != "random"]
    fig, axes = plt.subplots(len(methods), 2 * len(targets) + 1, figsize=(1.35 * (2 * len(targets) + 1), 1.6 * len(methods)),
                             squeeze=False)
    for r, method in enumerate(methods):
        _image(axes[r, 0], image, METHOD_LABELS.get(method, method))
        for c, target in enumerate(targets):
            top = r == 0
            _attribution(axes[r, 2 * c + 1], trained[target, method], f"{TARGET_LABELS[target]}\ntrained" if top else None)
            _attribution(axes[r, 2 * c + 2], randomised[target, method], f"{TARGET_LABELS[target]}\nrandomised" if top else None)
    fig.tight_layout()
    return fig


def sanity_cascade(cascade: pd.DataFrame, target: str = "cocoa"):
    """The cascading randomisation (Adebayo et al. 2018, Fig. 2's form): one panel per correlation (signed,
    absolute), the mean rank correlation between trained and randomised maps of ``target`` against the number of
    conv blocks re-drawn from the top, one line per method, with its 95 % interval."""
    rows = cascade[cascade.target == target]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    for ax, (correlation, title) in zip(axes, (("rank_correlation", "signed maps"),
                                               ("rank_correlation_abs", "absolute maps")), strict=True):
        for method, by_method in rows[rows.correlation == correlation].groupby("method", sort=False):
            by_method = by_method.sort_values("randomised_blocks")
            ax.plot(by_method.randomised_blocks, by_method["mean"], marker="o", label=method.replace("_", " "))
            if by_method["low"].notna().all():
                ax.fill_between(by_method.randomised_blocks, by_method["low"].astype(float),
                                by_method["high"].astype(float), alpha=0.2)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=title, xlabel="conv blocks randomised, from the top", xticks=sorted(rows.randomised_blocks.unique()))
    axes[0].set_ylabel("Spearman rank correlation")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
