"""Ranking a gallery for each query, and re-ranking its head with a costlier similarity.

DIML's test-time re-ranking (Zhao et al., ICCV 2021, Sec. 3.4): the global
similarity retrieves the top K gallery items, which are then re-ordered by

    score(q, g) = s_struct(q, g) + w * s_global(q, g)

while the tail beyond K keeps its global order.

The trivial rung of a retrieval ladder, :func:`raw_cosine_ranking`, ranks by
the cosine of the raw inputs themselves (pixels flattened), with no learned
metric at all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def rank(
    similarity: torch.Tensor, depth: int, exclude_self: bool = True, query_index: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of the ``depth`` most similar gallery items per query, best first.

    ``similarity`` is (Q, G); with ``exclude_self`` the queries are items of the
    gallery and each is removed from its own ranking: query q is gallery item
    ``query_index[q]``, by default q itself (the gallery is the query set, Q == G).
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (Q, G), got shape {tuple(similarity.shape)}")
    q, g = similarity.shape
    if exclude_self:
        if query_index is None:
            if q != g:
                raise ValueError(f"exclude_self needs the gallery to be the query set, got {q} queries and {g} items")
            query_index = torch.arange(q, device=similarity.device)
        elif query_index.shape != (q,):
            raise ValueError(f"query_index must have shape ({q},), one gallery index per query, got {tuple(query_index.shape)}")
        similarity = similarity.clone()
        similarity[torch.arange(q, device=similarity.device), query_index] = -torch.inf
    depth = min(depth, g - 1 if exclude_self else g)
    return similarity.topk(depth, dim=1).indices


def rerank(
    ranking: torch.Tensor,
    global_similarity: torch.Tensor,
    head_similarity: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    weight: float = 1.0,
) -> torch.Tensor:
    """Re-order the first ``k`` items of each ranking by structural + weighted global similarity.

    Args:
        ranking: (Q, L) gallery indices from :func:`rank`.
        global_similarity: (Q, G) the similarity that produced ``ranking``.
        head_similarity: called once as ``f(head)`` with the (Q, k) gallery
            indices of each query's head (row q belongs to query q), returning
            their (Q, k) structural similarities to their query.
        k: length of the re-ranked head (the rest keeps its order).
        weight: w in the module formula.
    """
    k = min(k, ranking.shape[1])
    head = ranking[:, :k]
    structural = head_similarity(head)
    if structural.shape != head.shape:
        raise ValueError(f"head_similarity must return the head's shape {tuple(head.shape)}, got {tuple(structural.shape)}")
    score = structural + weight * global_similarity.gather(1, head)
    order = score.argsort(dim=1, descending=True, stable=True)
    return torch.cat([head.gather(1, order), ranking[:, k:]], dim=1)


def raw_cosine_ranking(inputs: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Rankings of every other item by the cosine of the flattened raw inputs, best first: (Q, N - 1).

    With ``v_i`` the flattened input i (e.g. its pixels),
    ``cos(q, g) = <v_q, v_g> / (|v_q| |v_g|)``; query q is item ``queries[q]``
    (every item without ``queries``) and is excluded from its own ranking.
    Ties keep :func:`rank`'s order. An all-zero input has no direction and is refused.
    """
    flat = inputs.reshape(len(inputs), -1).to(torch.float64)
    norms = flat.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(f"inputs {torch.nonzero(norms == 0)[:, 0].tolist()} are all zero: their cosine is undefined")
    unit = flat / norms[:, None]
    queries = torch.arange(len(inputs)) if queries is None else queries
    return rank(unit[queries] @ unit.T, depth=len(inputs) - 1, query_index=queries)
