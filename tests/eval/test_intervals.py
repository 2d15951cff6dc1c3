"""Confidence intervals of a mean over repetitions."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lib.eval.intervals import mean_ci, paired_comparison, seed_interval


def test_mean_ci_uses_the_t_distribution():
    mean, half_width = mean_ci([1.0, 2.0, 3.0])
    assert float(mean) == pytest.approx(2.0)
    # t_{0.975, 2} = 4.302653, sample standard deviation 1.
    assert float(half_width) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    means, widths = mean_ci(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), level=0.9)
    np.testing.assert_allclose(means, [2.0, 5.0])
    assert widths[1] == 0.0 and widths[0] > 0.0
    with pytest.raises(ValueError):
        mean_ci([1.0])


def test_mean_ci_equals_scipys_t_interval():
    values = np.array([0.61, 0.58, 0.66, 0.70, 0.59])
    mean, half = mean_ci(values, level=0.95)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert float(mean) - float(half) == pytest.approx(low)
    assert float(mean) + float(half) == pytest.approx(high)


def test_paired_comparison_equals_scipys_paired_t_test():
    a = np.array([0.71, 0.69, 0.74, 0.70])
    b = np.array([0.66, 0.67, 0.69, 0.68])
    c = paired_comparison(a, b)
    test = stats.ttest_rel(a, b)
    low, high = test.confidence_interval(0.95)
    assert c.difference == pytest.approx((a - b).mean())
    assert c.difference - c.half_width == pytest.approx(low)
    assert c.difference + c.half_width == pytest.approx(high)
    assert c.p_value == pytest.approx(test.pvalue)
    assert c.supported and c.direction == 1 and c.n_seeds == 4
    # The same numbers unpaired would not be told apart this clearly: pairing removes the seed effect.
    assert paired_comparison(b, a).direction == -1


def test_paired_comparison_needs_the_seeds_to_agree():
    c = paired_comparison([0.70, 0.60, 0.80], [0.65, 0.66, 0.70])
    assert not c.supported and c.direction == 0
    one = paired_comparison([0.9], [0.1])
    assert one.half_width is None and one.p_value is None and not one.supported
    equal = paired_comparison([0.5, 0.6], [0.5, 0.6])
    assert equal.difference == 0 and equal.p_value == 1.0 and not equal.supported
    with pytest.raises(ValueError, match="same non-zero number of seeds"):
        paired_comparison([1.0, 2.0], [1.0])


def test_seed_interval_of_one_seed_has_no_interval():
    assert seed_interval([0.5]) == (0.5, None)
    mean, half = seed_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
