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
:func:`fusion_vs_best_single` sets each fusion against the best single
modality of its city, outcome and probe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.eval.spatial_cv import mlp_probe_cv, probe_cv
from lib.studies.musecl.train import standardise

#: Feature sets in the order of the tables: MuseCL, its parts and combinations, then the baselines.
FEATURE_SETS = ("fusion_infonce", "fusion_mse", "aerial", "street_view", "poi_text", "sum", "concat",
                "simclr", "tile2vec")
#: The single modalities a fusion is set against.
SINGLE_MODALITIES = ("aerial", "street_view", "poi_text")
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


def fusion_vs_best_single(results: pd.DataFrame, truth: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per city, outcome and probe: each fusion's mean R^2 minus that of the best single modality there.

    ``results`` holds :func:`probe_city`'s rows with a ``city`` column;
    ``truth`` maps each city to its :func:`truth_table`. Columns: the fusion and
    the best single modality (:data:`SINGLE_MODALITIES`, best by mean R^2 over
    the folds), both R^2, ``gap`` (fusion minus best), ``fold_sd`` (the larger
    of the two fold sds), ``gap_over_sd`` (NaN where that sd is 0 or
    undefined) and the city's noise ceiling of the outcome.
    """
    rows = []
    for (city, target, probe), part in results.groupby(["city", "target", "probe"], sort=True):
        part = part.set_index("features")
        missing = [name for name in SINGLE_MODALITIES if name not in part.index]
        if missing:
            raise ValueError(f"{city}, {target}, {probe}: no scores of the single modalities {missing}")
        best = max(SINGLE_MODALITIES, key=lambda name: part.loc[name, "r2_mean"])
        for fusion in [name for name in FEATURE_SETS if name.startswith("fusion_") and name in part.index]:
            gap = part.loc[fusion, "r2_mean"] - part.loc[best, "r2_mean"]
            fold_sd = max(part.loc[fusion, "r2_sd"], part.loc[best, "r2_sd"])
            rows.append({"city": city, "target": target, "probe": probe, "fusion": fusion, "best_single": best,
                         "fusion_r2": part.loc[fusion, "r2_mean"], "best_single_r2": part.loc[best, "r2_mean"],
                         "gap": gap, "fold_sd": fold_sd,
                         "gap_over_sd": gap / fold_sd if fold_sd > 0 else np.nan,
                         "ceiling": truth[city].loc[target, "ceiling"]})
    return pd.DataFrame(rows)
