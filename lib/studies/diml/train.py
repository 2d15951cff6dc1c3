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

import torch
from pytorch_metric_learning import samplers
from torch import nn
from torch.utils.data import DataLoader

from lib.data.augment import random_affine
from lib.data.mnist import MNIST_MEAN_STD, MnistDataset, load_mnist5k, unseen_class_split, validation_split
from lib.data.splits import Split
from lib.io import load_module, load_weights, save_weights
from lib.models.backbone import SpatialEmbedding, diml_encoder
from lib.params import validate
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.diml.evaluate import embed, evaluate
from lib.studies.diml.loss import DimlLoss, objective_spec
from lib.studies.diml.params import DimlEvalParams, DimlModel, DimlTrain, DimlTrainParams, Loss, Objective
from lib.training import checkpoint_path, distributed, fit, run_fingerprint, unwrap, wrap_ddp


def load_splits(cfg: DimlTrainParams | DimlEvalParams, seed: int, data_dir: str | os.PathLike = "data") -> Split[MnistDataset]:
    """MNIST-5k in the unseen-class protocol: fit / validation (drawn with ``seed``) on the train classes,
    test on the rest (the same for every seed)."""
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = unseen_class_split(labels, cfg.data.train_classes, cfg.data.test_classes)
    fit_idx, val_idx = validation_split(labels, train_idx, cfg.data.val_fraction, seed=seed)
    return Split(
        fit=MnistDataset(images[fit_idx], labels[fit_idx], MNIST_MEAN_STD),
        val=MnistDataset(images[val_idx], labels[val_idx], MNIST_MEAN_STD),
        test=MnistDataset(images[test_idx], labels[test_idx], MNIST_MEAN_STD),
    )


def build_model(cfg: DimlModel) -> SpatialEmbedding:
    return diml_encoder(in_chans=1, width=cfg.width, embedding_dim=cfg.embedding_dim, grid=cfg.grid)


def optimiser(model: nn.Module, loss_fn: nn.Module, cfg: DimlTrain) -> torch.optim.AdamW:
    """AdamW on the encoder (``lr``, ``weight_decay``) and on the loss's own parameters (the margin
    loss's learned beta: ``beta_lr``, no weight decay, as the reference's separate parameter group)."""
    groups = [{"params": list(model.parameters())}]
    if list(loss_fn.parameters()):
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
) -> dict:
    """Train one (loss, objective) model with ``seed``; select the epoch by validation MAP@R; save safetensors.

    AdamW updates the encoder and, for the margin loss, its learned per-class
    beta (:func:`optimiser`). Runs in one process or under
    torchrun (each process then draws its own class-balanced batches; DDP
    averages gradients). Returns the training history and the learned beta.
    """
    rt = runtime(cfg.device)
    with distributed(rt) as (rank, world):
        seed_everything(seed + rank)
        splits = load_splits(cfg, seed, data_dir)
        model = wrap_ddp(rt.prepare(build_model(cfg.model)), rt)
        loss_fn = DimlLoss(loss, objective, cfg.model.grid**2, cfg.structural,
                           n_classes=max(cfg.data.train_classes) + 1).to(rt.device)
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
            {"study": "diml", "loss": loss, "objective": objective, "seed": seed, "world_size": world,
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
            # Small rotations and shifts only: digits are not rotation- or flip-invariant (6 vs 9).
            augment=lambda x: random_affine(x, degrees=8.0, translate=0.08),
        )
        beta = None if loss_fn.beta is None else [round(float(b), 6) for b in loss_fn.beta.detach().cpu()]
        if rank == 0:
            save_weights(
                out_path, result.best_state,
                {"loss": loss, "objective": objective, "seed": seed, "params": cfg.model_dump(),
                 "history": result.history, "best_epoch": result.best_epoch, "world_size": world, "beta": beta},
            )
    return {"history": result.history, "best_epoch": result.best_epoch, "best_val_map_at_r": result.best_score,
            "beta": beta}


