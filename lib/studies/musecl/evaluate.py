"""Downstream evaluation of the region embeddings: probes under spatial block cross-validation, against the truth.

Two protocols, both fixed in advance:

* **Spatial** (the study's): every feature set of a city (:func:`feature_sets`)
  predicts every outcome by ridge regression, :func:`ridge_cv`, on spatial
  block folds with a buffer (``block_m`` blocks, training regions closer than
  ``gap_m`` to a test region dropped). The penalty is chosen per outcome by an
  inner cross-validation over the spatial blocks of the fold's training part
  (grouped k-fold), so it never sees the test fold. The probes are vectorised:
  one SVD per (fold, inner split) serves every penalty and every outcome
  (:func:`lib.eval.spatial_cv.ridge_path`, shared with the other studies'
  probes, whose inner split is spatial folds with a gap instead).
* **Reference** (MuseCL's code): a random 60/20/20 split of the regions per
  training seed (:func:`reference_split`) and an MLP of hidden layers
  512-256-128-64 (:func:`reference_mlp`), R^2 on the random test fifth.

The frame of every number (:func:`truth_features`): each modality's
**oracle**, the same probe on the true quantities that modality renders
(``city.json``'s ``modality_features``); the **observable ceiling**, on
everything some input shows; the **full ceiling**, on those and the factors
no input shows (``hidden_factors``). All are out-of-fold on the probes' folds,
like the embeddings' scores. The **supervised bound** (MuseCL's encoders
trained on the outcomes of each fold's training regions,
:func:`lib.studies.musecl.train.train_supervised`) is scored on the same
folds (:func:`supervised_rows`). The **trivial** rungs (:func:`trivial_features`)
are POI counts with the category histogram, and per-band image statistics.

"Best single modality" (:func:`best_single`) is chosen per fold and outcome
among :data:`SINGLE_MODALITIES` by the inner cross-validation R^2 on that
fold's training regions, never by the test score.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from lib.eval.spatial_cv import DEFAULT_ALPHAS, r2_scores, ridge_path
from lib.studies.musecl.train import standardise
from lib.timing import phase

__all__ = ["FEATURE_SETS", "PAIR_VARIANTS", "SINGLE_MODALITIES", "RidgeCV", "attention_agreement", "best_single",
           "feature_sets", "outcomes", "probe_seed", "reference_mlp", "reference_split", "ridge_cv",
           "supervised_rows", "supervised_seed", "trivial_features", "truth_features"]

#: The single modalities a fusion is set against, each trained from its semantic pairs (POI text: MiniLM).
SINGLE_MODALITIES = ("aerial", "street_view", "poi_text")
#: Each image encoder trained from other pairs, by modality: (semantic, spatial neighbours, random, oracle).
PAIR_VARIANTS = {"aerial": ("aerial", "tile2vec", "aerial_random", "aerial_oracle"),
                 "street_view": ("street_view", "street_neighbour", "street_random", "street_oracle")}
#: Feature sets probed, in table order: trivial rungs, MuseCL's fusions, comparators, single modalities, baselines.
FEATURE_SETS = ("poi_counts", "image_statistics", "fusion_infonce", "fusion_mse", "fusion_text", "fusion_finetuned",
                "concat",
                "aerial", "street_view", "poi_text", "simclr", "tile2vec", "aerial_random", "aerial_oracle",
                "street_neighbour", "street_random", "street_oracle")


def trivial_features(n_pois_by_category: np.ndarray, aerial: torch.Tensor, street: torch.Tensor) -> dict[str, np.ndarray]:
    """The trivial rungs: ``poi_counts`` = ``log(1 + [total, per category])`` (N, 1 + C), and
    ``image_statistics`` = the mean and sd of every band of the aerial image (N, C, H, W) and of the street
    views (N, V, C, H, W, pooled over views)."""
    h = np.asarray(n_pois_by_category, np.float64)
    if h.ndim != 2 or len(h) != len(aerial) or len(street) != len(aerial):
        raise ValueError(f"one row per region needed: histograms {h.shape}, aerial {tuple(aerial.shape)}, "
                         f"street {tuple(street.shape)}")
    stats = []
    for images in (aerial, street.transpose(1, 2)):  # street: (N, C, V, H, W), statistics over views and pixels
        flat = images.reshape(images.shape[0], images.shape[1], -1).double()
        stats += [flat.mean(-1), flat.std(-1)]
    return {"poi_counts": np.log1p(np.concatenate([h.sum(1, keepdims=True), h], axis=1)),
            "image_statistics": torch.cat(stats, dim=1).numpy()}


def feature_sets(embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The probed feature sets of one training seed, in the order of :data:`FEATURE_SETS`.

    ``embeddings`` holds what ``musecl_train`` stored (the encoders', the
    fusions', ``poi_text``, ``text_reduced`` and the trivial rungs); added:
    ``concat``, the standardised aerial, street-view and reduced text
    embeddings side by side: the inputs of the three-way fusion without the
    attention, its direct comparator (the reference's "concat").
    """
    missing = [k for k in ("aerial", "street_view", "text_reduced") if k not in embeddings]
    if missing:
        raise KeyError(f"the stored embeddings lack {missing}: rerun musecl_train")
    out = dict(embeddings)
    out["concat"] = np.concatenate([standardise(embeddings[k]) for k in ("aerial", "street_view", "text_reduced")],
                                   axis=1)
    return {name: out[name] for name in FEATURE_SETS if name in out}


