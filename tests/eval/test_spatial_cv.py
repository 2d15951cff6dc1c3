"""Spatial block folds against brute-force distances, and cross-validated probes against scikit-learn."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.eval.spatial_cv import probe_cv, spatial_block_folds, spatial_blocks

BLOCK, GAP = 1000.0, 300.0


def _places(n=400, seed=0):
    """Two cities whose coordinates overlap (each in its own CRS), and a third far away."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.array(["espoo", "vantaa", "oulu"]), [n // 2, n // 4, n - n // 2 - n // 4])
    xy = rng.uniform(0, 5000, size=(n, 2)) + np.where(groups == "oulu", 5e5, 0.0)[:, None]
    return xy[:, 0], xy[:, 1], groups


def test_spatial_blocks_match_a_naive_grid_per_group():
    x, y, groups = _places()
    block = spatial_blocks(x, y, BLOCK, groups)
    cells = {}
    for i in range(len(x)):
        member = groups == groups[i]
        key = (groups[i], int((x[i] - x[member].min()) // BLOCK), int((y[i] - y[member].min()) // BLOCK))
        cells.setdefault(key, set()).add(int(block[i]))
    assert all(len(ids) == 1 for ids in cells.values())  # one id per (group, column, row) ...
    assert len({next(iter(ids)) for ids in cells.values()}) == len(cells) == block.max() + 1  # ... and one cell per id


def test_test_sets_partition_the_points_and_blocks_stay_whole():
    x, y, groups = _places()
    folds = spatial_block_folds(x, y, n_folds=5, block_m=BLOCK, gap_m=GAP, seed=3, groups=groups)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(x)))
    fold_of = np.empty(len(x), dtype=int)
    for k, (train, test) in enumerate(folds):
        fold_of[test] = k
        assert len(np.intersect1d(train, test)) == 0 and len(train) > 0
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    block = spatial_blocks(x, y, BLOCK, groups)
    for b in np.unique(block):
        assert len(np.unique(fold_of[block == b])) == 1  # a block never straddles folds
        assert len(np.unique(groups[block == b])) == 1  # nor cities
    # blocks are dealt evenly: per fold, overall and within each city, counts differ by at most one
    block_fold = np.array([fold_of[block == b][0] for b in range(block.max() + 1)])
    block_group = np.array([groups[block == b][0] for b in range(block.max() + 1)])
    assert np.ptp(np.bincount(block_fold, minlength=5)) <= 1
    for g in np.unique(groups):
        assert np.ptp(np.bincount(block_fold[block_group == g], minlength=5)) <= 1


def test_training_points_are_exactly_those_at_least_gap_from_their_citys_test_points():
    x, y, groups = _places()
    xy = np.stack([x, y], axis=1)
    distance = cdist(xy, xy)
    same_city = groups[:, None] == groups[None, :]
    folds = spatial_block_folds(x, y, n_folds=4, block_m=BLOCK, gap_m=GAP, seed=0, groups=groups)
    ignoring_cities = 0
    for train, test in folds:
        is_test = np.isin(np.arange(len(x)), test)
        nearest_same_city = np.where(same_city[:, is_test], distance[:, is_test], np.inf).min(axis=1)
        expected = np.flatnonzero(~is_test & (nearest_same_city >= GAP))
        np.testing.assert_array_equal(train, expected)
        assert distance[np.ix_(train, test)][same_city[np.ix_(train, test)]].min() >= GAP
        ignoring_cities += np.sum(~is_test & (distance[:, is_test].min(axis=1) >= GAP))
    # the cities' coordinates overlap: a buffer across cities would have dropped more
    assert ignoring_cities < sum(len(train) for train, _ in folds)
    without_gap = spatial_block_folds(x, y, n_folds=4, block_m=BLOCK, gap_m=0.0, seed=0, groups=groups)
    for train, test in without_gap:
        assert len(train) + len(test) == len(x)


