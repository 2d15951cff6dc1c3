"""Confidence intervals of a mean over repetitions."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lib.eval.intervals import mean_ci


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