def truth_features(table: pd.DataFrame, modality_features: Mapping[str, Sequence[str]],
                   hidden_factors: Sequence[str]) -> dict[str, np.ndarray]:
    """The oracle and ceiling inputs (module docstring): ``oracle_<modality>``, ``observable`` and ``full``; each
    only where it has columns (none for an imported city, whose truth is unknown)."""
    def columns(names: Sequence[str]) -> np.ndarray:
        absent = [c for c in names if c not in table.columns]
        if absent:
            raise KeyError(f"the region table lacks the truth columns {absent}")
        return table[list(names)].to_numpy(np.float64)

    observable = list(dict.fromkeys(c for cols in modality_features.values() for c in cols))
    out = {f"oracle_{m}": columns(cols) for m, cols in modality_features.items() if cols}
    full = list(dict.fromkeys([*observable, *hidden_factors]))
    if observable:
        out["observable"] = columns(observable)
    if full:
        out["full"] = columns(full)
    return out


@dataclass(frozen=True)
class RidgeCV:
    """:func:`ridge_cv`'s result: per fold and outcome the test R^2 ``test_r2`` (K, T), the inner cross-validation
    R^2 of the chosen penalty ``inner_r2`` (K, T) and the penalty ``alpha`` (K, T); ``predictions`` (n, T)
    out of fold (NaN where no fold tests a region)."""

    test_r2: np.ndarray
    inner_r2: np.ndarray
    alpha: np.ndarray
    predictions: np.ndarray


@phase("evaluate")
def ridge_cv(features: np.ndarray, targets: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]],
             inner_groups: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS, inner_folds: int = 5) -> RidgeCV:
    """Ridge probes of every column of ``targets`` (n, T) from ``features`` (n, d) over ``folds`` (module docstring).

    Per fold, the penalty of each outcome is the one of highest mean R^2 over
    a grouped k-fold of the training regions by ``inner_groups`` (n,) (the
    first of equals, as scikit-learn's ``GridSearchCV``; at most as many splits
    as the training part has groups); the probe is then refitted on the whole
    training part and scored on the test fold.
    """
    x, y = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    groups = np.asarray(inner_groups)
    if x.ndim != 2 or len(y) != len(x) or groups.shape != (len(x),):
        raise ValueError(f"features must be (n, d), targets (n, T) and inner_groups (n,), got {x.shape}, {y.shape}, "
                         f"{groups.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features and targets must be finite")
    if not folds:
        raise ValueError("folds must hold at least one (train_idx, test_idx) pair")
    a = np.asarray(alphas, np.float64)
    test_r2, inner_r2, chosen = (np.empty((len(folds), y.shape[1])) for _ in range(3))
    predictions = np.full(y.shape, np.nan)
    with threadpool_limits(1):
        for k, (train, test) in enumerate(folds):
            n_splits = min(inner_folds, len(np.unique(groups[train])))
            if n_splits < 2:
                raise ValueError(f"fold {k}: its training part spans {n_splits} spatial block(s); the inner "
                                 "cross-validation needs two or more (use smaller blocks)")
            scores = np.zeros((len(a), y.shape[1]))
            for fit_idx, val_idx in GroupKFold(n_splits).split(train, groups=groups[train]):
                fit_rows, val_rows = train[fit_idx], train[val_idx]
                scores += r2_scores(y[val_rows], ridge_path(x[fit_rows], y[fit_rows], x[val_rows], a))
            scores /= n_splits
            best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)  # first of equals
            predicted = ridge_path(x[train], y[train], x[test], a)[best, :, np.arange(y.shape[1])].T
            predictions[test] = predicted
            test_r2[k] = r2_scores(y[test], predicted[None])[0]
            inner_r2[k] = scores[best, np.arange(y.shape[1])]
            chosen[k] = a[best]
    return RidgeCV(test_r2, inner_r2, chosen, predictions)


