"""Summaries over the COCOA study's repetitions: per-seed means over items (corpus classes, explicands, scenes,
views), then each number over seeds as an :class:`~lib.eval.intervals.IntervalCell` whose interval resamples the
seeds and, within each, its items (the nested bootstrap of :func:`lib.eval.intervals.interval_cell`), and a study
family of paired comparisons Holm-corrected as a table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.eval.intervals import ComparisonCell, holm, interval_cell


def per_seed(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """The mean of ``value`` per ``keys`` and seed (over classes, explicands, scenes...): one row per key x seed."""
    missing = [k for k in [*keys, "seed", value] if k not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns {missing}")
    return frame.groupby([*keys, "seed"], sort=False, as_index=False)[value].mean()


def over_seeds(frame: pd.DataFrame, keys: list[str], value: str, bounds: tuple[float, float]) -> pd.DataFrame:
    """Per ``keys``, from the item rows of ``frame`` (one per class, explicand or scene, with their ``seed``):
    the mean over seeds of the per-seed means (:func:`per_seed`) and its interval, resampling seeds and the
    items within them (values within ``bounds``). Columns: the keys, ``cell`` (the
    :class:`~lib.eval.intervals.IntervalCell`, values in seed order), ``mean``, ``low``, ``high``, ``n_seeds``.
    Items without a number (NaN) are left out, as the per-seed mean leaves them out."""
    means = per_seed(frame, keys, value)
    items = {key: group[value].to_numpy(np.float64) for key, group in frame.groupby([*keys, "seed"], sort=False)}
    rows = []
    for key, group in means.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        group = group.sort_values("seed")
        per_item = [items[(*key, seed)] for seed in group["seed"]]
        cell = interval_cell(group[value].to_numpy(), bounds=bounds, items=[v[np.isfinite(v)] for v in per_item])
        rows.append(dict(zip(keys, key, strict=True)) | {
            "cell": cell, "mean": cell.mean, "low": cell.low, "high": cell.high, "n_seeds": cell.n})
    return pd.DataFrame(rows)


def comparison_columns(rows: list[dict], difference: str = "difference") -> pd.DataFrame:
    """Rows of keys and a paired comparison ``cell`` as one Holm family: the cells corrected by
    :func:`lib.eval.intervals.holm`, with the columns ``difference`` (or the name given; positive: COCOA better),
    ``low``, ``high``, ``p_value``, ``p_holm``, ``n_seeds``, ``supported`` and ``direction``."""
    cells: list[ComparisonCell] = holm([row["cell"] for row in rows])
    return pd.DataFrame([row | {"cell": c, difference: c.difference, "low": c.low, "high": c.high, "p_value": c.p_value,
                                "p_holm": c.p_holm, "n_seeds": c.n, "supported": c.supported, "direction": c.direction}
                         for row, c in zip(rows, cells, strict=True)])