def test_folds_are_seeded():
    x, y, groups = _places()
    one = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=1, groups=groups)
    same = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=1, groups=groups)
    other = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=2, groups=groups)
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]) for a, b in zip(one, same, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(one, other, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_folds": 1}, "n_folds"), ({"block_m": 0.0}, "block_m"), ({"gap_m": -1.0}, "gap_m"),
     ({"block_m": 1e7}, "1 blocks of block_m=10000000.0 cannot fill n_folds=3"), ({"gap_m": 1e6}, "gap_m=1000000.0")],
)
def test_bad_arguments_fail_naming_them(kwargs, message):
    x, y, _ = _places(n=60)
    arguments = {"n_folds": 3, "block_m": BLOCK, "gap_m": GAP, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        spatial_block_folds(x, y, **arguments)


def _features(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d), rng


def test_ridge_probe_picks_its_penalty_by_inner_cv_on_the_training_part_and_matches_scikit_learn():
    x, y, _ = _places(n=300)
    features, rng = _features()
    target = features @ rng.normal(size=6) + 5 * rng.normal(size=300)
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0)
    alphas = [1e-2, 1.0, 1e2, 1e4]
    result = probe_cv(features, target, folds, alphas=alphas, inner_folds=4, seed=7)
    train, test = folds[0]
    # the inner cross-validation by hand: mean R^2 over 4 shuffled splits of the training part
    inner = KFold(4, shuffle=True, random_state=7).split(features[train])
    splits = [(train[a], train[b]) for a, b in inner]
    mean_r2 = [np.mean([r2_score(target[b], make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(
        features[a], target[a]).predict(features[b])) for a, b in splits]) for alpha in alphas]
    alpha = alphas[int(np.argmax(mean_r2))]
    assert result.per_fold[0]["alpha"] == alpha
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(features[train], target[train])
    predicted = model.predict(features[test])
    assert result.per_fold[0]["r2"] == pytest.approx(r2_score(target[test], predicted))
    assert result.per_fold[0]["rmse"] == pytest.approx(root_mean_squared_error(target[test], predicted))
    assert result.per_fold[0]["mae"] == pytest.approx(np.mean(np.abs(target[test] - predicted)))
    np.testing.assert_allclose(result.predictions[test], predicted)
    assert not np.isnan(result.predictions).any()
    r2 = [fold["r2"] for fold in result.per_fold]
    assert result.mean["r2"] == pytest.approx(np.mean(r2)) and result.sd["r2"] == pytest.approx(np.std(r2, ddof=1))
    assert set(result.summary()) == {"r2_mean", "r2_sd", "rmse_mean", "rmse_sd", "mae_mean", "mae_sd"}

    # the test fold never informs the fit: scrambling its targets changes no chosen penalty or prediction
    scrambled = target.copy()
    scrambled[test] = rng.permutation(scrambled[test]) * 100
    again = probe_cv(features, scrambled, folds[:1], alphas=alphas, inner_folds=4, seed=7)
    assert again.per_fold[0]["alpha"] == alpha
    np.testing.assert_allclose(again.predictions[test], predicted)


def test_probe_scores_a_linear_target_near_one_and_noise_near_zero():
    x, y, groups = _places(n=300)
    features, rng = _features(n=300)
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0, groups=groups)
    settings = {"alphas": [1e-2, 1.0, 1e2, 1e4], "inner_folds": 3}
    linear = probe_cv(features, features @ rng.normal(size=6) + 0.01 * rng.normal(size=300), folds, **settings)
    noise = probe_cv(features, rng.normal(size=300), folds, **settings)
    assert linear.mean["r2"] > 0.99
    assert noise.mean["r2"] < 0.05


def test_classification_probe_matches_a_direct_logistic_regression():
    x, y, groups = _places(n=300)
    features, rng = _features()
    labels = np.argmax(StandardScaler().fit_transform(features) @ rng.normal(size=(6, 3)), axis=1)
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0, groups=groups)
    result = probe_cv(features, labels, folds, task="classification", cs=[0.01, 1.0, 100.0], inner_folds=3)
    assert result.mean["accuracy"] > 0.85
    for fold, (train, test) in zip(result.per_fold, folds, strict=True):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=fold["C"], max_iter=1000))
        predicted = model.fit(features[train], labels[train]).predict(features[test])
        assert fold["accuracy"] == pytest.approx(np.mean(predicted == labels[test]))
        assert fold["macro_f1"] == pytest.approx(f1_score(labels[test], predicted, average="macro"))
    assert result.predictions.dtype == labels.dtype
    noise_labels = rng.integers(0, 3, size=300)
    noise = probe_cv(features, noise_labels, folds, task="classification", cs=[0.01, 1.0], inner_folds=3)
    assert noise.mean["accuracy"] < 0.45


def test_probe_arguments_are_checked():
    features, _ = _features(n=20)
    folds = [(np.arange(10), np.arange(10, 20))]
    with pytest.raises(ValueError, match="task must be"):
        probe_cv(features, np.zeros(20), folds, task="ranking")
    with pytest.raises(ValueError, match=r"target \(n,\)"):
        probe_cv(features, np.zeros(19), folds)


