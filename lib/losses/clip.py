"""CLIP's symmetric contrastive loss (Radford et al., ICML 2021, Sec. 2.3, Fig. 3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LogitScale", "clip_loss"]


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric cross-entropy over the image-text similarity matrix.

    ``image_emb`` and ``text_emb`` (N, D) embed N matching pairs (row i of each).
    After L2 normalisation, with ``logit_scale = exp(t) = 1 / tau``::

        logits = logit_scale * I T^T                                      (N, N)
        L = ( CE(logits, arange(N)) + CE(logits^T, arange(N)) ) / 2

    The first term classifies each image among the N texts (rows), the second each
    text among the N images (columns); both are averaged over N. Returns a 0-d
    tensor; swapping the image and text arguments leaves it unchanged.
    """
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(
            f"expected two (N, D) tensors, got {tuple(image_emb.shape)}, {tuple(text_emb.shape)}"
        )
    logits = logit_scale * F.normalize(image_emb, dim=1) @ F.normalize(text_emb, dim=1).T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class LogitScale(nn.Module):
    """Learnable inverse temperature ``exp(t)`` for :func:`clip_loss` (Sec. 2.5).

    ``t`` is a scalar parameter initialised to ``log(1 / init_temperature)``
    (CLIP uses tau = 0.07); ``forward()`` returns ``min(exp(t), max_scale)``, the
    cap of 100 keeping the logits from being scaled up without bound.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_scale = max_scale

    def forward(self) -> Tensor:
        """The 0-d logit scale."""
        return self.log_scale.exp().clamp(max=self.max_scale)
