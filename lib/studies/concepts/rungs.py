"""The ladder's rungs that need no encoder: band statistics, the true land-cover fractions, the aerial oracle.

Each is scored on one repetition's split, by test R^2 like the encoders:

* **band statistics** (the trivial rung): a ridge regression ``y ~ w . z + c``
  on ``z``, the tile's per-band mean and standard deviation
  (:func:`lib.data.tiles.band_statistics`, 2C numbers) standardised with the fit
  tiles' mean and sd; fitted on the fit tiles, its penalty chosen by validation
  R^2 (:func:`lib.eval.probes.ridge_probe`);
* **land-cover fractions**: the same ridge on the tile's true land-cover
  fractions, i.e. what the concepts themselves explain of the outcome;
* **aerial oracle** (the ceiling): least squares on every true factor an
  aerial tile shows (the fractions, water proximity, distance to the centre:
  the design of the generator's stored aerial oracle R^2), fitted on the fit
  and validation tiles and scored on the test tiles: tile-level and out of
  sample, unlike the generator's stored value (in sample, every inhabited tile).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from lib.data.splits import Split
from lib.data.tiles import TileData, band_statistics
from lib.eval.probes import ridge_probe

#: The rungs in ladder order, with their names in the tables.
RUNGS = {"band_statistics": "band statistics (ridge)", "fractions": "true land-cover fractions (ridge)",
         "aerial_oracle": "aerial oracle (least squares on the true aerial factors)"}


def ridge_rung(features: np.ndarray, y: np.ndarray, split: Split, alphas: list[float]) -> float:
    """Test R^2 of a ridge on standardised ``features`` (n, m), fitted on the fit tiles, penalty by validation R^2."""
    scaler = StandardScaler().fit(features[split.fit])
    z = scaler.transform(features)
    ridge, _, _ = ridge_probe(z[split.fit], y[split.fit], z[split.val], y[split.val], alphas)
    return float(r2_score(y[split.test], ridge.predict(z[split.test])))


def oracle_rung(design: np.ndarray, y: np.ndarray, split: Split) -> float:
    """Test R^2 of least squares on ``design`` (n, m) fitted on the fit and validation tiles."""
    train = np.concatenate([split.fit, split.val])
    fitted = LinearRegression().fit(design[train], y[train])
    return float(r2_score(y[split.test], fitted.predict(design[split.test])))


def rung_scores(data: TileData, split: Split, alphas: list[float]) -> dict[str, float]:
    """Test R^2 of every rung :data:`RUNGS` that the data allow (NaN for the others: no fractions, no factors)."""
    y = data.outcome
    out = {"band_statistics": ridge_rung(band_statistics(data.images), y, split, alphas),
           "fractions": np.nan, "aerial_oracle": np.nan}
    if data.concepts is not None:
        fractions = data.concepts.to_numpy(np.float64)
        out["fractions"] = ridge_rung(fractions, y, split, alphas)
        if data.factors is not None:
            out["aerial_oracle"] = oracle_rung(np.hstack([fractions, data.factors.to_numpy(np.float64)]), y, split)
    return out
