"""The gpsmaps models: a map encoder trained by self-distillation with geo tasks, reconstruction and clustering,
and the two trainings it is compared with on the same loop (SimCLR, a supervised encoder).

Bougie, Vazhenina and Watanabe, "Lost and Found: How Self-Supervised Learning
Helps GPS Coordinates Find Their Way" (ACML 2023). A GPS coordinate is
embedded by encoding the map centred on it. Student ``s`` and teacher ``t``
share one architecture, a ResNet-10 with a linear embedding layer and DINO's
projection head; the teacher is the EMA of the student and keeps its own
batch-norm statistics. One step on a batch of maps, with global views
``g_1 .. g_V`` (one forward pass for all of them) and local views (one pass)::

    L = L_dino + a L_geo + b L_rec + c L_clust
    L_dino  = DINO cross-entropy, teacher's global views -> student's other views  (lib.losses.dino)
    L_geo   = (MSE(price) + CE(density cluster) + MSE(lon/lat)) / 3 on s's embedding of each global view,
              over the maps whose labels training may use
    L_rec   = MSE on the hidden pixels of g_1, decoded from s's embedding of g_1 and its visible rest
              (lib.losses.reconstruction)
    L_clust = (H(q_t(g_2), q_s(g_1)) + H(q_t(g_1), q_s(g_2))) / 2, soft assignments of the intermediate
              features (layer 3, pooled) to m learnable centroids, across the two views  (lib.losses.clustering)

The weights follow a rule fixed in advance and free of labels
(:func:`balanced_weights`): each auxiliary term starts at a stated share of
the DINO loss, so none is negligible. The teacher's embedding is the one the
evaluation reads (as DINO evaluates its teacher); the student's is probed too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lib.losses.clustering import SoftClusterLoss
from lib.losses.contrastive import nt_xent
from lib.losses.dino import DinoLoss
from lib.losses.reconstruction import masked_reconstruction_loss
from lib.models.backbone import TileEmbedder
from lib.models.dino_head import DinoHead
from lib.models.map_decoder import MapDecoder
from lib.studies.gpsmaps.params import GpsMapsLoss, GpsMapsModel

AUXILIARY = ("geo", "reconstruction", "clustering")


class MapEncoder(TileEmbedder):
    """Map (B, 3, H, W) in [0, 1] -> per-band standardisation -> ResNet-10 -> embedding (B, D); H, W >= 16.

    The three-band :class:`~lib.models.backbone.TileEmbedder`: map colours are
    pale and close together (sd about 0.1), so ``band_mean`` and ``band_std``
    (buffers, saved with the weights) matter. :meth:`features` also returns
    the intermediate features (layer 3, average-pooled) the clustering term reads.
    """

    def __init__(self, width: int, embedding_dim: int, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__(3, width, embedding_dim, band_mean, band_std)

    @property
    def intermediate_dim(self) -> int:
        return self.backbone.layer3[-1].conv2.out_channels

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding (B, D), pooled layer-3 features (B, 4 width)) of maps ``x``."""
        b = self.backbone
        h = b.maxpool(b.act1(b.bn1(b.conv1((x - self.band_mean) / self.band_std))))
        mid = b.layer3(b.layer2(b.layer1(h)))
        return self.project(b.global_pool(b.layer4(mid))), mid.mean(dim=(2, 3))


