"""COCOA's image-text model (paper Sec. 5.2): an image encoder aligned with the frozen MiniLM text encoder.

Trained on single-digit scenes against the ten digit captions with CLIP's loss
(:class:`lib.losses.contrastive.GroupedClipLoss`); the text tower stays locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.data.augment import random_affine
from lib.data.digit_scenes import DigitScenes
from lib.io import load_module, load_weights, save_module, save_weights
from lib.losses.contrastive import GroupedClipLoss
from lib.models.convnet import conv_encoder
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.cocoa.params import N_CLASSES, ClipParams, CocoaTrainParams
from lib.studies.cocoa.simclr import representations, training_record
from lib.training import FitResult, fit


def build_image_encoder(cfg: ClipParams, dim: int) -> nn.Sequential:
    """Four conv blocks (56 px -> 4 x 4), global pooling, a linear map into the text space (D = ``dim``)."""
    backbone = conv_encoder(in_chans=1, width=cfg.width, n_blocks=4)
    return nn.Sequential(backbone, nn.Linear(backbone.out_dim, dim))


def grouped_batches(labels: Tensor, groups_per_batch: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches of ``groups_per_batch`` groups, each group one scene of every digit in digit order.

    Each epoch shuffles every digit's scenes and pairs them up column by column;
    scenes beyond the rarest digit's count wait for another epoch's shuffle.
    """
    per_class = [(labels == c).nonzero().squeeze(1) for c in range(N_CLASSES)]
    n = min(len(idx) for idx in per_class)
    columns = torch.stack([idx[torch.randperm(len(idx), generator=generator)[:n]] for idx in per_class], dim=1)  # (n, 10)
    for start in range(0, n - groups_per_batch + 1, groups_per_batch):
        yield columns[start : start + groups_per_batch].reshape(-1)


def train_image_text(
    cfg: CocoaTrainParams, scenes: DigitScenes, val_scenes: DigitScenes, caption_embeddings: Tensor, seed: int,
    progress: bool = True, checkpoint: str | os.PathLike | None = None, fingerprint: str | None = None,
) -> tuple[nn.Sequential, GroupedClipLoss, FitResult]:
    """The image encoder aligned with the frozen caption embeddings (the text tower stays locked, as in LiT,
    Zhai et al., CVPR 2022, with the roles swapped), initialised and batched from ``seed``, trained to the plateau
    of its caption matching accuracy on ``val_scenes`` (``clip.patience``, ``min_delta``, at most ``epochs``); the
    best epoch is kept. ``checkpoint`` and ``fingerprint`` pass to :func:`lib.training.fit` (resume)."""
    rt = runtime(cfg.device)
    generator = seed_everything(seed)
    c = cfg.clip
    encoder = rt.prepare(build_image_encoder(c, caption_embeddings.shape[1]))
    loss = GroupedClipLoss(caption_embeddings, c.init_temperature).to(rt.device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *loss.parameters()], lr=c.lr, weight_decay=c.weight_decay)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in grouped_batches(scenes.labels, c.groups_per_batch, generator):
            yield scenes.images[idx], scenes.labels[idx]

    result = fit(
        encoder, loss, batches, optimizer, epochs=c.epochs, runtime=rt, max_steps_per_epoch=c.max_steps_per_epoch,
        progress=progress, checkpoint=checkpoint, fingerprint=fingerprint,
        generators=[generator],  # the batches' own generator: a resumed run must draw on from where it stopped
        # Shift the canvas by up to a tenth of its side: new placements each epoch against over-fitting.
        augment=lambda x: random_affine(x, degrees=0.0, translate=0.1),
        validate=lambda model: caption_matching_accuracy(model, caption_embeddings, val_scenes, rt),
        patience=c.patience, min_delta=c.min_delta,
    )
    encoder.load_state_dict(result.best_state)
    return encoder.eval(), loss, result


def save_image_text(
    path: str | os.PathLike, encoder: nn.Module, loss: GroupedClipLoss, result: FitResult, cfg: CocoaTrainParams,
    seed: int,
) -> None:
    """The image encoder's weights; parameters, seed, training record (:func:`~lib.studies.cocoa.simclr.training_record`)
    and the learned logit scale as metadata."""
    save_module(path, encoder, {
        "params": cfg.model_dump(), "seed": seed, "training": training_record(result, cfg.clip.epochs),
        "logit_scale": loss.logit_scale().item(),
    })


def load_image_text(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    """The image encoder (eval mode) and its metadata from :func:`save_image_text`'s file."""
    return load_module(path, lambda state, meta: build_image_encoder(
        CocoaTrainParams.model_validate(meta["params"]).clip, state["1.weight"].shape[0]))


def save_captions(path: str | os.PathLike, captions: list[str], embeddings: Tensor) -> None:
    """The caption embeddings (10, D), computed once, with the captions as metadata."""
    save_weights(path, {"embeddings": embeddings}, {"captions": captions})


def load_captions(path: str | os.PathLike) -> tuple[list[str], Tensor]:
    """(captions, embeddings (10, D)) from :func:`save_captions`'s file."""
    tensors, meta = load_weights(path)
    return meta["captions"], tensors["embeddings"]


def caption_matching_accuracy(encoder: nn.Module, caption_embeddings: Tensor, scenes: DigitScenes, rt: Runtime) -> float:
    """Share of scenes whose most cosine-similar caption names their digit.

    Caption matching, not zero-shot classification: the image encoder was trained
    against exactly these ten captions (on other scenes)."""
    images = F.normalize(representations(encoder, scenes.images, rt), dim=1)
    predicted = (images @ F.normalize(caption_embeddings.to(images), dim=1).T).argmax(dim=1).cpu()
    return float((predicted == scenes.labels).float().mean())
