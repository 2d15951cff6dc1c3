"""The concepts study: contrastive pretraining and visual concept explanations of an outcome.

Obadic et al., "Contrastive Pretraining for Visual Concept Explanations of
Socioeconomic Outcomes" (2024). A task-specific contrastive loss, Rank-N-Contrast
(:mod:`lib.losses.rnc`), orders an encoder's latent space by the outcome; TCAV
(:mod:`lib.explain.tcav`) then says which visual concepts the outcome is
sensitive to within each outcome interval.

Two variants of one encoder (a small timm ResNet from scratch) per dataset:

* ``rnc``      - RNC pretraining on two augmented views per tile, then a linear
                 probe (ridge regression) on the frozen encoder's embeddings;
* ``baseline`` - the same network trained end to end with an L1 regression loss.

Both are selected on the validation split only and evaluated on the test
split: R^2, MAE and Kendall's tau of the predictions, and the ordering of the
latent space (Spearman correlation of embedding distance with outcome
distance; R^2 of k-nearest-neighbour regression on the embeddings). Concept
sets are tiles dominated by one land-cover class; on a generated city the
generator's weights say how each class truly moves the outcome, so the rank
agreement of concept sensitivity with those weights checks the explanation.

The data are any tile dataset in the compendium's format (``image`` (tile,
band, y, x) and outcome variables along ``tile``: :func:`lib.data.city.build_city`
or :func:`lib.data.geotiff.import_geotiff_tiles`); land-cover ``fractions``
come with generated cities, real data may bring a concept table instead.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from pydantic import Field, model_validator
from scipy import stats
from scipy.spatial.distance import pdist
from sklearn.linear_model import Ridge
from sklearn.manifold import TSNE
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from threadpoolctl import threadpool_limits
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from lib.data.city import stored_outcome_models
from lib.explain.tcav import make_concept, random_concepts, tcav_by_interval
from lib.io import load_weights, save_weights, write_json, write_text
from lib.losses.rnc import RnCLoss
from lib.params import Params
from lib.runtime import Runtime, runtime, seed_everything
from lib.training import fit

VARIANTS = ("rnc", "baseline")
VARIANT_LABELS = {"rnc": "RNC + linear probe", "baseline": "L1 end to end"}


# ------------------------------------------------------------------ parameters
class ConceptsSplit(Params):
    val_fraction: float = Field(gt=0, lt=0.5)
    test_fraction: float = Field(gt=0, lt=0.5)
    n_strata: int = Field(ge=1, description="outcome quantile bins the split is stratified on")


class ConceptsModel(Params):
    width: int = Field(ge=4, multiple_of=2, description="channels of the first ResNet stage")
    embedding_dim: int = Field(ge=2)


class ConceptsAugment(Params):
    crop_min: float = Field(gt=0, le=1, description="smallest crop side, as a share of the tile side")
    jitter: float = Field(ge=0, lt=1, description="brightness and contrast factors drawn from U(1 - j, 1 + j)")


class ConceptsTrain(Params):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)


class RncTrain(ConceptsTrain):
    temperature: float = Field(gt=0, description="tau of the RNC similarity -||v_i - v_j|| / tau")


class ConceptsProbe(Params):
    ridge_alphas: list[float] = Field(min_length=1, description="ridge penalties tried; validation R^2 picks one")

    @model_validator(mode="after")
    def _positive(self) -> ConceptsProbe:
        if min(self.ridge_alphas) <= 0:
            raise ValueError(f"ridge_alphas must be > 0, got {self.ridge_alphas}")
        return self


class ConceptsEval(Params):
    knn_k: int = Field(ge=1, description="neighbours of the kNN regression on embeddings")
    tsne_perplexity: float = Field(gt=0)
    batch_size: int = Field(ge=1)


class ConceptsTcav(Params):
    layer: str = Field(description="module of OutcomeRegressor whose activations get CAVs")
    threshold: float = Field(gt=0, le=1, description="a tile joins a concept when its fraction is >= this")
    set_size: int = Field(ge=2, description="examples per concept and per random set, at most")
    min_concept_size: int = Field(ge=2, description="concepts with fewer qualifying tiles are skipped")
    n_random: int = Field(ge=10, description="random negatives, i.e. CAVs per concept (>= 10, Kim et al.)")
    n_intervals: int = Field(ge=1, description="outcome quantile intervals of the test tiles")
    alpha: float = Field(gt=0, lt=1)
    bonferroni: bool
    statistic: Literal["score", "magnitude"] = Field(description="TCAV statistic of the heat maps and the agreement")
    concept_table: str | None = Field(
        default=None, description="CSV/Parquet of concept fractions per tile id, for data without 'fractions'"
    )

    @model_validator(mode="after")
    def _sizes(self) -> ConceptsTcav:
        if self.min_concept_size > self.set_size:
            raise ValueError(f"min_concept_size ({self.min_concept_size}) exceeds set_size ({self.set_size})")
        return self


class ConceptsParams(Params):
    seed: int
    device: str
    outcome: str | None = Field(description="outcome variable; null = the dataset's task attribute")
    split: ConceptsSplit
    model: ConceptsModel
    augment: ConceptsAugment
    rnc: RncTrain
    probe: ConceptsProbe
    baseline: ConceptsTrain
    eval: ConceptsEval
    tcav: ConceptsTcav


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class TileData:
    """One tile dataset in memory.

    ``images`` (n, C, H, W) float32 (uint8 pixels / 255, other types / their
    maximum); ``outcome`` (n,) in its own units; ``concepts`` (n, K) concept
    fractions (land cover) or None; ``true_effects`` the generator's weight of
    each concept on the outcome, or None for data without a known generator.
    """

    images: torch.Tensor
    outcome: np.ndarray
    outcome_name: str
    units: str
    tile_ids: np.ndarray
    easting: np.ndarray
    northing: np.ndarray
    band_names: list[str]
    concepts: pd.DataFrame | None
    true_effects: pd.Series | None

    def __len__(self) -> int:
        return len(self.outcome)


def load_tiles(path: str | os.PathLike, outcome: str | None = None, concept_table: str | os.PathLike | None = None) -> TileData:
    """Read a tile dataset (NetCDF: a city's ``tiles.nc`` or an imported GeoTIFF set).

    ``outcome`` defaults to the dataset's ``task`` attribute (generated
    cities). Concepts come from the ``fractions`` variable when present, else
    from ``concept_table`` (a CSV or Parquet file with a ``tile`` column of
    tile ids and one column of fractions or 0/1 memberships per concept).
    """
    path = Path(path)
    with xr.open_dataset(path, engine="h5netcdf", decode_coords="all") as ds:
        name = outcome or ds.attrs.get("task")
        if name is None:
            raise ValueError(f"{path} has no 'task' attribute: set the parameter concepts.outcome")
        if name not in ds or ds[name].dims != ("tile",):
            candidates = [v for v in ds.data_vars if ds[v].dims == ("tile",)]
            raise KeyError(f"{path} has no outcome {name!r} along 'tile'; it has {candidates}")
        pixels = ds["image"].values
        scale = 255.0 if pixels.dtype == np.uint8 else float(np.abs(pixels).max()) or 1.0
        tile_ids = ds["tile"].values.astype(str)
        if "fractions" in ds:
            concepts = pd.DataFrame(ds["fractions"].values, columns=[str(c) for c in ds["landcover_class"].values])
        elif concept_table is not None:
            concepts = _read_concept_table(concept_table, tile_ids)
        else:
            concepts = None
        units = json.loads(ds.attrs["outcome_units"]).get(name, "") if "outcome_units" in ds.attrs else ""
        true_effects = None
        if "outcome_weights" in ds.attrs and concepts is not None and name in json.loads(ds.attrs["outcome_weights"]):
            weights = stored_outcome_models(ds)[name].landcover
            true_effects = pd.Series({c: weights[c] for c in concepts.columns if c in weights}, name="true_effect")
        return TileData(
            images=torch.from_numpy(pixels.astype(np.float32) / scale),
            outcome=ds[name].values.astype(np.float64),
            outcome_name=name,
            units=units,
            tile_ids=tile_ids,
            easting=ds["easting"].values,
            northing=ds["northing"].values,
            band_names=[str(b) for b in ds["band"].values],
            concepts=concepts,
            true_effects=true_effects,
        )


def _read_concept_table(path: str | os.PathLike, tile_ids: np.ndarray) -> pd.DataFrame:
    """A user's concept table aligned to the dataset's tiles (missing tiles: not in any concept)."""
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path, dtype={"tile": str})
    if "tile" not in table.columns:
        raise ValueError(f"concept table {path} needs a 'tile' column of tile ids; columns: {list(table.columns)}")
    table = table.assign(tile=table["tile"].astype(str)).set_index("tile")
    return table.reindex(tile_ids).fillna(0.0).astype(np.float64).reset_index(drop=True)


@dataclass(frozen=True)
class Split:
    """Indices of the fit, validation and test tiles."""

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def labels(self, n: int) -> np.ndarray:
        """Each tile's split name, (n,)."""
        out = np.full(n, "", dtype=object)
        out[self.fit], out[self.val], out[self.test] = "fit", "validation", "test"
        return out


