"""Spatial block cross-validation and the probes evaluated with it.

Neighbouring map tiles overlap and share their surroundings, so a random
split lets a probe score by memorising places (Roberts et al., "Cross-
validation strategies for data with temporal, spatial, hierarchical, or
phylogenetic structure", Ecography 2017). Here:

* :func:`spatial_blocks` - point i of group g (a place, a city) lies in the
  square block (g, floor((x_i - min_g x) / b), floor((y_i - min_g y) / b)) of
  side b = ``block_m``, the grid anchored at the group's south-west corner;
  blocks of different groups never merge.
* :func:`spatial_block_folds` - the blocks are dealt to the folds at random
  and in turn (group by group, in a random order within each group), so every
  fold gets the same number of blocks up to one, overall and within each
  group. Fold k tests on the points of its blocks and trains on every other
  point at least ``gap_m`` from all of its test points of the same group
  (nearest test point by a KD-tree per group): the buffer drops training
  points with d(i, test) < gap_m. ``metric`` picks d: Euclidean between
  centres (the default), or Chebyshev, d = max(|dx|, |dy|), the one that
  matters for square, north-up windows of side w centred on the points: two
  such windows share a pixel iff |dx| < w and |dy| < w, i.e. iff d < w, so
  ``gap_m = w`` with ``metric="chebyshev"`` leaves no shared pixel between a
  fold's training and test windows (a Euclidean gap would need w sqrt 2, the
  window's diagonal). Points of different groups are never compared (they
  may lie in different coordinate systems).
* :func:`probe_cv` - per fold, a ridge regression (R^2, RMSE, MAE) or a
  multinomial logistic regression (accuracy, macro-F1) on standardised
  features; the penalty is chosen by an inner cross-validation on the fold's
  training points only (``GridSearchCV`` over a pipeline of scaler and model,
  so the scaler too is refitted inside every inner split), by R^2 or accuracy.
  The inner splits are shuffled k-fold (stratified by class for
  classification), or group k-fold over ``inner_groups``
  (e.g. the spatial blocks, for a spatial inner split too). Reported: each
  fold's metrics, and their mean and sample standard deviation (ddof = 1)
  over folds.
* :func:`mlp_probe_cv` - the compendium's one MLP probe, scored on the same
  folds and with the same metrics (its docstring states the architecture and
  the scaling); every study's "MLP" row is this probe.
* :func:`ridge_probe_cv` - the ridge probe of :func:`probe_cv`, vectorised
  over several targets and the whole penalty grid: per fold, features and
  targets are standardised on the fold's training part, one SVD of the
  training features, ``X = U S V^T``, gives every penalty's solution
  ``w_alpha = V diag(s / (s^2 + alpha)) U^T y``; the penalty of each target
  is chosen by the mean inner R^2 over a *spatial* inner split (group k-fold
  over the spatial blocks of the training part, the groups dealt as
  :func:`spatial_block_folds` deals blocks, with the same gap and metric).
* :func:`folds_for` - the folds of a table of places (``easting``,
  ``northing`` columns), the one fold builder the studies share.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from lib.timing import phase

__all__ = ["ProbeCV", "folds_for", "mlp_probe_cv", "probe_cv", "probe_estimator", "r2_scores", "ridge_path",
           "ridge_probe_cv", "spatial_block_folds", "spatial_blocks"]

#: The distances :func:`spatial_block_folds` can measure its gap by (cKDTree's Minkowski p).
GAP_METRICS = {"euclidean": 2.0, "chebyshev": np.inf}

DEFAULT_ALPHAS: tuple[float, ...] = tuple(10.0**k for k in range(-3, 5))
DEFAULT_CS: tuple[float, ...] = tuple(10.0**k for k in range(-3, 3))
#: Training points from which the MLP probe stops early on a held-out tenth. With fewer, the tenth is too
#: small to judge a plateau: on folds of about 200 points a classifier stopped after a dozen epochs at chance
#: accuracy (scikit-learn's patience is 10 epochs of one full batch each).
MLP_EARLY_STOPPING_MIN = 1000


def _coordinates(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    if groups is None:
        groups = np.zeros(len(x), dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != x.shape:
        raise ValueError(f"groups must be 1-D with one entry per point ({len(x)}), got shape {groups.shape}")
    return x, y, groups


def spatial_blocks(x: np.ndarray, y: np.ndarray, block_m: float, groups: np.ndarray | None = None) -> np.ndarray:
    """The block of every point, (n,) integer ids 0 .. n_blocks - 1 (module docstring).

    Ids are numbered in order of (group, block column, block row).
    """
    if not block_m > 0:
        raise ValueError(f"block_m must be > 0, got {block_m}")
    x, y, groups = _coordinates(x, y, groups)
    group_code = np.unique(groups, return_inverse=True)[1]
    column, row = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.int64)
    for g in np.unique(group_code):
        member = group_code == g
        column[member] = np.floor((x[member] - x[member].min()) / block_m)
        row[member] = np.floor((y[member] - y[member].min()) / block_m)
    keys = np.stack([group_code, column, row], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def spatial_block_folds(
    x: np.ndarray,
    y: np.ndarray,
    n_folds: int,
    block_m: float,
    gap_m: float,
    seed: int,
    groups: np.ndarray | None = None,
    metric: str = "euclidean",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spatial block k-fold splits with a buffer: a list of (train_idx, test_idx), sorted int arrays.

    Args:
        x, y: (n,) projected coordinates in metres (easting, northing).
        n_folds: k >= 2; there must be at least k blocks.
        block_m: side of the square blocks, > 0.
        gap_m: training points closer than this to a test point of their
            group are dropped from that fold's training set; >= 0.
        seed: seed of the random deal of blocks to folds.
        groups: (n,) place of each point (any labels); None = one place.
        metric: "euclidean" or "chebyshev", the distance the gap is measured by (module docstring).
    The test sets partition the points; a block lies in one test set only.
    """
    if not (isinstance(n_folds, (int, np.integer)) and n_folds >= 2):
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds}")
    if not gap_m >= 0:
        raise ValueError(f"gap_m must be >= 0, got {gap_m}")
    if metric not in GAP_METRICS:
        raise ValueError(f"metric must be one of {sorted(GAP_METRICS)}, got {metric!r}")
    block = spatial_blocks(x, y, block_m, groups)
    x, y, groups = _coordinates(x, y, groups)
    group_code = np.unique(groups, return_inverse=True)[1]
    n_blocks = int(block.max()) + 1 if len(block) else 0
    if n_blocks < n_folds:
        raise ValueError(
            f"{n_blocks} blocks of block_m={block_m} cannot fill n_folds={n_folds} folds; use smaller blocks"
        )

    rng = np.random.default_rng(seed)
    block_group = np.zeros(n_blocks, dtype=np.int64)
    block_group[block] = group_code
    # Blocks in group order, shuffled within each group, dealt in turn to the folds in a random order.
    order = np.lexsort((rng.permutation(n_blocks), block_group))
    block_fold = np.empty(n_blocks, dtype=np.int64)
    block_fold[order] = rng.permutation(n_folds)[np.arange(n_blocks) % n_folds]
    point_fold = block_fold[block]

    folds = []
    for k in range(n_folds):
        test = point_fold == k
        train = ~test
        if gap_m > 0:
            for g in np.unique(group_code[test]):
                in_group = group_code == g
                tree = cKDTree(np.stack([x[test & in_group], y[test & in_group]], axis=1))
                candidates = np.flatnonzero(train & in_group)
                distance, _ = tree.query(np.stack([x[candidates], y[candidates]], axis=1), k=1, p=GAP_METRICS[metric])
                train[candidates[distance < gap_m]] = False
        if not train.any():
            raise ValueError(f"fold {k} has no training point left after a gap_m={gap_m} buffer; use a smaller gap_m")
        folds.append((np.flatnonzero(train), np.flatnonzero(test)))
    return folds