def test_mlp_probe_fits_each_fold_on_its_training_part_and_learns_a_nonlinear_target():
    from lib.eval.spatial_cv import mlp_probe_cv

    x, y, _ = _places(n=300)
    features, rng = _features(d=3)
    target = np.sin(features[:, 0] / features[:, 0].std() * 2) * 10 + 0.1 * rng.normal(size=300)
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0)
    result = mlp_probe_cv(features, target, folds, hidden=(32,), seed=0, max_iter=2000)
    assert set(result.summary()) == {"r2_mean", "r2_sd", "rmse_mean", "rmse_sd", "mae_mean", "mae_sd"}
    assert result.mean["r2"] > 0.5  # a linear probe of sin(2 u) scores far lower
    assert probe_cv(features, target, folds, seed=0).mean["r2"] < result.mean["r2"]
    # the test fold never informs the fit: scrambling its targets leaves its predictions as they were
    train, test = folds[0]
    scrambled = target.copy()
    scrambled[test] = rng.permutation(scrambled[test]) * 100
    again = mlp_probe_cv(features, scrambled, folds[:1], hidden=(32,), seed=0, max_iter=2000)
    np.testing.assert_allclose(again.predictions[test], result.predictions[test])
    with pytest.raises(ValueError, match="features must be"):
        mlp_probe_cv(features[:, 0], target, folds)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_probe_standardises_features_and_target_on_the_training_part_only():
    from sklearn.neural_network import MLPRegressor

    from lib.eval.spatial_cv import mlp_probe_cv

    x, y, _ = _places(n=300)
    features, rng = _features(d=3)
    target = 1e4 + 500 * np.tanh(features[:, 0] / features[:, 0].std()) + 50 * rng.normal(size=300)  # a price scale
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0)
    result = mlp_probe_cv(features, target, folds, hidden=(16,), alpha=1e-2, seed=3, max_iter=300)
    for fold, (train, test) in zip(result.per_fold, folds, strict=True):
        # the stated probe by hand: scaler fitted on the training part, target z-scored by its mean and sd
        scaler = StandardScaler().fit(features[train])
        mean, sd = target[train].mean(), target[train].std()
        mlp = MLPRegressor(hidden_layer_sizes=(16,), alpha=1e-2, max_iter=300, random_state=3)
        mlp.fit(scaler.transform(features[train]), (target[train] - mean) / sd)
        predicted = mlp.predict(scaler.transform(features[test])) * sd + mean
        np.testing.assert_allclose(result.predictions[test], predicted, rtol=1e-10)
        assert fold["r2"] == pytest.approx(r2_score(target[test], predicted))
    assert result.mean["r2"] > 0.5  # unscaled, the same network stalls on a target of mean 1e4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_probe_classifies_and_matches_a_direct_mlp_classifier():
    from sklearn.neural_network import MLPClassifier

    from lib.eval.spatial_cv import mlp_probe_cv

    x, y, groups = _places(n=300)
    features, rng = _features()
    labels = (np.linalg.norm(StandardScaler().fit_transform(features)[:, :2], axis=1) > 1.2).astype(np.int64)
    folds = spatial_block_folds(x, y, 3, BLOCK, GAP, seed=0, groups=groups)
    result = mlp_probe_cv(features, labels, folds, hidden=(32,), seed=1, max_iter=1000, task="classification")
    assert set(result.summary()) == {"accuracy_mean", "accuracy_sd", "macro_f1_mean", "macro_f1_sd"}
    assert result.predictions.dtype == labels.dtype
    for fold, (train, test) in zip(result.per_fold, folds, strict=True):
        model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-3, max_iter=1000,
                                                              random_state=1))
        predicted = model.fit(features[train], labels[train]).predict(features[test])
        np.testing.assert_array_equal(result.predictions[test], predicted)
        assert fold["accuracy"] == pytest.approx(np.mean(predicted == labels[test]))
        assert fold["macro_f1"] == pytest.approx(f1_score(labels[test], predicted, average="macro"))
    # a ring is not linearly separable: the MLP beats the logistic probe on it
    linear = probe_cv(features, labels, folds, task="classification", cs=[0.01, 1.0, 100.0], inner_folds=3)
    assert result.mean["accuracy"] > linear.mean["accuracy"] + 0.05
    with pytest.raises(ValueError, match="task must be"):
        mlp_probe_cv(features, labels, folds, task="ranking")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_probe_stops_early_on_a_tenth_only_from_enough_training_points():
    from sklearn.neural_network import MLPRegressor

    from lib.eval.spatial_cv import MLP_EARLY_STOPPING_MIN, mlp_probe_cv

    rng = np.random.default_rng(0)
    m = MLP_EARLY_STOPPING_MIN
    features = rng.normal(size=(m + 100, 2))
    target = np.abs(features[:, 0]) + 0.1 * rng.normal(size=m + 100)
    folds = [(np.arange(m), np.arange(m, m + 50)), (np.arange(m - 1), np.arange(m + 50, m + 100))]
    result = mlp_probe_cv(features, target, folds, hidden=(8,), seed=0, max_iter=50)
    for (train, test), early in zip(folds, (True, False), strict=True):
        scaler = StandardScaler().fit(features[train])
        mean, sd = target[train].mean(), target[train].std()
        mlp = MLPRegressor(hidden_layer_sizes=(8,), alpha=1e-3, max_iter=50, random_state=0, early_stopping=early)
        mlp.fit(scaler.transform(features[train]), (target[train] - mean) / sd)
        expected = mlp.predict(scaler.transform(features[test])) * sd + mean
        np.testing.assert_allclose(result.predictions[test], expected, rtol=1e-10)