def outcome_strata(y: np.ndarray, n_strata: int) -> np.ndarray:
    """Quantile bin of each outcome, 0 .. n_strata - 1 (bins of equal counts up to ties)."""
    edges = np.quantile(y, np.linspace(0, 1, n_strata + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float, n_strata: int, seed: int) -> Split:
    """Disjoint fit / validation / test indices, each stratified on outcome quantiles.

    The test share is drawn first, then the validation share from the rest,
    both with scikit-learn's ``train_test_split(stratify=...)``. Fewer strata
    are used when a split is too small to hold one tile of each, and at most
    n / 4, so that every stratum holds a few tiles.
    """
    y = np.asarray(y)
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction * n)
    if n - n_test - n_val < 2 or min(n_test, n_val) < 1:
        raise ValueError(f"{n} tiles are too few for val_fraction={val_fraction} and test_fraction={test_fraction}")
    strata = outcome_strata(y, max(1, min(n_strata, n_test, n_val, n // 4)))
    index = np.arange(n)
    rest, test = train_test_split(index, test_size=n_test, stratify=strata, random_state=seed)
    fit_idx, val = train_test_split(rest, test_size=n_val, stratify=strata[rest], random_state=seed + 1)
    return Split(np.sort(fit_idx), np.sort(val), np.sort(test))


def aerial_augment(x: torch.Tensor, crop_min: float, jitter: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random views of aerial tiles, batched on the tensor's device.

    For each tile of ``x`` (B, C, H, W), H = W: one of the 8 symmetries of the
    square (k 90-degree rotations, k ~ U{0..3}, then a horizontal flip with
    probability 1/2; an aerial view has no up), a square crop of side
    s ~ U(crop_min, 1) of the tile at a uniform position, resized back with
    the affine grid [[s, 0, t_x], [0, s, t_y]], |t| <= 1 - s (normalised
    coordinates), and brightness and contrast factors b, c ~ U(1 - j, 1 + j):
    x' = b * (m + c * (x - m)), m the tile's mean over bands and pixels.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be square tiles (B, C, H, H), got shape {tuple(x.shape)}")
    b = x.shape[0]
    u = torch.rand(b, 6, generator=generator).to(x.device)
    quarter_turns, flip = (u[:, 0] * 4).long().clamp(max=3), u[:, 1] < 0.5
    out = x.clone()
    for k in (1, 2, 3):
        turned = quarter_turns == k
        out[turned] = out[turned].rot90(k, dims=(2, 3))
    out = torch.where(flip[:, None, None, None], out.flip(3), out)

    side = crop_min + (1 - crop_min) * u[:, 2]
    shift = (1 - side)[:, None] * (2 * u[:, 3:5] - 1)
    zero = torch.zeros_like(side)
    theta = torch.stack([torch.stack([side, zero, shift[:, 0]], 1), torch.stack([zero, side, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(out.dtype), list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

    factors = 1 + jitter * (2 * torch.rand(b, 2, generator=generator).to(x.device) - 1)
    brightness, contrast = factors[:, 0, None, None, None], factors[:, 1, None, None, None]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return brightness * (mean + contrast * (out - mean))


# ------------------------------------------------------------------ model
def tile_encoder(in_chans: int, width: int) -> ResNet:
    """A ResNet-10 (one BasicBlock per stage) from timm with ``width`` channels in its first stage.

    timm's deep stem (three 3x3 convolutions, stride 2) and max-pool take a
    64 px tile to 16 px before the first stage, so the stages see 16, 8, 4 and
    2 px; ``forward`` returns the globally average-pooled (B, 8 width) features.
    """
    return ResNet(
        block=BasicBlock, layers=(1, 1, 1, 1), channels=tuple(width * 2**i for i in range(4)),
        in_chans=in_chans, stem_type="deep", stem_width=width // 2, num_classes=0, global_pool="avg",
    )


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


class _Embedder(nn.Module):
    """The embedding part of an :class:`OutcomeRegressor` as a module of its own, for RNC training."""

    def __init__(self, model: OutcomeRegressor):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def build_model(cfg: ConceptsParams, data: TileData, fit_idx: np.ndarray) -> OutcomeRegressor:
    """A fresh model whose band standardisation uses the fit tiles' per-band mean and sd."""
    fit_images = data.images[torch.from_numpy(fit_idx)]
    mean, std = fit_images.mean(dim=(0, 2, 3)), fit_images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return OutcomeRegressor(data.images.shape[1], cfg.model.width, cfg.model.embedding_dim, mean, std)


# ------------------------------------------------------------------ training
@dataclass
class TrainedModel:
    """A trained variant: the model (eval mode) and what its training recorded (``meta``)."""

    variant: str
    model: OutcomeRegressor
    meta: dict

    def predict(self, images: torch.Tensor, rt: Runtime, batch_size: int = 256) -> np.ndarray:
        """Outcome predictions (n,) in the outcome's units."""
        standardised = _apply(self.model, images, rt, batch_size, embed=False)[:, 0]
        return standardised * self.meta["outcome_std"] + self.meta["outcome_mean"]

    def embed(self, images: torch.Tensor, rt: Runtime, batch_size: int = 256) -> np.ndarray:
        return _apply(self.model, images, rt, batch_size, embed=True)


@torch.no_grad()
def _apply(model: OutcomeRegressor, images: torch.Tensor, rt: Runtime, batch_size: int, embed: bool) -> np.ndarray:
    """Embeddings (n, D) or outputs (n, 1) in eval mode, float64 on the CPU."""
    model = rt.prepare(model).eval()
    out = []
    for chunk in images.split(batch_size):
        with rt.autocast():
            out.append((model.embed if embed else model)(rt.batch(chunk)).float().cpu())
    return torch.cat(out).double().numpy()


def _epoch_batches(images: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int) -> Callable[[int], Iterator]:
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


def fit_probe(fit_emb: np.ndarray, fit_y: np.ndarray, val_emb: np.ndarray, val_y: np.ndarray,
              alphas: list[float]) -> tuple[Ridge, float, float]:
    """Ridge regression y ~ w . e + b on frozen embeddings, the penalty chosen by validation R^2.

    Returns (the fitted model, its alpha, its validation R^2).
    """
    fitted = [Ridge(alpha=a).fit(fit_emb, fit_y) for a in alphas]
    scores = [r2_score(val_y, m.predict(val_emb)) for m in fitted]
    best = int(np.argmax(scores))
    return fitted[best], alphas[best], float(scores[best])


def train_variant(cfg: ConceptsParams, data: TileData, split: Split, variant: str,
                  out_path: str | os.PathLike | None = None, progress: bool = True) -> TrainedModel:
    """Train one variant (``rnc`` or ``baseline``), select its epoch on validation R^2, save safetensors.

    The outcome is standardised with the fit tiles' mean and sd. ``rnc``:
    the encoder learns with the RNC loss on two augmented views of each tile
    (views (2n, D) as ``cat([view_1, view_2])``); after each epoch a ridge probe
    on the frozen fit embeddings is scored on the validation tiles, and the
    best epoch's encoder gets the probe as its head. ``baseline``: the whole
    model learns with L1 loss |f(x) - y| on one augmented view.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    rt = runtime(cfg.device)
    seed_everything(cfg.seed)
    y_mean, y_std = float(data.outcome[split.fit].mean()), float(data.outcome[split.fit].std()) or 1.0
    y = torch.from_numpy((data.outcome - y_mean) / y_std).float()
    model = rt.prepare(build_model(cfg, data, split.fit))
    fit_images, val_images = data.images[torch.from_numpy(split.fit)], data.images[torch.from_numpy(split.val)]
    fit_y, val_y = y[split.fit].numpy(), y[split.val].numpy()
    train_cfg = cfg.rnc if variant == "rnc" else cfg.baseline
    batches = _epoch_batches(fit_images, y[split.fit], train_cfg.batch_size, cfg.seed)

    def view(x: torch.Tensor) -> torch.Tensor:
        return aerial_augment(x, cfg.augment.crop_min, cfg.augment.jitter)

    def probe() -> tuple[Ridge, float, float]:
        fit_emb = _apply(model, fit_images, rt, cfg.eval.batch_size, embed=True)
        val_emb = _apply(model, val_images, rt, cfg.eval.batch_size, embed=True)
        return fit_probe(fit_emb, fit_y, val_emb, val_y, cfg.probe.ridge_alphas)

    if variant == "rnc":
        network, params = _Embedder(model), [*model.encoder.parameters(), *model.project.parameters()]
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
            return float(r2_score(val_y, _apply(model, val_images, rt, cfg.eval.batch_size, embed=False)[:, 0]))

    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    result = fit(
        network, loss_fn, batches, optimizer, epochs=train_cfg.epochs, runtime=rt, validate=validate,
        max_steps_per_epoch=train_cfg.max_steps_per_epoch, progress=progress, augment=augment,
    )
    network.load_state_dict(result.best_state)
    meta = {"variant": variant, "outcome": data.outcome_name, "outcome_mean": y_mean, "outcome_std": y_std,
            "in_chans": int(data.images.shape[1]), "params": cfg.model_dump(), "history": result.history,
            "best_epoch": result.best_epoch, "best_val_r2": result.best_score}
    if variant == "rnc":
        ridge, meta["probe_alpha"], _ = probe()
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(ridge.coef_).reshape(1, -1))
            model.head.bias.fill_(float(ridge.intercept_))
    model = model.eval()
    if out_path is not None:
        save_weights(out_path, model.state_dict(), meta)
    return TrainedModel(variant, model, meta)


def load_variant(path: str | os.PathLike) -> TrainedModel:
    """A model saved by :func:`train_variant`, in eval mode."""
    state, meta = load_weights(path)
    cfg = ConceptsParams.model_validate(meta["params"])
    in_chans = meta["in_chans"]
    model = OutcomeRegressor(in_chans, cfg.model.width, cfg.model.embedding_dim, torch.zeros(in_chans), torch.ones(in_chans))
    model.load_state_dict(state)
    return TrainedModel(meta["variant"], model.eval(), meta)


def history_frame(trained: dict[str, TrainedModel]) -> pd.DataFrame:
    """Training loss and validation R^2 per epoch and variant."""
    return pd.concat([pd.DataFrame(t.meta["history"]).assign(variant=v) for v, t in trained.items()], ignore_index=True)


# ------------------------------------------------------------------ metrics
def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R^2 = 1 - sum (y - p)^2 / sum (y - mean y)^2, MAE = mean |y - p| and Kendall's tau_b of (y, p)."""
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "kendall_tau": float(stats.kendalltau(y_true, y_pred).statistic),
    }


def latent_ordering(fit_emb: np.ndarray, fit_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray,
                    k: int, max_tiles: int = 2000, seed: int = 0) -> dict[str, float]:
    """How well the latent space is ordered by the outcome.

    * ``latent_spearman``: Spearman correlation, over all test pairs i < j, of
      ||e_i - e_j||_2 with |y_i - y_j| (at most ``max_tiles`` test tiles, drawn
      with ``seed``); 1 when embedding distance ranks pairs like outcome distance.
    * ``knn_r2``: R^2 on the test tiles of k-nearest-neighbour regression
      (Euclidean, uniform weights) fitted on the fit tiles' embeddings.
    """
    test_emb, test_y = np.asarray(test_emb), np.asarray(test_y)
    if len(test_y) > max_tiles:
        keep = np.random.default_rng(seed).choice(len(test_y), max_tiles, replace=False)
        pairs_emb, pairs_y = test_emb[keep], test_y[keep]
    else:
        pairs_emb, pairs_y = test_emb, test_y
    rho = stats.spearmanr(pdist(pairs_emb), pdist(pairs_y.reshape(-1, 1), "cityblock")).statistic
    knn = KNeighborsRegressor(n_neighbors=min(k, len(fit_y))).fit(fit_emb, fit_y)
    return {"latent_spearman": float(rho), "knn_r2": float(r2_score(test_y, knn.predict(test_emb)))}


def evaluate(trained: TrainedModel, data: TileData, split: Split, cfg: ConceptsParams) -> dict[str, float]:
    """Test-split metrics of one variant: :func:`regression_metrics` (MAE in the outcome's
    units) and :func:`latent_ordering` of its embeddings, plus its validation R^2."""
    rt = runtime(cfg.device)
    bs = cfg.eval.batch_size
    test_images = data.images[torch.from_numpy(split.test)]
    out = regression_metrics(data.outcome[split.test], trained.predict(test_images, rt, bs))
    out |= latent_ordering(
        trained.embed(data.images[torch.from_numpy(split.fit)], rt, bs), data.outcome[split.fit],
        trained.embed(test_images, rt, bs), data.outcome[split.test], k=cfg.eval.knn_k, seed=cfg.seed,
    )
    return out | {"val_r2": float(trained.meta["best_val_r2"]), "best_epoch": int(trained.meta["best_epoch"])}


def metrics_table(trained: dict[str, TrainedModel], data: TileData, split: Split, cfg: ConceptsParams) -> pd.DataFrame:
    """:func:`evaluate` of every variant, one row each, indexed by variant."""
    return pd.DataFrame({v: evaluate(t, data, split, cfg) for v, t in trained.items()}).T.rename_axis("variant")


def tsne(embeddings: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-d t-SNE coordinates (n, 2) of embeddings (perplexity capped at (n - 1) / 3)."""
    perplexity = min(perplexity, max((len(embeddings) - 1) / 3, 1.0))
    # One OpenMP thread: on a busy 2-core machine the Barnes-Hut gradient of a
    # few hundred points took 16x longer with two threads waiting on each other.
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)


# ------------------------------------------------------------------ concepts
@dataclass(frozen=True)
class ConceptSets:
    """Tile indices of each usable concept and a table of every candidate concept."""

    members: dict[str, np.ndarray]
    table: pd.DataFrame


def concept_sets(concepts: pd.DataFrame, pool: np.ndarray, threshold: float, set_size: int,
                 min_size: int, seed: int) -> ConceptSets:
    """Concept image sets: tiles of ``pool`` whose fraction of the concept is >= ``threshold``.

    A concept with fewer than ``min_size`` such tiles is skipped; one with
    more than ``set_size`` keeps a seeded random ``set_size`` of them.
    """
    rng = np.random.default_rng(seed)
    members, rows = {}, []
    for name in concepts.columns:
        candidates = pool[concepts[name].to_numpy()[pool] >= threshold]
        used = len(candidates) >= min_size
        if used:
            members[name] = np.sort(rng.choice(candidates, min(set_size, len(candidates)), replace=False))
        rows.append({"concept": name, "qualifying_tiles": len(candidates),
                     "examples": len(members.get(name, ())), "used": used})
    return ConceptSets(members, pd.DataFrame(rows))


def concept_tcav(trained: TrainedModel, data: TileData, split: Split, sets: ConceptSets, cfg: ConceptsParams) -> pd.DataFrame:
    """TCAV of every concept in each outcome interval of the test tiles (:func:`lib.explain.tcav.tcav_by_interval`).

    Concept and random sets come from the fit and validation tiles (the same
    sets, by seed, for every variant); the test tiles are split into
    ``n_intervals`` quantile intervals of the true outcome and scored there.
    Returns the tidy table (concept, interval, run, score, magnitude, p_value,
    significant) with the interval edges in ``attrs``.
    """
    rt = runtime(cfg.device)
    t = cfg.tcav
    model = rt.prepare(trained.model).eval()

    def on_device(idx: np.ndarray) -> torch.Tensor:
        return data.images[torch.from_numpy(idx)].to(rt.device)

    concepts = [make_concept(i, name, on_device(idx)) for i, (name, idx) in enumerate(sets.members.items())]
    pool = np.concatenate([split.fit, split.val])
    randoms = random_concepts(on_device(pool), n_runs=t.n_random, set_size=min(t.set_size, len(pool)), seed=cfg.seed)
    return tcav_by_interval(
        model, t.layer, on_device(split.test), data.outcome[split.test], concepts, randoms,
        n_intervals=t.n_intervals, alpha=t.alpha, bonferroni=t.bonferroni, batch_size=cfg.eval.batch_size,
    )


def sensitivity_matrix(table: pd.DataFrame, statistic: str, significant_only: bool = True) -> pd.DataFrame:
    """Concept x interval matrix of the mean ``statistic`` over runs; NaN where not significant."""
    rows = table[table["concept"] != table.attrs["null_concept"]]
    mean = rows.pivot_table(index="concept", columns="interval", values=statistic, aggfunc="mean", sort=False)
    if significant_only:
        significant = rows.pivot_table(index="concept", columns="interval", values="significant", aggfunc="first", sort=False)
        mean = mean.where(significant.astype(bool))
    return mean


def interval_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (concept, interval): mean TCAV score and magnitude over runs, p-value, significance."""
    rows = table[table["concept"] != table.attrs["null_concept"]]
    return (rows.groupby(["concept", "interval"], sort=False)
            .agg(score=("score", "mean"), magnitude=("magnitude", "mean"), p_value=("p_value", "first"),
                 significant=("significant", "first"))
            .reset_index())


def concept_sensitivity(table: pd.DataFrame, statistic: str) -> pd.Series:
    """Each concept's mean ``statistic`` over runs and intervals (the null concept left out)."""
    return sensitivity_matrix(table, statistic, significant_only=False).mean(axis=1).rename(statistic)


def ground_truth_agreement(sensitivity: pd.Series, true_effect: pd.Series) -> dict[str, float]:
    """Rank agreement of concept sensitivities with the concepts' true effects on the outcome.

    Over the concepts in both series: Spearman's rho and Kendall's tau_b with
    their two-sided p-values, and the number of concepts. Only the ranks of
    the true effects matter, so a generator's unidentifiable intercept
    (fractions sum to one) does not. Fewer than 3 concepts give NaN.
    """
    common = [c for c in sensitivity.index if c in true_effect.index and np.isfinite(sensitivity[c])]
    out = {"n_concepts": len(common)}
    if len(common) < 3:
        return out | {k: math.nan for k in ("spearman", "spearman_p", "kendall", "kendall_p")}
    s, e = sensitivity[common].to_numpy(float), true_effect[common].to_numpy(float)
    rho, tau = stats.spearmanr(s, e), stats.kendalltau(s, e)
    return out | {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
                  "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def agreement_table(tcav: dict[str, pd.DataFrame], true_effects: pd.Series) -> pd.DataFrame:
    """:func:`ground_truth_agreement` per variant and TCAV statistic, one row each."""
    rows = [{"variant": v, "statistic": s, **ground_truth_agreement(concept_sensitivity(table, s), true_effects)}
            for v, table in tcav.items() for s in ("score", "magnitude")]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ results
_COUNTS = ("best_epoch", "n_concepts")


def _finite(x: float) -> float | None:
    """JSON has no NaN: undefined numbers (e.g. a rank correlation of two concepts) become null."""
    return float(x) if np.isfinite(x) else None


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """A copy without ``attrs`` (pandas cannot compare attrs holding arrays when concatenating)."""
    out = table.copy()
    out.attrs = {}
    return out


def save_results(out_dir: str | os.PathLike, city: str, data: TileData, split: Split, metrics: pd.DataFrame,
                 history: pd.DataFrame, cfg: ConceptsParams, sets: ConceptSets | None = None,
                 tcav: dict[str, pd.DataFrame] | None = None, agreement: pd.DataFrame | None = None) -> None:
    """``metrics.json`` and CSV tables under ``out_dir`` (e.g. ``results/concepts/<city>``)."""
    out_dir = Path(out_dir)
    summary = {
        "city": city, "outcome": data.outcome_name, "units": data.units,
        "tiles": {"fit": len(split.fit), "validation": len(split.val), "test": len(split.test)},
        "variants": {v: {k: int(x) if k in _COUNTS else _finite(x) for k, x in row.items()}
                     for v, row in metrics.iterrows()},
    }
    write_text(out_dir / "tables" / "metrics.csv", metrics.to_csv(float_format="%.4f"))
    write_text(out_dir / "tables" / "training_history.csv", history.to_csv(index=False, float_format="%.5f"))
    if sets is not None:
        write_text(out_dir / "tables" / "concept_sets.csv", sets.table.to_csv(index=False))
    if tcav is not None:
        runs = pd.concat([_plain(table).assign(variant=v) for v, table in tcav.items()], ignore_index=True)
        write_text(out_dir / "tables" / "tcav_runs.csv", runs.to_csv(index=False, float_format="%.5g"))
        intervals = pd.concat([interval_summary(table).assign(variant=v) for v, table in tcav.items()], ignore_index=True)
        write_text(out_dir / "tables" / "tcav_intervals.csv", intervals.to_csv(index=False, float_format="%.5g"))
        summary["tcav"] = {
            "layer": cfg.tcav.layer, "statistic": cfg.tcav.statistic, "n_random": cfg.tcav.n_random,
            "interval_edges": [float(e) for e in next(iter(tcav.values())).attrs["interval_edges"]],
            "significant": {
                v: {c: {int(i): float(x) for i, x in row.dropna().items()}
                    for c, row in sensitivity_matrix(table, cfg.tcav.statistic).iterrows() if row.notna().any()}
                for v, table in tcav.items()
            },
        }
    if agreement is not None:
        write_text(out_dir / "tables" / "ground_truth_agreement.csv", agreement.to_csv(index=False, float_format="%.4f"))
        headline = agreement[agreement["statistic"] == cfg.tcav.statistic].set_index("variant")
        summary["ground_truth_agreement"] = {
            v: {k: int(x) if k in _COUNTS else _finite(x) for k, x in row.drop("statistic").items()}
            for v, row in headline.iterrows()
        }
    write_json(out_dir / "metrics.json", summary)


def conclusion(metrics: pd.DataFrame, agreement: pd.DataFrame | None, statistic: str) -> str:
    """Sentences on what the numbers show: ordering, accuracy and ground-truth agreement of RNC vs L1."""
    rnc, base = metrics.loc["rnc"], metrics.loc["baseline"]
    wins = [rnc[m] > base[m] for m in ("latent_spearman", "knn_r2")]
    verdict = ("orders the latent space better than" if all(wins) else
               "does not order the latent space better than" if not any(wins) else
               "orders the latent space by one measure better, by the other worse than")
    lines = [
        f"RNC pretraining {verdict} end-to-end L1 training here: "
        f"distance correlation {rnc['latent_spearman']:.3f} vs {base['latent_spearman']:.3f}, "
        f"kNN R^2 {rnc['knn_r2']:.3f} vs {base['knn_r2']:.3f}; "
        f"test R^2 of the predictions {rnc['r2']:.2f} (linear probe) vs {base['r2']:.2f} (L1)."
    ]
    if agreement is not None:
        rows = agreement[agreement["statistic"] == statistic].set_index("variant")
        n = int(rows["n_concepts"].min())
        if rows["spearman"].notna().all():
            lines.append(
                f"Against the generator's true land-cover effects, the concepts' mean TCAV {statistic}s rank with "
                + " and ".join(f"Spearman {rows.loc[v, 'spearman']:.2f} for {VARIANT_LABELS[v]}" for v in rows.index)
                + f" ({n} concepts)."
            )
        else:
            lines.append(f"Only {n} concepts had enough example tiles, too few for a rank agreement with the truth.")
    return " ".join(lines)
