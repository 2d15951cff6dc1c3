"""DIML's losses: pytorch-metric-learning losses on the global, structural or mixed similarity.

The training objectives (``objective`` of :class:`DimlLoss`, one model each):

================== ============================================ ====================
objective          similarity the loss sees                     transport marginals
================== ============================================ ====================
global             cosine of the pooled embeddings              (none)
structural         (1 - w) structural + w global, w = 1/2        cross-correlation
structural_pure    structural only (w = 0)                       cross-correlation
structural_uniform (1 - w) structural + w global, w = 1/2        uniform
classifier         cross-entropy on the train classes (the       (none)
                   supervised bound, :class:`ClassifierLoss`)
================== ============================================ ====================

``structural`` is DIML as the authors' code trains it (wl-zhao/DIML,
``criteria/multisimilarity_diml.py`` and ``criteria/margin_diml.py``): their
multi-similarity criterion scores a pair by ``sum_ij T_ij (S_ij + g) / 2``
with the global cosine g, which is ``(s + g) / 2`` for a plan of mass 1, and
their margin criterion by the distance ``(sum_ij T_ij ||x_i - y_j|| +
||x_bar - y_bar||) / 2``; both mix with weight exactly 1/2 (``w`` =
``structural.global_weight``). ``structural_pure`` is the paper's pure
structural similarity (the ablation), ``structural_uniform`` the paper's
uniform-marginals ablation, trained (and re-ranked, :mod:`.evaluate`) with
uniform marginals.

The margin loss is used as the reference uses it: pytorch-metric-learning's
``DistanceWeightedMiner`` (Wu et al. 2017) mines triplets on the global
embedding, and ``MarginLoss(learn_beta=True)`` learns one boundary beta per
class (its parameters go into the optimiser, :mod:`.train`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils import distributed as pml_dist
from torch import nn

from lib.explain.structural import Marginals, structural_match, structural_plan_matrix
from lib.models.backbone import SpatialEmbedding
from lib.studies.diml.params import StructuralParams

#: The margin loss's settings, from the reference (its ``parameters.py`` defaults).
MARGIN = dict(margin=0.2, beta=1.2)
#: The distance-weighted miner's lower cut-off (the reference's ``miner_distance_lower_cutoff``);
#: the reference has no upper cut-off (commented out there), so every negative may be drawn:
#: 2 is the largest distance between unit vectors.
MINER_CUTOFFS = dict(cutoff=0.5, nonzero_loss_cutoff=2.0)


@dataclass(frozen=True)
class ObjectiveSpec:
    """What one training objective compares: the global embedding, or the mix of
    structural and global similarity with weight ``global_weight`` and the transport ``marginals``."""

    structural: bool
    global_weight: float = 0.0
    marginals: Marginals = "cross_correlation"


def objective_spec(objective: str, cfg: StructuralParams) -> ObjectiveSpec:
    """The similarity an objective trains on (module table); unknown names fail."""
    specs = {
        "global": ObjectiveSpec(structural=False),
        "structural": ObjectiveSpec(True, cfg.global_weight, "cross_correlation"),
        "structural_pure": ObjectiveSpec(True, 0.0, "cross_correlation"),
        "structural_uniform": ObjectiveSpec(True, cfg.global_weight, "uniform"),
        "classifier": ObjectiveSpec(structural=False),
    }
    if objective not in specs:
        raise ValueError(f"unknown objective {objective!r}; expected one of {sorted(specs)}")
    return specs[objective]


def _chord(cosine: torch.Tensor) -> torch.Tensor:
    """||u - v|| = sqrt(2 - 2 cos) for unit vectors (clamped away from 0, where sqrt has no gradient)."""
    return (2 - 2 * cosine).clamp_min(1e-8).sqrt()


class StructuralDistance(distances.BaseDistance):
    """pytorch-metric-learning distance over flattened local embeddings (B, N*D).

    For two maps of unit locations x_i, y_j with cosines S_ij, transport plan T
    (:mod:`lib.explain.structural`: entropic OT under cost 1 - S with the given
    marginals) and unit global embeddings x_bar, y_bar (normalised means):

    * as a similarity (``as_similarity``, multi-similarity loss)::

          s_w(x, y) = (1 - w) sum_ij T_ij S_ij + w <x_bar, y_bar>

    * as a distance (margin loss, written for Euclidean distances)::

          d_w(x, y) = (1 - w) sum_ij T_ij ||x_i - y_j|| + w ||x_bar - y_bar||,
          ||x_i - y_j|| = sqrt(2 - 2 S_ij).

    w = 0 is the pure structural similarity (and its transport-weighted
    distance), w = 1/2 the reference's training mix (module docstring).

    In training the plan T and its marginals are solved without gradient and
    held fixed, as in the reference, so the gradient flows through the
    cosines only (ds/dS = T). This is an approximation of the full gradient
    of s, which would back-propagate through the marginals and every Sinkhorn
    iteration at about ten times the encoder's own backward cost here; on
    random maps its cosine with the full gradient is about 0.96 with uniform
    marginals and about 0.6 with cross-correlation marginals.

    A batch compared with itself solves only its pairs q <= g
    (:func:`~lib.explain.structural.structural_plan_matrix`), and inside
    :meth:`sharing_plans` the plans of one batch are solved once for the
    miner and the loss together.
    """

    def __init__(self, n_locations: int, cfg: StructuralParams, as_similarity: bool,
                 global_weight: float = 0.0, marginals: Marginals = "cross_correlation"):
        super().__init__(normalize_embeddings=False, is_inverted=as_similarity)
        if not 0.0 <= global_weight <= 1.0:
            raise ValueError(f"global_weight must lie in [0, 1], got {global_weight}")
        self.n_locations = n_locations
        self.global_weight = float(global_weight)
        self.ot = dict(epsilon=cfg.epsilon, marginals=marginals, n_iters=cfg.n_iters, tol=cfg.tol)
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
        if flat.ndim != 2 or flat.shape[1] % self.n_locations:
            raise ValueError(f"expected flattened maps (B, {self.n_locations} * D), got shape {tuple(flat.shape)}")
        return F.normalize(flat.reshape(flat.shape[0], self.n_locations, -1), dim=-1)

    def _mix(self, local: torch.Tensor, global_cosine: torch.Tensor) -> torch.Tensor:
        """(1 - w) local + w global, the global term as a cosine or a chord distance."""
        if self.global_weight == 0:
            return local
        glob = global_cosine if self.is_inverted else _chord(global_cosine)
        return (1 - self.global_weight) * local + self.global_weight * glob

    def _local(self, plans: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
        """sum_ij T_ij S_ij, or sum_ij T_ij ||x_i - y_j|| for the distance."""
        return (plans * (cosine if self.is_inverted else _chord(cosine))).sum(dim=(-1, -2))

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
        local = self._local(plans, torch.einsum("qnd,rmd->qrnm", q, r))
        global_cosine = SpatialEmbedding.global_embedding(q) @ SpatialEmbedding.global_embedding(r).T
        return self._mix(local, global_cosine)

    def pairwise_distance(self, query_emb, ref_emb):
        q, r = self._maps(query_emb), self._maps(ref_emb)
        with torch.no_grad():
            plan = structural_match(q, r, **self.ot).plan
        local = self._local(plan, torch.einsum("pnd,pmd->pnm", q, r))
        global_cosine = (SpatialEmbedding.global_embedding(q) * SpatialEmbedding.global_embedding(r)).sum(dim=-1)
        return self._mix(local, global_cosine)


class DimlLoss(nn.Module):
    """A pytorch-metric-learning loss on one objective: ``forward(local (B, N, D), labels (B,))``.

    * ``margin``: ``MarginLoss(margin=0.2, beta=1.2, learn_beta=True,
      num_classes=n_classes)`` (Wu et al. 2017): for mined triplets (a, p, n),
      ``[d(a, p) - beta_{y_a} + 0.2]_+ + [beta_{y_a} - d(a, n) + 0.2]_+``
      averaged over the non-zero terms, with beta learned per class. Triplets
      come from ``DistanceWeightedMiner``, which draws each anchor's negative
      with probability proportional to ``1 / q(d)``, the inverse density of
      the distance d between two points uniform on the unit sphere of R^k,
      ``log q(d) = (k - 2) log d + (k - 3) / 2 log(1 - d^2 / 4)``,
      with d clamped below at 0.5; each anchor gets as many triplets as its
      class has members in the batch, their positives drawn at random.
      That density holds for unit vectors only, and k is the width of what
      the miner is given: on flattened local embeddings (k = N * D = 2048,
      norm sqrt(N)) it would be meaningless and pick the single nearest
      negative. The miner therefore always mines on the unit global
      embedding (k = D), as the reference mines on the pooled feature; the
      loss then scores the mined triplets with the objective's distance.
      The mining runs in float64: pytorch-metric-learning subtracts one
      maximum over the whole batch from the log-weights (the reference
      subtracts each anchor's own), and they span about 92 nats between
      d = 0.5 and d = sqrt(2) at k = 128 (weights of about 1e-40, float32's
      subnormal range) and more for wider embeddings: at k = 512 an anchor
      whose negatives all lie near sqrt(2) gets zero weights in float32 and
      loses its triplets (tests/studies/diml). float64 (about 745 nats) keeps
      every anchor.
    * ``multi_similarity``: ``MultiSimilarityMiner(epsilon=0.1)`` and
      ``MultiSimilarityLoss(alpha=2, beta=50, base=0.5)`` on the objective's
      similarity (the miner and the loss share one solve of the plans).

    Under DDP the loss and miner see the gathered global batch, and the
    gradient of beta is averaged over the processes (DDP averages the
    encoder's only).
    """

    def __init__(self, loss: str, objective: str, n_locations: int, cfg: StructuralParams, n_classes: int = 10):
        super().__init__()
        self.spec = objective_spec(objective, cfg)
        self.objective = objective
        self.kind = loss
        structural = dict(global_weight=self.spec.global_weight, marginals=self.spec.marginals)
        if loss == "margin":
            distance = (
                StructuralDistance(n_locations, cfg, as_similarity=False, **structural)
                if self.spec.structural
                else distances.LpDistance(normalize_embeddings=True)
            )
            self.loss = losses.MarginLoss(**MARGIN, learn_beta=True, num_classes=n_classes, distance=distance)
            self.miner = miners.DistanceWeightedMiner(**MINER_CUTOFFS)
        elif loss == "multi_similarity":
            distance = (
                StructuralDistance(n_locations, cfg, as_similarity=True, **structural)
                if self.spec.structural
                else distances.CosineSimilarity()
            )
            self.loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=distance)
            self.miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=distance)
        else:
            raise ValueError(f"unknown loss {loss!r}; expected 'margin' or 'multi_similarity'")
        self.distance = distance
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Gather every process's embeddings so pairs span the global batch.
            self.loss = pml_dist.DistributedLossWrapper(self.loss)
            self.miner = pml_dist.DistributedMinerWrapper(self.miner)
            for beta in self.parameters():
                beta.register_hook(_average_over_processes)

    @property
    def beta(self) -> torch.Tensor | None:
        """The margin loss's learned per-class boundaries (None for the multi-similarity loss)."""
        params = list(self.parameters())
        return params[0] if params else None

    def forward(self, local: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        local = local.float()
        glob = SpatialEmbedding.global_embedding(local)
        emb = local.flatten(1) if self.spec.structural else glob
        if self.kind == "margin":
            pairs = self.miner(glob.detach().double(), labels)
            return self.loss(emb, labels, pairs)
        shared = self.distance.sharing_plans() if self.spec.structural else contextlib.nullcontext()
        with shared:
            return self.loss(emb, labels, self.miner(emb, labels))


class ClassifierLoss(nn.Module):
    """The supervised bound's loss: cross-entropy of a cosine classifier on the unit global embedding.

    ``forward(local (B, N, D), labels (B,))`` with the global embedding
    g = normalise(mean_i x_i) and class weights W (C, D):

        logits_c = scale * <normalise(W_c), g>,    loss = mean_b CE(logits_b, y_b)

    (NormFace, Wang et al. 2017; scale 16). The encoder learns to separate the
    train classes by one pooled vector, the same vector it retrieves with.
    """

    def __init__(self, embedding_dim: int, n_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, embedding_dim) * embedding_dim**-0.5)
        self.scale = scale
        self.spec = ObjectiveSpec(structural=False)

    @property
    def beta(self) -> None:
        """No learned margin boundaries (as :attr:`DimlLoss.beta` for the multi-similarity loss)."""
        return None

    def forward(self, local: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        glob = SpatialEmbedding.global_embedding(local.float())
        logits = self.scale * glob @ F.normalize(self.weight, dim=-1).T
        return F.cross_entropy(logits, labels)


def _average_over_processes(grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    torch.distributed.all_reduce(grad)
    return grad / torch.distributed.get_world_size()
