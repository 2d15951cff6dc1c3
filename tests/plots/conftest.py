"""Figures are drawn with the Agg backend (no display; PNG bytes that depend only on the figure)."""

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")