def probe_estimator(task: str, alphas=DEFAULT_ALPHAS, cs=DEFAULT_CS, max_iter: int = 1000) -> tuple[Pipeline, dict]:
    """The probe of a task (scaler + Ridge or LogisticRegression) and its penalty grid for GridSearchCV."""
    if task == "regression":
        return Pipeline([("scale", StandardScaler()), ("model", Ridge())]), {"model__alpha": list(alphas)}
    if task == "classification":
        # lbfgs fits the multinomial (softmax) model for more than two classes.
        model = LogisticRegression(max_iter=max_iter)
        return Pipeline([("scale", StandardScaler()), ("model", model)]), {"model__C": list(cs)}
    raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")


@dataclass(frozen=True)
class ProbeCV:
    """Cross-validated probe results.

    ``per_fold``: each fold's metrics, its chosen penalty (``alpha`` or
    ``C``) and sizes; ``mean`` and ``sd`` (ddof = 1) of the metrics over
    folds; ``predictions``: (n,) the out-of-fold prediction of every point
    (each point is tested in exactly one fold).
    """

    per_fold: list[dict[str, float]]
    mean: dict[str, float]
    sd: dict[str, float]
    predictions: np.ndarray

    def summary(self) -> dict[str, float]:
        """``{metric}_mean`` and ``{metric}_sd`` for every metric, one flat dict of floats."""
        out = {f"{name}_mean": value for name, value in self.mean.items()}
        out.update({f"{name}_sd": value for name, value in self.sd.items()})
        return out


