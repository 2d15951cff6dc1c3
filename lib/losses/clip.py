"""CLIP's symmetric contrastive loss (Radford et al., ICML 2021, Sec. 2.3, Fig. 3).

:class:`GroupedClipLoss` applies it to groups of images against a fixed set of
class captions (a locked text tower, as in LiT).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupedClipLoss", "LogitScale", "clip_loss"]


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


class GroupedClipLoss(nn.Module):
    """CLIP's symmetric loss on groups of images, one of each class, against frozen caption embeddings.

    With K captions T (K, D), a batch of B = K G images is G groups of K in
    which every class appears once; with labels y, the loss is
    mean_g clip_loss(I_g, T[y_g], exp(t)), and the logit scale exp(t) is learned
    (:class:`LogitScale`). One image per class in a group: two images of one
    class would share a caption and make its row of the similarity matrix ask
    for two answers.
    """

    def __init__(self, caption_embeddings: Tensor, init_temperature: float):
        super().__init__()
        self.register_buffer("captions", caption_embeddings.detach().clone())
        self.logit_scale = LogitScale(init_temperature)

    def forward(self, image_emb: Tensor, labels: Tensor) -> Tensor:
        k = self.captions.shape[0]
        if image_emb.shape[0] % k:
            raise ValueError(f"a batch must hold whole groups of {k} images, got {image_emb.shape[0]}")
        texts = self.captions[labels]
        scale = self.logit_scale()
        groups = zip(image_emb.float().split(k), texts.split(k), strict=True)
        return torch.stack([clip_loss(images, captions, scale) for images, captions in groups]).mean()
