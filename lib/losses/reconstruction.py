"""Masked map reconstruction (an auxiliary term of Bougie et al., ACML 2023).

Part of a map image is hidden; a decoder sees the visible rest and the image's
embedding and must paint the hidden part. With the hidden set
``M = {(b, h, w) : hidden}`` and ``C`` channels, the loss counts the hidden
pixels only:

    L = 1 / (|M| C) * sum_{(b, h, w) in M} sum_c (pred_bchw - target_bchw)^2

Visible pixels are copied from the input, so scoring them would reward a
decoder that learnt nothing from the embedding.

:func:`random_block_mask` hides square blocks: the image is tiled into
``block x block`` cells and each image hides ``round(f * n_cells)`` cells drawn
at random (at least one), so the hidden fraction is ``f`` up to one cell
(exactly when the block size divides the image).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_reconstruction_loss", "random_block_mask"]


def masked_reconstruction_loss(pred: Tensor, target: Tensor, hidden_mask: Tensor) -> Tensor:
    """Mean squared error over the hidden pixels and all channels.

    Args:
        pred: ``(B, C, H, W)`` reconstruction.
        target: ``(B, C, H, W)`` original image.
        hidden_mask: bool ``(B, H, W)`` or ``(B, 1, H, W)``, True where hidden.

    Returns:
        Scalar tensor (see the module docstring). Visible pixels do not enter
        the loss nor its gradient, even where ``pred`` is not finite.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            "masked_reconstruction_loss: pred and target must both be (B, C, H, W), got "
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    batch, channels, height, width = pred.shape
    if hidden_mask.dim() == 4 and hidden_mask.shape[1] == 1:
        hidden_mask = hidden_mask[:, 0]
    if hidden_mask.shape != (batch, height, width):
        raise ValueError(
            f"masked_reconstruction_loss: hidden_mask {tuple(hidden_mask.shape)} must be "
            f"(B, H, W) = {(batch, height, width)} or (B, 1, H, W) for pred {tuple(pred.shape)}"
        )
    if hidden_mask.dtype != torch.bool:
        raise ValueError(
            f"masked_reconstruction_loss: hidden_mask must be bool, got {hidden_mask.dtype}"
        )
    n_hidden = hidden_mask.sum()
    if n_hidden.item() == 0:
        raise ValueError(
            f"masked_reconstruction_loss: no pixel is hidden in mask {tuple(hidden_mask.shape)}"
        )
    hidden = hidden_mask[:, None].to(pred.device)
    # Select before squaring, so a non-finite visible pixel gets a zero gradient, not NaN.
    error = torch.where(hidden, pred - target, 0.0)
    return (error**2).sum() / (n_hidden.to(pred.device) * channels)


def random_block_mask(
    batch: int,
    height: int,
    width: int,
    hidden_fraction: float,
    generator: torch.Generator | None = None,
    block: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random square blocks hiding about ``hidden_fraction`` of each image.

    Args:
        batch, height, width: mask shape ``(batch, height, width)``.
        hidden_fraction: ``f`` in ``(0, 1]``.
        generator: source of randomness; the same seed gives the same mask.
        block: side of a block in pixels; default ``max(1, min(height, width) // 8)``
            (8 x 8 blocks on a 64 x 64 map).
        device: device of the result (default: the generator's, else CPU).

    Returns:
        Bool ``(batch, height, width)``, True = hidden; every image hides at
        least one block.
    """
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(
            f"random_block_mask: batch, height, width must be >= 1, got {(batch, height, width)}"
        )
    if not 0.0 < hidden_fraction <= 1.0:
        raise ValueError(
            f"random_block_mask: hidden_fraction must be in (0, 1], got {hidden_fraction}"
        )
    if block is None:
        block = max(1, min(height, width) // 8)
    if block < 1:
        raise ValueError(f"random_block_mask: block must be >= 1, got {block}")
    rows, cols = -(-height // block), -(-width // block)  # ceil: edge cells may be cropped
    n_cells = rows * cols
    n_hidden = min(max(round(hidden_fraction * n_cells), 1), n_cells)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(batch, n_cells, generator=generator, device=draw_device)
    # The n_hidden cells of lowest score: a uniform random subset per image.
    rank = scores.argsort(dim=1).argsort(dim=1)
    cells = (rank < n_hidden).view(batch, rows, cols)
    mask = cells.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
    mask = mask[:, :height, :width]
    return mask.to(device) if device is not None else mask