@phase("evaluate")
def probe_cv(
    features: np.ndarray,
    target: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    task: str = "regression",
    alphas=DEFAULT_ALPHAS,
    cs=DEFAULT_CS,
    inner_folds: int = 5,
    inner_groups: np.ndarray | None = None,
    seed: int = 0,
    max_iter: int = 1000,
) -> ProbeCV:
    """Linear probe of ``target`` from ``features`` evaluated over ``folds`` (module docstring).

    Args:
        features: (n, d) embeddings; target: (n,) outcome or class labels.
        folds: (train_idx, test_idx) pairs, e.g. from :func:`spatial_block_folds`.
        task: 'regression' (Ridge; R^2, RMSE, MAE) or 'classification'
            (multinomial LogisticRegression; accuracy, macro-F1).
        alphas / cs: the penalty grid of Ridge's alpha / LogisticRegression's C.
        inner_folds: splits of the inner cross-validation that picks the penalty.
        inner_groups: (n,) labels kept together by the inner splits (GroupKFold);
            None = shuffled KFold (StratifiedKFold for classes) seeded by ``seed``.
    """
    features, target = np.asarray(features, dtype=np.float64), np.asarray(target)
    if features.ndim != 2 or target.shape != (features.shape[0],):
        raise ValueError(f"features must be (n, d) and target (n,), got {features.shape} and {target.shape}")
    if not folds:
        raise ValueError("folds must hold at least one (train_idx, test_idx) pair")
    estimator, grid = probe_estimator(task, alphas, cs, max_iter)
    penalty = "alpha" if task == "regression" else "C"
    # Out-of-fold predictions; NaN (regression) or None (classification) where no fold tests a point.
    predictions = np.full(len(target), np.nan) if task == "regression" else np.full(len(target), None, dtype=object)
    per_fold = []
    for train, test in folds:
        if inner_groups is None:
            splitter = KFold if task == "regression" else StratifiedKFold
            inner, fit_groups = splitter(inner_folds, shuffle=True, random_state=seed), None
        else:
            inner, fit_groups = GroupKFold(inner_folds), np.asarray(inner_groups)[train]
        search = GridSearchCV(clone(estimator), grid, cv=inner)
        # One BLAS thread: the problems are small, and threads waiting on a busy CPU slow them down.
        with threadpool_limits(1):
            search.fit(features[train], target[train], groups=fit_groups)
        predicted = search.predict(features[test])
        predictions[test] = predicted
        if task == "regression":
            scores = _regression_scores(target[test], predicted)
        else:
            scores = _classification_scores(target[test], predicted)
        per_fold.append({**{k: float(v) for k, v in scores.items()},
                         penalty: float(search.best_params_[f"model__{penalty}"]),
                         "n_train": float(len(train)), "n_test": float(len(test))})
    if task == "classification" and all(p is not None for p in predictions):
        predictions = predictions.astype(target.dtype)
    return _summarise(per_fold, ["r2", "rmse", "mae"] if task == "regression" else ["accuracy", "macro_f1"],
                      predictions)


def _regression_scores(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"r2": r2_score(observed, predicted), "rmse": root_mean_squared_error(observed, predicted),
            "mae": mean_absolute_error(observed, predicted)}


def _classification_scores(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy_score(observed, predicted),
            "macro_f1": f1_score(observed, predicted, average="macro", zero_division=0)}


