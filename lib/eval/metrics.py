"""Retrieval, clustering and regression metrics: arrays in, dicts of floats out.

Definitions follow Musgrave et al., "A Metric Learning Reality Check"
(ECCV 2020), for a query q with label y_q whose query is excluded from its
own gallery, and R_q = number of gallery items with label y_q:

* Recall@K      = 1[ any of the top K items has label y_q ]
* R-Precision   = |{i <= R_q : rel(i)}| / R_q
* MAP@R         = (1/R_q) * sum_{i <= R_q} rel(i) * P(i),  P(i) = precision of the top i
* NMI           = normalised mutual information between k-means clusters
                  (k = number of classes) and the labels

Each is averaged over queries. For regression (:func:`regression_metrics`):
R^2 = 1 - sum (y - p)^2 / sum (y - mean y)^2, MAE = mean |y - p| and
Kendall's tau_b of (y, p).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.metrics import mean_absolute_error, normalized_mutual_info_score, r2_score

from lib.timing import phase


@phase("evaluate")
def retrieval_metrics(
    ranked_labels: np.ndarray,
    query_labels: np.ndarray,
    n_relevant: np.ndarray,
    ks: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, float]:
    """Recall@K, R-Precision and MAP@R from ranked gallery labels: the means over queries of
    :func:`retrieval_metrics_per_query` (same arguments)."""
    return {name: float(values.mean()) for name, values in
            retrieval_metrics_per_query(ranked_labels, query_labels, n_relevant, ks).items()}


def retrieval_metrics_per_query(
    ranked_labels: np.ndarray,
    query_labels: np.ndarray,
    n_relevant: np.ndarray,
    ks: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, np.ndarray]:
    """Recall@K, R-Precision and MAP@R of each query, (Q,) arrays (Recall@K boolean), e.g. for intervals
    that resample queries (:func:`lib.eval.intervals.interval_cell` with ``items``).

    Args:
        ranked_labels: (Q, L) labels of each query's gallery, best first, with
            L >= max(R_q) and L >= max(ks) (the query itself already removed).
        query_labels: (Q,) label of each query.
        n_relevant: (Q,) R_q, the number of gallery items sharing the query's label.
    """
    ranked_labels = np.asarray(ranked_labels)
    query_labels = np.asarray(query_labels)
    n_relevant = np.asarray(n_relevant)
    if ranked_labels.ndim != 2 or ranked_labels.shape[0] != query_labels.shape[0]:
        raise ValueError(
            f"ranked_labels must be (Q, L) with Q = len(query_labels) = {query_labels.shape[0]}, "
            f"got {ranked_labels.shape}"
        )
    if np.any(n_relevant < 1):
        raise ValueError("every query needs at least one relevant gallery item (R_q >= 1)")
    depth = max(int(n_relevant.max()), max(ks))
    if ranked_labels.shape[1] < depth:
        raise ValueError(f"rankings must hold at least {depth} items (max R_q and K), got {ranked_labels.shape[1]}")

    relevant = ranked_labels[:, :depth] == query_labels[:, None]  # (Q, depth)
    within_r = np.arange(1, depth + 1)[None, :] <= n_relevant[:, None]
    hits_r = relevant & within_r
    precision_at_i = np.cumsum(relevant, axis=1) / np.arange(1, depth + 1)[None, :]

    out = {f"recall_at_{k}": relevant[:, :k].any(axis=1) for k in ks}
    out["r_precision"] = hits_r.sum(axis=1) / n_relevant
    out["map_at_r"] = (precision_at_i * hits_r).sum(axis=1) / n_relevant
    return out


def nmi(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """NMI between k-means clusters of the embeddings (k = #classes) and the labels."""
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    clusters = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(np.asarray(embeddings))
    return float(normalized_mutual_info_score(labels, clusters))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R^2, MAE (in the outcome's units) and Kendall's tau_b of predictions against the truth."""
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "kendall_tau": float(stats.kendalltau(y_true, y_pred).statistic),
    }
