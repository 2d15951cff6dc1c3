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
paper) or by MSE (the reference code); and a three-way fusion that takes the
(reduced) text embedding as a third input, so that the fused vector can carry
the text. Only regions with POIs have a text embedding; the fusion learns on
them and then fuses every region.

A variant fine-tunes the encoders through the alignment
(:func:`finetune_fusion`): the aerial and street-level encoders and the
trained InfoNCE fusion, trained on together by the same InfoNCE alignment
with the text, so the images' features can move towards what the text knows.

The **supervised bound** (:func:`train_supervised`): the same two encoders
and the reduced text embedding, concatenated (the three-way fusion's inputs)
and mapped linearly to the outcomes, trained end to end on the outcomes of
one spatial fold's training regions; it predicts that fold's test regions, so
its R^2 is out of fold on the probes' folds.

Baselines trained here on the same aerial images: **Tile2Vec** (Jean et al.,
AAAI 2019: the positive a spatial neighbour, the same triplet loss) and
plain **SimCLR** (two augmented views of one image, NT-Xent,
:func:`lib.models.simclr.fit_simclr`). Every image encoder is the same ResNet-10
(:class:`lib.models.backbone.TileEmbedder`), trained from scratch with random
90-degree turns and flips of aerial images (the reference's augmentation) and
horizontal flips of street views.

Every model trains through :func:`lib.training.fit` (autocast and
channels-last on a GPU, progress, resume from ``checkpoint``). The batches
of epoch e are drawn from generators seeded by (seed, e) alone, so a run
resumed after epoch e sees the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lib.data.augment import aerial_augment
from lib.data.semantic_pairs import PairSampler
from lib.eval.encode import encode, encode_numpy
from lib.losses.contrastive import info_nce
from lib.losses.triplet import triplet_margin_loss
from lib.models.backbone import TileEmbedder, band_statistics
from lib.models.fusion import AdditiveAttentionFusion
from lib.models.simclr import SimCLR, fit_simclr
from lib.runtime import Runtime
from lib.studies.musecl.params import FusionTrain, MuseclModel, SimclrTrain, SupervisedTrain, VisualTrain
from lib.training import fit, run_fingerprint, unwrap

__all__ = ["EncoderResult", "FinetunedFusion", "FusionModel", "SupervisedRegions", "SupervisedResult",
           "checkpoint_run", "embed_regions", "finetune_fusion", "hflip", "held_out_blocks", "predict_supervised",
           "standardise", "symmetries", "train_fusion", "train_simclr", "train_supervised", "train_triplet_encoder"]


@dataclass
class EncoderResult:
    encoder: TileEmbedder
    history: pd.DataFrame  # per epoch: loss, and for triplets the share of held-out triplets ranked right
    seconds: float
    best_epoch: int  # the epoch whose weights were kept (0-based, as in the history)
    stopped_at_plateau: bool = False  # stopped by patience before its last epoch


def checkpoint_run(city: str) -> str:
    """The run name of a city's checkpoints (``checkpoints/musecl/<city>/<model>/seed_<s>.pt``,
    :func:`lib.training.checkpoint_path`); the stage clears them when it succeeds."""
    return f"musecl/{city}"


def _fingerprint(trainer: str, seed: int, settings: dict, data: tuple) -> str:
    """What a checkpoint must match to be resumed: the trainer, seed and settings, the training data, and the
    source of this module and of every ``lib`` module it imports (:func:`lib.training.run_fingerprint`).
    The number of epochs is left out of the settings: a longer run continues a shorter one's checkpoint."""
    return run_fingerprint({"study": "musecl", "trainer": trainer, "seed": seed, **settings}, data=data,
                           code=("lib.studies.musecl.train",))


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's batches: a function of (seed, epoch) only (see the module docstring)."""
    return np.random.default_rng([seed, epoch])


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
    *,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
) -> EncoderResult:
    """Train an encoder on (anchor, positive, negative) triplets of regions.

    ``images(regions, generator)`` gives one image per region index (a random
    view for street views); ``all_images`` (..., C, H, W) sets the band
    statistics. Each step encodes the distinct regions of its triplets once
    and applies :func:`~lib.losses.triplet.triplet_margin_loss` (or InfoNCE of
    anchors against positives, :func:`~lib.losses.contrastive.info_nce`). A
    tenth of the anchors (at least 3) is held out: the share of their fixed
    triplets with ``d(a, p) < d(a, n)`` is the label-free validation score of
    each epoch (``heldout_triplets_ranked``), training stops at its plateau
    (no gain above ``cfg.min_delta`` for ``cfg.patience`` epochs; ``epochs``
    is the most) and the epoch that ranks most of them right is kept (the
    first of equals). With ``checkpoint`` (a file,
    :func:`lib.training.checkpoint_path`) the run resumes from it, unless it
    was written for other settings, data or code.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    anchors = rng.permutation(np.asarray(anchors))
    n_check = max(3, len(anchors) // 10)
    check, train = anchors[:n_check], anchors[n_check:]
    if len(train) < 3:
        raise ValueError(f"only {len(anchors)} anchors with a similarity profile: too few to train on")
    check_triplets = sampler.sample(check, np.random.default_rng(seed + 1))
    mean, std = band_statistics(all_images)
    encoder = runtime.prepare(TileEmbedder(all_images.shape[-3], model.width, model.embedding_dim, mean, std))
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(train))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images of the distinct regions of a step's triplets, (3, T) rows of anchors, positives, negatives)."""
        epoch_rng = _epoch_rng(seed, epoch)
        generator = torch.Generator().manual_seed(int(epoch_rng.integers(2**62)))
        order = epoch_rng.permutation(train)
        for k in range(len(train) // batch):
            a, p, n = sampler.sample(order[k * batch:(k + 1) * batch], epoch_rng)
            regions, inverse = np.unique(np.concatenate([a, p, n]), return_inverse=True)
            yield augment(images(regions, generator), generator), torch.as_tensor(inverse.reshape(3, -1))

    def triplet_loss(net: nn.Module, step: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, (ia, ip, ineg) = step
        z = net(x).float()
        if cfg.loss == "triplet":
            return triplet_margin_loss(z, ia, ip, ineg, cfg.margin)
        return info_nce(z[ia], z[ip], temperature=cfg.temperature)

    def heldout_triplets_ranked(net: nn.Module) -> float:
        a, p, n = check_triplets
        regions, inverse = np.unique(np.concatenate([a, p, n]), return_inverse=True)
        z = encode(net, images(regions, torch.Generator().manual_seed(seed)), runtime=runtime)
        za, zp, zn = (z[torch.as_tensor(part)] for part in np.split(inverse, 3))
        return float(((za - zp).norm(dim=1) < (za - zn).norm(dim=1)).float().mean())

    fingerprint = None if checkpoint is None else _fingerprint(
        "triplet", seed, {"model": model.model_dump(), "train": cfg.model_dump(exclude={"epochs"}), "augment": augment.__qualname__},
        (all_images, np.asarray(anchors), sampler.similarity, np.asarray(sampler.top_k)))
    result = fit(encoder, None, batches, optimizer, epochs=cfg.epochs, runtime=runtime, forward=triplet_loss,
                 validate=heldout_triplets_ranked, patience=cfg.patience, min_delta=cfg.min_delta,
                 max_steps_per_epoch=cfg.max_steps_per_epoch, progress=progress,
                 checkpoint=checkpoint, fingerprint=fingerprint)
    encoder.load_state_dict(result.best_state)
    history = pd.DataFrame(result.history).rename(columns={"val_score": "heldout_triplets_ranked"})
    return EncoderResult(encoder.cpu().eval(), history, time.perf_counter() - start, result.best_epoch,
                         result.stopped_at_plateau)


def train_simclr(images: torch.Tensor, model: MuseclModel, cfg: SimclrTrain, runtime: Runtime, seed: int, *,
                 progress: bool = True, checkpoint: str | os.PathLike | None = None) -> EncoderResult:
    """SimCLR on ``images`` (N, C, H, W) by :func:`lib.models.simclr.fit_simclr`: two views per image
    (:func:`lib.data.augment.aerial_augment`, drawn from torch's global generator, which a checkpoint
    restores), NT-Xent; the last epoch is kept.

    The projection head (as wide as the embedding) is dropped after training;
    the encoder's embedding is what the probes read. ``checkpoint``: as
    :func:`train_triplet_encoder`.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    mean, std = band_statistics(images)
    encoder = TileEmbedder(images.shape[1], model.width, model.embedding_dim, mean, std)
    net = runtime.prepare(SimCLR(encoder, model.embedding_dim, model.embedding_dim))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(images))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, their indices): SimCLR reads no labels."""
        order = torch.as_tensor(_epoch_rng(seed, epoch).permutation(len(images)))
        for k in range(len(images) // batch):
            idx = order[k * batch:(k + 1) * batch]
            yield images[idx], idx

    fingerprint = None if checkpoint is None else _fingerprint(
        "simclr", seed, {"model": model.model_dump(), "train": cfg.model_dump(exclude={"epochs"})}, (images,))
    result = fit_simclr(net, batches, optimizer, view=lambda x: aerial_augment(x, cfg.crop_min, cfg.jitter),
                        temperature=cfg.temperature, epochs=cfg.epochs, runtime=runtime, checkpoint=checkpoint,
                        fingerprint=fingerprint, max_steps_per_epoch=cfg.max_steps_per_epoch, progress=progress)
    net.load_state_dict(result.best_state)
    return EncoderResult(net.encoder.cpu().eval(), pd.DataFrame(result.history), time.perf_counter() - start,
                         result.best_epoch)


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
                 runtime: Runtime, seed: int, *, progress: bool = True, checkpoint: str | os.PathLike | None = None
                 ) -> tuple[FusionModel, np.ndarray, np.ndarray, pd.DataFrame]:
    """Train the fusion of ``modal`` (N, M, D) against ``text`` (N, T) on the rows with ``has_text``.

    ``objective``: ``infonce`` (in-batch InfoNCE of ``to_text(f)`` against the
    text embeddings, temperature ``cfg.temperature``,
    :func:`~lib.losses.contrastive.info_nce`) or ``mse`` (``|to_text(f) - t|^2``,
    mean over entries). The last epoch is kept; ``checkpoint``: as
    :func:`train_triplet_encoder`. Returns the model (on the CPU), the fused
    embeddings (N, D) and attention weights (N, M) of every region, and the
    loss per epoch.
    """
    if objective not in ("infonce", "mse"):
        raise ValueError(f"objective must be 'infonce' or 'mse', got {objective!r}")
    if modal.ndim != 3 or text.ndim != 2 or not len(modal) == len(text) == len(has_text):
        raise ValueError(f"modal must be (N, M, D), text (N, T) and has_text (N,), got shapes {modal.shape}, "
                         f"{text.shape}, {np.shape(has_text)}")
    torch.manual_seed(seed)
    x = torch.as_tensor(modal, dtype=torch.float32)
    t = torch.as_tensor(text, dtype=torch.float32)
    rows_with_text = np.flatnonzero(has_text)
    if len(rows_with_text) < 2:
        raise ValueError(f"only {len(rows_with_text)} regions with POI text: too few to train the fusion")
    model = runtime.prepare(FusionModel(x.shape[-1], cfg.hidden, t.shape[1]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = max(2, min(cfg.batch_size, len(rows_with_text)))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(modal embeddings (B, M, D), text embeddings (B, T)) of regions with POI text."""
        order = torch.as_tensor(_epoch_rng(seed, epoch).permutation(rows_with_text))
        for k in range(len(rows_with_text) // batch):
            idx = order[k * batch:(k + 1) * batch]
            yield x[idx], t[idx]

    def alignment_loss(net: nn.Module, step: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        modal_batch, text_batch = step
        fused, _ = net(modal_batch)
        predicted = net.to_text(fused).float()
        if objective == "infonce":
            return info_nce(predicted, text_batch, temperature=cfg.temperature)
        return F.mse_loss(predicted, text_batch)

    fingerprint = None if checkpoint is None else _fingerprint(
        "fusion", seed, {"objective": objective, "train": cfg.model_dump(exclude={"epochs"})}, (x, t, np.asarray(has_text)))
    result = fit(model, None, batches, optimizer, epochs=cfg.epochs, runtime=runtime, forward=alignment_loss,
                 max_steps_per_epoch=cfg.max_steps_per_epoch, progress=progress, checkpoint=checkpoint,
                 fingerprint=fingerprint)
    model.load_state_dict(result.best_state)
    model.eval()
    with torch.no_grad():
        fused, weights = model(x.to(runtime.device))
    return (model.cpu(), fused.float().cpu().numpy().astype(np.float64),
            weights.float().cpu().numpy().astype(np.float64), pd.DataFrame(result.history))


def _image_batches(aerial: torch.Tensor, street: torch.Tensor, rows: np.ndarray, batch: int, seed: int, epoch: int,
                   *per_region: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of shuffled ``rows`` in batches: (aerial images in a random symmetry (B, C, H, W), one random
    street view each, flipped at random (B, 1, C, H, W), then each of ``per_region`` at those rows), drawn from
    generators seeded by (seed, epoch) alone."""
    epoch_rng = _epoch_rng(seed, epoch)
    generator = torch.Generator().manual_seed(int(epoch_rng.integers(2**62)))
    order = epoch_rng.permutation(rows)
    for k in range(len(order) // batch):
        idx = torch.as_tensor(order[k * batch:(k + 1) * batch])
        view = torch.randint(street.shape[1], (len(idx),), generator=generator)
        yield (symmetries(aerial[idx], generator), hflip(street[idx, view], generator)[:, None],
               *(values[idx] for values in per_region))


class FinetunedFusion(nn.Module):
    """The encoders and the fusion as one network: ``fusion([(aerial(a) - m_a) / s_a, (mean_v street(v) - m_s) / s_s])``.

    ``m`` and ``s`` (buffers) are the per-dimension mean and sd over the regions of the encoders' embeddings
    before fine-tuning, the standardisation the frozen fusion was trained on; ``forward`` returns the fused
    embedding and the attention weights.
    """

    def __init__(self, aerial: nn.Module, street: nn.Module, fusion: FusionModel, aerial_z: np.ndarray,
                 street_z: np.ndarray):
        super().__init__()
        self.aerial, self.street, self.fusion = aerial, street, fusion
        for name, z in (("aerial", aerial_z), ("street", street_z)):
            sd = z.std(0)
            self.register_buffer(f"{name}_mean", torch.as_tensor(z.mean(0), dtype=torch.float32)[None])
            self.register_buffer(f"{name}_sd", torch.as_tensor(np.where(sd > 0, sd, 1.0), dtype=torch.float32)[None])

    def forward(self, aerial: torch.Tensor, street: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``aerial`` (B, C, H, W), ``street`` (B, V, C, H, W) -> (fused (B, D), weights (B, 2))."""
        za = (self.aerial(aerial) - self.aerial_mean) / self.aerial_sd
        zs = self.street(street.flatten(0, 1)).reshape(*street.shape[:2], -1).mean(1)
        zs = (zs - self.street_mean) / self.street_sd
        return self.fusion(torch.stack([za, zs], dim=1))


def finetune_fusion(network: FinetunedFusion, aerial: torch.Tensor, street: torch.Tensor, text: np.ndarray,
                    has_text: np.ndarray, cfg: FusionTrain, runtime: Runtime, seed: int, *, progress: bool = True,
                    checkpoint: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Fine-tune ``network`` (its encoders and its fusion) by the InfoNCE alignment of ``to_text(fused)`` with
    ``text`` (N, T) on the regions with ``has_text``, for ``cfg.finetune_epochs`` at ``cfg.finetune_lr``.

    A step sees each region's aerial image in a random symmetry and one random street view flipped at random
    (as the triplet encoders did). The last epoch is kept; ``checkpoint``: as :func:`train_triplet_encoder`.
    Returns the fused embeddings (N, D) and attention weights (N, 2) of every region (all views averaged), and
    the loss per epoch.
    """
    rows_with_text = np.flatnonzero(has_text)
    if len(rows_with_text) < 2:
        raise ValueError(f"only {len(rows_with_text)} regions with POI text: too few to fine-tune the fusion")
    if not len(aerial) == len(street) == len(text) == len(has_text):
        raise ValueError(f"one row per region needed: aerial {tuple(aerial.shape)}, street {tuple(street.shape)}, "
                         f"text {np.shape(text)}, has_text {np.shape(has_text)}")
    torch.manual_seed(seed)
    t = torch.as_tensor(np.asarray(text), dtype=torch.float32)
    net = runtime.prepare(network)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.finetune_lr, weight_decay=cfg.weight_decay)
    batch = max(2, min(cfg.batch_size, len(rows_with_text)))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        return _image_batches(aerial, street, rows_with_text, batch, seed, epoch, t)

    def alignment_loss(net_: nn.Module, step: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, v, text_batch = step
        module = unwrap(net_)
        fused, _ = module(a, v)
        return info_nce(module.fusion.to_text(fused).float(), text_batch, temperature=cfg.temperature)

    fingerprint = None if checkpoint is None else _fingerprint(
        "finetune", seed, {"train": cfg.model_dump(exclude={"epochs", "finetune_epochs"})},
        (aerial, street, t, np.asarray(has_text), *(p.detach().cpu() for p in network.state_dict().values())))
    result = fit(net, None, batches, optimizer, epochs=cfg.finetune_epochs, runtime=runtime, forward=alignment_loss,
                 max_steps_per_epoch=cfg.max_steps_per_epoch, progress=progress, checkpoint=checkpoint,
                 fingerprint=fingerprint)
    net.load_state_dict(result.best_state)
    net.eval()
    fused, weights = [], []
    with torch.no_grad():
        for idx in torch.arange(len(aerial)).split(128):
            with runtime.autocast():
                f, w = net(runtime.batch(aerial[idx]), street[idx].to(runtime.device))
            fused.append(f.float().cpu())
            weights.append(w.float().cpu())
    net.cpu()
    return (torch.cat(fused).numpy().astype(np.float64), torch.cat(weights).numpy().astype(np.float64),
            pd.DataFrame(result.history))


class SupervisedRegions(nn.Module):
    """The supervised bound's network: ``head([aerial(a), mean over views of street(v), (t - mean) / sd])``.

    ``aerial`` and ``street`` are MuseCL's encoders (:class:`~lib.models.backbone.TileEmbedder`), ``t`` the
    reduced text embedding (standardised by the buffers ``extra_mean`` and ``extra_sd``), ``head`` one
    linear layer to the standardised outcomes; ``forward`` returns the outcomes in their own units
    (buffers ``target_mean`` and ``target_sd``, set from the fitting regions).
    """

    def __init__(self, aerial: TileEmbedder, street: TileEmbedder, extra_mean: np.ndarray, extra_sd: np.ndarray,
                 target_mean: np.ndarray, target_sd: np.ndarray):
        super().__init__()
        self.aerial, self.street = aerial, street
        for name, value in (("extra_mean", extra_mean), ("extra_sd", extra_sd), ("target_mean", target_mean),
                            ("target_sd", target_sd)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32).reshape(1, -1))
        width = aerial.project.out_features + street.project.out_features + self.extra_mean.shape[1]
        self.head = nn.Linear(width, self.target_mean.shape[1])

    def standardised(self, aerial: torch.Tensor, street: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """(B, T) standardised outcomes of regions with ``aerial`` (B, C, H, W), ``street`` (B, V, C, H, W)
        and ``extra`` (B, E)."""
        zs = self.street(street.flatten(0, 1)).reshape(*street.shape[:2], -1).mean(1)
        z = torch.cat([self.aerial(aerial), zs, (extra - self.extra_mean) / self.extra_sd], dim=1)
        return self.head(z)

    def forward(self, aerial: torch.Tensor, street: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.standardised(aerial, street, extra) * self.target_sd + self.target_mean


@dataclass
class SupervisedResult:
    model: SupervisedRegions
    history: pd.DataFrame  # per epoch: loss and the held-out R^2 (mean over outcomes)
    seconds: float
    best_epoch: int
    stopped_at_plateau: bool


def held_out_blocks(rows: np.ndarray, blocks: np.ndarray, seed: int, share: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)``: ``rows`` split by whole spatial blocks (``blocks`` (n,), one label per region),
    about ``share`` of the blocks (at least one, never all) held out, drawn by ``seed``."""
    rows = np.asarray(rows)
    labels = np.unique(blocks[rows])
    if len(labels) < 2:
        raise ValueError(f"the training regions span {len(labels)} spatial block(s): the supervised bound's "
                         "held-out part needs two or more (use smaller blocks)")
    n_held = min(len(labels) - 1, max(1, round(share * len(labels))))
    held = np.random.default_rng([seed, len(rows)]).choice(labels, size=n_held, replace=False)
    mask = np.isin(blocks[rows], held)
    return rows[~mask], rows[mask]


def _r2_mean(observed: np.ndarray, predicted: np.ndarray) -> float:
    """R^2 per outcome (columns), averaged."""
    total = ((observed - observed.mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - ((observed - predicted) ** 2).sum(0) / np.where(total > 0, total, np.nan)))


def predict_supervised(model: nn.Module, aerial: torch.Tensor, street: torch.Tensor, extra: np.ndarray,
                       rows: np.ndarray, batch_size: int, runtime: Runtime) -> np.ndarray:
    """(len(rows), T) outcomes ``model`` predicts for ``rows``, every street view of a region averaged."""
    model.eval()
    rows = np.asarray(rows)
    x = torch.as_tensor(np.asarray(extra), dtype=torch.float32)
    out = []
    with torch.no_grad():
        for k in range(0, len(rows), batch_size):
            idx = torch.as_tensor(rows[k:k + batch_size])
            with runtime.autocast():
                out.append(model(*(runtime.batch(t[idx]) for t in (aerial, street, x))).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.empty((0, model.head.out_features))


def train_supervised(aerial: torch.Tensor, street: torch.Tensor, extra: np.ndarray, targets: np.ndarray,
                     fit_rows: np.ndarray, held_out_rows: np.ndarray, model: MuseclModel, cfg: SupervisedTrain,
                     runtime: Runtime, seed: int, *, progress: bool = True,
                     checkpoint: str | os.PathLike | None = None) -> SupervisedResult:
    """Train the supervised bound (:class:`SupervisedRegions`) on the outcomes ``targets`` (N, T) of ``fit_rows``.

    ``aerial`` (N, C, H, W) and ``street`` (N, V, C, H, W) are every region's
    images, ``extra`` (N, E) its reduced text embedding; only the rows of
    ``fit_rows`` are read for the gradient and the standardisation of inputs
    and outcomes. A step sees one random street view per region, the aerial
    image in a random symmetry and the views flipped left-right, as the
    triplet encoders do; the loss is the mean squared error of the
    standardised outcomes. After each epoch the R^2 on ``held_out_rows``
    (mean over outcomes, all views averaged) is the validation score: training
    stops at its plateau (``cfg.patience``, ``cfg.min_delta``) and the best
    epoch is kept. ``checkpoint``: as :func:`train_triplet_encoder`.
    """
    start = time.perf_counter()
    y = np.asarray(targets, np.float64)
    extra = np.asarray(extra, np.float64)
    fit_rows, held_out_rows = np.asarray(fit_rows), np.asarray(held_out_rows)
    if y.ndim != 2 or extra.ndim != 2 or not len(y) == len(extra) == len(aerial) == len(street):
        raise ValueError(f"one row per region needed: targets {y.shape}, extra {extra.shape}, aerial "
                         f"{tuple(aerial.shape)}, street {tuple(street.shape)}")
    if len(fit_rows) < 2 or len(held_out_rows) < 2:
        raise ValueError(f"{len(fit_rows)} fitting and {len(held_out_rows)} held-out regions: two or more each needed")
    if np.intersect1d(fit_rows, held_out_rows).size:
        raise ValueError("fit_rows and held_out_rows overlap")
    if not (np.isfinite(y[fit_rows]).all() and np.isfinite(y[held_out_rows]).all()):
        raise ValueError("the outcomes of the training regions must be finite")
    torch.manual_seed(seed)
    fit_images = aerial[torch.as_tensor(fit_rows)]
    fit_views = street[torch.as_tensor(fit_rows)]
    encoders = []
    for images in (fit_images, fit_views.flatten(0, 1)):
        mean, std = band_statistics(images)
        encoders.append(TileEmbedder(images.shape[1], model.width, model.embedding_dim, mean, std))
    e_sd, t_sd = extra[fit_rows].std(0), y[fit_rows].std(0)
    net = runtime.prepare(SupervisedRegions(*encoders, extra[fit_rows].mean(0), np.where(e_sd > 0, e_sd, 1.0),
                                            y[fit_rows].mean(0), np.where(t_sd > 0, t_sd, 1.0)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_extra = torch.as_tensor(extra, dtype=torch.float32)
    y_all = torch.as_tensor(y, dtype=torch.float32)
    batch = min(cfg.batch_size, len(fit_rows))

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        return _image_batches(aerial, street, fit_rows, batch, seed, epoch, x_extra, y_all)

    def mse(net_: nn.Module, step: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, v, t, target = step
        module = unwrap(net_)
        return F.mse_loss(module.standardised(a, v, t).float(), (target - module.target_mean) / module.target_sd)

    def held_out_r2(net_: nn.Module) -> float:
        predicted = predict_supervised(net_, aerial, street, extra, held_out_rows, 256, runtime)
        return _r2_mean(y[held_out_rows], predicted)

    fingerprint = None if checkpoint is None else _fingerprint(
        "supervised", seed, {"model": model.model_dump(), "train": cfg.model_dump(exclude={"epochs"})},
        (aerial, street, extra, y, fit_rows, held_out_rows))
    result = fit(net, None, batches, optimizer, epochs=cfg.epochs, runtime=runtime, forward=mse,
                 validate=held_out_r2, patience=cfg.patience, min_delta=cfg.min_delta,
                 max_steps_per_epoch=cfg.max_steps_per_epoch, progress=progress, checkpoint=checkpoint,
                 fingerprint=fingerprint)
    net.load_state_dict(result.best_state)
    history = pd.DataFrame(result.history).rename(columns={"val_score": "heldout_r2"})
    return SupervisedResult(net.cpu().eval(), history, time.perf_counter() - start, result.best_epoch,
                            result.stopped_at_plateau)
