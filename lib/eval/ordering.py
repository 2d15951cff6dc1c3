"""How well a latent space is ordered by an outcome, and a 2-d map of it."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist
from sklearn.manifold import TSNE
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsRegressor
from threadpoolctl import threadpool_limits


def latent_ordering(fit_emb: np.ndarray, fit_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray,
                    k: int, max_items: int = 2000, seed: int = 0) -> dict[str, float]:
    """How well the latent space is ordered by the outcome.

    * ``latent_spearman``: Spearman correlation, over all test pairs i < j, of
      ||e_i - e_j||_2 with |y_i - y_j| (at most ``max_items`` test items, drawn
      with ``seed``); 1 when embedding distance ranks pairs like outcome distance.
    * ``knn_r2``: R^2 on the test items of k-nearest-neighbour regression
      (Euclidean, uniform weights) fitted on the fit items' embeddings.
    """
    test_emb, test_y = np.asarray(test_emb), np.asarray(test_y)
    if len(test_y) > max_items:
        keep = np.random.default_rng(seed).choice(len(test_y), max_items, replace=False)
        pairs_emb, pairs_y = test_emb[keep], test_y[keep]
    else:
        pairs_emb, pairs_y = test_emb, test_y
    rho = stats.spearmanr(pdist(pairs_emb), pdist(pairs_y.reshape(-1, 1), "cityblock")).statistic
    knn = KNeighborsRegressor(n_neighbors=min(k, len(fit_y))).fit(fit_emb, fit_y)
    return {"latent_spearman": float(rho), "knn_r2": float(r2_score(test_y, knn.predict(test_emb)))}


def tsne(embeddings: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-d t-SNE coordinates (n, 2) of embeddings (perplexity capped at (n - 1) / 3)."""
    perplexity = min(perplexity, max((len(embeddings) - 1) / 3, 1.0))
    # One OpenMP thread: on a busy 2-core machine the Barnes-Hut gradient of a
    # few hundred points took 16x longer with two threads waiting on each other.
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)
