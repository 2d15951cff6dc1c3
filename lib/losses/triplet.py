"""Triplet margin loss over index triplets of one batch of embeddings.

MuseCL (Yong and Zhou, IJCAI 2024, Eq. 1) and Tile2Vec (Jean et al., AAAI 2019)
train image encoders on (anchor, positive, negative) triplets of regions. For
embeddings ``z`` of a batch of distinct regions and triplets of row indices
``(a_t, p_t, n_t)``::

    L = 1/T sum_t max(0, |z_a - z_p|_2 - |z_a - z_n|_2 + margin)

the same value as ``torch.nn.TripletMarginLoss(margin, p=2)`` applied to the
gathered rows; taking indices lets a batch encode every region once, however
many triplets it serves in. (The contrastive alternative, InfoNCE of anchors
against positives, is :func:`lib.losses.contrastive.info_nce`.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["triplet_margin_loss"]


def triplet_margin_loss(z: Tensor, anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """Mean hinge over triplets of rows of ``z`` (B, D) (module docstring); a 0-d tensor."""
    if z.dim() != 2:
        raise ValueError(f"z must be (B, D), got shape {tuple(z.shape)}")
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() != 1:
        raise ValueError("anchor, positive and negative must be 1-D index tensors of one length, got shapes "
                         f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (as torch's TripletMarginLoss requires), got {margin}")
    za, zp, zn = z[anchor], z[positive], z[negative]
    # torch's pairwise_distance adds eps = 1e-6 to the difference, as nn.TripletMarginLoss does.
    d_pos = F.pairwise_distance(za, zp, p=2.0)
    d_neg = F.pairwise_distance(za, zn, p=2.0)
    return F.relu(d_pos - d_neg + margin).mean()

