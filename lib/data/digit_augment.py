"""SimCLR's augmentations for grey-scale digits, batched on the training device.

SimCLR (Chen et al., ICML 2020, Sec. 3 and Appendix A) composes a random
resized crop, colour distortion and blur. Digits have no colour and are not
flip-invariant (a mirrored 2 is no digit, a rotated 6 may be a 9), so a view
here is: resized crop -> small rotation -> erasing -> contrast and brightness
-> Gaussian noise. Every function takes (B, C, H, W), draws its random numbers
on the CPU (from ``generator`` if given, so a seed gives the same views on any
device) and returns a tensor of the same shape on the input's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.data.augment import random_affine

__all__ = ["gaussian_noise", "random_contrast", "random_erasing", "random_resized_crop", "random_rotation", "simclr_view"]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _check(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")


def random_resized_crop(
    x: Tensor,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop a box of area fraction ``a ~ U(scale)`` and aspect ratio ``r ~ logU(ratio)``; resize it to (H, W).

    The box has width ``w = min(1, sqrt(a r))`` and height ``h = min(1, sqrt(a / r))``
    as fractions of the side, and its centre (cx, cy) lies uniformly where the box
    stays inside the image, ``|c| <= 1 - w`` in normalised coordinates. The output
    samples the input bilinearly through the map [[w, 0, cx], [0, h, cy]].
    """
    _check(x)
    b = x.shape[0]
    area = _uniform(b, *scale, generator)
    aspect = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator).exp()
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    cx, cy = (1 - w) * _uniform(b, -1, 1, generator), (1 - h) * _uniform(b, -1, 1, generator)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([w, zero, cx], dim=1), torch.stack([zero, h, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def random_rotation(x: Tensor, degrees: float, generator: torch.Generator | None = None) -> Tensor:
    """Rotate each image by U(-degrees, degrees) about its centre (:func:`lib.augment.random_affine`, no shift)."""
    return random_affine(x, degrees=degrees, translate=0.0, generator=generator)


def random_erasing(
    x: Tensor, p: float, scale: tuple[float, float] = (0.05, 0.2), generator: torch.Generator | None = None
) -> Tensor:
    """With probability ``p`` per image, set a random rectangle to the image's minimum (its background).

    The rectangle covers a fraction ``a ~ U(scale)`` of the image with aspect ratio
    ``r ~ logU(1/2, 2)``: ``round(sqrt(a r) W)`` by ``round(sqrt(a / r) H)`` pixels,
    at a uniform position inside the image (Zhong et al., AAAI 2020, Alg. 1).
    """
    _check(x)
    b, _, height, width = x.shape
    area = _uniform(b, *scale, generator)
    aspect = _uniform(b, -math.log(2), math.log(2), generator).exp()
    w = ((area * aspect).sqrt() * width).round().clamp(1, width)
    h = ((area / aspect).sqrt() * height).round().clamp(1, height)
    left = ((width - w + 1) * torch.rand(b, generator=generator)).floor()
    top = ((height - h + 1) * torch.rand(b, generator=generator)).floor()
    erase = torch.rand(b, generator=generator) < p
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :] & erase[:, None, None]).to(x.device)
    return torch.where(mask[:, None], x.amin(dim=(1, 2, 3), keepdim=True), x)


def random_contrast(
    x: Tensor, contrast: float, brightness: float, generator: torch.Generator | None = None
) -> Tensor:
    """Grey-scale colour jitter: ``clip(m + c (x - m) + b, 0, 1)`` with the image mean ``m``.

    ``c ~ U(1 - contrast, 1 + contrast)`` scales the deviations from the mean and
    ``b ~ U(-brightness, brightness)`` shifts every pixel; pixels stay in [0, 1].
    """
    _check(x)
    b = x.shape[0]
    c = _uniform(b, 1 - contrast, 1 + contrast, generator).to(x).view(b, 1, 1, 1)
    shift = _uniform(b, -brightness, brightness, generator).to(x).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + c * (x - mean) + shift).clamp(0.0, 1.0)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``clip(x + std * e, 0, 1)`` with white noise ``e ~ N(0, 1)`` per pixel."""
    _check(x)
    noise = torch.randn(x.shape, generator=generator).to(x)
    return (x + std * noise).clamp(0.0, 1.0)


def simclr_view(
    x: Tensor,
    *,
    crop_scale: tuple[float, float],
    rotation_degrees: float,
    erase_prob: float,
    erase_scale: tuple[float, float],
    contrast: float,
    brightness: float,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One random view of each digit in [0, 1]: crop -> rotation -> erasing -> contrast -> noise."""
    x = random_resized_crop(x, crop_scale, generator=generator)
    x = random_rotation(x, rotation_degrees, generator)
    x = random_erasing(x, erase_prob, erase_scale, generator)
    x = random_contrast(x, contrast, brightness, generator)
    return gaussian_noise(x, noise_std, generator)