def checkpoint_run(loss: str, objective: str) -> str:
    """The run name of a (loss, objective)'s checkpoints: ``checkpoints/diml/<loss>_<objective>/``."""
    return f"diml/{loss}_{objective}"


def train_seeds(cfg: DimlTrainParams, loss: str, objective: str, out_dir: str | os.PathLike,
                data_dir: str | os.PathLike = "data", run_name: str | None = None) -> dict[int, dict]:
    """One model per seed of ``cfg.seeds`` under ``out_dir`` (:func:`model_path`); seed -> its run.

    Each seed checkpoints to ``checkpoint_path(run_name, seed)`` (``run_name`` defaults to
    :func:`checkpoint_run`), so a rerun after a kill trains only what is unfinished.
    """
    run_name = run_name or checkpoint_run(loss, objective)
    return {seed: launch(cfg, loss, objective, seed, model_path(out_dir, seed), data_dir, checkpoint_path(run_name, seed))
            for seed in cfg.seeds}


def load_model(path: str | os.PathLike) -> tuple[SpatialEmbedding, dict]:
    """A trained model (eval mode) and its metadata from :func:`train`'s safetensors file."""
    return load_module(path, lambda state, meta: build_model(DimlTrainParams.model_validate(meta["params"]).model))


def embed_seed(cfg: DimlEvalParams, seed: int, dataset: MnistDataset, rt: Runtime,
               model_dir: str | os.PathLike = "models/diml") -> tuple[dict[tuple[str, str], torch.Tensor], list[dict]]:
    """Local embeddings of ``dataset`` by seed ``seed``'s model of every trained (loss, objective)
    (``cfg.trained()``), and the models' metadata."""
    local, metas = {}, []
    for loss, objective in cfg.trained():
        model, meta = load_model(model_path(Path(model_dir) / f"{loss}_{objective}", seed))
        local[loss, objective] = embed(rt.prepare(model), dataset, rt, cfg.inference_batch_size)
        metas.append(meta)
    return local, metas


def launch(cfg: DimlTrainParams, loss: str, objective: str, seed: int, out_path: str | os.PathLike,
           data_dir="data", checkpoint: str | os.PathLike | None = None) -> dict:
    """Train in this process, or under ``torchrun`` when ``train.world_size > 1``.

    DDP cannot start inside a Jupyter kernel, so the notebook launches torchrun
    as a subprocess that runs ``python -m lib.studies.diml.train``; its history comes back
    through the saved weights' metadata.
    """
    if cfg.train.world_size == 1:
        return train(cfg, loss, objective, seed, out_path, data_dir, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(cfg.model_dump()))
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc-per-node={cfg.train.world_size}", "-m", "lib.studies.diml.train",
             "--config", str(config), "--loss", loss, "--objective", objective, "--seed", str(seed),
             "--out", str(out_path), "--data-dir", str(data_dir),
             *(["--checkpoint", str(checkpoint)] if checkpoint is not None else [])],
            check=True,
        )
    _, meta = load_weights(out_path)
    return {"history": meta["history"], "best_epoch": meta["best_epoch"], "beta": meta["beta"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.studies.diml.train", description="Train one DIML model (torchrun-ready).")
    parser.add_argument("--config", required=True, help="JSON file of diml_train's parameters")
    parser.add_argument("--loss", required=True, choices=get_args(Loss))
    parser.add_argument("--objective", required=True, choices=get_args(Objective))
    parser.add_argument("--seed", required=True, type=int, help="the repetition's seed (one of the config's seeds)")
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--checkpoint", default=None, help="file to resume from and to checkpoint to after each epoch")
    args = parser.parse_args(argv)
    cfg = validate("diml", json.loads(Path(args.config).read_text()), DimlTrainParams)
    train(cfg, args.loss, args.objective, args.seed, args.out, args.data_dir, args.checkpoint, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
