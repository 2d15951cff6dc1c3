"""Training curves: one panel per recorded quantity, epochs counted from 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

import lib.plots  # noqa: F401  (the compendium's seaborn theme)


def training_curves(history: pd.DataFrame | Sequence[Mapping], panels: Mapping[str, str], hue: str | None = None,
                    labels: Mapping[str, str] | None = None):
    """One panel per column of ``history`` named in ``panels`` ({column: title}), x = epoch + 1.

    ``history`` has one row per epoch (and per ``hue`` value, e.g. model), the
    epoch counted from 0 as :func:`lib.training.fit` records it; rows where a
    panel's column is missing (NaN) are left out of that panel. ``labels``
    renames the ``hue`` values in the legend.
    """
    frame = pd.DataFrame(history)
    groups = list(frame.groupby(hue, sort=False)) if hue else [(None, frame)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels.items(), strict=True):
        for colour, (name, rows) in enumerate(groups):  # one colour per hue value in every panel
            rows = rows.dropna(subset=[column]) if column in rows else rows.iloc[:0]
            if len(rows):
                label = (labels or {}).get(name, name) if name is not None else None
                ax.plot(rows["epoch"] + 1, rows[column], marker="o", label=label, color=f"C{colour}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if hue:
        axes[0, -1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
