"""The classification ladder's bound: SimCLR's encoder architecture trained with the labels.

The same conv encoder h as SimCLR's (:func:`lib.studies.cocoa.simclr.build_simclr`)
and a linear layer to the ten classes, trained end to end by cross-entropy on the
fit digits with SimCLR's random views as augmentation, to the plateau of its
accuracy on the validation digits. What a representation of this size can give
when the labels are used; the SimCLR probe's distance to it is what the
self-supervision leaves out.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lib.data import digit_augment as aug
from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.io import load_module, save_module
from lib.models.convnet import conv_encoder
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.cocoa.params import N_CLASSES, CocoaTrainParams
from lib.studies.cocoa.simclr import representations, training_record
from lib.training import FitResult, fit


def build_classifier(width: int) -> nn.Sequential:
    """SimCLR's encoder (three conv blocks, ``width`` channels first) and a linear layer to the classes."""
    encoder = conv_encoder(in_chans=1, width=width, n_blocks=3)
    return nn.Sequential(encoder, nn.Linear(encoder.out_dim, N_CLASSES))


def predict(model: nn.Module, digits: MnistDataset, rt: Runtime) -> torch.Tensor:
    """The classifier's labels (N,) for ``digits``."""
    return representations(model, digits.images, rt).argmax(dim=1)


def train_supervised(
    cfg: CocoaTrainParams, digits: Split[MnistDataset], seed: int, progress: bool = True,
    checkpoint: str | os.PathLike | None = None, fingerprint: str | None = None,
) -> tuple[nn.Sequential, FitResult]:
    """Cross-entropy on the fit digits' SimCLR views, initialised and shuffled from ``seed``, stopped at the
    plateau of the validation accuracy (``supervised.patience``, ``min_delta``, at most ``epochs``); the best
    epoch is kept."""
    rt = runtime(cfg.device)
    generator = seed_everything(seed)
    s = cfg.supervised
    model = rt.prepare(build_classifier(cfg.simclr.width))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loader = DataLoader(digits.fit, batch_size=s.batch_size, shuffle=True, drop_last=True, generator=generator)
    settings = cfg.augment.model_dump()

    def validate(module: nn.Module) -> float:
        return float((predict(module, digits.val, rt) == digits.val.labels).float().mean())

    result = fit(
        model, F.cross_entropy, lambda epoch: loader, optimizer, epochs=s.epochs, runtime=rt,
        augment=lambda x: aug.simclr_view(x, **settings), validate=validate, patience=s.patience,
        min_delta=s.min_delta, max_steps_per_epoch=s.max_steps_per_epoch, progress=progress, checkpoint=checkpoint,
        fingerprint=fingerprint, generators=(generator,),
    )
    model.load_state_dict(result.best_state)
    return model.eval(), result


def save_supervised(path: str | os.PathLike, model: nn.Module, result: FitResult, cfg: CocoaTrainParams, seed: int) -> None:
    """Safetensors weights; the parameters, the seed and the training record as metadata."""
    save_module(path, model, {"params": cfg.model_dump(), "seed": seed,
                              "training": training_record(result, cfg.supervised.epochs)})


def load_supervised(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    """The classifier (eval mode) and its metadata from :func:`save_supervised`'s file."""
    return load_module(path, lambda state, meta: build_classifier(CocoaTrainParams.model_validate(meta["params"]).simclr.width))
