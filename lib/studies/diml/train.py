"""DIML's training: one encoder per (loss, objective, seed), its epoch chosen on held-out train-class images.

Repetition s (one of ``seeds``) draws its validation split, initial weights,
batches and augmentations from seed s; the stage trains every seed
(:func:`train_seeds`) into ``models/diml/<loss>_<objective>/seed_<s>.safetensors``.
``python -m lib.studies.diml.train`` trains one model from a JSON config;
``torchrun`` runs it data-parallel (:func:`launch` starts it from a notebook).

Each seed's training checkpoints after every epoch into
``checkpoints/diml/<loss>_<objective>/seed_<s>.pt`` (:func:`checkpoint_run`),
fingerprinted by its parameters, seed, data and code: a stage killed in its
second seed reruns only what is unfinished (the finished seed comes back from
its final checkpoint, the running one resumes after its last epoch) and writes
the bytes an uninterrupted run writes. The stage removes them when it succeeds
(:func:`lib.training.clear_checkpoints`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from pytorch_metric_learning import samplers
from torch import nn
from torch.utils.data import DataLoader

from lib.data.augment import random_affine
from lib.data.digit_scenes import make_embedded_scenes
from lib.data.mnist import (
    MNIST_MEAN_STD,
    MnistDataset,
    load_mnist5k,
    unseen_class_split,
    validation_split,
)
from lib.data.splits import Split
from lib.io import load_module, load_weights, save_weights
from lib.models.backbone import SpatialEmbedding, diml_encoder
from lib.params import validate
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.diml.evaluate import embed, evaluate
from lib.studies.diml.loss import ClassifierLoss, DimlLoss, objective_spec
from lib.studies.diml.params import (
    BoundLoss,
    BoundObjective,
    Dataset,
    DimlEvalParams,
    DimlModel,
    DimlScenes,
    DimlTrain,
    DimlTrainParams,
    Loss,
    Objective,
)
from lib.training import (
    checkpoint_path,
    distributed,
    fit,
    run_fingerprint,
    unwrap,
    wrap_ddp,
)


def load_splits(cfg: DimlTrainParams | DimlEvalParams, seed: int, data_dir: str | os.PathLike = "data",
                dataset: Dataset = "mnist5k") -> Split[MnistDataset]:
    """MNIST-5k in the unseen-class protocol: fit / validation (drawn with ``seed``) on the train classes,
    test on the rest (the same for every seed).

    ``dataset="scenes"``: the same digits, each in a scene of its own (:func:`embedded_scenes`), the
    train-class scenes placed with ``seed``, the test scenes with the first seed of ``cfg.seeds`` (one test
    set for every seed, as for MNIST-5k); scene i of a split holds that split's digit i.
    """
    images, labels = load_mnist5k(data_dir)
    if dataset == "scenes":
        pixels = np.asarray(images, np.float32) / 255.0
        train_idx, test_idx = unseen_class_split(labels, cfg.data.train_classes, cfg.data.test_classes)
        fit_idx, val_idx = validation_split(labels, train_idx, cfg.data.val_fraction, seed=seed)
        parts = {"fit": (fit_idx, seed), "val": (val_idx, seed), "test": (test_idx, cfg.seeds[0])}
        return Split(**{name: scene_dataset(embedded_scenes(pixels[idx], labels[idx], cfg.scenes, draw, name).images,
                                            labels[idx]) for name, (idx, draw) in parts.items()})
    if dataset != "mnist5k":
        raise ValueError(f"unknown dataset {dataset!r}; expected 'mnist5k' or 'scenes'")
    train_idx, test_idx = unseen_class_split(labels, cfg.data.train_classes, cfg.data.test_classes)
    fit_idx, val_idx = validation_split(labels, train_idx, cfg.data.val_fraction, seed=seed)
    return Split(
        fit=MnistDataset(images[fit_idx], labels[fit_idx], MNIST_MEAN_STD),
        val=MnistDataset(images[val_idx], labels[val_idx], MNIST_MEAN_STD),
        test=MnistDataset(images[test_idx], labels[test_idx], MNIST_MEAN_STD),
    )


#: Each split's scenes draw from their own stream (fit and validation of one seed must not share poses).
_SCENE_STREAMS = {"fit": 0, "val": 1, "test": 2, "control": 3, "control_second": 4}


def embedded_scenes(digits: np.ndarray, labels: np.ndarray, cfg: DimlScenes, seed: int, split: str):
    """:func:`~lib.data.digit_scenes.make_embedded_scenes` of ``digits`` (grey levels in [0, 1]) with the
    settings of ``cfg``, drawn from (``seed``, ``split``)."""
    return make_embedded_scenes(digits, labels, size=cfg.size, scale=tuple(cfg.scale), degrees=cfg.degrees,
                                n_strokes=cfg.n_strokes, seed=1000 * seed + _SCENE_STREAMS[split])


def scene_dataset(images: torch.Tensor, labels: np.ndarray) -> MnistDataset:
    """Scenes (N, 1, S, S) in [0, 1] as a dataset standardised like MNIST-5k."""
    return MnistDataset((images[:, 0].numpy() * 255.0).astype(np.float32), labels, MNIST_MEAN_STD)


def pixels(dataset: MnistDataset) -> torch.Tensor:
    """The raw grey levels in [0, 1] of a dataset standardised like MNIST-5k (its images undone)."""
    mean, std = MNIST_MEAN_STD
    return dataset.images * std + mean


def build_model(cfg: DimlModel) -> SpatialEmbedding:
    return diml_encoder(in_chans=1, width=cfg.width, embedding_dim=cfg.embedding_dim, grid=cfg.grid)


def optimiser(model: nn.Module, loss_fn: nn.Module, cfg: DimlTrain) -> torch.optim.AdamW:
    """AdamW on the encoder (``lr``, ``weight_decay``) and on the loss's own parameters (the margin
    loss's learned beta: ``beta_lr``, no weight decay, as the reference's separate parameter group; the
    bound's class weights: ``lr``, no weight decay)."""
    groups = [{"params": list(model.parameters())}]
    if isinstance(loss_fn, ClassifierLoss):  # the bound's class weights learn with the encoder
        groups.append({"params": list(loss_fn.parameters()), "weight_decay": 0.0})
    elif list(loss_fn.parameters()):
        groups.append({"params": list(loss_fn.parameters()), "lr": cfg.beta_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class SamplerOrder:
    """The class order of a ``MPerClassSampler``, as a checkpointable state for :func:`lib.training.fit`.

    The sampler shuffles its list of classes in place at every pass, so each
    epoch's batches depend on the order the last one left; a resumed run
    must start from that order (``get_state``/``set_state``, as a torch.Generator's).
    """

    def __init__(self, sampler: samplers.MPerClassSampler):
        self.sampler = sampler

    def get_state(self) -> torch.Tensor:
        return torch.tensor([int(label) for label in self.sampler.labels])

    def set_state(self, state: torch.Tensor) -> None:
        self.sampler.labels = state.tolist()


def model_path(out_dir: str | os.PathLike, seed: int) -> Path:
    """Where the model of one seed lives in a (loss, objective) directory."""
    return Path(out_dir) / f"seed_{seed}.safetensors"


def train(
    cfg: DimlTrainParams,
    loss: str,
    objective: str,
    seed: int,
    out_path: str | os.PathLike,
    data_dir: str | os.PathLike = "data",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    dataset: Dataset = "mnist5k",
) -> dict:
    """Train one (loss, objective) model with ``seed`` on ``dataset``; select the epoch by validation MAP@R;
    stop at the validation plateau (``train.patience``, ``train.min_delta``) or after ``train.epochs``;
    save safetensors.

    ``loss="cross_entropy"`` with ``objective="classifier"`` trains the supervised bound
    (:class:`~lib.studies.diml.loss.ClassifierLoss`).

    AdamW updates the encoder and, for the margin loss, its learned per-class
    beta (:func:`optimiser`). Runs in one process or under
    torchrun (each process then draws its own class-balanced batches; DDP
    averages gradients). Returns the training history and the learned beta.
    """
    rt = runtime(cfg.device)
    with distributed(rt) as (rank, world):
        seed_everything(seed + rank)
        splits = load_splits(cfg, seed, data_dir, dataset)
        model = wrap_ddp(rt.prepare(build_model(cfg.model)), rt)
        n_classes = max(cfg.data.train_classes) + 1
        if (loss == "cross_entropy") != (objective == "classifier"):
            raise ValueError(f"the bound is loss 'cross_entropy' with objective 'classifier', got {loss!r} / {objective!r}")
        loss_fn = (ClassifierLoss(cfg.model.embedding_dim, n_classes) if objective == "classifier" else
                   DimlLoss(loss, objective, cfg.model.grid**2, cfg.structural, n_classes=n_classes)).to(rt.device)
        optimizer = optimiser(model, loss_fn, cfg.train)
        sampler = samplers.MPerClassSampler(
            splits.fit.labels, m=cfg.train.samples_per_class, batch_size=cfg.train.batch_size,
            length_before_new_iter=len(splits.fit),
        )
        loader = DataLoader(splits.fit, batch_size=cfg.train.batch_size, sampler=sampler, drop_last=True)
        val_labels = splits.val.labels
        spec = objective_spec(objective, cfg.structural)
        fingerprint = None if checkpoint is None else run_fingerprint(
            # not the seeds list: adding a seed must not retrain the others
            {"study": "diml", "loss": loss, "objective": objective, "dataset": dataset, "seed": seed, "world_size": world,
             "out": str(out_path), "params": cfg.model_dump(mode="json", exclude={"seeds"})},
            data=(splits.fit.images, splits.fit.labels, splits.val.images, val_labels),
            code=("lib.studies.diml.train",),
        )

        def validate(m: nn.Module) -> float:
            # Model selection on held-out images of the *training* classes only.
            # Structural models are ranked as they will be evaluated: their global top K re-ranked
            # with their own marginals.
            local = embed(unwrap(m), splits.val, rt, cfg.inference_batch_size)
            reranking = cfg.selection if spec.structural else None
            return evaluate(local, val_labels, cfg.structural, reranking, marginals=spec.marginals)["map_at_r"]

        result = fit(
            model, loss_fn, lambda epoch: loader, optimizer,
            epochs=cfg.train.epochs, runtime=rt, validate=validate, checkpoint=checkpoint, fingerprint=fingerprint,
            generators=[SamplerOrder(sampler)],
            max_steps_per_epoch=cfg.train.max_steps_per_epoch, progress=progress,
            patience=cfg.train.patience, min_delta=cfg.train.min_delta,
            # Small rotations and shifts only: digits are not rotation- or flip-invariant (6 vs 9).
            augment=lambda x: random_affine(x, degrees=8.0, translate=0.08),
        )
        beta = None if loss_fn.beta is None else [round(float(b), 6) for b in loss_fn.beta.detach().cpu()]
        if rank == 0:
            save_weights(
                out_path, result.best_state,
                {"loss": loss, "objective": objective, "dataset": dataset, "seed": seed, "params": cfg.model_dump(),
                 "history": result.history, "best_epoch": result.best_epoch, "last_epoch": result.last_epoch,
                 "stopped_at_plateau": result.stopped_at_plateau, "world_size": world, "beta": beta},
            )
    return {"history": result.history, "best_epoch": result.best_epoch, "best_val_map_at_r": result.best_score,
            "last_epoch": result.last_epoch, "stopped_at_plateau": result.stopped_at_plateau, "beta": beta}


def checkpoint_run(loss: str, objective: str, dataset: Dataset = "mnist5k") -> str:
    """The run name of a (loss, objective)'s checkpoints: ``checkpoints/diml/<loss>_<objective>/`` (MNIST-5k,
    stage ``diml_train``) or ``checkpoints/diml/<dataset>/<loss>_<objective>/``."""
    return f"diml/{loss}_{objective}" if dataset == "mnist5k" else f"diml/{dataset}/{loss}_{objective}"


def model_dir(loss: str, objective: str, dataset: Dataset = "mnist5k", root: str | os.PathLike = "models/diml") -> Path:
    """Where a (loss, objective)'s models of ``dataset`` live: ``models/diml/<loss>_<objective>`` for the
    MNIST-5k models of ``diml_train``, ``models/diml/<dataset>/<loss>_<objective>`` for those of
    ``diml_fit`` and ``diml_bound``."""
    name = f"{loss}_{objective}"
    trained_by_diml_train = dataset == "mnist5k" and loss in get_args(Loss) and objective in get_args(Objective)
    return Path(root) / name if trained_by_diml_train else Path(root) / dataset / name


def train_seeds(cfg: DimlTrainParams, loss: str, objective: str, out_dir: str | os.PathLike,
                data_dir: str | os.PathLike = "data", run_name: str | None = None,
                dataset: Dataset = "mnist5k") -> dict[int, dict]:
    """One model per seed of ``cfg.seeds`` under ``out_dir`` (:func:`model_path`); seed -> its run.

    Each seed checkpoints to ``checkpoint_path(run_name, seed)`` (``run_name`` defaults to
    :func:`checkpoint_run`), so a rerun after a kill trains only what is unfinished.
    """
    run_name = run_name or checkpoint_run(loss, objective, dataset)
    return {seed: launch(cfg, loss, objective, seed, model_path(out_dir, seed), data_dir, checkpoint_path(run_name, seed),
                         dataset)
            for seed in cfg.seeds}


def load_model(path: str | os.PathLike) -> tuple[SpatialEmbedding, dict]:
    """A trained model (eval mode) and its metadata from :func:`train`'s safetensors file."""
    return load_module(path, lambda state, meta: build_model(DimlTrainParams.model_validate(meta["params"]).model))


def embed_seed(cfg: DimlEvalParams, seed: int, dataset: MnistDataset, rt: Runtime,
               models: str | os.PathLike = "models/diml", on: Dataset = "mnist5k",
               ) -> tuple[dict[tuple[str, str], torch.Tensor], list[dict]]:
    """Local embeddings of ``dataset`` by seed ``seed``'s model of every (loss, objective) trained on ``on``
    (``cfg.trained()`` or ``cfg.trained_scenes()``, and the bound), and the models' metadata."""
    local, metas = {}, []
    pairs = cfg.trained() if on == "mnist5k" else cfg.trained_scenes()
    for loss, objective in [*pairs, BOUND]:
        model, meta = load_model(model_path(model_dir(loss, objective, on, models), seed))
        local[loss, objective] = embed(rt.prepare(model), dataset, rt, cfg.inference_batch_size)
        metas.append(meta)
    return local, metas


#: The supervised bound's (loss, objective).
BOUND: tuple[str, str] = (get_args(BoundLoss)[0], get_args(BoundObjective)[0])


def launch(cfg: DimlTrainParams, loss: str, objective: str, seed: int, out_path: str | os.PathLike,
           data_dir="data", checkpoint: str | os.PathLike | None = None, dataset: Dataset = "mnist5k") -> dict:
    """Train in this process, or under ``torchrun`` when ``train.world_size > 1``.

    DDP cannot start inside a Jupyter kernel, so the notebook launches torchrun
    as a subprocess that runs ``python -m lib.studies.diml.train``; its history comes back
    through the saved weights' metadata.
    """
    if cfg.train.world_size == 1:
        return train(cfg, loss, objective, seed, out_path, data_dir, checkpoint, dataset=dataset)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg.model_dump()))
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc-per-node={cfg.train.world_size}", "-m", "lib.studies.diml.train",
             "--config", str(config), "--loss", loss, "--objective", objective, "--seed", str(seed),
             "--out", str(out_path), "--data-dir", str(data_dir), "--dataset", dataset,
             *(["--checkpoint", str(checkpoint)] if checkpoint is not None else [])],
            check=True,
        )
    _, meta = load_weights(out_path)
    return {key: meta[key] for key in ("history", "best_epoch", "last_epoch", "stopped_at_plateau", "beta")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.studies.diml.train", description="Train one DIML model (torchrun-ready).")
    parser.add_argument("--config", required=True, help="JSON file of diml_train's parameters")
    parser.add_argument("--loss", required=True, choices=get_args(Loss) + get_args(BoundLoss))
    parser.add_argument("--objective", required=True, choices=get_args(Objective) + get_args(BoundObjective))
    parser.add_argument("--dataset", default="mnist5k", choices=get_args(Dataset))
    parser.add_argument("--seed", required=True, type=int, help="the repetition's seed (one of the config's seeds)")
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--checkpoint", default=None, help="file to resume from and to checkpoint to after each epoch")
    args = parser.parse_args(argv)
    cfg = validate("diml", json.loads(Path(args.config).read_text()), DimlTrainParams)
    train(cfg, args.loss, args.objective, args.seed, args.out, args.data_dir, args.checkpoint, progress=False,
          dataset=args.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
