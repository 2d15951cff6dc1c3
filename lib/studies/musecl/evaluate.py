"""Downstream evaluation of the region embeddings: probes under spatial block cross-validation, against the truth.

Every feature set of a city (:func:`feature_sets`) predicts every outcome by a
ridge regression (penalty chosen inside each fold's training part,
:func:`lib.eval.spatial_cv.probe_cv`) and by an MLP
(:func:`lib.eval.spatial_cv.mlp_probe_cv`), scored on the same spatial block
folds (``block_m`` blocks, ``gap_m`` buffer): R^2, RMSE and MAE, mean and sd
over folds. The city's stored truth frames the numbers: the R^2 an ordinary
least-squares fit reaches from each modality's *true* factors (aerial: land
cover, water, centrality; street view: affluence; POI: commercial character;
mobility: accessibility), from all of them, and the noise ceiling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.eval.spatial_cv import mlp_probe_cv, probe_cv, spatial_block_folds
from lib.studies.musecl.train import standardise

#: Feature sets in the order of the tables: MuseCL, its parts and combinations, then the baselines.
FEATURE_SETS = ("fusion_infonce", "fusion_mse", "aerial", "street_view", "poi_text", "sum", "concat",
                "simclr", "tile2vec")
#: Which stored oracle R^2 each single modality is read against.
ORACLE_OF = {"aerial": "aerial", "street_view": "street_view", "poi_text": "poi"}


def feature_sets(embeddings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The probed feature sets from a city's stored embeddings.

    ``embeddings`` holds ``aerial``, ``street_view``, ``poi_text`` (the mean
    MiniLM embedding, zeros without POIs), ``text_reduced`` (its principal
    components, the width of the image embeddings), ``fusion_<objective>``,
    ``simclr`` and ``tile2vec``. Added: ``sum``, the sum of the standardised
    aerial, street-view and reduced text embeddings, and ``concat``, the
    three standardised side by side (the reference's "concat" and "svrv").
    """
    parts = [standardise(embeddings[k]) for k in ("aerial", "street_view", "text_reduced")]
    out = {name: embeddings[name] for name in FEATURE_SETS if name in embeddings}
    out["sum"] = parts[0] + parts[1] + parts[2]
    out["concat"] = np.concatenate(parts, axis=1)
    return {name: out[name] for name in FEATURE_SETS if name in out}


def folds_for(table: pd.DataFrame, n_folds: int, block_m: float, gap_m: float, seed: int):
    return spatial_block_folds(table["easting"].to_numpy(), table["northing"].to_numpy(), n_folds, block_m, gap_m,
                               seed)


def probe_city(features: dict[str, np.ndarray], table: pd.DataFrame, targets: list[str], folds,
               mlp_hidden: list[int], mlp_alpha: float, seed: int) -> pd.DataFrame:
    """One row per (feature set, target, probe): R^2, RMSE and MAE, mean and sd over folds."""
    rows = []
    for target in targets:
        y = table[target].to_numpy(float)
        if not np.isfinite(y).all():
            raise ValueError(f"outcome {target!r} has missing values among the inhabited regions")
        for name, x in features.items():
            ridge = probe_cv(x, y, folds, task="regression", seed=seed)
            mlp = mlp_probe_cv(x, y, folds, hidden=tuple(mlp_hidden), alpha=mlp_alpha, seed=seed)
            rows.append({"features": name, "target": target, "probe": "ridge", **ridge.summary()})
            rows.append({"features": name, "target": target, "probe": "mlp", **mlp.summary()})
    return pd.DataFrame(rows)


def truth_table(oracle: dict[str, dict[str, float]], targets: list[str]) -> pd.DataFrame:
    """Stored oracle R^2 per target: each modality's true factors, all factors, and the ceiling."""
    columns = ["aerial", "street_view", "poi", "mobility", "all_factors", "ceiling"]
    return pd.DataFrame([{"target": t, **{c: oracle[t][c] for c in columns}} for t in targets]).set_index("target")