def best_single(inner_r2: Mapping[str, np.ndarray], test_r2: Mapping[str, np.ndarray],
                candidates: Sequence[str] = SINGLE_MODALITIES) -> tuple[np.ndarray, np.ndarray]:
    """Per fold and outcome, the candidate of highest *inner* R^2 (training regions only) and its *test* R^2.

    ``inner_r2`` and ``test_r2``: name -> (K, T) arrays of :class:`RidgeCV`.
    Returns ``(chosen index into candidates (K, T), test R^2 of the chosen (K, T))``.
    """
    missing = [c for c in candidates if c not in inner_r2 or c not in test_r2]
    if missing:
        raise KeyError(f"no scores of the candidate modalities {missing}")
    inner = np.stack([inner_r2[c] for c in candidates])
    test = np.stack([test_r2[c] for c in candidates])
    chosen = np.argmax(inner, axis=0)
    return chosen, np.take_along_axis(test, chosen[None], axis=0)[0]


def probe_seed(features: Mapping[str, np.ndarray], table: pd.DataFrame, targets: Sequence[str], folds,
               inner_groups: np.ndarray) -> pd.DataFrame:
    """Long rows (features, fold, target, r2, inner_r2) of every feature set, plus ``best_single`` and the
    modality it chose per fold and outcome (column ``chosen``)."""
    y = outcomes(table, targets)
    rows, inner, test = [], {}, {}
    for name, x in features.items():
        result = ridge_cv(x, y, folds, inner_groups)
        inner[name], test[name] = result.inner_r2, result.test_r2
        rows += [{"features": name, "fold": k, "target": t, "r2": result.test_r2[k, j], "inner_r2": result.inner_r2[k, j]}
                 for k in range(len(folds)) for j, t in enumerate(targets)]
    if all(c in features for c in SINGLE_MODALITIES):
        chosen, r2 = best_single(inner, test)
        rows += [{"features": "best_single", "fold": k, "target": t, "r2": r2[k, j],
                  "chosen": SINGLE_MODALITIES[chosen[k, j]]}
                 for k in range(len(folds)) for j, t in enumerate(targets)]
    return pd.DataFrame(rows)


