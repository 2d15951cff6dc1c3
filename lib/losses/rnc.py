"""Rank-N-Contrast loss (Zha et al., "Rank-N-Contrast: Learning Continuous
Representations for Regression", NeurIPS 2023).

Notation (Zha et al., Sec. 3, the RnC loss). A batch holds ``n`` images, each seen
through two augmentations, giving ``N = 2n`` views ``v_1 .. v_N`` with labels
``y_1 .. y_N`` (both views of an image share its label). With the feature
similarity

    s_ij = -||v_i - v_j||_2 / tau

and the label distance ``d_ij = ||y_i - y_j||_1`` (sum over label dimensions),
the loss of anchor ``i`` and positive ``j != i`` contrasts ``j`` against every
view ranked at least as far from ``i`` in label space:

    l_ij = -log( exp(s_ij) / sum_{k != i, d_ik >= d_ij} exp(s_ik) )

    L_RnC = 1 / (N (N - 1)) * sum_i sum_{j != i} l_ij

The denominator set ``S_ij = {k != i : d_ik >= d_ij}`` always contains ``j``
itself and every ``k`` tied with it (``d_ik == d_ij``).

Computation. A direct evaluation needs an ``(N, N, N)`` indicator tensor. Here
each anchor row is sorted by label distance once; the denominator of pair
``(i, j)`` is then a suffix ``logsumexp`` of the sorted logits, read at the
first sorted position whose distance equals ``d_ij`` (found with
``searchsorted``, so ties are included). Time ``O(N^2 (log N + d + L))`` and
memory ``O(N^2 L)`` for ``L`` label components (``O(N^2)`` for scalar labels);
``logcumsumexp`` keeps it stable for any temperature.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RnCLoss", "rnc_loss"]


def _views_and_labels(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten the two views into rows and give each row its image's label.

    Args:
        features: ``(n, 2, d)`` (image, view, feature) or ``(2n, d)`` laid out as
            ``torch.cat([view_1, view_2])``, i.e. rows ``i`` and ``i + n`` are
            the two views of image ``i``.
        labels: ``(n,)`` or ``(n, ...)``; trailing dimensions are flattened into
            ``L`` label components.

    Returns:
        views ``(2n, d)`` and labels ``(2n, L)`` (float labels keep their
        dtype, so label distances are not rounded to the feature precision).
    """
    if labels.dim() == 0:
        raise ValueError("rnc_loss: labels must have a batch dimension, got a scalar")
    n = labels.shape[0]
    if n < 1:
        raise ValueError("rnc_loss: empty batch")
    if features.dim() == 3:
        if features.shape[1] != 2:
            raise ValueError(
                "rnc_loss: features of shape (n, 2, d) expected two views in dim 1, "
                f"got shape {tuple(features.shape)}"
            )
        if features.shape[0] != n:
            raise ValueError(
                f"rnc_loss: features (n, 2, d) have n={features.shape[0]} images but "
                f"labels have {n}"
            )
        # Same row order as the (2n, d) layout: all first views, then all second views.
        views = torch.cat([features[:, 0], features[:, 1]], dim=0)
    elif features.dim() == 2:
        if features.shape[0] != 2 * n:
            raise ValueError(
                f"rnc_loss: features (2n, d) have {features.shape[0]} rows but labels "
                f"have n={n} images (expected {2 * n} rows)"
            )
        views = features
    else:
        raise ValueError(
            "rnc_loss: features must be (n, 2, d) or (2n, d), "
            f"got shape {tuple(features.shape)}"
        )
    view_labels = labels.to(views.device).reshape(n, -1).repeat(2, 1)
    if not view_labels.is_floating_point():
        # Signed 64-bit integers: exact distances, no unsigned wrap-around.
        view_labels = view_labels.to(torch.int64)
    return views, view_labels


def rnc_loss(features: Tensor, labels: Tensor, temperature: float = 2.0) -> Tensor:
    """Rank-N-Contrast loss, mean over all ordered view pairs (Zha et al., Sec. 3).

    Args:
        features: ``(n, 2, d)`` two views per image, or ``(2n, d)`` as
            ``torch.cat([view_1, view_2])``.
        labels: ``(n,)`` or ``(n, ...)`` regression targets; distances between
            labels are L1 over the flattened trailing dimensions.
        temperature: ``tau > 0`` dividing the negative L2 feature distance.

    Returns:
        Scalar tensor: ``mean_{i != j} l_ij`` (see the module docstring).
    """
    if not temperature > 0:
        raise ValueError(f"rnc_loss: temperature must be > 0, got {temperature}")
    views, y = _views_and_labels(features, labels)
    n_views = views.shape[0]  # N = 2n >= 2, so each row has N - 1 >= 1 partners

    # (N, N) feature similarities s_ij = -||v_i - v_j|| / tau. The direct (non
    # Gram-matrix) mode keeps distances of near-identical views exact and its
    # backward pass is zero, not NaN, where a distance is exactly 0.
    logits = -torch.cdist(views, views, compute_mode="donot_use_mm_for_euclid_dist")
    logits = logits / temperature
    # (N, N) label distances d_ij = ||y_i - y_j||_1 (Zha et al. use L1 for y).
    label_dist = (y[:, None, :] - y[None, :, :]).abs().sum(dim=-1)

    # Drop the diagonal (k != i): (N, N - 1) rows of anchor i's partners.
    off_diag = ~torch.eye(n_views, dtype=torch.bool, device=views.device)
    logits = logits[off_diag].view(n_views, n_views - 1)
    label_dist = label_dist[off_diag].view(n_views, n_views - 1)

    # Sort each anchor's partners by label distance (ascending); suffix
    # logsumexp at sorted position p is log sum_{q >= p} exp(s_i(q)).
    sorted_dist, order = label_dist.sort(dim=1)
    sorted_logits = logits.gather(1, order)
    suffix_lse = sorted_logits.flip(1).logcumsumexp(dim=1).flip(1)

    # For pair (i, j) the set {k : d_ik >= d_ij} starts at the first sorted
    # position with distance >= d_ij, i.e. the start of j's tie group.
    first_pos = torch.searchsorted(sorted_dist, label_dist, right=False)
    log_denominator = suffix_lse.gather(1, first_pos)

    return (log_denominator - logits).mean()


class RnCLoss(nn.Module):
    """Module wrapper of :func:`rnc_loss` (Zha et al., NeurIPS 2023).

    ``forward(features (n, 2, d) or (2n, d), labels (n, ...)) -> scalar``.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"RnCLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return rnc_loss(features, labels, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
