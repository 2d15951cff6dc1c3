"""Batched image augmentations that run on the training device.

Per-sample torchvision transforms inside a DataLoader cost more than the
forward pass of a small encoder on 28 px digits; one affine grid sample for
the whole batch costs almost nothing and runs on the GPU when there is one.

* :func:`random_affine` - small rotations and shifts (digits, scenes);
* :func:`aerial_augment` - views of aerial tiles (symmetries of the square,
  crops, brightness and contrast).

The SimCLR views of digits are in :mod:`lib.data.digit_augment`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, degrees: float, translate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by U(-degrees, degrees) and shift it by U(-t, t) of its size, t = ``translate``.

    ``x`` is (B, C, H, W); the inverse map sampled by ``grid_sample`` is
    [[cos a, -sin a, tx], [sin a, cos a, ty]] in normalised coordinates
    ([-1, 1], so a shift of t of the image size is 2t); pixels moved in from
    outside take the image's minimum, its background.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b = x.shape[0]
    u = torch.rand(b, 3, generator=generator).to(x.device) * 2 - 1
    angle = u[:, 0] * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, 2 * translate * u[:, 1]], dim=1), torch.stack([sin, cos, 2 * translate * u[:, 2]], dim=1)],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background


def aerial_augment(x: torch.Tensor, crop_min: float, jitter: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random views of aerial tiles, batched on the tensor's device.

    For each tile of ``x`` (B, C, H, W), H = W: one of the 8 symmetries of the
    square (k 90-degree rotations, k ~ U{0..3}, then a horizontal flip with
    probability 1/2; an aerial view has no up), a square crop of side
    s ~ U(crop_min, 1) of the tile at a uniform position, resized back with
    the affine grid [[s, 0, t_x], [0, s, t_y]], |t| <= 1 - s (normalised
    coordinates), and brightness and contrast factors b, c ~ U(1 - j, 1 + j):
    x' = b * (m + c * (x - m)), m the tile's mean over bands and pixels.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be square tiles (B, C, H, H), got shape {tuple(x.shape)}")
    b = x.shape[0]
    u = torch.rand(b, 6, generator=generator).to(x.device)
    quarter_turns, flip = (u[:, 0] * 4).long().clamp(max=3), u[:, 1] < 0.5
    out = x.clone()
    for k in (1, 2, 3):
        turned = quarter_turns == k
        out[turned] = out[turned].rot90(k, dims=(2, 3))
    out = torch.where(flip[:, None, None, None], out.flip(3), out)

    side = crop_min + (1 - crop_min) * u[:, 2]
    shift = (1 - side)[:, None] * (2 * u[:, 3:5] - 1)
    zero = torch.zeros_like(side)
    theta = torch.stack([torch.stack([side, zero, shift[:, 0]], 1), torch.stack([zero, side, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(out.dtype), list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

    factors = 1 + jitter * (2 * torch.rand(b, 2, generator=generator).to(x.device) - 1)
    brightness, contrast = factors[:, 0, None, None, None], factors[:, 1, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return brightness * (mean + contrast * (out - mean))
