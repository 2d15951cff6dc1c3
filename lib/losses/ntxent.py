"""SimCLR's NT-Xent loss (Chen, Kornblith, Norouzi, Hinton, ICML 2020, Sec. 2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["nt_xent"]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """Normalised temperature-scaled cross-entropy over 2N augmented views.

    ``z1`` and ``z2`` (N, D) are the projections of two views of the same N images.
    Stacking them as ``z`` (2N, D), with ``sim(u, v) = u.v / (|u| |v|)``, the loss
    of the positive pair (i, j) is (Eq. 1)::

        l(i, j) = -log  exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)

    and the batch loss averages it over all 2N anchors, each paired with its other
    view, ``j = i + N mod 2N`` (Algorithm 1)::

        L = 1/(2N) sum_{i=1}^{2N} l(i, j(i))

    The denominator runs over the 2N - 1 other views: the positive and the 2(N - 1)
    negatives. Returns a 0-d tensor.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two (N, D) tensors, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))  # k != i
    positives = torch.arange(2 * n, device=z.device).roll(n)  # j(i) = i + N mod 2N
    return F.cross_entropy(logits, positives)
