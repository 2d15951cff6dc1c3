"""Tests of lib.eval.metrics: retrieval metrics against pytorch-metric-learning, a naive loop and a hand example.

The oracle for Precision@1, R-Precision and MAP@R is pytorch-metric-learning's
``AccuracyCalculator`` (Musgrave et al., "A Metric Learning Reality Check"),
fed the same embeddings with the query set as the reference set; our side
ranks the same cosine similarities with ``lib.eval.retrieval.rank``.
"""

import numpy as np
from scipy import stats
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from lib.eval.metrics import nmi, regression_metrics, retrieval_metrics, retrieval_metrics_per_query
from lib.eval.retrieval import rank


def clustered_embeddings(seed: int, class_sizes, dim: int = 16, spread: float = 0.8):
    """Unit vectors around one random centre per class; unequal class sizes give varying R_q."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(class_sizes), dim, generator=generator)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(class_sizes)])
    points = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return F.normalize(points, dim=1), labels


def our_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks=(1, 2, 4, 8)):
    similarity = embeddings @ embeddings.T
    ranking = rank(similarity, depth=len(labels) - 1).numpy()
    labels_np = labels.numpy()
    n_relevant = np.bincount(labels_np)[labels_np] - 1
    return retrieval_metrics(labels_np[ranking], labels_np, n_relevant, ks=ks), ranking


def assert_no_near_ties(embeddings: torch.Tensor, gap: float = 1e-6):
    """Guard: the oracle and we must see the same order, so no two similarities of a row may (nearly) tie."""
    similarity = (embeddings.double() @ embeddings.double().T).numpy()
    np.fill_diagonal(similarity, -np.inf)
    ordered = np.sort(similarity, axis=1)[:, 1:]  # drop the -inf self entry
    assert np.diff(ordered, axis=1).min() > gap


@pytest.mark.parametrize("seed, class_sizes", [(0, (6, 9, 4, 12, 7)), (1, (10, 10, 10)), (2, (3, 15, 5, 8))])
def test_agrees_with_pytorch_metric_learning(seed, class_sizes):
    embeddings, labels = clustered_embeddings(seed, class_sizes)
    assert_no_near_ties(embeddings)
    ours, _ = our_metrics(embeddings, labels)

    calculator = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    oracle = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)

    assert ours["recall_at_1"] == pytest.approx(oracle["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(oracle["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(oracle["mean_average_precision_at_r"], abs=1e-6)
    # The clusters overlap: the metrics are informative, neither 0 nor 1.
    assert 0.2 < ours["map_at_r"] < 0.99


def test_recall_at_k_matches_its_definition():
    embeddings, labels = clustered_embeddings(3, (5, 7, 6, 9), spread=1.2)
    ks = (1, 2, 3, 5, 8)
    ours, ranking = our_metrics(embeddings, labels, ks=ks)
    similarity = (embeddings @ embeddings.T).tolist()
    label_list = labels.tolist()
    n = len(label_list)
    for k in ks:
        hits = 0
        for q in range(n):
            others = sorted((j for j in range(n) if j != q), key=lambda j: similarity[q][j], reverse=True)
            hits += any(label_list[j] == label_list[q] for j in others[:k])
        assert ours[f"recall_at_{k}"] == pytest.approx(hits / n, abs=1e-12), k
    recalls = [ours[f"recall_at_{k}"] for k in ks]
    assert recalls == sorted(recalls) and recalls[0] < recalls[-1]


def test_hand_computed_example():
    # query a (label 0, R=2): relevant at ranks 1, 3 -> within R only rank 1: AP@R = 1/2 * 1         = 1/2
    # query b (label 1, R=2): relevant at ranks 2, 3 -> within R only rank 2: AP@R = 1/2 * (1/2)     = 1/4
    # query c (label 2, R=3): relevant at ranks 1, 3, 4 -> ranks 1 and 3:     AP@R = 1/3 * (1 + 2/3) = 5/9
    ranked = np.array([[0, 1, 0, 1], [0, 1, 1, 0], [2, 0, 2, 2]])
    out = retrieval_metrics(ranked, np.array([0, 1, 2]), np.array([2, 2, 3]), ks=(1, 2))
    assert out["map_at_r"] == pytest.approx((1 / 2 + 1 / 4 + 5 / 9) / 3)
    assert out["r_precision"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
    assert out["recall_at_1"] == pytest.approx(2 / 3)
    assert out["recall_at_2"] == pytest.approx(1.0)
    assert set(out) == {"recall_at_1", "recall_at_2", "r_precision", "map_at_r"}


def test_per_query_values_are_the_hand_computed_ones_and_average_to_the_metrics():
    ranked = np.array([[0, 1, 0, 1], [0, 1, 1, 0], [2, 0, 2, 2]])
    args = (ranked, np.array([0, 1, 2]), np.array([2, 2, 3]))
    per_query = retrieval_metrics_per_query(*args, ks=(1, 2))
    np.testing.assert_allclose(per_query["map_at_r"], [1 / 2, 1 / 4, 5 / 9])
    np.testing.assert_allclose(per_query["r_precision"], [1 / 2, 1 / 2, 2 / 3])
    assert per_query["recall_at_1"].tolist() == [True, False, True]
    means = retrieval_metrics(*args, ks=(1, 2))
    assert means == {k: float(v.mean()) for k, v in per_query.items()}  # the same numbers, bit for bit


def test_perfect_ranking_scores_one():
    ranked = np.array([[3, 3, 1, 2], [1, 2, 3, 3]])
    out = retrieval_metrics(ranked, np.array([3, 1]), np.array([2, 1]), ks=(1,))
    assert out == {"recall_at_1": 1.0, "r_precision": 1.0, "map_at_r": 1.0}


def test_rankings_shorter_than_r_are_rejected():
    ranked = np.array([[0, 0, 1], [1, 0, 1]])
    with pytest.raises(ValueError, match="at least 4 items"):
        retrieval_metrics(ranked, np.array([0, 1]), np.array([4, 1]), ks=(1,))


def test_rankings_shorter_than_k_are_rejected():
    ranked = np.array([[0, 0, 1], [1, 0, 1]])
    with pytest.raises(ValueError, match="at least 8 items"):
        retrieval_metrics(ranked, np.array([0, 1]), np.array([1, 1]))  # default ks reach 8


def test_query_without_relevant_items_is_rejected():
    ranked = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="R_q >= 1"):
        retrieval_metrics(ranked, np.array([0, 1]), np.array([1, 0]), ks=(1,))


def test_mismatched_query_count_is_rejected():
    with pytest.raises(ValueError, match=r"\(Q, L\)"):
        retrieval_metrics(np.zeros((3, 4), dtype=int), np.array([0, 1]), np.array([1, 1]), ks=(1,))


def test_nmi_of_perfect_clusters_is_one():
    embeddings, labels = clustered_embeddings(4, (8, 8, 8, 8), spread=0.01)
    assert nmi(embeddings.numpy(), labels.numpy(), seed=0) == pytest.approx(1.0)


def test_nmi_equals_sklearn_on_kmeans_with_the_same_seed():
    embeddings, labels = clustered_embeddings(5, (10, 12, 9, 11), spread=1.5)
    x, y = embeddings.numpy(), labels.numpy()
    clusters = KMeans(n_clusters=4, n_init=10, random_state=7).fit_predict(x)
    expected = normalized_mutual_info_score(y, clusters)
    assert 0.05 < expected < 0.95  # overlapping clusters: a non-trivial value
    assert nmi(x, y, seed=7) == pytest.approx(expected, abs=1e-12)


def test_regression_metrics_match_their_definitions():
    y = np.array([1.0, 2.0, 4.0, 3.0])
    p = np.array([1.5, 2.0, 3.0, 3.5])
    out = regression_metrics(y, p)
    assert out["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert out["r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert out["kendall_tau"] == pytest.approx(stats.kendalltau(y, p).statistic)