def _summarise(per_fold: list[dict[str, float]], names: list[str], predictions: np.ndarray) -> ProbeCV:
    table = np.array([[fold[name] for name in names] for fold in per_fold])
    sd = table.std(axis=0, ddof=1) if len(per_fold) > 1 else np.full(len(names), np.nan)
    return ProbeCV(per_fold, dict(zip(names, table.mean(axis=0).tolist(), strict=True)),
                   dict(zip(names, sd.tolist(), strict=True)), predictions)


@phase("evaluate")
def mlp_probe_cv(
    features: np.ndarray,
    target: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    hidden: tuple[int, ...] = (64,),
    alpha: float = 1e-3,
    seed: int = 0,
    max_iter: int = 500,
    *,
    task: str = "regression",
) -> ProbeCV:
    """The compendium's MLP probe of ``target`` from ``features``, evaluated over ``folds``.

    Architecture: scikit-learn's ``MLPRegressor`` or ``MLPClassifier``, one
    hidden layer of 64 ReLU units by default (``hidden``), Adam, L2 penalty
    ``alpha`` = 1e-3, on features standardised on the fold's training part.
    Scaling: for regression the target is standardised on the fold's training
    part too (``TransformedTargetRegressor``) and predictions mapped back, so
    outcomes of any scale (prices, indices) train alike; for classification
    the output is a softmax over the classes. Training: Adam, at most
    ``max_iter`` epochs (fewer when the training loss stops improving by
    1e-4); with at least :data:`MLP_EARLY_STOPPING_MIN` training points,
    early stopping on a held-out tenth of them (stratified for classes). No
    penalty search: ``hidden``, ``alpha`` and the epochs are fixed in advance.
    Metrics per fold as :func:`probe_cv`: R^2, RMSE, MAE, or accuracy and
    macro-F1.
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    regression = task == "regression"
    features, target = np.asarray(features, dtype=np.float64), np.asarray(target)
    if regression:
        target = target.astype(np.float64)
    if features.ndim != 2 or target.shape != (features.shape[0],):
        raise ValueError(f"features must be (n, d) and target (n,), got {features.shape} and {target.shape}")
    if not folds:
        raise ValueError("folds must hold at least one (train_idx, test_idx) pair")
    predictions = np.full(len(target), np.nan) if regression else np.full(len(target), None, dtype=object)
    per_fold = []
    for train, test in folds:
        settings = {"hidden_layer_sizes": tuple(hidden), "alpha": alpha, "max_iter": max_iter, "random_state": seed,
                    "early_stopping": len(train) >= MLP_EARLY_STOPPING_MIN}
        if regression:
            model = TransformedTargetRegressor(
                Pipeline([("scale", StandardScaler()), ("model", MLPRegressor(**settings))]),
                transformer=StandardScaler())
        else:
            model = Pipeline([("scale", StandardScaler()), ("model", MLPClassifier(**settings))])
        # The epochs are a budget fixed in advance, not a convergence test: no warning when it is spent.
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], target[train])
        predicted = model.predict(features[test])
        predictions[test] = predicted
        if regression:
            scores = _regression_scores(target[test], predicted)
        else:
            scores = _classification_scores(target[test], predicted)
        per_fold.append({**{k: float(v) for k, v in scores.items()},
                         "n_train": float(len(train)), "n_test": float(len(test))})
    if not regression and all(p is not None for p in predictions):
        predictions = predictions.astype(target.dtype)
    return _summarise(per_fold, ["r2", "rmse", "mae"] if regression else ["accuracy", "macro_f1"], predictions)


def folds_for(
    table: pd.DataFrame,
    n_folds: int,
    block_m: float,
    gap_m: float,
    seed: int,
    group_by: str | None = None,
    metric: str = "euclidean",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`spatial_block_folds` over the rows of ``table``: its ``easting`` and ``northing`` columns (metres).

    ``group_by`` names a column whose values are separate places (each its
    own block grid and buffer, e.g. ``"place"`` when a table spans several
    cities in their own coordinate systems); None = one place. ``metric``: the gap's distance
    (:func:`spatial_block_folds`).
    """
    needed = ["easting", "northing"] + ([group_by] if group_by is not None else [])
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise ValueError(f"folds_for: the table has no column {missing}; it needs {needed}")
    groups = table[group_by].to_numpy() if group_by is not None else None
    return spatial_block_folds(table["easting"].to_numpy(), table["northing"].to_numpy(), n_folds, block_m, gap_m,
                               seed, groups=groups, metric=metric)


