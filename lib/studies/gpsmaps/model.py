"""The gpsmaps model: a map encoder trained by self-distillation with geo tasks, reconstruction and clustering.

Bougie, Vazhenina and Watanabe, "Lost and Found: How Self-Supervised Learning
Helps GPS Coordinates Find Their Way" (ACML 2023). A GPS coordinate is
embedded by encoding the map centred on it. Student ``s`` and teacher ``t``
share one architecture, a ResNet-10 with a linear embedding layer and DINO's
projection head; the teacher is the EMA of the student. One step on a batch
of maps ``x``::

    L = L_dino + a L_geo + b L_rec + c L_clust
    L_dino  = DINO cross-entropy, teacher's global views -> student's other views  (lib.losses.dino)
    L_geo   = (MSE(price) + CE(density cluster) + MSE(lon/lat)) / 3 on s's embedding of x,
              over the maps whose labels training may use
    L_rec   = MSE on the hidden pixels of x, decoded from s's embedding and the visible rest  (lib.losses.reconstruction)
    L_clust = CE of soft assignments to m learnable centroids, t -> s, of x's embeddings  (lib.losses.clustering)

The teacher's embedding is the one the evaluation reads (as DINO evaluates its teacher).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lib.losses.clustering import SoftClusterLoss
from lib.losses.reconstruction import masked_reconstruction_loss, random_block_mask
from lib.models.backbone import TileEmbedder
from lib.models.dino_head import DinoHead
from lib.models.map_decoder import MapDecoder
from lib.studies.gpsmaps.params import GpsMapsLoss, GpsMapsModel


class MapEncoder(TileEmbedder):
    """Map (B, 3, H, W) in [0, 1] -> per-band standardisation -> ResNet-10 -> embedding (B, D); H, W >= 16.

    The three-band :class:`~lib.models.backbone.TileEmbedder`: map colours are
    pale and close together (sd about 0.1), so ``band_mean`` and ``band_std``
    (buffers, saved with the weights) matter; without them the first layers
    see almost constant input.
    """

    def __init__(self, width: int, embedding_dim: int, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__(3, width, embedding_dim, band_mean, band_std)


class Branch(nn.Module):
    """Encoder and DINO head: what the student and the teacher each are."""

    def __init__(self, cfg: GpsMapsModel, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.encoder = MapEncoder(cfg.width, cfg.embedding_dim, band_mean, band_std)
        self.head = DinoHead(cfg.embedding_dim, cfg.head_out, cfg.head_hidden, cfg.head_bottleneck)


class GpsMapsNet(nn.Module):
    """Student, teacher (no gradients), geo heads, decoder and centroids."""

    def __init__(self, cfg: GpsMapsModel, loss: GpsMapsLoss, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.student = Branch(cfg, band_mean, band_std)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        d = cfg.embedding_dim
        self.price = nn.Linear(d, 1)
        self.density = nn.Linear(d, loss.density_clusters)
        self.coords = nn.Linear(d, 2)
        self.decoder = MapDecoder(d, width=max(8, cfg.width))
        self.clusters = SoftClusterLoss(loss.n_centroids, d, loss.cluster_temperature)

    def trainable(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("teacher.") and p.requires_grad]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's embedding of maps ``x``: what the downstream probes read."""
        return self.teacher.encoder(x)


def geo_loss(net: GpsMapsNet, z: torch.Tensor, price: torch.Tensor, cluster: torch.Tensor,
             coords: torch.Tensor) -> torch.Tensor:
    """``(MSE(price) + CE(density cluster) + MSE(lon/lat)) / 3`` over the maps with targets (0 without any)."""
    has = cluster >= 0
    if not has.any():
        return z.sum() * 0.0
    z = z[has]
    mse_price = F.mse_loss(net.price(z).squeeze(1), price[has])
    ce = F.cross_entropy(net.density(z), cluster[has])
    mse_coords = F.mse_loss(net.coords(z), coords[has])
    return (mse_price + ce + mse_coords) / 3


def reconstruction_loss(net: GpsMapsNet, z: torch.Tensor, x: torch.Tensor, hidden_fraction: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Hide blocks of ``x``, decode the map from ``z`` and the visible rest, score the hidden pixels only."""
    b, _, h, w = x.shape
    hidden = random_block_mask(b, h, w, hidden_fraction, generator=generator).to(x.device)
    partial = x * (~hidden).unsqueeze(1)
    return masked_reconstruction_loss(net.decoder(z, partial, hidden), x, hidden)
