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
from lib.losses.dino import DinoLoss
from lib.losses.reconstruction import masked_reconstruction_loss
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
    """Student, teacher (no gradients), the DINO loss with its centre, and what the variant's other terms need.

    A term with weight zero builds no module and is not computed, so every
    parameter of the net takes part in each step (as DistributedDataParallel
    requires). ``forward(batch)`` is one training step's loss (module
    docstring) and each term's unweighted value, for
    :func:`lib.training.fit`; the teacher follows the student through the
    callbacks of :mod:`lib.studies.gpsmaps.train`. ``epoch`` (a buffer, so a
    resumed run keeps it) is the training epoch, whose teacher temperature
    the DINO loss uses.
    """

    epoch: torch.Tensor

    def __init__(self, cfg: GpsMapsModel, loss: GpsMapsLoss, n_global: int = 2, teacher_temperatures=(0.04,),
                 band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.n_global = n_global  # the first n_global views are global: the teacher sees those
        self.weights = {"geo": loss.geo_weight, "reconstruction": loss.reconstruction_weight,
                        "clustering": loss.clustering_weight}
        self.student = Branch(cfg, band_mean, band_std)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        d = cfg.embedding_dim
        if loss.geo_weight:
            self.price = nn.Linear(d, 1)
            self.density = nn.Linear(d, loss.density_clusters)
            self.coords = nn.Linear(d, 2)
        if loss.reconstruction_weight:
            self.decoder = MapDecoder(d, width=max(8, cfg.width))
        if loss.clustering_weight:
            self.clusters = SoftClusterLoss(loss.n_centroids, d, loss.cluster_temperature)
        self.dino = DinoLoss(cfg.head_out, teacher_temperatures, loss.student_temperature, loss.center_momentum)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def trainable(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("teacher.") and p.requires_grad]

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``L`` of one batch (module docstring) and the logs ``loss_<term>`` of its unweighted terms.

        ``batch``: ``image`` (B, 3, H, W), ``views`` (the multi-crop views,
        the ``n_global`` global ones first), ``hidden`` (B, H, W) bool, the reconstruction's mask,
        and the geo targets ``price`` (B,), ``density_cluster`` (B,) long
        (-1: no label) and ``coords`` (B, 2).
        """
        views, x = batch["views"], batch["image"]
        student_out = [self.student.head(self.student.encoder(v)) for v in views]
        with torch.no_grad():
            teacher_out = [self.teacher.head(self.teacher.encoder(v)) for v in views[:self.n_global]]
        terms = {"dino": self.dino(student_out, teacher_out, int(self.epoch))}
        z = self.student.encoder(x) if any(self.weights.values()) else None
        if self.weights["geo"]:
            terms["geo"] = geo_loss(self, z, batch["price"], batch["density_cluster"], batch["coords"])
        if self.weights["reconstruction"]:
            terms["reconstruction"] = reconstruction_loss(self, z, x, batch["hidden"])
        if self.weights["clustering"]:
            with torch.no_grad():
                z_teacher = self.teacher.encoder(x)
            terms["clustering"] = self.clusters(z, z_teacher)
        total = terms["dino"] + sum(self.weights[name] * terms[name] for name in terms if name != "dino")
        return total, {f"loss_{name}": value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's embedding of maps ``x``: what the downstream probes read."""
        return self.teacher.encoder(x)


def geo_loss(net: GpsMapsNet, z: torch.Tensor, price: torch.Tensor, cluster: torch.Tensor,
             coords: torch.Tensor) -> torch.Tensor:
    """``(MSE(price) + CE(density cluster) + MSE(lon/lat)) / 3`` over the maps with targets (0 without any)."""
    has = cluster >= 0
    if not has.any():
        # Zero, but through every geo head: under DDP each parameter must take part in every step.
        return 0.0 * (net.price(z).sum() + net.density(z).sum() + net.coords(z).sum())
    z = z[has]
    mse_price = F.mse_loss(net.price(z).squeeze(1), price[has])
    ce = F.cross_entropy(net.density(z), cluster[has])
    mse_coords = F.mse_loss(net.coords(z), coords[has])
    return (mse_price + ce + mse_coords) / 3


def reconstruction_loss(net: GpsMapsNet, z: torch.Tensor, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Decode the map from ``z`` and the part of ``x`` left visible by ``hidden`` (B, H, W); score the hidden
    pixels only."""
    partial = x * (~hidden).unsqueeze(1)
    return masked_reconstruction_loss(net.decoder(z, partial, hidden), x, hidden)
