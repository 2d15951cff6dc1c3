"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018).

RISE treats the model as a black box. It scores an image under many random soft
masks and credits each pixel with the average score of the masks that keep it
(Sec. 3, Eq. 6)::

    S(lambda) = 1 / (N p) * sum_i f(x * M_i + b * (1 - M_i)) * M_i(lambda)

with ``N`` masks ``M_i`` (H, W) in [0, 1], keep probability ``p`` and a removal
baseline ``b`` (the original paper removes to zero; COCOA uses a blurred copy of the
image, see :func:`lib.explain.removal.blur_baseline`).

Normalisation: ``E[M(lambda)] = p`` for every pixel, so ``S`` is a Monte-Carlo
estimate of ``E[f(masked x) M(lambda)] / E[M(lambda)]``, the mean score of the
masked images weighted by how much of ``lambda`` they keep. It is *not* centred: a constant model
``f = c`` gets ``S ~ c`` everywhere, and only differences between pixels carry
information.

Masks (Sec. 3, "Mask generation"): a coarse ``s x s`` grid of independent
Bernoulli(p) cells is upsampled bilinearly to ``(s + 1) * cell`` pixels, with
``cell = ceil(H / s)`` (likewise for W), then cropped to H x W at a random offset
in ``[0, cell)``, so the soft mask edges fall anywhere, not only on grid lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RISE"]


class RISE:
    """RISE attributions for a model returning one scalar per image, or several.

    ``forward_func`` maps images (M, C, H, W) to scores (M,), e.g. a target from
    :mod:`lib.explain.cocoa`, or to (M, T) scores of T outputs at once, which
    then share the masks and the forward passes. Usage mirrors captum::

        RISE(forward_func).attribute(inputs, baselines=blurred, n_masks=4000, grid=7)
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        self.forward_func = forward_func

    @staticmethod
    def sample_grids(
        n_masks: int,
        grid: int,
        p: float,
        size: tuple[int, int],
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw the random part of ``n_masks`` masks for images of ``size = (H, W)``.

        Returns the binary coarse grids (N, s, s) and the crop offsets (N, 2) as
        (row, column), both on the generator's device (CPU without a generator).
        All randomness is drawn here, up front, so the masks do not depend on how
        :meth:`attribute` batches them.
        """
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must lie in (0, 1], got {p}")
        device = generator.device if generator is not None else torch.device("cpu")
        grids = torch.rand(n_masks, grid, grid, generator=generator, device=device) < p
        cell_h, cell_w = (math.ceil(side / grid) for side in size)
        offsets = torch.stack(
            [
                torch.randint(cell_h, (n_masks,), generator=generator, device=device),
                torch.randint(cell_w, (n_masks,), generator=generator, device=device),
            ],
            dim=1,
        )
        return grids, offsets

    @staticmethod
    def masks_from_grids(grids: Tensor, offsets: Tensor, size: tuple[int, int]) -> Tensor:
        """Upsample the coarse grids and crop them (Sec. 3, "Mask generation").

        Shapes: ``grids`` (n, s, s), ``offsets`` (n, 2) -> masks (n, H, W), in the
        grids' device and, for floating grids, dtype (float32 for boolean grids).
        """
        height, width = size
        n, grid, _ = grids.shape
        cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
        dtype = grids.dtype if grids.is_floating_point() else torch.float32
        upsampled = F.interpolate(
            grids.to(dtype).unsqueeze(1),
            size=((grid + 1) * cell_h, (grid + 1) * cell_w),
            mode="bilinear",
            align_corners=False,
        ).squeeze(1)
        rows = offsets[:, :1] + torch.arange(height, device=grids.device)  # (n, H)
        cols = offsets[:, 1:] + torch.arange(width, device=grids.device)  # (n, W)
        index = torch.arange(n, device=grids.device)[:, None, None]
        return upsampled[index, rows[:, :, None], cols[:, None, :]]

    def attribute(
        self,
        inputs: Tensor,
        baselines: Tensor | float = 0.0,
        n_masks: int = 4000,
        grid: int = 7,
        p: float = 0.5,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """RISE saliency for each explicand (Eq. 6), broadcast over channels.

        Args:
            inputs: explicands (B, C, H, W).
            baselines: what removed pixels become; a scalar or a tensor that
                broadcasts to ``inputs``, e.g. blurred copies (B, C, H, W).
            n_masks: number of masks N, shared by all explicands.
            grid: coarse grid size s.
            p: probability that a grid cell is kept.
            batch_size: at most this many masked images per call of
                ``forward_func`` (at least one mask per call).
            generator: seeds the masks; the same seed gives the same attributions.

        Returns:
            (B, C, H, W) saliency, the same map on every channel, in the inputs'
            dtype and device; (T, B, C, H, W), one map per output, when
            ``forward_func`` returns (M, T) scores.
        """
        batch, _, height, width = inputs.shape
        baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
        baselines = baselines.expand_as(inputs)
        difference = inputs - baselines  # x * M + b * (1 - M) = b + (x - b) * M
        grids, offsets = self.sample_grids(n_masks, grid, p, (height, width), generator)
        grids = grids.to(device=inputs.device, dtype=inputs.dtype)
        offsets = offsets.to(inputs.device)
        saliency, n_outputs = None, None
        masks_per_call = max(1, batch_size // batch)
        with torch.no_grad():
            for start in range(0, n_masks, masks_per_call):
                chunk = slice(start, start + masks_per_call)
                masks = self.masks_from_grids(grids[chunk], offsets[chunk], (height, width))
                # (B, 1, C, H, W) + (B, 1, C, H, W) * (1, m, 1, H, W) -> (B * m, C, H, W)
                masked = baselines[:, None] + difference[:, None] * masks[None, :, None]
                scores = self.forward_func(masked.flatten(0, 1))
                if scores.dim() not in (1, 2) or scores.shape[0] != masked.shape[0] * masked.shape[1]:
                    raise ValueError(
                        f"forward_func must return (M,) or (M, T) scores for M = {masked.shape[0] * masked.shape[1]} "
                        f"images, got shape {tuple(scores.shape)}"
                    )
                if saliency is None:
                    n_outputs = None if scores.dim() == 1 else scores.shape[1]
                    saliency = inputs.new_zeros(n_outputs or 1, batch, height, width)
                scores = scores.reshape(batch, len(masks), n_outputs or 1).to(inputs.dtype)
                saliency += torch.einsum("bmt,mhw->tbhw", scores, masks)
        saliency /= n_masks * p
        saliency = saliency.unsqueeze(2).expand(-1, -1, inputs.shape[1], -1, -1).contiguous()
        return saliency[0] if n_outputs is None else saliency
