"""DIML's losses: pytorch-metric-learning losses on the global or the structural similarity.

The structural similarity of two feature maps (:mod:`lib.explain.structural`)
enters PML as a distance (:class:`StructuralDistance`), so the margin loss and
the multi-similarity loss (and its miner) use it unchanged.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils import distributed as pml_dist
from torch import nn

from lib.explain.structural import structural_match, structural_plan_matrix
from lib.models.backbone import SpatialEmbedding
from lib.studies.diml.params import StructuralParams


class StructuralDistance(distances.BaseDistance):
    """pytorch-metric-learning distance over flattened local embeddings (B, N*D).

    The matrix is DIML's structural similarity s = sum_ij T_ij S_ij
    (``as_similarity``) or, for losses written for Euclidean distances (margin
    loss), the equivalent chord distance sqrt(2 - 2 s), which equals ||a - b||
    for unit vectors whose cosine is s.

    In training the plan T and its marginals are solved without gradient and
    held fixed, so the gradient flows through the cosines S only (ds/dS = T).
    This is an approximation of the full gradient of s, which would
    back-propagate through the marginals and every Sinkhorn iteration at about
    ten times the encoder's own backward cost here; on random maps its cosine
    with the full gradient is about 0.96 with uniform marginals and about 0.6
    with cross-correlation marginals.

    A batch compared with itself solves only its pairs q <= g
    (:func:`~lib.explain.structural.structural_plan_matrix`), and inside
    :meth:`sharing_plans` the plans of one batch are solved once for the
    miner and the loss together.
    """

    def __init__(self, n_locations: int, cfg: StructuralParams, as_similarity: bool):
        super().__init__(normalize_embeddings=False, is_inverted=as_similarity)
        self.n_locations = n_locations
        self.ot = dict(epsilon=cfg.epsilon, marginals=cfg.marginals, n_iters=cfg.n_iters, tol=cfg.tol)
        self._shared: list | None = None

    @contextlib.contextmanager
    def sharing_plans(self):
        """Within the block, each (query, reference) pair of tensors has its plans solved once."""
        self._shared = []
        try:
            yield self
        finally:
            self._shared = None

    def _maps(self, flat: torch.Tensor) -> torch.Tensor:
        return F.normalize(flat.reshape(flat.shape[0], self.n_locations, -1), dim=-1)

    def _finish(self, s: torch.Tensor) -> torch.Tensor:
        return s if self.is_inverted else (2 - 2 * s).clamp_min(1e-8).sqrt()

    def _plans(self, query_emb: torch.Tensor, ref_emb: torch.Tensor, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # The tensors themselves are kept with their plans, so identity cannot be mistaken.
        for query, ref, plans in self._shared or ():
            if query is query_emb and ref is ref_emb:
                return plans
        with torch.no_grad():
            plans = structural_plan_matrix(q.detach(), None if ref_emb is query_emb else r.detach(), **self.ot)
        if self._shared is not None:
            self._shared.append((query_emb, ref_emb, plans))
        return plans

    def compute_mat(self, query_emb, ref_emb):
        q, r = self._maps(query_emb), self._maps(ref_emb)
        plans = self._plans(query_emb, ref_emb, q, r)
        cosine = torch.einsum("qnd,rmd->qrnm", q, r)
        return self._finish((plans * cosine).sum(dim=(-1, -2)))

    def pairwise_distance(self, query_emb, ref_emb):
        q, r = self._maps(query_emb), self._maps(ref_emb)
        with torch.no_grad():
            plan = structural_match(q, r, **self.ot).plan
        return self._finish((plan * torch.einsum("pnd,pmd->pnm", q, r)).sum(dim=(-1, -2)))


class DimlLoss(nn.Module):
    """A pytorch-metric-learning loss on global or structural similarity: forward(local (B,N,D), labels)."""

    def __init__(self, loss: str, objective: str, n_locations: int, cfg: StructuralParams):
        super().__init__()
        self.objective = objective
        if loss == "margin":
            distance = (
                distances.LpDistance(normalize_embeddings=True)
                if objective == "global"
                else StructuralDistance(n_locations, cfg, as_similarity=False)
            )
            self.loss, self.miner = losses.MarginLoss(margin=0.2, beta=1.2, distance=distance), None
        elif loss == "multi_similarity":
            distance = (
                distances.CosineSimilarity()
                if objective == "global"
                else StructuralDistance(n_locations, cfg, as_similarity=True)
            )
            self.loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=distance)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=distance)
        else:
            raise ValueError(f"unknown loss {loss!r}; expected 'margin' or 'multi_similarity'")
        self.distance = distance
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Gather every process's embeddings so pairs span the global batch.
            self.loss = pml_dist.DistributedLossWrapper(self.loss)
            self.miner = self.miner and pml_dist.DistributedMinerWrapper(self.miner)

    def forward(self, local: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        local = local.float()
        if self.objective == "global":
            emb, shared = SpatialEmbedding.global_embedding(local), contextlib.nullcontext()
        else:
            emb, shared = local.flatten(1), self.distance.sharing_plans()
        with shared:
            pairs = self.miner(emb, labels) if self.miner is not None else None
            return self.loss(emb, labels, pairs)
