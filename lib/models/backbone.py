"""Small timm ResNets adapted to small images, keeping the spatial feature map.

DIML explains a similarity by the locations of two feature maps, so the
encoder must not pool them away: :class:`SpatialEmbedding` returns one
L2-normalised embedding per location of a ``grid x grid`` map, and the global
embedding is the (re-normalised) mean of the locations.

:func:`tile_encoder` is a pooled ResNet-10 for aerial and map tiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # timm is imported where a backbone is built: it pulls in torchvision and torch._dynamo (~2 s)
    from timm.models.resnet import ResNet


def small_resnet(in_chans: int = 1, width: int = 32, layers: tuple[int, ...] = (1, 1, 1, 1)) -> ResNet:
    """A timm ResNet for 28-64 px inputs, without its classifier and pooling.

    The ImageNet stem (stride-2 convolution and max-pool) would shrink a 28 px
    digit to 7 px before the first block. timm's "deep" stem (three 3x3
    convolutions) with its first stride set to 1 and no max-pool keeps the
    resolution, so 28 px in gives a 4x4 map out of the last stage.
    """
    from timm.models.resnet import BasicBlock, ResNet

    if width % 2:
        raise ValueError(f"width must be even (the deep stem halves it), got {width}")
    net = ResNet(
        block=BasicBlock,
        layers=layers,
        channels=tuple(width * 2**i for i in range(len(layers))),
        in_chans=in_chans,
        stem_type="deep",
        stem_width=width // 2,
        num_classes=0,
        global_pool="",
    )
    net.conv1[0].stride = (1, 1)
    net.maxpool = nn.Identity()
    return net


class SpatialEmbedding(nn.Module):
    """Backbone -> ``grid x grid`` map -> per-location embedding (1x1 conv), L2-normalised.

    ``forward(x)`` with ``x`` of shape (B, C, H, W) returns the local embeddings
    of shape (B, grid*grid, D), locations in row-major order.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int, grid: int):
        super().__init__()
        self.backbone = backbone
        self.grid = grid
        self.project = nn.Conv2d(feature_dim, embedding_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone.forward_features(x)
        if fmap.shape[-2:] != (self.grid, self.grid):
            fmap = F.adaptive_avg_pool2d(fmap, self.grid)
        local = self.project(fmap).flatten(2).transpose(1, 2)  # (B, grid*grid, D)
        return F.normalize(local.float(), dim=-1)

    @staticmethod
    def global_embedding(local: torch.Tensor) -> torch.Tensor:
        """Mean of the locations, L2-normalised: (B, N, D) -> (B, D)."""
        return F.normalize(local.mean(dim=1), dim=-1)


def diml_encoder(in_chans: int = 1, width: int = 32, embedding_dim: int = 128, grid: int = 4) -> SpatialEmbedding:
    backbone = small_resnet(in_chans=in_chans, width=width)
    return SpatialEmbedding(backbone, backbone.num_features, embedding_dim, grid)


def tile_encoder(in_chans: int, width: int) -> ResNet:
    """A ResNet-10 (one BasicBlock per stage) from timm with ``width`` channels in its first stage.

    timm's deep stem (three 3x3 convolutions, stride 2) and max-pool take a
    64 px tile to 16 px before the first stage, so the stages see 16, 8, 4 and
    2 px; ``forward`` returns the globally average-pooled (B, 8 width) features.
    """
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(
        block=BasicBlock, layers=(1, 1, 1, 1), channels=tuple(width * 2**i for i in range(4)),
        in_chans=in_chans, stem_type="deep", stem_width=width // 2, num_classes=0, global_pool="avg",
    )


def band_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and sd (at least 1e-3) of images (..., C, H, W), over every other axis: for :class:`TileEmbedder`."""
    dims = tuple(d for d in range(images.dim()) if d != images.dim() - 3)
    return images.mean(dim=dims), images.std(dim=dims).clamp_min(1e-3)


class TileEmbedder(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> per-band standardisation -> ResNet-10 -> linear embedding (B, D).

    ``band_mean`` and ``band_std`` (C values each; buffers, saved with the
    weights) standardise the pixels, so that pale or dark imagery reaches the
    first convolution with unit spread; H, W >= 16.
    """

    def __init__(self, in_chans: int, width: int, embedding_dim: int, band_mean=None, band_std=None):
        super().__init__()
        mean = torch.full((in_chans,), 0.5) if band_mean is None else torch.as_tensor(band_mean, dtype=torch.float32)
        std = torch.full((in_chans,), 0.25) if band_std is None else torch.as_tensor(band_std, dtype=torch.float32)
        if mean.numel() != in_chans or std.numel() != in_chans:
            raise ValueError(f"band_mean and band_std need {in_chans} values, got {mean.numel()} and {std.numel()}")
        self.register_buffer("band_mean", mean.reshape(1, in_chans, 1, 1).clone())
        self.register_buffer("band_std", std.reshape(1, in_chans, 1, 1).clone())
        self.backbone = tile_encoder(in_chans, width)
        self.project = nn.Linear(self.backbone.num_features, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone((x - self.band_mean) / self.band_std))
