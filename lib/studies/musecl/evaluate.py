"""Downstream evaluation of the region embeddings: probes under spatial block cross-validation, against the truth.

Two protocols, both fixed in advance:

* **Spatial** (the study's): every feature set of a city (:func:`feature_sets`)
  predicts every outcome by ridge regression, :func:`ridge_cv`, on spatial
  block folds with a buffer (``block_m`` blocks, training regions closer than
  ``gap_m`` to a test region dropped). The penalty is chosen per outcome by an
  inner cross-validation over the spatial blocks of the fold's training part
  (grouped k-fold), so it never sees the test fold. The probes are vectorised:
  one SVD per (fold, inner split) serves every penalty and every outcome.
* **Reference** (MuseCL's code): a random 60/20/20 split of the regions per
  training seed (:func:`reference_split`) and an MLP of hidden layers
  512-256-128-64 (:func:`reference_mlp`), R^2 on the random test fifth.

The frame of every number (:func:`truth_features`): each modality's
**oracle**, the same probe on the true quantities that modality renders
(``city.json``'s ``modality_features``); the **observable ceiling**, on
everything some input shows; the **full ceiling**, on those and the factors
no input shows (``hidden_factors``). All are out-of-fold on the probes' folds,
like the embeddings' scores. The **trivial** rungs (:func:`trivial_features`)
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

from lib.eval.spatial_cv import DEFAULT_ALPHAS
from lib.studies.musecl.train import standardise
from lib.timing import phase

__all__ = ["FEATURE_SETS", "PAIR_VARIANTS", "SINGLE_MODALITIES", "RidgeCV", "attention_agreement", "best_single",
           "feature_sets", "probe_seed", "reference_mlp", "reference_split", "ridge_cv", "trivial_features",
           "truth_features"]

#: The single modalities a fusion is set against, each trained from its semantic pairs (POI text: MiniLM).
SINGLE_MODALITIES = ("aerial", "street_view", "poi_text")
#: Each image encoder trained from other pairs, by modality: (semantic, spatial neighbours, random, oracle).
PAIR_VARIANTS = {"aerial": ("aerial", "tile2vec", "aerial_random", "aerial_oracle"),
                 "street_view": ("street_view", "street_neighbour", "street_random", "street_oracle")}
#: Feature sets probed, in table order: trivial rungs, MuseCL's fusions, comparators, single modalities, baselines.
FEATURE_SETS = ("poi_counts", "image_statistics", "fusion_infonce", "fusion_mse", "fusion_text", "concat",
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
    """The oracle and ceiling inputs (module docstring): ``oracle_<modality>``, ``observable`` and ``full``."""
    def columns(names: Sequence[str]) -> np.ndarray:
        absent = [c for c in names if c not in table.columns]
        if absent:
            raise KeyError(f"the region table lacks the truth columns {absent}")
        return table[list(names)].to_numpy(np.float64)

    observable = list(dict.fromkeys(c for cols in modality_features.values() for c in cols))
    out = {f"oracle_{m}": columns(cols) for m, cols in modality_features.items() if cols}
    out["observable"] = columns(observable)
    out["full"] = columns(list(dict.fromkeys([*observable, *hidden_factors])))
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


def _ridge_predictions(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """``(A, m, T)`` predictions of ridge regressions with intercept, one per penalty, for ``x_new``.

    Features standardised on ``x_fit`` (a constant column: 0), ``y`` centred; with
    ``X = U S V^T`` the coefficients are ``V diag(s / (s^2 + alpha)) U^T (y - mean y)``
    (the minimiser of ``|y - X b|^2 + alpha |b|^2``, as scikit-learn's ``Ridge`` after a ``StandardScaler``).
    """
    mean, sd = x_fit.mean(0), x_fit.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    xf, xn = (x_fit - mean) / sd, (x_new - mean) / sd
    y_mean = y_fit.mean(0)
    u, s, vt = np.linalg.svd(xf, full_matrices=False)
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (A, r)
    projected = u.T @ (y_fit - y_mean)  # (r, T)
    return np.einsum("mr,ar,rt->amt", xn @ vt.T, shrink, projected) + y_mean


def _r2(observed: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R^2 per outcome (last axis) as scikit-learn's ``r2_score``; ``predicted`` may lead with penalty axes."""
    residual = ((observed - predicted) ** 2).sum(-2)
    total = ((observed - observed.mean(0)) ** 2).sum(0)
    return 1.0 - residual / np.where(total > 0, total, np.nan)


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
                scores += _r2(y[val_rows], _ridge_predictions(x[fit_rows], y[fit_rows], x[val_rows], a))
            scores /= n_splits
            best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)  # first of equals
            predicted = _ridge_predictions(x[train], y[train], x[test], a)[best, :, np.arange(y.shape[1])].T
            predictions[test] = predicted
            test_r2[k] = _r2(y[test], predicted)
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
    y = _targets(table, targets)
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


def _targets(table: pd.DataFrame, targets: Sequence[str]) -> np.ndarray:
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

    y = _targets(table, targets)
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
    return _r2(y[test], predicted), float(model.best_validation_score_)


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
