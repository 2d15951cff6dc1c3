"""Feature-removal evaluation of attributions: insertion and deletion curves.

Following RISE (Petsiuk et al. 2018, Sec. 4, "causal metrics") as used by COCOA
(Lin et al. 2023, Sec. 4): pixels are ranked by attribution and

* deletion starts from the explicand and replaces the top-ranked pixels with the
  baseline step by step; a good attribution makes the score drop fast (low AUC);
* insertion starts from the baseline and puts the top-ranked pixels back; a good
  attribution makes the score rise fast (high AUC).

The removal baseline is a blurred copy of the image (:func:`blur_baseline`), which
removes information without introducing the sharp edges of a constant fill.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

__all__ = [
    "RemovalCurves",
    "blur_baseline",
    "insertion_deletion_curves",
    "random_attribution",
]


def blur_baseline(images: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Gaussian-blurred copies of ``images`` (..., C, H, W), same shape.

    The kernel spans about three standard deviations each side,
    ``2 * ceil(3 sigma) + 1`` taps, capped at ``2 * min(H, W) - 1`` because the
    blur pads by reflection, which needs the padding to be smaller than the image.
    """
    if kernel_size is None:
        kernel_size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(images.shape[-2:]) - 1)
    return gaussian_blur(images, kernel_size=[kernel_size, kernel_size], sigma=[sigma, sigma])


def random_attribution(inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform random pixel scores, the floor any attribution should beat.

    Shapes: ``inputs`` (B, C, H, W) -> (B, C, H, W), one value per pixel repeated
    over channels, so the ranking of :func:`insertion_deletion_curves` is a uniform
    random permutation of the pixels.
    """
    batch, _, height, width = inputs.shape
    device = generator.device if generator is not None else inputs.device
    scores = torch.rand(batch, 1, height, width, generator=generator, device=device)
    return scores.to(device=inputs.device, dtype=inputs.dtype).expand_as(inputs).contiguous()


@dataclass(frozen=True)
class RemovalCurves:
    """Insertion and deletion curves for B explicands over K + 1 steps.

    Attributes:
        fractions: (K + 1,) fraction of pixels inserted or deleted at each step,
            from 0 to 1.
        insertion: (B, K + 1) scores, from f(baseline) to f(explicand).
        deletion: (B, K + 1) scores, from f(explicand) to f(baseline).
        insertion_auc: (B,) trapezoidal area under ``insertion`` over ``fractions``.
        deletion_auc: (B,) trapezoidal area under ``deletion`` over ``fractions``.

    For a score function of T outputs every curve and AUC gains a leading
    dimension: (T, B, K + 1) and (T, B).
    """

    fractions: Tensor
    insertion: Tensor
    deletion: Tensor
    insertion_auc: Tensor
    deletion_auc: Tensor


def insertion_deletion_curves(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor,
    attributions: Tensor,
    baselines: Tensor | float,
    n_steps: int = 28,
    batch_size: int = 256,
) -> RemovalCurves:
    """Insertion and deletion curves of ``forward_func`` along the attribution ranking.

    Pixels are ranked per explicand by their attribution summed over channels
    (ties broken by position). Step ``k`` of ``K = n_steps`` switches the top
    ``n_k = round(k P / K)`` of the ``P = H W`` pixels, all channels together::

        deletion_k  = where(rank < n_k, baseline, x)
        insertion_k = where(rank < n_k, x, baseline)

    and the curves are ``f`` of these images; AUCs integrate them over the
    fraction ``n_k / P`` in [0, 1] with the trapezoid rule.

    Args:
        forward_func: images (M, C, H, W) -> scores (M,), or (M, T) for T scores that share
            the removed images (e.g. two scores of one encoding: the images are made and
            encoded once).
        inputs: explicands (B, C, H, W).
        attributions: (B, C, H, W) or (B, 1, H, W).
        baselines: scalar or tensor broadcasting to ``inputs`` (e.g. blurred images).
        n_steps: K, the number of steps after the start.
        batch_size: at most this many images per call of ``forward_func`` (at least
            one step of both curves for all explicands per call).

    Returns:
        :class:`RemovalCurves`, in the scores' dtype and the inputs' device.
    """
    batch, _, height, width = inputs.shape
    n_pixels = height * width
    baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    baselines = baselines.expand_as(inputs)
    order = attributions.sum(dim=1).reshape(batch, n_pixels).argsort(
        dim=1, descending=True, stable=True
    )
    positions = torch.arange(n_pixels, device=inputs.device).expand(batch, n_pixels)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # (B, P)
    counts = torch.round(
        torch.arange(n_steps + 1, dtype=torch.float64) * n_pixels / n_steps
    ).to(device=inputs.device, dtype=torch.long)  # (K + 1,)

    steps_per_call = max(1, batch_size // (2 * batch))
    scores = []
    with torch.no_grad():
        for start in range(0, n_steps + 1, steps_per_call):
            switched = rank[:, None, :] < counts[None, start : start + steps_per_call, None]
            switched = switched.reshape(batch, -1, 1, height, width)  # (B, k, 1, H, W)
            x, b = inputs[:, None], baselines[:, None]  # (B, 1, C, H, W)
            images = torch.stack([torch.where(switched, x, b), torch.where(switched, b, x)])
            # (2, B, k, C, H, W) -> (2 B k, C, H, W) -> scores (2, B, k, T) with T = 1 for a scalar score
            out = forward_func(images.flatten(0, 2))
            scores.append(out.reshape(2, batch, images.shape[2], -1))
    insertion, deletion = torch.cat(scores, dim=2).movedim(-1, 1)  # (T, B, K + 1) each
    if out.dim() == 1:
        insertion, deletion = insertion[0], deletion[0]
    fractions = (counts / n_pixels).to(insertion.dtype)
    return RemovalCurves(
        fractions=fractions,
        insertion=insertion,
        deletion=deletion,
        insertion_auc=torch.trapezoid(insertion, x=fractions, dim=-1),
        deletion_auc=torch.trapezoid(deletion, x=fractions, dim=-1),
    )
