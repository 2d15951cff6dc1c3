"""Splits of a dataset into fit, validation and test parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from sklearn.model_selection import train_test_split

T = TypeVar("T")


@dataclass(frozen=True)
class Split(Generic[T]):
    """The fit, validation and test parts of a dataset: index arrays, or datasets.

    ``val`` is None where a protocol has no validation part (e.g. a plain
    hold-out). Every choice (epoch, penalty) may look at ``fit`` and ``val``
    only; ``test`` is for the reported numbers.
    """

    fit: T
    val: T | None
    test: T

    def labels(self, n: int) -> np.ndarray:
        """For index arrays: each of ``n`` items' part name ("fit", "validation", "test" or ""), (n,)."""
        out = np.full(n, "", dtype=object)
        out[self.fit], out[self.test] = "fit", "test"
        if self.val is not None:
            out[self.val] = "validation"
        return out


def outcome_strata(y: np.ndarray, n_strata: int) -> np.ndarray:
    """Quantile bin of each outcome, 0 .. n_strata - 1 (bins of equal counts up to ties)."""
    edges = np.quantile(y, np.linspace(0, 1, n_strata + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float, n_strata: int, seed: int) -> Split:
    """Disjoint fit / validation / test indices, each stratified on outcome quantiles.

    The test share is drawn first, then the validation share from the rest,
    both with scikit-learn's ``train_test_split(stratify=...)``. Fewer strata
    are used when a split is too small to hold one tile of each, and at most
    n / 4, so that every stratum holds a few tiles.
    """
    y = np.asarray(y)
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction * n)
    if n - n_test - n_val < 2 or min(n_test, n_val) < 1:
        raise ValueError(f"{n} tiles are too few for val_fraction={val_fraction} and test_fraction={test_fraction}")
    strata = outcome_strata(y, max(1, min(n_strata, n_test, n_val, n // 4)))
    index = np.arange(n)
    rest, test = train_test_split(index, test_size=n_test, stratify=strata, random_state=seed)
    fit_idx, val = train_test_split(rest, test_size=n_val, stratify=strata[rest], random_state=seed + 1)
    return Split(np.sort(fit_idx), np.sort(val), np.sort(test))
