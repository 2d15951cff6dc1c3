"""The concepts study's tiles: inhabited tiles only, the split of each seed, the true interval effect.

A generated city marks a tile whose water fraction is 0.5 or more as
uninhabited (open water); its outcomes are NaN. :func:`lib.data.tiles.load_tiles`
leaves such tiles out, so every index below (the split, the concept and
random sets drawn from it, the test tiles) refers to inhabited tiles only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.data.city import stored_outcome_models
from lib.data.splits import Split, stratified_split
from lib.data.tiles import TileData, load_tiles
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
    """A city's inhabited tiles, how many were left out as uninhabited, and the true interval effect if any."""

    data: TileData
    n_tiles: int
    n_uninhabited: int
    truth: IntervalTruth | None


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
    return CityTiles(data, n_tiles, n_tiles - len(data), truth)


def split_for(cfg: ConceptsData, data: TileData, seed: int) -> Split:
    """Repetition ``seed``'s fit / validation / test split, stratified on outcome quantiles."""
    s = cfg.split
    return stratified_split(data.outcome, s.val_fraction, s.test_fraction, s.n_strata, seed)
