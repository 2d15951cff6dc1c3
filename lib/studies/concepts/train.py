"""Training the concepts study's two variants (RNC + linear probe, L1 end to end).

Each training runs to its validation plateau: :func:`lib.training.fit` stops
it after ``patience`` epochs without a validation R^2 gain above ``min_delta``,
``epochs`` being the maximum; the epoch kept is the best on validation. The
model's metadata records the epoch kept, the last epoch trained and whether
the run stopped at a plateau (``stopped_at_plateau``) or at its maximum.

Each (variant, seed) checkpoints after every epoch into
``checkpoints/concepts/<city>/<variant>/seed_<s>.pt`` (:func:`checkpoint_run`),
fingerprinted by its parameters, seed, tiles and code: a stage killed mid-way
reruns only what is unfinished, with the bytes an uninterrupted run writes.
The stage removes them when it succeeds (:func:`lib.training.clear_checkpoints`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from torch import nn

from lib.data.augment import aerial_augment
from lib.data.splits import Split
from lib.data.tiles import TileData
from lib.eval.probes import ridge_probe
from lib.io import save_module
from lib.losses.rnc import RnCLoss
from lib.runtime import runtime, seed_everything
from lib.studies.concepts.data import split_for
from lib.studies.concepts.model import VARIANTS, Embedder, TrainedModel, apply, build_model, model_path
from lib.studies.concepts.params import ConceptsTrainParams
from lib.training import checkpoint_path, fit, run_fingerprint, warmup_cosine


def n_batches(n: int, batch_size: int) -> int:
    """Batches per epoch of :func:`epoch_batches` for ``n`` items."""
    return max(n // batch_size, 1)


def epoch_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int) -> Callable[[int], Iterator]:
    """``batches(epoch)``: shuffled (images, targets) batches, the order seeded by (seed, epoch).

    A last batch smaller than ``batch_size`` is dropped (RNC needs many pairs
    per batch) unless it would be the only one.
    """

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(epoch_seed))
        chunks = order.split(batch_size)
        for chunk in chunks if len(chunks) == 1 else [c for c in chunks if len(c) == batch_size]:
            yield images[chunk], targets[chunk]

    return batches


def train_variant(cfg: ConceptsTrainParams, data: TileData, split: Split, variant: str, seed: int,
                  out_path: str | os.PathLike | None = None, progress: bool = True,
                  checkpoint: str | os.PathLike | None = None) -> TrainedModel:
    """Train one variant (``rnc`` or ``baseline``) with ``seed``, select its epoch on validation R^2, save safetensors.

    The outcome is standardised with the fit tiles' mean and sd. ``rnc``:
    the encoder learns with the RNC loss on two augmented views of each tile
    (views (2n, D) as ``cat([view_1, view_2])``); after each epoch a ridge probe
    on the frozen fit embeddings is scored on the validation tiles, and the
    best epoch's encoder gets the probe as its head. ``baseline``: the whole
    model learns with L1 loss |f(x) - y| on one augmented view. Both stop at
    their validation plateau (module docstring) under a constant learning rate
    or a linear warm-up and cosine decay over the maximum epochs. ``checkpoint``: the file to
    resume from and to checkpoint to after each epoch (:func:`lib.training.fit`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    rt = runtime(cfg.device)
    seed_everything(seed)
    y_mean, y_std = float(data.outcome[split.fit].mean()), float(data.outcome[split.fit].std()) or 1.0
    y = torch.from_numpy((data.outcome - y_mean) / y_std).float()
    model = rt.prepare(build_model(cfg.model, data, split.fit))
    fit_images, val_images = data.images[torch.from_numpy(split.fit)], data.images[torch.from_numpy(split.val)]
    fit_y, val_y = y[split.fit].numpy(), y[split.val].numpy()
    train_cfg = cfg.rnc if variant == "rnc" else cfg.baseline
    batches = epoch_batches(fit_images, y[split.fit], train_cfg.batch_size, seed)

    def view(x: torch.Tensor) -> torch.Tensor:
        return aerial_augment(x, cfg.augment.crop_min, cfg.augment.jitter)

    def probe() -> tuple[Ridge, float, float]:
        fit_emb = apply(model, fit_images, rt, cfg.inference_batch_size, embed=True)
        val_emb = apply(model, val_images, rt, cfg.inference_batch_size, embed=True)
        return ridge_probe(fit_emb, fit_y, val_emb, val_y, cfg.probe.ridge_alphas)

    if variant == "rnc":
        network, params = Embedder(model), [*model.encoder.parameters(), *model.project.parameters()]
        rnc = RnCLoss(cfg.rnc.temperature)

        def augment(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([view(x), view(x)])

        def loss_fn(views: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return rnc(views.float(), target)

        def validate(net: nn.Module) -> float:
            return probe()[2]
    else:
        network, params, augment = model, list(model.parameters()), view

        def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.l1_loss(pred[:, 0].float(), target)

        def validate(net: nn.Module) -> float:
            return float(r2_score(val_y, apply(model, val_images, rt, cfg.inference_batch_size, embed=False)[:, 0]))

    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    steps = n_batches(len(split.fit), train_cfg.batch_size)
    if train_cfg.max_steps_per_epoch is not None:
        steps = min(steps, train_cfg.max_steps_per_epoch)
    schedule = (warmup_cosine(train_cfg.warmup_epochs * steps) if train_cfg.schedule == "warmup_cosine" else None)
    fingerprint = None if checkpoint is None else run_fingerprint(
        # not the seeds list: adding a seed must not retrain the others
        {"study": "concepts", "variant": variant, "seed": seed, "outcome": data.outcome_name, "out": str(out_path),
         "params": cfg.model_dump(mode="json", exclude={"seeds"})},
        data=(fit_images, val_images, y, torch.from_numpy(split.fit), torch.from_numpy(split.val)),
        code=("lib.studies.concepts.train",),
    )
    result = fit(
        network, loss_fn, batches, optimizer, epochs=train_cfg.epochs, runtime=rt, validate=validate,
        max_steps_per_epoch=train_cfg.max_steps_per_epoch, progress=progress, augment=augment,
        checkpoint=checkpoint, fingerprint=fingerprint, patience=train_cfg.patience, min_delta=train_cfg.min_delta,
        lr_schedule=schedule, steps_per_epoch=steps if schedule is not None else None,
    )
    network.load_state_dict(result.best_state)
    meta = {"variant": variant, "seed": seed, "outcome": data.outcome_name, "outcome_mean": y_mean, "outcome_std": y_std,
            "in_chans": int(data.images.shape[1]), "params": cfg.model_dump(), "history": result.history,
            "best_epoch": result.best_epoch, "best_val_r2": result.best_score, "last_epoch": result.last_epoch,
            "max_epochs": train_cfg.epochs, "stopped_at_plateau": bool(result.stopped_at_plateau)}
    if variant == "rnc":
        ridge, meta["probe_alpha"], _ = probe()
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(ridge.coef_).reshape(1, -1))
            model.head.bias.fill_(float(ridge.intercept_))
    model = model.eval()
    if out_path is not None:
        save_module(out_path, model, meta)
    return TrainedModel(variant, model, meta)


def checkpoint_run(model_dir: str | os.PathLike) -> str:
    """The run name of a city's checkpoints, from its model folder ``models/concepts/<city>``:
    ``checkpoints/concepts/<city>/`` (one folder per variant below it)."""
    return f"concepts/{Path(model_dir).name}"


def train_seeds(cfg: ConceptsTrainParams, data: TileData, model_dir: str | os.PathLike,
                progress: bool = True, run_name: str | None = None) -> dict[int, dict[str, TrainedModel]]:
    """Both variants for every seed of ``cfg.seeds``, each on its seed's split (:func:`split_for`),
    saved as ``<model_dir>/<variant>/seed_<s>.safetensors`` (:func:`model_path`).

    Each checkpoints to ``checkpoint_path(f"{run_name}/{variant}", seed)`` (``run_name`` defaults to
    :func:`checkpoint_run`), so a rerun after a kill trains only what is unfinished.
    """
    run_name = run_name or checkpoint_run(model_dir)
    return {seed: {variant: train_variant(cfg, data, split_for(cfg, data, seed), variant, seed,
                                          model_path(model_dir, variant, seed), progress,
                                          checkpoint_path(f"{run_name}/{variant}", seed))
                   for variant in VARIANTS}
            for seed in cfg.seeds}
