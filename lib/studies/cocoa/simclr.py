"""The COCOA study's SimCLR encoder (Chen et al., ICML 2020, trained by :func:`lib.models.simclr.fit_simclr`)
and its linear probe."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lib.data import digit_augment as aug
from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.eval.encode import encode
from lib.eval.probes import logistic_probe
from lib.io import load_module, save_module
from lib.models.convnet import conv_encoder
from lib.models.simclr import SimCLR, fit_simclr
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.cocoa.params import (
    N_CLASSES,
    AugmentParams,
    CocoaTrainParams,
    ProbeParams,
    SimclrParams,
)
from lib.studies.cocoa.probes import knn_predict
from lib.training import FitResult


def build_simclr(s: SimclrParams) -> SimCLR:
    """Three conv blocks (h, the representation explained) and the projection head g."""
    encoder = conv_encoder(in_chans=1, width=s.width, n_blocks=3)
    return SimCLR(encoder, encoder.out_dim, s.projection_dim)


def example_views(images: Tensor, cfg: AugmentParams, n_views: int, seed: int) -> list[Tensor]:
    """``n_views`` random SimCLR views of each image, for showing what the encoder is trained to equate."""
    generator = torch.Generator().manual_seed(seed)
    return [aug.simclr_view(images, **cfg.model_dump(), generator=generator) for _ in range(n_views)]


def train_simclr(
    cfg: CocoaTrainParams, digits: Split[MnistDataset], seed: int, progress: bool = True,
    checkpoint: str | os.PathLike | None = None, fingerprint: str | None = None,
) -> tuple[SimCLR, FitResult]:
    """SimCLR (Chen et al. 2020) on the fit digits, labels unused, initialised and shuffled from ``seed``,
    trained to its validation plateau: after each epoch the validation digits are classified by a k-NN vote among
    the fit digits' representations (:func:`knn_validation`), training stops after ``simclr.patience`` epochs
    without a gain above ``simclr.min_delta`` (at most ``simclr.epochs``), and the best epoch is kept.
    ``checkpoint`` and ``fingerprint`` pass to :func:`lib.training.fit` (resume)."""
    rt = runtime(cfg.device)
    generator = seed_everything(seed)
    s = cfg.simclr
    model = rt.prepare(build_simclr(s))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loader = DataLoader(digits.fit, batch_size=s.batch_size, shuffle=True, drop_last=True, generator=generator)
    settings = cfg.augment.model_dump()
    result = fit_simclr(
        model, lambda epoch: loader, optimizer, view=lambda x: aug.simclr_view(x, **settings),
        temperature=s.temperature, epochs=s.epochs, runtime=rt, checkpoint=checkpoint, fingerprint=fingerprint,
        max_steps_per_epoch=s.max_steps_per_epoch, progress=progress,
        generators=(generator,),  # the loader's shuffling generator, checkpointed so a resumed run shuffles alike
        validate=knn_validation(digits, s.knn_k, rt), patience=s.patience, min_delta=s.min_delta,
    )
    model.load_state_dict(result.best_state)
    return model.eval(), result


def knn_validation(digits: Split[MnistDataset], k: int, rt: Runtime) -> Callable[[SimCLR], float]:
    """SimCLR's validation score: the share of validation digits whose k-NN vote (cosine on h) among the fit
    digits names their class."""

    def validate(model: SimCLR) -> float:
        references = representations(model.encoder, digits.fit.images, rt)
        predicted = knn_predict(references, digits.fit.labels, representations(model.encoder, digits.val.images, rt), k)
        return float((predicted == digits.val.labels).float().mean())

    return validate


def save_simclr(path: str | os.PathLike, model: SimCLR, training: dict, cfg: CocoaTrainParams, seed: int) -> None:
    """Safetensors weights with the parameters, the seed and the training record (:func:`training_record`) as
    metadata."""
    save_module(path, model, {"params": cfg.model_dump(), "seed": seed, "training": training})


def training_record(result: FitResult, max_epochs: int) -> dict:
    """What a training's metadata keeps of :func:`lib.training.fit`'s result: the history (with the validation
    scores), the selected and the last epoch, the maximum, and whether it stopped at its plateau."""
    return {"history": result.history, "selected_epoch": result.best_epoch, "last_epoch": result.last_epoch,
            "max_epochs": max_epochs, "stopped_at_plateau": bool(result.stopped_at_plateau)}


def load_simclr(path: str | os.PathLike) -> tuple[SimCLR, dict]:
    """A SimCLR model (eval mode) and its metadata from :func:`save_simclr`'s file."""

    def build(state: dict, meta: dict) -> SimCLR:
        return build_simclr(CocoaTrainParams.model_validate(meta["params"]).simclr)

    return load_module(path, build)


def representations(encoder: nn.Module, images: Tensor, rt: Runtime) -> Tensor:
    """h(images) on the runtime's device, without gradients: (N, ...) -> (N, D)."""
    return encode(encoder.eval(), rt.batch(images))


def fit_probe(features: Tensor, labels: Tensor, cfg: ProbeParams) -> nn.Linear:
    """The linear probe of the ten digits on frozen representations (:func:`lib.eval.probes.logistic_probe`)."""
    return logistic_probe(features, labels, N_CLASSES, cfg.regularisation, cfg.max_iter)


def probe_accuracy(encoder: nn.Module, probe: nn.Module, split: MnistDataset, rt: Runtime) -> float:
    """Share of ``split`` whose probe prediction on h(x) is the label."""
    features = representations(encoder, split.images, rt)
    with torch.no_grad():
        predicted = probe.to(features.device)(features).argmax(dim=1).cpu()
    return float((predicted == split.labels).float().mean())


def save_probe(path: str | os.PathLike, probe: nn.Linear, metadata: dict) -> None:
    """The probe's weight (10, D) and bias (10,) as safetensors."""
    save_module(path, probe, metadata)


def load_probe(path: str | os.PathLike) -> tuple[nn.Linear, dict]:
    """The probe (eval mode) and its metadata from :func:`save_probe`'s file."""
    return load_module(path, lambda state, meta: nn.Linear(state["weight"].shape[1], state["weight"].shape[0]))


def corpus_majority_class(encoder: nn.Module, probe: nn.Module, corpus: Tensor, rt: Runtime) -> int:
    """The class the probe predicts most often on the corpus (its modal prediction; ties go to the lowest class).

    COCOA's *corpus majority probability* (Lin et al. 2023, Sec. 4; ``CorpusMajorityProb`` in the reference
    code) follows the probe's probability of this class, not of the corpus's true label.
    """
    return majority_class(probe, representations(encoder, corpus, rt))


def majority_class(probe: nn.Module, features: Tensor) -> int:
    """The probe's modal prediction on representations ``features`` (N, D) (ties go to the lowest class)."""
    with torch.no_grad():
        predicted = probe.to(features.device)(features).argmax(dim=1).cpu()
    return int(torch.bincount(predicted, minlength=N_CLASSES).argmax())

