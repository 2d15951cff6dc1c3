"""Confidence intervals of a mean over repetitions (seeds, scenes, folds)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from torch import Tensor


def mean_ci(values: np.ndarray | Tensor, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over repetitions and the half-width of its Student-t confidence interval.

    For S >= 2 values along axis 0 with sample standard deviation ``s`` (ddof 1)::

        mean +- t_{(1 + level) / 2, S - 1} * s / sqrt(S)

    Shapes: ``values`` (S, ...) -> (mean (...), half_width (...)) as numpy arrays
    (0-d for a 1-D input; ``float()`` turns them into numbers).
    """
    values = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, float)
    n = values.shape[0]
    if n < 2:
        raise ValueError("a confidence interval needs at least two values")
    quantile = stats.t.ppf((1.0 + level) / 2.0, df=n - 1)
    half_width = quantile * values.std(axis=0, ddof=1) / math.sqrt(n)
    return values.mean(axis=0), half_width
