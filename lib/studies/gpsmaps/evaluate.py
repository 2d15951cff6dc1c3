"""Evaluation of the gpsmaps embeddings: probes under spatial block cross-validation, on a ladder of baselines.

Every feature set describes the maps held out of the geo tasks
(:mod:`lib.studies.gpsmaps.data`) and is probed on the same folds: square
blocks per city, a Chebyshev gap of one map side (no training map shares a
pixel with a test map, :func:`lib.eval.spatial_cv.spatial_block_folds`), the
ridge penalty chosen by a *spatial* inner split of each fold's training part
(:func:`lib.eval.spatial_cv.ridge_probe_cv`, all targets at once). Scores are
R^2 per fold; a trained feature set has one row per training seed.

Feature sets, bottom of the ladder up (:func:`baseline_features`):

* ``coordinates``: planar coordinates in km, linear; ``coordinates_mlp``: the
  compendium's MLP probe on them (:func:`lib.eval.spatial_cv.mlp_probe_cv`);
  ``rff``: multi-scale random Fourier features of them (GeoCLIP's and SatCLIP's
  location encoding), linear;
* ``pixels``: the map averaged down to ``pixels_side``^2 x 3 values;
  ``histogram``: ``histogram_bins`` bins of each colour band;
* ``random_init``: the encoder with random weights (one per training seed);
* the trainings' teacher (and student) embeddings, linear and kNN
  (:func:`knn_scores`);
* ``class_fractions``: the pixel share of each map class of the rendered map
  (what the map shows, read off exactly: a ceiling for what a map encoder can
  pass on).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from lib.eval.spatial_cv import mlp_probe_cv, ridge_probe_cv
from lib.models.location import RandomFourierFeatures
from lib.studies.gpsmaps.data import MapSet
from lib.studies.gpsmaps.params import GpsMapsData, GpsMapsProbe

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


def pixel_features(images: torch.Tensor, side: int) -> np.ndarray:
    """Maps (N, 3, H, H) averaged over ``side`` x ``side`` cells: (N, 3 side^2)."""
    return torch.nn.functional.adaptive_avg_pool2d(images, side).flatten(1).double().numpy()


def colour_histograms(images: torch.Tensor, bins: int) -> np.ndarray:
    """Per band, the share of pixels in each of ``bins`` equal bins of [0, 1]: (N, 3 bins)."""
    codes = (images.clamp(0, 1) * bins).long().clamp_max(bins - 1)  # (N, 3, H, W)
    counts = torch.nn.functional.one_hot(codes.flatten(2), bins).sum(2)  # (N, 3, bins)
    return (counts / codes[0, 0].numel()).flatten(1).double().numpy()


def baseline_features(test: MapSet, xy_km: np.ndarray, probe: GpsMapsProbe, seed: int) -> dict[str, np.ndarray]:
    """The feature sets that need no training (module docstring), in ladder order."""
    return {"coordinates": xy_km, "rff": rff_features(xy_km, probe.rff_scales_m, probe.rff_features, seed),
            "pixels": pixel_features(test.images, probe.pixels_side),
            "histogram": colour_histograms(test.images, probe.histogram_bins),
            "class_fractions": test.fractions}


def ridge_scores(features: np.ndarray, y: np.ndarray, folds, table: pd.DataFrame, data: GpsMapsData,
                 probe: GpsMapsProbe, seed: int) -> np.ndarray:
    """(n_folds, n_targets) test R^2 of the ridge probe, its penalty by a spatial inner split (module docstring)."""
    return ridge_probe_cv(features, y, folds, table["easting"].to_numpy(), table["northing"].to_numpy(),
                          data.block_m, data.gap_m, groups=table["place"].to_numpy(), metric=data.gap_metric,
                          inner_folds=probe.inner_folds, seed=seed)


def knn_scores(features: np.ndarray, y: np.ndarray, folds, k: int) -> np.ndarray:
    """(n_folds, n_targets) test R^2 of a k-nearest-neighbour regression on standardised features (k fixed in
    advance, at most the fold's training size)."""
    scores = np.empty((len(folds), y.shape[1]))
    for f, (train, test) in enumerate(folds):
        model = make_pipeline(StandardScaler(), KNeighborsRegressor(min(k, len(train))))
        with threadpool_limits(1):
            predicted = model.fit(features[train], y[train]).predict(features[test])
        residual = ((y[test] - predicted) ** 2).sum(0)
        scores[f] = 1 - residual / ((y[test] - y[test].mean(0)) ** 2).sum(0)
    return scores


def mlp_scores(xy_km: np.ndarray, y: np.ndarray, folds, seed: int) -> np.ndarray:
    """(n_folds, n_targets) test R^2 of the compendium's MLP probe on the coordinates, one target at a time."""
    return np.stack([[fold["r2"] for fold in mlp_probe_cv(xy_km, y[:, t], folds, seed=seed).per_fold]
                     for t in range(y.shape[1])], axis=1)