class Branch(nn.Module):
    """Encoder and DINO head: what the student and the teacher each are."""

    def __init__(self, cfg: GpsMapsModel, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.encoder = MapEncoder(cfg.width, cfg.embedding_dim, band_mean, band_std)
        self.head = DinoHead(cfg.embedding_dim, cfg.head_out, cfg.head_hidden, cfg.head_bottleneck,
                             use_bn=cfg.head_bn)


class GpsMapsNet(nn.Module):
    """Student, teacher (no gradients), the DINO loss with its centre, and what the variant's other terms need.

    A term with weight zero builds no module and is not computed, so every
    parameter of the net takes part in each step (as DistributedDataParallel
    requires). ``forward(batch)`` is one training step's loss (module
    docstring) and each term's unweighted value, for
    :func:`lib.training.fit`; the teacher follows the student through the
    callbacks of :mod:`lib.studies.gpsmaps.train`. ``epoch`` (a buffer, so a
    resumed run keeps it) is the training epoch, whose teacher temperature
    the DINO loss uses; ``weights`` (a buffer: a, b, c as applied) is set by
    :func:`balanced_weights` before training.
    """

    epoch: torch.Tensor
    weights: torch.Tensor
    has_teacher = True

    def __init__(self, cfg: GpsMapsModel, loss: GpsMapsLoss, n_global: int = 2, teacher_temperatures=(0.04,),
                 band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        if n_global < 2 and loss.clustering_weight:
            raise ValueError("the clustering term pairs two global views: n_global must be >= 2")
        self.n_global = n_global
        self.student = Branch(cfg, band_mean, band_std)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.active = tuple(name for name, w in zip(AUXILIARY, (loss.geo_weight, loss.reconstruction_weight,
                                                                  loss.clustering_weight), strict=True) if w)
        self.register_buffer("weights", torch.tensor([loss.geo_weight, loss.reconstruction_weight,
                                                      loss.clustering_weight], dtype=torch.float32))
        d = cfg.embedding_dim
        if "geo" in self.active:
            self.price = nn.Linear(d, 1)
            self.density = nn.Linear(d, loss.density_clusters)
            self.coords = nn.Linear(d, 2)
        if "reconstruction" in self.active:
            self.decoder = MapDecoder(d, width=max(8, cfg.width))
        if "clustering" in self.active:
            self.clusters = SoftClusterLoss(loss.n_centroids, self.student.encoder.intermediate_dim,
                                            loss.cluster_temperature)
        self.dino = DinoLoss(cfg.head_out, teacher_temperatures, loss.student_temperature, loss.center_momentum)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("teacher.") and p.requires_grad]

    def weight(self, term: str) -> float:
        return float(self.weights[AUXILIARY.index(term)])

    def terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each term's unweighted value on ``batch``: ``global`` (V_g, B, 3, g, g), ``local`` (V_l, B, 3, l, l)
        (may be absent), ``hidden`` (B, g, g) bool, the geo targets ``price`` (B,), ``density_cluster`` (B,)
        long (-1: no label) and ``coords`` (B, 2)."""
        views = batch["global"]
        n_global, b = views.shape[:2]
        flat = views.flatten(0, 1)
        z, mid = self.student.encoder.features(flat)  # all global views in one pass
        student_out = [self.student.head(z)]
        if batch.get("local") is not None:
            student_out.append(self.student.head(self.student.encoder(batch["local"].flatten(0, 1))))
        with torch.no_grad():
            t_z, t_mid = self.teacher.encoder.features(flat)
            teacher_out = self.teacher.head(t_z).unflatten(0, (n_global, b))
        student_out = torch.cat(student_out).unflatten(0, (-1, b))
        terms = {"dino": self.dino(student_out, teacher_out, int(self.epoch))}
        if "geo" in self.active:
            terms["geo"] = geo_loss(self, z, batch["price"].repeat(n_global), batch["density_cluster"].repeat(n_global),
                                    batch["coords"].repeat(n_global, 1))
        if "reconstruction" in self.active:
            first = views[0]
            partial = first * (~batch["hidden"]).unsqueeze(1)
            terms["reconstruction"] = masked_reconstruction_loss(self.decoder(z[:b], partial, batch["hidden"]),
                                                                 first, batch["hidden"])
        if "clustering" in self.active:
            mid, t_mid = mid.unflatten(0, (n_global, b)), t_mid.unflatten(0, (n_global, b))
            terms["clustering"] = (self.clusters(mid[0], t_mid[1]) + self.clusters(mid[1], t_mid[0])) / 2
        return terms

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``L`` of one batch (module docstring) and the logs ``loss_<term>`` of its unweighted terms."""
        terms = self.terms(batch)
        total = terms["dino"] + sum(self.weight(name) * terms[name] for name in self.active)
        return total, {f"loss_{name}": value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's embedding of maps ``x``: what the downstream probes read."""
        return self.teacher.encoder(x)

    @torch.no_grad()
    def student_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.encoder(x)


@torch.no_grad()
def balanced_weights(net: GpsMapsNet, batch: dict, shares: dict[str, float]) -> dict[str, float]:
    """The label-free weight rule: ``w_k = share_k * L_dino / L_k`` on ``batch`` at initialisation, so each
    auxiliary term enters the loss at ``share_k`` times the DINO loss at the start. Computed on a copy (no
    batch-norm statistics or DINO centre of ``net`` move); sets ``net.weights`` and returns them."""
    probe = copy.deepcopy(net)
    terms = probe.terms(batch)
    weights = {}
    for k, name in enumerate(AUXILIARY):
        if name in net.active:
            value = float(terms[name])
            if not value > 0:
                raise ValueError(f"balanced_weights: the {name} term is {value} on the calibration batch")
            weights[name] = shares[name] * float(terms["dino"]) / value
            net.weights[k] = weights[name]
    return weights


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


class ContrastiveNet(nn.Module):
    """SimCLR on the same maps and encoder: NT-Xent (lib.losses.contrastive) of a projection (Linear-ReLU-Linear)
    of the first two global views; the encoder's embedding is probed."""

    has_teacher = False

    def __init__(self, cfg: GpsMapsModel, temperature: float, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.student = Branch(cfg, band_mean, band_std)
        del self.student.head
        d = cfg.embedding_dim
        self.projection = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, d))
        self.temperature = temperature

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.named_parameters())

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views = batch["global"][:2]
        p = self.projection(self.student.encoder(views.flatten(0, 1))).unflatten(0, (2, views.shape[1]))
        loss = nt_xent(p[0], p[1], self.temperature)
        return loss, {"loss_simclr": loss.detach()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.encoder(x)

    student_embed = embed


class SupervisedNet(nn.Module):
    """The bound: the same encoder trained on the standardised outcomes (``outcomes`` (B, T), NaN where a map
    has no training label) by a linear head and the mean squared error over the labelled entries, on the
    first global view."""

    has_teacher = False

    def __init__(self, cfg: GpsMapsModel, n_outcomes: int, band_mean=(0.5, 0.5, 0.5), band_std=(0.25, 0.25, 0.25)):
        super().__init__()
        self.student = Branch(cfg, band_mean, band_std)
        del self.student.head
        self.head = nn.Linear(cfg.embedding_dim, n_outcomes)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.named_parameters())

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = batch["outcomes"]
        labelled = torch.isfinite(y)
        predicted = self.head(self.student.encoder(batch["global"][0]))
        loss = torch.where(labelled, predicted - torch.nan_to_num(y), 0.0).square().sum() / labelled.sum().clamp_min(1)
        return loss, {"loss_supervised": loss.detach()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.encoder(x)

    student_embed = embed