def test_folds_for_reads_the_table_and_keeps_places_apart():
    import pandas as pd

    from lib.eval.spatial_cv import folds_for

    x, y, groups = _places()
    table = pd.DataFrame({"easting": x, "northing": y, "place": groups})
    folds = folds_for(table, 4, BLOCK, GAP, seed=2, group_by="place")
    expected = spatial_block_folds(x, y, 4, BLOCK, GAP, seed=2, groups=groups)
    for (train, test), (train_e, test_e) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(train, train_e)
        np.testing.assert_array_equal(test, test_e)
    ungrouped = folds_for(table, 4, BLOCK, GAP, seed=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, ungrouped, strict=True))
    with pytest.raises(ValueError, match=r"no column \['place'\]"):
        folds_for(table.drop(columns="place"), 4, BLOCK, GAP, seed=2, group_by="place")


def test_a_chebyshev_gap_of_one_window_leaves_no_pixel_shared_between_training_and_test_windows():
    # Windows of 8 px x 2 m = 16 m centred on random points; each window's pixels on the 2 m grid.
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 200, 300).round(), rng.uniform(0, 200, 300).round()
    window, px = 16.0, 2.0

    def pixels(i):
        cols = np.arange(x[i] - window / 2, x[i] + window / 2, px)
        rows = np.arange(y[i] - window / 2, y[i] + window / 2, px)
        return {(c, r) for c in cols for r in rows}

    for metric, expect_shared in (("chebyshev", False), ("euclidean", True)):
        shared = False
        for train, test in spatial_block_folds(x, y, 4, 50.0, window, seed=0, metric=metric):
            test_pixels = set().union(*(pixels(i) for i in test))
            shared |= any(pixels(i) & test_pixels for i in train)
        # A Euclidean gap of one window side lets diagonal neighbours share a corner; Chebyshev does not.
        assert shared == expect_shared, metric


def test_an_unknown_gap_metric_is_refused():
    with pytest.raises(ValueError, match="metric"):
        spatial_block_folds(np.arange(10.0), np.arange(10.0), 2, 3.0, 1.0, 0, metric="manhattan")


def test_vectorised_ridge_probe_matches_scikit_learn_with_the_same_spatial_inner_splits():
    from sklearn.model_selection import GridSearchCV

    from lib.eval.spatial_cv import DEFAULT_ALPHAS, probe_estimator, ridge_probe_cv

    rng = np.random.default_rng(0)
    n = 240
    x, y = rng.uniform(0, 1000, n), rng.uniform(0, 1000, n)
    features = rng.normal(size=(n, 6))
    targets = np.stack([features @ rng.normal(size=6) + rng.normal(size=n), rng.normal(size=n)], 1)
    folds = spatial_block_folds(x, y, 4, 250.0, 50.0, seed=1, metric="chebyshev")
    scores = ridge_probe_cv(features, targets, folds, x, y, 250.0, 50.0, metric="chebyshev", inner_folds=3, seed=2)
    for k, (train, test) in enumerate(folds):
        inner = spatial_block_folds(x[train], y[train], 3, 250.0, 50.0, 2, metric="chebyshev")
        for t in range(2):
            estimator, grid = probe_estimator("regression", DEFAULT_ALPHAS)
            search = GridSearchCV(estimator, grid, cv=inner, scoring="r2").fit(features[train], targets[train, t])
            expected = r2_score(targets[test, t], search.predict(features[test]))
            assert scores[k, t] == pytest.approx(expected, abs=1e-8)
    assert scores[:, 0].mean() > 0.5 > scores[:, 1].mean()
