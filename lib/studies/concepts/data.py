"""The concepts study's tiles: inhabited tiles only, the split of each seed, the true interval effect.

A generated city marks a tile whose water fraction is 0.5 or more as
uninhabited (open water); its outcomes are NaN. :func:`lib.data.tiles.load_tiles`
leaves such tiles out, so every index below (the split, the concept and
random sets drawn from it, the test tiles) refers to inhabited tiles only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.city import stored_outcome_models
from lib.data.splits import Split
from lib.data.tiles import TileData, load_tiles
from lib.eval.spatial_cv import spatial_blocks
from lib.io import open_dataset
from lib.studies.concepts.params import ConceptsData


@dataclass(frozen=True)
class IntervalTruth:
    """The generator's interval-dependent effect on the outcome (:mod:`lib.data.city_outcomes`).

    ``slope`` (n,) is the true effect ``g_u`` of the ``concept`` fraction at
    each loaded tile: ``below`` where the rest of the outcome ``b_u`` lies at or
    under the threshold, ``above`` elsewhere.
    """

    concept: str
    slope: np.ndarray
    below: float
    above: float


@dataclass(frozen=True)
class CityTiles:
    """A city's inhabited tiles, how many were left out as uninhabited, the true interval effect if any, and the
    generator's stored aerial oracle R^2 of the outcome (least squares in sample on every inhabited tile) if any."""

    data: TileData
    n_tiles: int
    n_uninhabited: int
    truth: IntervalTruth | None
    aerial_oracle_r2: float | None = None


def load_city_tiles(path: str | os.PathLike, cfg: ConceptsData, concept_table: str | os.PathLike | None = None) -> CityTiles:
    """The tiles of ``path`` (a ``tiles.nc``) with a finite outcome that are inhabited.

    ``n_uninhabited`` counts the tiles left out (marked ``inhabited = 0`` or
    without a finite outcome). ``truth`` holds the per-tile true slope
    ``<outcome>_slope_<concept>`` when the dataset's outcome model has an
    interval effect, else None (real data, or an outcome without one).
    """
    path = Path(path)
    data = load_tiles(path, cfg.outcome, concept_table)
    with open_dataset(path, engine="h5netcdf") as ds:
        n_tiles = int(ds.sizes["tile"])
        truth = None
        if "outcome_models" in ds.attrs and data.outcome_name in stored_outcome_models(ds):
            interval = stored_outcome_models(ds)[data.outcome_name].interval
            variable = None if interval is None else f"{data.outcome_name}_slope_{interval.concept}"
            if variable is not None and variable in ds:
                slope = ds[variable].to_series()
                slope.index = slope.index.astype(str)
                truth = IntervalTruth(interval.concept, slope.loc[data.tile_ids].to_numpy(np.float64),
                                      float(interval.below), float(interval.above))
        oracle = json.loads(ds.attrs["oracle_r2"]).get(data.outcome_name, {}) if "oracle_r2" in ds.attrs else {}
    return CityTiles(data, n_tiles, n_tiles - len(data), truth, oracle.get("aerial"))


def spatial_block_split(easting: np.ndarray, northing: np.ndarray, block_m: float, val_fraction: float,
                        test_fraction: float, seed: int) -> Split:
    """Fit / validation / test indices made of whole spatial blocks of side ``block_m``.

    The blocks are visited in a random order (seeded ``seed``); they fill the
    test part until it holds at least ``ceil(test_fraction * n)`` tiles, then the
    validation part until ``ceil(val_fraction * n)``; the remaining blocks are
    the fit part. Every tile lies in one part, every block in one part.
    """
    x, y = np.asarray(easting, np.float64), np.asarray(northing, np.float64)
    n = len(x)
    block = spatial_blocks(x, y, block_m)
    n_blocks = int(block.max()) + 1 if n else 0
    if n_blocks < 3:
        raise ValueError(f"{n} tiles form {n_blocks} blocks of block_m={block_m}: need >= 3 (use smaller blocks)")
    order = np.random.default_rng(seed).permutation(n_blocks)
    size = np.bincount(block, minlength=n_blocks)[order]
    start = np.concatenate([[0], np.cumsum(size)[:-1]])  # tiles before each block in the visiting order
    n_test, n_val = math.ceil(test_fraction * n), math.ceil(val_fraction * n)
    test_end = int(size[start < n_test].sum())  # the test blocks may overshoot n_test by part of a block
    part = np.where(start < n_test, 0, np.where(start < test_end + n_val, 1, 2))  # 0 test, 1 validation, 2 fit
    if not (part == 1).any() or not (part == 2).any():
        raise ValueError(f"{n_blocks} blocks of block_m={block_m} cannot fill test ({test_fraction}), "
                         f"validation ({val_fraction}) and fit parts: use smaller blocks")
    of_tile = np.empty(n_blocks, np.int64)
    of_tile[order] = part
    tile_part = of_tile[block]
    fit, val, test = (np.flatnonzero(tile_part == k) for k in (2, 1, 0))
    if len(fit) < 2:
        raise ValueError(f"{n} tiles leave {len(fit)} fit tiles after the test and validation blocks")
    return Split(fit, val, test)


def split_for(cfg: ConceptsData, data: TileData, seed: int) -> Split:
    """Repetition ``seed``'s fit / validation / test split in spatial blocks (:func:`spatial_block_split`)."""
    s = cfg.split
    return spatial_block_split(data.easting, data.northing, s.block_m, s.val_fraction, s.test_fraction, seed)
