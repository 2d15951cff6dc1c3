"""Summaries over the COCOA study's repetitions: per-seed means, then the mean over seeds with its 95 % interval
(:func:`lib.eval.intervals.seed_interval`), and the conversion of such rows to summary.json's cells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lib.eval.intervals import PairedComparison, seed_interval


def per_seed(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """The mean of ``value`` per ``keys`` and seed (over classes, explicands, scenes...): one row per key x seed."""
    missing = [k for k in [*keys, "seed", value] if k not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns {missing}")
    return frame.groupby([*keys, "seed"], sort=False, as_index=False)[value].mean()


def over_seeds(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Per ``keys``: the mean over seeds of a per-seed ``value`` (one row per key x seed, see :func:`per_seed`),
    the half-width ``ci95`` of its 95 % Student-t interval (NaN for one seed), the number of seeds, and the
    per-seed values and seeds in seed order."""
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        group = group.sort_values("seed")
        if group.seed.duplicated().any():
            raise ValueError(f"several rows of one seed for {key}: average them first (per_seed)")
        mean, half = seed_interval(group[value].to_numpy())
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(keys, key, strict=True)) | {
            "mean": mean, "ci95": np.nan if half is None else half, "n_seeds": len(group),
            "per_seed": [float(v) for v in group[value]], "seeds": [int(s) for s in group.seed],
        })
    return pd.DataFrame(rows)


def cell(row) -> dict:
    """A row of :func:`over_seeds` (from ``itertuples``) as summary.json's cell: mean, ci95 (null for one
    seed), the per-seed values and the seeds."""
    return {"mean": float(row.mean), "ci95": None if _missing(row.ci95) else float(row.ci95),
            "per_seed": list(row.per_seed), "seeds": list(row.seeds)}


def values_cell(values, seeds) -> dict:
    """summary.json's cell of one number per seed (an accuracy, say)."""
    mean, half = seed_interval(values)
    return {"mean": mean, "ci95": half, "per_seed": [float(v) for v in values], "seeds": [int(s) for s in seeds]}


def comparison_cell(comparison: PairedComparison) -> dict:
    """A paired comparison as summary.json's cell (:meth:`PairedComparison.to_json`) with its ``direction``."""
    return comparison.to_json() | {"direction": comparison.direction}


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
