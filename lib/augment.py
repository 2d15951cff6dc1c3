"""Batched image augmentations that run on the training device.

Per-sample torchvision transforms inside a DataLoader cost more than the
forward pass of a small encoder on 28 px digits; one affine grid sample for
the whole batch costs almost nothing and runs on the GPU when there is one.
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
