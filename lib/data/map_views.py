"""DINO-style multi-crop views of map images, batched on the images' device.

DINO (Caron et al., ICCV 2021) trains a student on many views of an image
against a teacher that sees only the large ones: ``n_global`` global views
covering much of the image and ``n_local`` small local views. For maps each
view here is a random rotation, zoom and crop, resampled to the view's size
in one ``grid_sample`` per kind of view (no Python loop over the batch).

One view of a square image, in normalised coordinates (the image spans
[-1, 1]^2, ``align_corners=False``): with

* area fraction  a ~ U(scale_min, scale_max)  (DINO's crop scale),
* zoom           z ~ log-U(zoom_min, zoom_max)  (z > 1 magnifies, z < 1 zooms out),
* angle          t ~ U(-rotation, rotation)  (degrees),
* side fraction  f = sqrt(a) / z,
* centre         c ~ U(-|1 - f|, |1 - f|)^2,

output pixel u in [-1, 1]^2 shows the image at p = c + f R(t) u. Unrotated, a
crop with f <= 1 stays inside the image; a zoomed-out view (f > 1) contains
the whole image.

Outside the image: areas that a rotation or a zoom-out brings into view are
filled with the maps' background colour (``MultiCropConfig.background``,
default the OSM "no mapped feature" colour of :data:`lib.data.map_style.STYLES`,
242/239/233), not black and not cropped away, so every view keeps its sampled
scale and looks like a map with an unmapped area rather than a black hole.

Views are sampled bilinearly without antialiasing: keep the field of view of a
view at most about twice its size in pixels (f * H <= 2 * size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.data.multicrop import MAX_LOCAL_VIEWS, OSM_BACKGROUND, MultiCropConfig

__all__ = ["MAX_LOCAL_VIEWS", "OSM_BACKGROUND", "MultiCropConfig", "crop_views", "multi_crop"]

def crop_views(images: Tensor, angle: Tensor, side: Tensor, centre: Tensor, size: int,
               background: tuple[float, ...]) -> Tensor:
    """Views of given geometry: output pixel u shows the image at p = centre + side * R(angle) u.

    Args:
        images: (B, C, H, H) floats.
        angle: (B, V) radians; side: (B, V) side fractions f; centre: (B, V, 2)
            (x, y) in normalised coordinates.
        size: side of every view in pixels.
        background: C values filling what lies outside the image.
    Returns:
        (V, B, C, size, size).
    """
    b, c = images.shape[:2]
    n_views = angle.shape[1]
    cos, sin = angle.cos() * side, angle.sin() * side
    theta = torch.stack([torch.stack([cos, -sin, centre[..., 0]], -1), torch.stack([sin, cos, centre[..., 1]], -1)], -2)
    grid = F.affine_grid(theta.reshape(b * n_views, 2, 3).to(images.dtype), [b * n_views, c, size, size],
                         align_corners=False)
    # The V views of an image side by side in one grid: one grid_sample, no copy of the images per view.
    grid = grid.reshape(b, n_views, size, size, 2).permute(0, 2, 1, 3, 4).reshape(b, size, n_views * size, 2)
    fill = torch.tensor(background, dtype=images.dtype, device=images.device).reshape(1, c, 1, 1)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out.reshape(b, c, size, n_views, size).permute(3, 0, 1, 2, 4).contiguous().clamp_(0, 1)


def _random_views(images: Tensor, n_views: int, size: int, scale: tuple[float, float], config: MultiCropConfig,
                  generator: torch.Generator | None) -> list[Tensor]:
    """``n_views`` random views of each image (module docstring), a list of (B, C, size, size)."""
    b = images.shape[0]
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(b, n_views, 5, generator=generator, device=device, dtype=torch.float64).to(images.device)
    area = scale[0] + (scale[1] - scale[0]) * u[..., 0]
    log_zoom = math.log(config.zoom[0]) + math.log(config.zoom[1] / config.zoom[0]) * u[..., 1]
    angle = math.radians(config.rotation) * (2 * u[..., 2] - 1)
    side = area.sqrt() / log_zoom.exp()
    centre = (1 - side).abs()[..., None] * (2 * u[..., 3:5] - 1)
    return list(crop_views(images, angle, side, centre, size, config.background).unbind(0))


def multi_crop(images: Tensor, config: MultiCropConfig, generator: torch.Generator | None = None) -> list[Tensor]:
    """The ``n_global`` global views, then the ``n_local`` local views, of every image.

    Args:
        images: (B, 3, H, H) floats in [0, 1], on any device.
        config: the views' number, size, scale, rotation and zoom.
        generator: the source of every random draw (global views' first);
            the same generator state gives the same views.
    Returns:
        n_global tensors (B, 3, global_size, global_size), then n_local
        tensors (B, 3, local_size, local_size), floats in [0, 1].
    """
    if images.ndim != 4 or images.shape[1] != len(config.background) or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square RGB maps (B, 3, H, H), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype} (divide uint8 maps by 255)")
    side_px = images.shape[-1]
    for name, count in (("global_size", config.n_global), ("local_size", config.n_local)):
        if count and getattr(config, name) > side_px:
            raise ValueError(f"{name}={getattr(config, name)} is larger than the images ({side_px} px)")
    views = _random_views(images, config.n_global, config.global_size, config.global_scale, config, generator)
    if config.n_local:
        views += _random_views(images, config.n_local, config.local_size, config.local_scale, config, generator)
    return views
