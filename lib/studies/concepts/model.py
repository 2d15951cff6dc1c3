"""The concepts study's model: a tile encoder with an embedding layer and a linear outcome head."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.tiles import TileData
from lib.eval.encode import encode
from lib.io import load_module
from lib.models.backbone import tile_encoder
from lib.runtime import Runtime
from lib.studies.concepts.params import ConceptsModel, ConceptsTrainParams

VARIANTS = ("rnc", "baseline")
VARIANT_LABELS = {"rnc": "RNC + linear probe", "baseline": "L1 end to end"}


class OutcomeRegressor(nn.Module):
    """Tile (B, C, H, W) -> per-band standardisation -> ResNet -> embedding (B, D) -> outcome (B, 1).

    ``embed(x) = W_p f(z) + b_p`` with ``z = (x - band_mean) / band_std`` and
    ``f`` the pooled encoder features; ``forward(x) = w_h . embed(x) + b_h`` is
    the standardised outcome. The layers after ``encoder.layer4`` are linear,
    so TCAV there would see one gradient for every input: use ``encoder.layer3``
    or earlier.
    """

    def __init__(self, in_chans: int, width: int, embedding_dim: int, band_mean: torch.Tensor, band_std: torch.Tensor):
        super().__init__()
        self.register_buffer("band_mean", band_mean.reshape(1, in_chans, 1, 1).float())
        self.register_buffer("band_std", band_std.reshape(1, in_chans, 1, 1).float())
        self.encoder = tile_encoder(in_chans, width)
        self.project = nn.Linear(self.encoder.num_features, embedding_dim)
        self.head = nn.Linear(embedding_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.encoder((x - self.band_mean) / self.band_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class Embedder(nn.Module):
    """The embedding part of an :class:`OutcomeRegressor` as a module of its own, for RNC training."""

    def __init__(self, model: OutcomeRegressor):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def build_model(cfg: ConceptsModel, data: TileData, fit_idx: np.ndarray) -> OutcomeRegressor:
    """A fresh model whose band standardisation uses the fit tiles' per-band mean and sd."""
    fit_images = data.images[torch.from_numpy(fit_idx)]
    mean, std = fit_images.mean(dim=(0, 2, 3)), fit_images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return OutcomeRegressor(data.images.shape[1], cfg.width, cfg.embedding_dim, mean, std)


def apply(model: OutcomeRegressor, images: torch.Tensor, rt: Runtime, batch_size: int, embed: bool) -> np.ndarray:
    """Embeddings (n, D) or outputs (n, 1) in eval mode, float64 on the CPU."""
    model = rt.prepare(model).eval()
    return encode(model.embed if embed else model, images, batch_size, rt).double().numpy()


@dataclass
class TrainedModel:
    """A trained variant: the model (eval mode) and what its training recorded (``meta``)."""

    variant: str
    model: OutcomeRegressor
    meta: dict

    def predict(self, images: torch.Tensor, rt: Runtime, batch_size: int = 256) -> np.ndarray:
        """Outcome predictions (n,) in the outcome's units."""
        standardised = apply(self.model, images, rt, batch_size, embed=False)[:, 0]
        return standardised * self.meta["outcome_std"] + self.meta["outcome_mean"]

    def embed(self, images: torch.Tensor, rt: Runtime, batch_size: int = 256) -> np.ndarray:
        return apply(self.model, images, rt, batch_size, embed=True)


def model_path(model_dir: str | os.PathLike, variant: str, seed: int) -> Path:
    """Where the stage keeps one trained variant of one seed: ``<model_dir>/<variant>/seed_<seed>.safetensors``."""
    return Path(model_dir) / variant / f"seed_{seed}.safetensors"


def load_variant(path: str | os.PathLike) -> TrainedModel:
    """A model saved by :func:`lib.studies.concepts.train.train_variant`, in eval mode."""

    def build(state: dict, meta: dict) -> OutcomeRegressor:
        cfg = ConceptsTrainParams.model_validate(meta["params"]).model
        n = meta["in_chans"]
        return OutcomeRegressor(n, cfg.width, cfg.embedding_dim, torch.zeros(n), torch.ones(n))

    model, meta = load_module(path, build)
    return TrainedModel(meta["variant"], model, meta)


def history_frame(trained: dict[int, dict[str, TrainedModel]]) -> pd.DataFrame:
    """Training loss and validation R^2 per epoch, variant and seed, from the models' metadata."""
    return pd.concat([pd.DataFrame(t.meta["history"]).assign(variant=v, seed=seed)
                      for seed, by_variant in trained.items() for v, t in by_variant.items()], ignore_index=True)
