"""Tests of lib.eval.retrieval: ranking a gallery and re-ranking the head of each ranking."""

import pytest
import torch

from lib.eval.retrieval import rank, rerank


def random_similarity(seed: int, n: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, 6, generator=generator), dim=1)
    return x @ x.T


def test_rank_excludes_self_and_sorts_best_first():
    similarity = random_similarity(0)
    n = len(similarity)
    ranking = rank(similarity, depth=n - 1)
    assert ranking.shape == (n, n - 1)
    for q in range(n):
        row = ranking[q].tolist()
        assert q not in row
        assert sorted(row) == [i for i in range(n) if i != q]  # every other item exactly once
        scores = similarity[q, ranking[q]]
        assert torch.all(scores[:-1] >= scores[1:])


def test_rank_truncates_to_depth_and_caps_it_at_the_gallery():
    similarity = random_similarity(1)
    n = len(similarity)
    full = rank(similarity, depth=n - 1)
    assert torch.equal(rank(similarity, depth=3), full[:, :3])
    assert rank(similarity, depth=10 * n).shape == (n, n - 1)


def test_rank_keeps_self_when_asked():
    similarity = random_similarity(2)
    ranking = rank(similarity, depth=len(similarity), exclude_self=False)
    # Unit vectors: each one is its own best match.
    assert torch.equal(ranking[:, 0], torch.arange(len(similarity)))


def test_rank_of_a_separate_gallery():
    similarity = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    assert rank(similarity, depth=2, exclude_self=False).tolist() == [[1, 2], [0, 2]]
    with pytest.raises(ValueError, match="query set"):
        rank(similarity, depth=2)  # exclude_self needs Q == G
    with pytest.raises(ValueError, match=r"\(Q, G\)"):
        rank(similarity[0], depth=2)


def test_rank_of_some_queries_equals_their_rows_of_the_full_ranking():
    similarity = random_similarity(7)
    queries = torch.tensor([5, 0, 9])
    full = rank(similarity, depth=len(similarity) - 1)
    some = rank(similarity[queries], depth=len(similarity) - 1, query_index=queries)
    assert torch.equal(some, full[queries])
    assert not (some == queries[:, None]).any()
    with pytest.raises(ValueError, match=r"query_index must have shape \(3,\)"):
        rank(similarity[queries], depth=4, query_index=queries[:2])


def test_rerank_reverses_the_head_and_keeps_the_tail():
    similarity = random_similarity(3)
    ranking = rank(similarity, depth=len(similarity) - 1)
    k = 4

    def reversing(head):  # structural score = -2 * global: score = -2s + s = -s
        return -2 * similarity.gather(1, head)

    out = rerank(ranking, similarity, reversing, k=k, weight=1.0)
    assert torch.equal(out[:, :k], ranking[:, :k].flip(1))
    assert torch.equal(out[:, k:], ranking[:, k:])


def test_rerank_asks_once_for_each_querys_head():
    similarity = random_similarity(4)
    ranking = rank(similarity, depth=len(similarity) - 1)
    seen = []

    def recording(head):
        seen.append(head.clone())
        return torch.zeros(head.shape)

    rerank(ranking, similarity, recording, k=3)
    (head,) = seen
    assert torch.equal(head, ranking[:, :3])


def test_rerank_rejects_a_similarity_of_the_wrong_shape():
    similarity = random_similarity(4)
    ranking = rank(similarity, depth=len(similarity) - 1)
    with pytest.raises(ValueError, match=r"head's shape \(12, 3\)"):
        rerank(ranking, similarity, lambda head: torch.zeros(head.numel()), k=3)


def test_rerank_with_global_similarity_and_no_weight_keeps_the_order():
    similarity = random_similarity(5)
    ranking = rank(similarity, depth=len(similarity) - 1)
    out = rerank(ranking, similarity, lambda head: similarity.gather(1, head), k=6, weight=0.0)
    assert torch.equal(out, ranking)


@pytest.mark.parametrize("k", [1, 5, 11, 50])
def test_rerank_rows_stay_permutations_of_the_input(k):
    similarity = random_similarity(6)
    ranking = rank(similarity, depth=8)
    generator = torch.Generator().manual_seed(k)
    noise = torch.rand(similarity.shape, generator=generator)
    out = rerank(ranking, similarity, lambda head: noise.gather(1, head), k=k, weight=0.5)
    assert out.shape == ranking.shape
    assert torch.equal(out.sort(dim=1).values, ranking.sort(dim=1).values)
    head = min(k, ranking.shape[1])
    assert torch.equal(out[:, head:], ranking[:, head:])
    # The head is ordered by the combined score, best first.
    score = noise.gather(1, out[:, :head]) + 0.5 * similarity.gather(1, out[:, :head])
    assert torch.all(score[:, :-1] >= score[:, 1:])


def test_raw_cosine_ranking_agrees_with_scikit_learn_nearest_neighbours():
    from sklearn.neighbors import NearestNeighbors

    from lib.eval.retrieval import raw_cosine_ranking

    images = torch.rand(30, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    queries = torch.tensor([0, 7, 29])
    ranking = raw_cosine_ranking(images, queries)
    flat = images.flatten(1).numpy()
    _, neighbours = NearestNeighbors(n_neighbors=30, metric="cosine", algorithm="brute").fit(flat).kneighbors(flat[queries.numpy()])
    expected = [[g for g in row if g != q] for row, q in zip(neighbours.tolist(), queries.tolist(), strict=True)]
    assert ranking.tolist() == expected
    assert raw_cosine_ranking(images).shape == (30, 29)


def test_raw_cosine_ranking_refuses_a_blank_input():
    from lib.eval.retrieval import raw_cosine_ranking

    images = torch.rand(4, 3)
    images[2] = 0
    with pytest.raises(ValueError, match=r"inputs \[2\] are all zero"):
        raw_cosine_ranking(images)