def supervised_rows(predictions: np.ndarray, fold: np.ndarray, table: pd.DataFrame, targets: Sequence[str],
                    folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Long rows (features ``supervised``, fold, target, r2) of the supervised bound: per fold, the R^2 of the
    predictions (N, T) its model made for that fold's test regions.

    ``fold`` (N,) says which fold's model predicted each region (-1: none).
    Fails when those test regions are not the probes' ``folds``: the bound
    was trained on other folds (``musecl.split`` changed since), and its
    scores would not pair with the probes'.
    """
    y = outcomes(table, targets)
    predictions, fold = np.asarray(predictions, np.float64), np.asarray(fold)
    if predictions.shape != y.shape or fold.shape != (len(y),):
        raise ValueError(f"the supervised predictions are {predictions.shape} with folds {fold.shape}; the region "
                         f"table needs {y.shape} and ({len(y)},): rerun musecl_train")
    rows = []
    for k, (_, test) in enumerate(folds):
        if not np.array_equal(np.sort(test), np.flatnonzero(fold == k)):
            raise ValueError(f"fold {k}: the supervised bound's test regions differ from the probes' fold; "
                             "the bound was trained on other folds (musecl.split changed?): rerun musecl_train")
        r2 = r2_scores(y[test], predictions[test][None])[0]
        rows += [{"features": "supervised", "fold": k, "target": t, "r2": r2[j]} for j, t in enumerate(targets)]
    return pd.DataFrame(rows)


def supervised_seed(path, table: pd.DataFrame, targets: Sequence[str],
                    folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """:func:`supervised_rows` of one training seed's stored predictions
    (:func:`lib.studies.musecl.data.load_supervised`), checked against the city's regions and ``targets``."""
    from lib.studies.musecl.data import load_supervised

    regions, fold, stored, predictions = load_supervised(path)
    if not np.array_equal(regions, table["region"].to_numpy()):
        raise ValueError(f"{path}: its regions differ from the city's inhabited regions; rerun musecl_train")
    if stored != list(targets):
        raise ValueError(f"{path} predicts {stored}, the probes {list(targets)}: rerun musecl_train")
    return supervised_rows(predictions, fold, table, targets, folds)


def outcomes(table: pd.DataFrame, targets: Sequence[str]) -> np.ndarray:
    """(N, T) the ``targets`` columns of the region table, which must exist and be finite."""
    absent = [t for t in targets if t not in table.columns]
    if absent:
        raise KeyError(f"the region table has no outcome {absent}")
    y = table[list(targets)].to_numpy(np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"outcomes {list(targets)} have missing values among the inhabited regions")
    return y


def reference_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference protocol's random split of ``n`` regions: (train, validation, test) sorted index arrays of
    ``round(0.6 n)``, ``round(0.2 n)`` and the rest, from a permutation seeded by ``seed``."""
    if n < 5:
        raise ValueError(f"a 60/20/20 split needs at least 5 regions, got {n}")
    order = np.random.default_rng([seed, n]).permutation(n)
    n_train, n_val = round(0.6 * n), round(0.2 * n)
    return (np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_val]), np.sort(order[n_train + n_val:]))


@phase("evaluate")
def reference_mlp(features: np.ndarray, table: pd.DataFrame, targets: Sequence[str], seed: int,
                  hidden: Sequence[int] = (512, 256, 128, 64), max_iter: int = 200) -> tuple[np.ndarray, float]:
    """The reference protocol (module docstring): ``(test R^2 per outcome (T,), validation R^2)``.

    One scikit-learn ``MLPRegressor`` (ReLU layers ``hidden``, Adam) predicts
    all outcomes at once from features standardised on the training part, the
    outcomes standardised too; it stops when the R^2 of the validation fifth
    has not improved for 10 epochs (scikit-learn's early stopping, whose
    held-out share of the 80 % not tested is a quarter: 60/20/20) and is
    scored on the test fifth. The validation R^2 (mean over outcomes) is what
    the protocol may choose by.
    """
    from sklearn.neural_network import MLPRegressor

    y = outcomes(table, targets)
    train, val, test = reference_split(len(table), seed)
    fit_rows = np.concatenate([train, val])
    x = np.asarray(features, np.float64)
    x_mean, x_sd = x[fit_rows].mean(0), x[fit_rows].std(0)
    y_mean, y_sd = y[fit_rows].mean(0), y[fit_rows].std(0)
    xs = (x - x_mean) / np.where(x_sd > 0, x_sd, 1.0)
    ys = (y - y_mean) / np.where(y_sd > 0, y_sd, 1.0)
    model = MLPRegressor(hidden_layer_sizes=tuple(hidden), early_stopping=True, validation_fraction=len(val) / len(fit_rows),
                         n_iter_no_change=10, max_iter=max_iter, random_state=seed)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(xs[fit_rows], ys[fit_rows])
    predicted = model.predict(xs[test]).reshape(len(test), -1) * np.where(y_sd > 0, y_sd, 1.0) + y_mean
    return r2_scores(y[test], predicted[None])[0], float(model.best_validation_score_)


def attention_agreement(weights: np.ndarray, richness: np.ndarray) -> float:
    """Spearman's rho between one modality's attention weight (N,) and how rich its input is (N,), e.g. the
    text's weight in the three-way fusion against the region's POI count: positive when the fusion leans on
    a modality where it has more to say."""
    from scipy.stats import spearmanr

    w, r = np.asarray(weights, float), np.asarray(richness, float)
    if w.shape != r.shape or w.ndim != 1:
        raise ValueError(f"weights and richness must be (N,) each, got {w.shape} and {r.shape}")
    rho = spearmanr(w, r).statistic
    return float(rho) if np.isfinite(rho) else 0.0
