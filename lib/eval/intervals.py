"""Confidence intervals of a mean over repetitions (seeds, scenes, folds), and paired comparisons by seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def seed_interval(values, level: float = 0.95) -> tuple[float, float | None]:
    """Mean over seeds and the half-width of its interval (:func:`mean_ci`); ``None`` for one seed."""
    values = np.asarray(values, float).ravel()
    if len(values) == 0:
        raise ValueError("no values to summarise")
    if len(values) < 2:
        return float(values[0]), None
    mean, half = mean_ci(values, level)
    return float(mean), float(half)


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` paired by seed: mean difference, its Student-t interval and the paired t-test.

    With d_s = a_s - b_s over S seeds, mean d and half-width
    t_{(1 + level) / 2, S - 1} * sd(d) / sqrt(S); ``p_value`` is the two-sided
    paired t-test of mean d = 0. A difference counts as ``supported`` when the
    interval excludes zero (equivalently p < 1 - level). One seed gives no
    interval (``half_width`` and ``p_value`` None) and never supports a difference.
    """

    difference: float
    half_width: float | None
    p_value: float | None
    n_seeds: int

    @property
    def supported(self) -> bool:
        return self.half_width is not None and abs(self.difference) > self.half_width

    @property
    def direction(self) -> int:
        """+1 when a is higher, -1 when b is higher, 0 when the seeds do not tell them apart."""
        return int(np.sign(self.difference)) if self.supported else 0

    def to_json(self) -> dict:
        return {"difference": self.difference, "ci95": self.half_width, "p_value": self.p_value,
                "n_seeds": self.n_seeds, "supported": self.supported}


def paired_comparison(a, b, level: float = 0.95) -> PairedComparison:
    """Compare two variants measured on the same seeds (``a[s]`` and ``b[s]`` from seed s)."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"paired values need the same non-zero number of seeds, got {len(a)} and {len(b)}")
    d = a - b
    if len(d) < 2:
        return PairedComparison(float(d[0]), None, None, 1)
    mean, half = mean_ci(d, level)
    sd = d.std(ddof=1)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        t = mean / (sd / math.sqrt(len(d)))
        p = float(2 * stats.t.sf(abs(t), df=len(d) - 1))
    return PairedComparison(float(mean), float(half), p, len(d))
