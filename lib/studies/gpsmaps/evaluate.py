"""Evaluation of the gpsmaps embeddings: linear probes under spatial block cross-validation, against baselines.

Every feature set embeds the maps held out of the geo tasks
(:mod:`lib.studies.gpsmaps.data`) and is probed by the same spatial block
cross-validation (:func:`lib.eval.spatial_cv.probe_cv`: ridge regression or
multinomial logistic regression, the penalty chosen inside each fold's
training part; folds of ``block_m`` blocks per city with a ``gap_m`` buffer;
mean and sd over folds). Feature sets:

* each trained variant's teacher embedding (``full``, the ablations, ``dino``);
* ``random_init``: the same encoder with random weights (what the architecture alone gives);
* ``coordinates``: the planar coordinates in km (a linear probe of raw lon/lat);
* ``rff``: multi-scale random Fourier features of the coordinates (the location
  encoding of GeoCLIP and SatCLIP), probed linearly;
* ``coordinates_mlp``: the compendium's MLP probe on the coordinates
  (:func:`lib.eval.spatial_cv.mlp_probe_cv`, the same probe as musecl's).

The folds come from :func:`lib.eval.spatial_cv.folds_for`, each place a group
of its own (``group_by="place"``).

Helsinki's maps (OpenStreetMap) are probed the same way for the labels OSM
itself gives: building density and the map class at the centre.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lib.eval.spatial_cv import mlp_probe_cv, probe_cv
from lib.models.location import RandomFourierFeatures

EARTH_RADIUS_KM = 6371.0


def planar_km(lon: np.ndarray, lat: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Equirectangular km, ``x = R lon cos(lat_g), y = R lat`` (radians), ``lat_g`` the mean latitude of the
    point's group (its place): within a place, distances are right to well under 1 %."""
    lon, lat = np.radians(np.asarray(lon, float)), np.radians(np.asarray(lat, float))
    groups = np.zeros(len(lon)) if groups is None else np.asarray(groups)
    reference = np.empty_like(lat)
    for g in np.unique(groups):
        reference[groups == g] = lat[groups == g].mean()
    return np.stack([EARTH_RADIUS_KM * lon * np.cos(reference), EARTH_RADIUS_KM * lat], axis=1)


def rff_features(xy_km: np.ndarray, scales_m: list[float], n_features: int, seed: int) -> np.ndarray:
    """Random Fourier features of planar coordinates at each scale (metres)."""
    rff = RandomFourierFeatures(2, n_features, [s / 1000 for s in scales_m], seed=seed)
    with torch.no_grad():
        return rff(torch.as_tensor(xy_km - xy_km.mean(0), dtype=torch.float32)).numpy().astype(np.float64)


def probe_all(features: dict[str, np.ndarray], table: pd.DataFrame, targets: dict[str, str], folds,
              xy: np.ndarray, seed: int) -> pd.DataFrame:
    """One row per (feature set, target): mean and sd over folds of each metric.

    ``targets``: label -> 'regression' | 'classification'. ``coordinates_mlp`` is added from ``xy``.
    """
    rows = []
    for target, task in targets.items():
        y = table[target].to_numpy()
        y = y.astype(np.int64) if task == "classification" else y.astype(float)
        # Inner splits that pick the penalty: 5, or fewer where a fold's training part is small
        # (stratified splits need that many members of its largest class).
        sizes = [len(train) if task == "regression" else np.bincount(y[train]).max() for train, _ in folds]
        inner = int(max(2, min(5, min(sizes))))
        for name, x in features.items():
            rows.append({"features": name, "target": target, "task": task,
                         **probe_cv(x, y, folds, task=task, inner_folds=inner, seed=seed).summary()})
        rows.append({"features": "coordinates_mlp", "target": target, "task": task,
                     **mlp_probe_cv(xy, y, folds, seed=seed, task=task).summary()})
    return pd.DataFrame(rows)
