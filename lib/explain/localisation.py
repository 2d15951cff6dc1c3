"""Does an attribution map point at the object? Pointing game and attribution mass in a box.

Both take attribution maps (N, H, W) or (N, C, H, W) (summed over channels) and
boxes (N, 4) as (top, left, bottom, right) in pixels, end exclusive, and
return one value per map:

* pointing game (Zhang et al., "Top-down neural attention by excitation
  backprop", ECCV 2016): a hit when the map's maximum lies inside the box;
* mass in box (the "energy-based pointing game" of Wang et al., Score-CAM,
  CVPR-W 2020): the share of the positive attribution that lies inside the box,

      sum_{p in box} max(a_p, 0) / sum_p max(a_p, 0);

* mass in mask: the same share inside any set of pixels M given as a boolean
  mask (N, H, W), e.g. the object's own pixels where they are known,

      sum_{p in M} max(a_p, 0) / sum_p max(a_p, 0).

A map that ignores the object scores about the box's share of the image on
the second metric (exactly that share, in expectation, for uniform noise).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_masks", "mass_in_box", "mass_in_mask", "pointing_game"]


def _maps(attributions: Tensor) -> Tensor:
    if attributions.dim() == 4:
        return attributions.sum(dim=1)
    if attributions.dim() != 3:
        raise ValueError(f"attributions must be (N, H, W) or (N, C, H, W), got {tuple(attributions.shape)}")
    return attributions


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks (N, H, W), true inside each box (top, left, bottom, right), end exclusive."""
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    rows, cols = torch.arange(height), torch.arange(width)
    top, left, bottom, right = (boxes[:, i].cpu() for i in range(4))
    inside_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def pointing_game(attributions: Tensor, boxes: Tensor) -> Tensor:
    """Hits (N,) bool: the pixel of largest attribution (the first in row-major order on ties) lies in the box."""
    maps = _maps(attributions).detach().cpu()
    n, height, width = maps.shape
    masks = box_masks(boxes, height, width).reshape(n, -1)
    peak = maps.reshape(n, -1).argmax(dim=1)
    return masks[torch.arange(n), peak]


def mass_in_box(attributions: Tensor, boxes: Tensor) -> Tensor:
    """Share (N,) of the positive attribution inside the box; 0 for a map with no positive value."""
    height, width = _maps(attributions).shape[1:]
    return mass_in_mask(attributions, box_masks(boxes, height, width))


def mass_in_mask(attributions: Tensor, masks: Tensor) -> Tensor:
    """Share (N,) of the positive attribution on the pixels where ``masks`` (N, H, W) is true; 0 for a map with
    no positive value."""
    maps = _maps(attributions).detach().cpu().clamp_min(0)
    masks = torch.as_tensor(masks).cpu()
    if masks.shape != maps.shape or masks.dtype != torch.bool:
        raise ValueError(f"masks must be boolean (N, H, W) like the maps {tuple(maps.shape)}, got "
                         f"{masks.dtype} {tuple(masks.shape)}")
    total = maps.sum(dim=(1, 2))
    inside = (maps * masks).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(total))
