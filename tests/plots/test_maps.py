"""Plot helpers of places: the principal-component colouring of embeddings."""

from __future__ import annotations

import numpy as np

from lib.plots.maps import pca_rgb


def test_pca_rgb_lies_in_the_unit_cube():
    rgb = pca_rgb(np.random.default_rng(0).normal(size=(50, 8)))
    assert rgb.shape == (50, 3) and rgb.min() >= 0 and rgb.max() <= 1
