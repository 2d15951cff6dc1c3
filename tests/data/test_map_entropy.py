"""Class entropy of map masks against scipy, its extremes, and the filter's threshold."""

import math

import numpy as np
import pytest
from scipy.stats import entropy

from lib.data.map_entropy import class_entropy, entropy_filter

K = 8


def test_single_class_maps_have_zero_entropy_and_even_splits_log_k():
    single = np.stack([np.full((16, 16), k, dtype=np.uint8) for k in range(K)])
    np.testing.assert_array_equal(class_entropy(single, K), np.zeros(K))
    even = np.tile(np.arange(K, dtype=np.uint8), (2, 16, 2))  # (2, 16, 16): every class on 32 pixels
    np.testing.assert_allclose(class_entropy(even, K), [math.log(K)] * 2, rtol=1e-12)
    halves = np.zeros((1, 4, 4), dtype=np.int64)
    halves[0, :2] = 5
    np.testing.assert_allclose(class_entropy(halves, K), [math.log(2)], rtol=1e-12)


def test_matches_scipy_on_random_masks():
    rng = np.random.default_rng(0)
    # skewed class probabilities per map, so that some classes are absent (0 log 0 = 0)
    probabilities = rng.dirichlet(np.full(K, 0.3), size=50)
    mask = np.stack([rng.choice(K, size=(12, 10), p=p) for p in probabilities]).astype(np.uint8)
    counts = np.stack([np.bincount(m.ravel(), minlength=K) for m in mask])
    np.testing.assert_allclose(class_entropy(mask, K), entropy(counts, axis=1), rtol=1e-12, atol=1e-15)
    assert (counts == 0).any()


def test_filter_keeps_maps_at_or_above_the_threshold():
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 3, size=(40, 8, 8))
    h = class_entropy(mask, K)
    threshold = float(np.median(h))
    keep = entropy_filter(mask, K, threshold)
    np.testing.assert_array_equal(keep, h >= threshold)
    assert keep.dtype == bool and 0 < keep.sum() < len(keep)
    assert entropy_filter(mask, K, 0.0).all()
    even = np.tile(np.arange(K), (1, 8, 1))
    assert entropy_filter(even, K, math.log(K)).all()


@pytest.mark.parametrize("threshold", [-0.1, math.log(K) + 0.01])
def test_threshold_outside_zero_to_log_k_fails(threshold):
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, log K\] = \[0, 2.0794\]"):
        entropy_filter(np.zeros((2, 4, 4), dtype=np.uint8), K, threshold)


def test_bad_masks_fail_naming_the_problem():
    with pytest.raises(ValueError, match=r"codes must lie in 0\.\.7"):
        class_entropy(np.full((1, 2, 2), 8), K)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        class_entropy(np.zeros((4, 4), dtype=int), K)
    with pytest.raises(ValueError, match="integer"):
        class_entropy(np.zeros((1, 4, 4)), K)
