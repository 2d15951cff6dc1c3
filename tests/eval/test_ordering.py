"""The ordering of a latent space by an outcome, against the pairwise definition written as a loop."""

import numpy as np
import pytest
from scipy import stats

from lib.eval.ordering import latent_ordering, tsne


def test_latent_ordering_of_ordered_and_shuffled_embeddings():
    rng = np.random.default_rng(1)
    y_fit, y_test = rng.normal(size=400), rng.normal(size=120)

    def embed(y):  # the outcome along one axis, small noise along four
        return np.column_stack([3 * y, 0.1 * rng.normal(size=(len(y), 4))])

    ordered = latent_ordering(embed(y_fit), y_fit, embed(y_test), y_test, k=5)
    shuffled = latent_ordering(embed(y_fit), rng.permutation(y_fit), embed(y_test), rng.permutation(y_test), k=5)
    assert ordered["latent_spearman"] > 0.95 and ordered["knn_r2"] > 0.9
    assert abs(shuffled["latent_spearman"]) < 0.1 and shuffled["knn_r2"] < 0.1

    # Oracle: the pairwise definition written as a loop.
    emb, y = embed(y_test[:30]), y_test[:30]
    pairs = [(np.linalg.norm(emb[i] - emb[j]), abs(y[i] - y[j])) for i in range(30) for j in range(i + 1, 30)]
    expected = stats.spearmanr(*zip(*pairs, strict=True)).statistic
    assert latent_ordering(emb, y, emb, y, k=1)["latent_spearman"] == pytest.approx(expected)


def test_tsne_is_seeded_and_two_dimensional():
    x = np.random.default_rng(0).normal(size=(40, 5))
    a, b = tsne(x, perplexity=30.0, seed=1), tsne(x, perplexity=30.0, seed=1)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
