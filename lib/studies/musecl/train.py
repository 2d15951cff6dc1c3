"""Training of MuseCL's encoders, its baselines and its fusion, for one city.

MuseCL (Yong and Zhou, IJCAI 2024): two image encoders, each trained on
triplets of regions paired by a *semantic* similarity
(:mod:`lib.data.semantic_pairs`):

* aerial images, positives by POI-distribution similarity;
* street-level views, positives by mobility similarity; a triplet compares
  one random view of each of its regions, and a region's embedding is the
  mean over its views;

then the cross-modality attentional fusion (:mod:`lib.models.fusion`) of the
two (standardised) embeddings, trained so that a linear map of the fused
embedding matches the region's POI-text embedding: by in-batch InfoNCE (the
paper) or by MSE (the reference code). Only regions with POIs have a text
embedding; the fusion learns on them and then fuses every region.

Baselines trained here on the same aerial images: **Tile2Vec** (Jean et al.,
AAAI 2019: the positive a spatial neighbour, the same triplet loss) and
plain **SimCLR** (two augmented views of one image, NT-Xent,
:mod:`lib.losses.ntxent`). Every image encoder is the same ResNet-10
(:class:`lib.models.backbone.TileEmbedder`), trained from scratch with random
90-degree turns and flips of aerial images (the reference's augmentation) and
horizontal flips of street views.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lib.data.augment import aerial_augment
from lib.data.semantic_pairs import PairSampler
from lib.eval.encode import encode, encode_numpy
from lib.losses.ntxent import nt_xent
from lib.losses.triplet import info_nce, triplet_margin_loss
from lib.models.backbone import TileEmbedder, band_statistics
from lib.models.fusion import AdditiveAttentionFusion
from lib.runtime import Runtime
from lib.studies.musecl.params import FusionTrain, MuseclModel, SimclrTrain, VisualTrain

__all__ = ["EncoderResult", "FusionModel", "embed_regions", "hflip", "standardise", "symmetries", "train_fusion",
           "train_simclr",
           "train_triplet_encoder"]


@dataclass
class EncoderResult:
    encoder: TileEmbedder
    history: pd.DataFrame  # per epoch: loss, and for triplets the share of held-out triplets ranked right
    seconds: float


def _steps(n: int, batch: int, cap: int | None) -> int:
    steps = max(1, n // batch)
    return steps if cap is None else min(steps, cap)


def symmetries(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random one of the 8 symmetries of the square per image: what an aerial view has no preference for."""
    return aerial_augment(x, crop_min=1.0, jitter=0.0, generator=generator)


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2 (a street view keeps its up)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