@phase("evaluate")
def ridge_probe_cv(
    features: np.ndarray,
    targets: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
    y: np.ndarray,
    block_m: float,
    gap_m: float = 0.0,
    groups: np.ndarray | None = None,
    metric: str = "euclidean",
    alphas=DEFAULT_ALPHAS,
    inner_folds: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Per-fold test R^2 of a ridge probe of every target, (n_folds, n_targets) (module docstring).

    Args:
        features: (n, d); targets: (n, t), one column per target (finite).
        folds: the outer (train_idx, test_idx) pairs.
        x, y, groups: the points' coordinates (metres) and places, for the spatial inner split.
        block_m, gap_m, metric: the inner split's blocks and buffer (:func:`spatial_block_folds`).
        alphas: the penalty grid, on standardised features (as :func:`probe_cv`'s Ridge).
        inner_folds: splits of the inner cross-validation (fewer where the training part has fewer blocks).
        seed: seed of the inner deal of blocks.
    The intercept is the training mean (features and targets are centred on the training part).
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if features.ndim != 2 or targets.shape[0] != features.shape[0]:
        raise ValueError(f"features must be (n, d) and targets (n, t), got {features.shape} and {targets.shape}")
    if not (np.isfinite(features).all() and np.isfinite(targets).all()):
        raise ValueError("ridge_probe_cv: features and targets must be finite")
    alphas = np.asarray(alphas, dtype=np.float64)
    x, y, groups = _coordinates(x, y, groups)
    scores = np.empty((len(folds), targets.shape[1]))
    for k, (train, test) in enumerate(folds):
        n_blocks = len(np.unique(spatial_blocks(x[train], y[train], block_m, groups[train])))
        inner = spatial_block_folds(x[train], y[train], min(inner_folds, n_blocks), block_m, gap_m, seed,
                                    groups=groups[train], metric=metric)
        inner_r2 = np.zeros((len(alphas), targets.shape[1]))
        for fit, val in inner:
            predicted = ridge_path(features[train][fit], targets[train][fit], features[train][val], alphas)
            inner_r2 += r2_scores(targets[train][val], predicted)
        best = inner_r2.argmax(axis=0)  # (t,): each target's penalty
        predicted = ridge_path(features[train], targets[train], features[test], alphas)
        chosen = predicted[best, :, np.arange(targets.shape[1])].T  # (n_test, t)
        scores[k] = r2_scores(targets[test], chosen[None])[0]
    return scores


def ridge_path(fit_x: np.ndarray, fit_y: np.ndarray, new_x: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Predictions (n_alphas, n_new, t) of ridge fits on standardised ``fit_x`` for every penalty at once.

    Features standardised on ``fit_x`` (a constant column stays 0), ``fit_y`` centred; with ``X = U S V^T``
    the coefficients of penalty ``alpha`` are ``V diag(s / (s^2 + alpha)) U^T (y - mean y)``, the minimiser of
    ``|y - X b|^2 + alpha |b|^2`` (scikit-learn's ``Ridge`` after a ``StandardScaler``): one SVD serves every
    penalty and every target.
    """
    mean, scale = fit_x.mean(0), fit_x.std(0)
    scale[scale == 0] = 1.0  # a constant feature stays zero, as StandardScaler leaves it
    a, b = (fit_x - mean) / scale, (new_x - mean) / scale
    y_mean = fit_y.mean(0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    uty = u.T @ (fit_y - y_mean)  # (r, t)
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (n_alphas, r)
    projected = b @ vt.T  # (n_new, r)
    return np.einsum("nr,ar,rt->ant", projected, shrink, uty) + y_mean


def r2_scores(observed: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R^2 of each (penalty, target) as scikit-learn's ``r2_score``: observed (n, t), predicted (a, n, t) -> (a, t)
    (NaN for a constant target)."""
    residual = ((observed[None] - predicted) ** 2).sum(axis=1)
    total = ((observed - observed.mean(0)) ** 2).sum(axis=0)
    return 1.0 - residual / np.where(total > 0, total, np.nan)
