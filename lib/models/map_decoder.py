"""A small decoder that paints the hidden part of a map from its embedding.

The reconstruction term of Bougie et al. (ACML 2023) asks the embedding of a
map to carry what a masked region looks like. The decoder sees the partial
view (hidden pixels zeroed, the mask as a fourth channel) through a strided
conv encoder down to ``H/8 x W/8``; the embedding modulates that bottleneck
by feature-wise linear modulation (FiLM, Perez et al., AAAI 2018),

    h <- h * (1 + gamma(e)) + beta(e),    gamma, beta: linear in the embedding e,

and transposed convolutions bring it back to ``H x W`` with a sigmoid, so the
output lies in ``[0, 1]`` like the map's pixels. Train it with
:func:`lib.losses.reconstruction.masked_reconstruction_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["MapDecoder"]


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU()
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.GELU()
    )


class MapDecoder(nn.Module):
    """Reconstruct a ``(channels, H, W)`` map from an embedding and the masked view.

    Args:
        embed_dim: ``D``, the size of the embedding.
        width: channels after the first stride (then ``2 width``, ``4 width``).
        channels: image channels (3 for RGB maps).

    ``forward(embedding (B, D), partial_view (B, C, H, W), hidden_mask (B, H, W)
    bool) -> (B, C, H, W)`` in ``[0, 1]``; ``H`` and ``W`` must be multiples of 8.
    Hidden pixels of ``partial_view`` are zeroed here, so passing the full image
    cannot leak them. About 80 k parameters at the default width (D = 64).
    """

    def __init__(self, embed_dim: int, width: int = 16, channels: int = 3) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.channels = channels
        self.encoder = nn.Sequential(
            _down(channels + 1, width), _down(width, 2 * width), _down(2 * width, 4 * width)
        )
        self.film = nn.Linear(embed_dim, 2 * 4 * width)
        self.decoder = nn.Sequential(
            _up(4 * width, 2 * width),
            _up(2 * width, width),
            _up(width, width),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, embedding: Tensor, partial_view: Tensor, hidden_mask: Tensor) -> Tensor:
        if partial_view.dim() != 4 or partial_view.shape[1] != self.channels:
            raise ValueError(
                f"MapDecoder: partial_view must be (B, {self.channels}, H, W), got "
                f"{tuple(partial_view.shape)}"
            )
        batch, _, height, width = partial_view.shape
        if height % 8 or width % 8:
            raise ValueError(
                f"MapDecoder: H and W must be multiples of 8, got partial_view "
                f"{tuple(partial_view.shape)}"
            )
        if embedding.shape != (batch, self.embed_dim):
            raise ValueError(
                f"MapDecoder: embedding {tuple(embedding.shape)} must be (B, D) = "
                f"{(batch, self.embed_dim)}"
            )
        if hidden_mask.shape != (batch, height, width) or hidden_mask.dtype != torch.bool:
            raise ValueError(
                f"MapDecoder: hidden_mask must be bool (B, H, W) = {(batch, height, width)}, got "
                f"{hidden_mask.dtype} {tuple(hidden_mask.shape)}"
            )
        hidden = hidden_mask[:, None].to(partial_view.dtype)
        x = torch.cat([partial_view * (1 - hidden), hidden], dim=1)
        h = self.encoder(x)
        gamma, beta = self.film(embedding).chunk(2, dim=1)
        h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return self.decoder(h)
