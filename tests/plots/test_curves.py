"""Training curves (lib.plots.curves): one panel per quantity, epochs from 1, one colour per model."""

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd

from lib.io import save_figure
from lib.plots.curves import training_curves

HISTORY = pd.DataFrame({
    "model": ["a"] * 3 + ["b"] * 3,
    "epoch": [0, 1, 2] * 2,
    "loss": [3.0, 2.0, 1.5, 4.0, 3.0, 2.5],
    "val_score": [np.nan, 0.4, 0.5, 0.1, 0.2, np.nan],  # not every epoch validated
})


def test_one_panel_per_quantity_with_epochs_counted_from_one():
    fig = training_curves(HISTORY, {"loss": "training loss", "val_score": "validation"}, hue="model",
                          labels={"a": "model A"})
    loss, score = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "validation"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    a, b = loss.get_lines()
    np.testing.assert_array_equal(a.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(b.get_ydata(), [4.0, 3.0, 2.5])
    # NaN epochs are left out of their panel; each model keeps its colour in every panel.
    a_score, b_score = score.get_lines()
    np.testing.assert_array_equal(a_score.get_xdata(), [2, 3])
    np.testing.assert_array_equal(b_score.get_xdata(), [1, 2])
    assert mcolors.same_color(a.get_color(), a_score.get_color()) and mcolors.same_color(a.get_color(), "C0")
    assert mcolors.same_color(b.get_color(), "C1")
    assert [t.get_text() for t in score.get_legend().get_texts()] == ["model A", "b"]
    assert all(tick == int(tick) for tick in loss.get_xticks())  # whole epochs only


def test_a_missing_column_leaves_its_panel_empty_and_no_hue_no_legend():
    fig = training_curves(HISTORY[HISTORY.model == "a"].to_dict("records"), {"loss": "loss", "accuracy": "acc"})
    assert len(fig.axes[0].get_lines()) == 1 and not fig.axes[1].get_lines()
    assert fig.axes[1].get_legend() is None


def test_the_same_history_gives_the_same_png(tmp_path):
    for name in ("first.png", "again.png"):
        save_figure(training_curves(HISTORY, {"loss": "loss"}, hue="model"), tmp_path / name)
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "again.png").read_bytes()
