"""Splits of a dataset: stratified on outcome quantiles, disjoint, complete, seeded."""

import numpy as np
import pytest

from lib.data.splits import Split, outcome_strata, stratified_split


def test_split_is_disjoint_complete_and_stratified_on_outcome_quantiles():
    y = np.random.default_rng(0).lognormal(size=1000)
    split = stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=3)

    parts = [split.fit, split.val, split.test]
    assert sum(map(len, parts)) == 1000
    assert len(np.unique(np.concatenate(parts))) == 1000
    assert (len(split.test), len(split.val)) == (200, 150)

    # Each decile of the outcome (100 tiles) gives each split its share, up to rounding.
    strata = outcome_strata(y, 10)
    assert (np.bincount(strata[split.test], minlength=10) == 20).all()
    assert np.abs(np.bincount(strata[split.val], minlength=10) - 15).max() <= 1

    again = stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=3)
    np.testing.assert_array_equal(again.test, split.test)
    other = stratified_split(y, val_fraction=0.15, test_fraction=0.2, n_strata=10, seed=4)
    assert not np.array_equal(other.test, split.test)


def test_split_of_too_few_tiles_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        stratified_split(np.arange(3.0), 0.3, 0.3, 2, seed=0)


def test_split_labels_name_each_item_and_allow_no_validation_part():
    split = Split(fit=np.array([0, 3]), val=None, test=np.array([1]))
    assert split.labels(4).tolist() == ["fit", "test", "", "fit"]
    with_val = Split(fit=np.array([0]), val=np.array([2]), test=np.array([1]))
    assert with_val.labels(3).tolist() == ["fit", "test", "validation"]
