"""InfoNCE, and its two named forms: SimCLR's NT-Xent and CLIP's symmetric loss.

One family (van den Oord et al., "Representation learning with contrastive
predictive coding", 2018, Eq. 4). Queries ``q`` (N, D) are scored against keys
``k`` (M, D) by cosine similarity scaled by an inverse temperature; query i
has one positive key p(i), and every other key it is scored against is a
negative::

    l_ij = cos(q_i, k_j) / tau                                   (N, M) logits
    L    = -1/N sum_i log( exp(l_{i p(i)}) / sum_{j in A(i)} exp(l_ij) )

that is the cross-entropy of each row of logits with its positive's index.
A(i) holds every key; when the queries are their own keys (one set of
embeddings contrasted with itself) it leaves out k_i = q_i, whose
similarity of one says nothing.

* :func:`info_nce` - the family: pairs (p(i) = i, the default) or any
  positive index; one set against itself; optionally symmetric. MuseCL's
  fusion objective is ``info_nce(fused, text)``: each region's fused image
  embedding picks its own POI text among the batch's.
* :func:`nt_xent` - SimCLR (Chen et al., ICML 2020, Eq. 1 and Algorithm 1):
  the 2N views ``[z1; z2]`` against themselves, p(i) = i + N mod 2N, so the
  denominator runs over the positive and the 2(N - 1) negatives.
* :func:`clip_loss` - CLIP (Radford et al., ICML 2021, Fig. 3): images against
  texts and texts against images, averaged, with a logit scale s = 1 / tau
  (:class:`LogitScale` learns it); :class:`GroupedClipLoss` applies it to
  groups of images against fixed class captions.

Where both coincide, :func:`nt_xent` and one-directional :func:`info_nce`
give the value of pytorch-metric-learning's ``NTXentLoss`` (with the view or
pair index as the label); the tests check it.

A fixed temperature divides the logits; a logit scale multiplies the
normalised queries before the product (as CLIP's Fig. 3 writes it). The two
orders agree to rounding; each form keeps its own so that trained weights
reproduce bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupedClipLoss", "LogitScale", "clip_loss", "info_nce", "nt_xent"]


def info_nce(
    queries: Tensor,
    keys: Tensor | None = None,
    *,
    temperature: float | None = None,
    logit_scale: Tensor | float | None = None,
    positives: Tensor | None = None,
    symmetric: bool = False,
) -> Tensor:
    """InfoNCE of ``queries`` (N, D) against ``keys`` (M, D) (module docstring); a 0-d tensor.

    Args:
        keys: None contrasts the queries with themselves, each query's own row left out.
        temperature: tau > 0, dividing the cosine similarities; or
        logit_scale: s = 1 / tau (a number or a 0-d tensor, e.g. learned), multiplying them. Exactly one of the two.
        positives: (N,) index of each query's positive key; default ``arange(N)`` (row i of queries and keys a pair).
        symmetric: also classify each key among the queries and average the two directions (CLIP); needs
            M = N and the default pairs.
    """
    if queries.dim() != 2:
        raise ValueError(f"queries must be (N, D), got shape {tuple(queries.shape)}")
    if keys is not None and (keys.dim() != 2 or keys.shape[1] != queries.shape[1]):
        raise ValueError(f"keys must be (M, {queries.shape[1]}) like the queries (N, D), got shape {tuple(keys.shape)}")
    if (temperature is None) == (logit_scale is None):
        raise ValueError("give exactly one of temperature and logit_scale")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = queries.shape[0]
    m = n if keys is None else keys.shape[0]
    candidates = m - 1 if keys is None else m  # keys each query is scored against
    if candidates < 2:
        raise ValueError(f"InfoNCE needs a negative besides each query's positive: {n} queries against "
                         f"{candidates} candidate key(s)")
    if positives is not None and positives.shape != (n,):
        raise ValueError(f"positives must be one key index per query, shape ({n},), got {tuple(positives.shape)}")
    if symmetric and (keys is None or m != n or positives is not None):
        raise ValueError("symmetric InfoNCE needs keys of the queries' length and the default pairs (row i with row i)")

    q = F.normalize(queries, dim=1)
    # One set against itself: one normalised tensor on both sides, as SimCLR's z z^T.
    k = q if keys is None else F.normalize(keys, dim=1)
    logits = q @ k.T / temperature if temperature is not None else logit_scale * q @ k.T  # (N, M)
    if keys is None:
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=logits.device), float("-inf"))
    if positives is None:
        positives = torch.arange(n, device=logits.device)
    if symmetric:
        return (F.cross_entropy(logits, positives) + F.cross_entropy(logits.T, positives)) / 2
    return F.cross_entropy(logits, positives)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent of the projections ``z1``, ``z2`` (N, D) of two views of N images; a 0-d tensor.

    Stacked as z = [z1; z2] (2N, D), anchor i's positive is its other view j(i) = i + N mod 2N::

        l(i, j) = -log  exp(cos(z_i, z_j) / tau) / sum_{k != i} exp(cos(z_i, z_k) / tau)
        L = 1/(2N) sum_{i=1}^{2N} l(i, j(i))
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    views = torch.arange(2 * n, device=z1.device).roll(n)  # j(i) = i + N mod 2N
    return info_nce(torch.cat([z1, z2]), temperature=temperature, positives=views)


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's symmetric loss of N matching pairs, row i of ``image_emb`` and ``text_emb`` (N, D); a 0-d tensor.

    With L2-normalised rows and ``logit_scale = exp(t) = 1 / tau``::

        logits = logit_scale * I T^T                                      (N, N)
        L = ( CE(logits, arange(N)) + CE(logits^T, arange(N)) ) / 2

    each image classified among the N texts (rows) and each text among the N
    images (columns). Swapping the arguments leaves the value unchanged.
    """
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(f"expected two (N, D) tensors of one shape, got {tuple(image_emb.shape)}, "
                         f"{tuple(text_emb.shape)}")
    return info_nce(image_emb, text_emb, logit_scale=logit_scale, symmetric=True)


class LogitScale(nn.Module):
    """Learnable inverse temperature ``exp(t)`` for :func:`clip_loss` (CLIP, Sec. 2.5).

    ``t`` is a scalar parameter initialised to ``log(1 / init_temperature)``
    (CLIP uses tau = 0.07); ``forward()`` returns ``min(exp(t), max_scale)``, the
    cap of 100 keeping the logits from being scaled up without bound.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
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
    for two answers. The text tower stays locked, as in LiT (Zhai et al., CVPR 2022).
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