def train_triplet_encoder(
    images: Callable[[np.ndarray, torch.Generator], torch.Tensor],
    all_images: torch.Tensor,
    sampler: PairSampler,
    anchors: np.ndarray,
    model: MuseclModel,
    cfg: VisualTrain,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    runtime: Runtime,
    seed: int,
) -> EncoderResult:
    """Train an encoder on (anchor, positive, negative) triplets of regions.

    ``images(regions, generator)`` gives one image per region index (a random
    view for street views); ``all_images`` (..., C, H, W) sets the band
    statistics. Each step encodes the distinct regions of its triplets once
    and applies :func:`~lib.losses.triplet.triplet_margin_loss` (or InfoNCE of
    anchors against positives). A tenth of the anchors (at least 3) is held
    out: the share of their fixed triplets with ``d(a, p) < d(a, n)`` is the
    label-free progress indicator of each epoch.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    anchors = rng.permutation(np.asarray(anchors))
    n_check = max(3, len(anchors) // 10)
    check, train = anchors[:n_check], anchors[n_check:]
    if len(train) < 3:
        raise ValueError(f"only {len(anchors)} anchors with a similarity profile: too few to train on")
    check_triplets = sampler.sample(check, np.random.default_rng(seed + 1))
    mean, std = band_statistics(all_images)
    encoder = TileEmbedder(all_images.shape[-3], model.width, model.embedding_dim, mean, std).to(runtime.device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(train))
    steps = _steps(len(train), batch, cfg.max_steps_per_epoch)
    rows = []
    for epoch in range(cfg.epochs):
        encoder.train()
        order = rng.permutation(train)
        total = 0.0
        for k in range(steps):
            a, p, n = sampler.sample(order[k * batch:(k + 1) * batch], rng)
            regions, inverse = np.unique(np.concatenate([a, p, n]), return_inverse=True)
            x = augment(images(regions, generator), generator).to(runtime.device)
            z = encoder(x)
            ia, ip, ineg = (torch.as_tensor(part, device=z.device) for part in np.split(inverse, 3))
            if cfg.loss == "triplet":
                loss = triplet_margin_loss(z, ia, ip, ineg, cfg.margin)
            else:
                loss = info_nce(z[ia], z[ip], cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        encoder.eval()
        with torch.no_grad():
            a, p, n = check_triplets
            regions, inverse = np.unique(np.concatenate([a, p, n]), return_inverse=True)
            z = encode(encoder, images(regions, torch.Generator().manual_seed(seed)), runtime=runtime)
            za, zp, zn = (z[torch.as_tensor(part)] for part in np.split(inverse, 3))
            ranked = float(((za - zp).norm(dim=1) < (za - zn).norm(dim=1)).float().mean())
        rows.append({"epoch": epoch + 1, "loss": total / steps, "heldout_triplets_ranked": ranked})
    return EncoderResult(encoder.cpu(), pd.DataFrame(rows), time.perf_counter() - start)


def train_simclr(images: torch.Tensor, model: MuseclModel, cfg: SimclrTrain, runtime: Runtime,
                 seed: int) -> EncoderResult:
    """SimCLR on ``images`` (N, C, H, W): two views per image (:func:`lib.data.augment.aerial_augment`), NT-Xent.

    The projection head (MLP, as in SimCLR) is dropped after training; the
    encoder's embedding is what the probes read.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    mean, std = band_statistics(images)
    encoder = TileEmbedder(images.shape[1], model.width, model.embedding_dim, mean, std)
    head = nn.Sequential(nn.Linear(model.embedding_dim, model.embedding_dim), nn.ReLU(),
                         nn.Linear(model.embedding_dim, model.embedding_dim))
    net = nn.Sequential(encoder, head).to(runtime.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(images))
    steps = _steps(len(images), batch, cfg.max_steps_per_epoch)
    rows = []
    for epoch in range(cfg.epochs):
        net.train()
        order = rng.permutation(len(images))
        total = 0.0
        for k in range(steps):
            x = images[torch.as_tensor(order[k * batch:(k + 1) * batch])]
            v1 = aerial_augment(x, cfg.crop_min, cfg.jitter, generator).to(runtime.device)
            v2 = aerial_augment(x, cfg.crop_min, cfg.jitter, generator).to(runtime.device)
            loss = nt_xent(net(v1), net(v2), cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        rows.append({"epoch": epoch + 1, "loss": total / steps})
    return EncoderResult(encoder.cpu().eval(), pd.DataFrame(rows), time.perf_counter() - start)


def embed_regions(encoder: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime) -> np.ndarray:
    """(N, D) embeddings of ``images`` (N, C, H, W), or the mean over views of (N, V, C, H, W)."""
    z = encode_numpy(encoder, images.reshape(-1, *images.shape[-3:]), batch_size, runtime)
    return z.reshape(*images.shape[:-3], -1).mean(axis=1) if images.dim() == 5 else z


def standardise(x: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and sd 1 over the regions (constant columns to 0)."""
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)


class FusionModel(nn.Module):
    """Attentional fusion of the modal embeddings and the linear map to the text space the objective compares."""

    def __init__(self, dim: int, hidden: int, text_dim: int):
        super().__init__()
        self.fusion = AdditiveAttentionFusion(dim, hidden)
        self.to_text = nn.Linear(dim, text_dim)

    def forward(self, modal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fusion(modal, return_weights=True)


def train_fusion(modal: np.ndarray, text: np.ndarray, has_text: np.ndarray, objective: str, cfg: FusionTrain,
                 seed: int) -> tuple[FusionModel, np.ndarray, np.ndarray, pd.DataFrame]:
    """Train the fusion of ``modal`` (N, M, D) against ``text`` (N, T) on the rows with ``has_text``.

    ``objective``: ``infonce`` (in-batch InfoNCE of ``to_text(f)`` against the
    text embeddings, temperature ``cfg.temperature``) or ``mse``
    (``|to_text(f) - t|^2``, mean over entries). Returns the model, the
    fused embeddings (N, D) and attention weights (N, M) of every region, and
    the loss per epoch. Small: full-batch-sized steps on the CPU.
    """
    if objective not in ("infonce", "mse"):
        raise ValueError(f"objective must be 'infonce' or 'mse', got {objective!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(modal, dtype=torch.float32)
    t = torch.as_tensor(text, dtype=torch.float32)
    rows_with_text = np.flatnonzero(has_text)
    if len(rows_with_text) < 2:
        raise ValueError(f"only {len(rows_with_text)} regions with POI text: too few to train the fusion")
    model = FusionModel(x.shape[-1], cfg.hidden, t.shape[1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = max(2, min(cfg.batch_size, len(rows_with_text)))
    steps = _steps(len(rows_with_text), batch, cfg.max_steps_per_epoch)
    history = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(rows_with_text)
        total = 0.0
        for k in range(steps):
            idx = torch.as_tensor(order[k * batch:(k + 1) * batch])
            fused, _ = model(x[idx])
            predicted = model.to_text(fused)
            loss = (info_nce(predicted, t[idx], cfg.temperature) if objective == "infonce"
                    else F.mse_loss(predicted, t[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": total / steps})
    model.eval()
    with torch.no_grad():
        fused, weights = model(x)
    return model, fused.numpy().astype(np.float64), weights.numpy().astype(np.float64), pd.DataFrame(history)
