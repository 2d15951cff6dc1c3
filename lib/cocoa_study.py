"""The COCOA study: contrastive corpus attributions of SimCLR and image-text encoders, end to end.

Lin, Chen, Kim, Lee, "Contrastive Corpus Attribution for Explaining
Representations", ICLR 2023. An encoder h maps images to vectors; COCOA explains
the scalar *contrastive corpus similarity* (Sec. 3)

    f(x) = 1/|C| sum_{c in C} cos(h(x), h(c)) - 1/|F| sum_{g in F} cos(h(x), h(g))

with a feature-attribution method, so the attribution answers "which pixels make
x look like the corpus C rather than the foil F" (:mod:`lib.explain.cocoa`).

This module composes the pieces for three experiments on MNIST-5k:

* **benchmark** (paper Sec. 4): a SimCLR encoder trained from scratch; explicands
  from one class, corpus from the same class (``same_class``) or explicands from
  another class (``different_class``), foil from the classes other than the
  corpus's. Four targets (label-free, contrastive label-free, corpus, COCOA) x
  three methods (Integrated Gradients, GradientShap, RISE) and a random ranking
  are scored by insertion and deletion AUCs of (i) the contrastive corpus
  similarity against a *fresh* foil and (ii) the linear probe's probability of the
  corpus class, over several seeds;
* **augmentations** (Sec. 5.1): why does an augmented view stay close to its
  original? (corpus = the original, foil = random digits);
* **zero-shot localisation** (Sec. 5.2): an image encoder aligned with the frozen
  MiniLM text encoder on single-digit scenes; COCOA with corpus = the caption of
  the scene's digit and foil = the other captions, scored by the pointing game and
  the attribution mass inside the digit's box, on held-out single-digit scenes
  and on *crowded* ones where a digit of another class shares the canvas (there,
  "where is a digit" no longer answers "where is the digit the caption names").

The encoders are small strided CNNs (:mod:`lib.models.convnet`) so that the
default parameters, several hundred thousand encoder calls, run in minutes on
two CPU cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from captum.attr import GradientShap, IntegratedGradients
from pydantic import Field, model_validator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lib import digit_augment as aug
from lib.augment import random_affine
from lib.data.digit_scenes import DigitScenes, make_scenes
from lib.data.mnist import MnistDataset, load_mnist5k, validation_split
from lib.explain.cocoa import (
    ContrastiveCorpusSimilarity,
    ContrastiveLabelFree,
    CorpusSimilarity,
    LabelFreeImportance,
    encode,
)
from lib.explain.localisation import box_masks, mass_in_box, pointing_game
from lib.explain.removal import blur_baseline, insertion_deletion_curves, mean_ci, random_attribution
from lib.explain.rise import RISE
from lib.io import load_weights, save_weights, write_json, write_text
from lib.losses.clip import LogitScale, clip_loss
from lib.losses.ntxent import nt_xent
from lib.models.convnet import conv_encoder
from lib.params import Params
from lib.runtime import Runtime, runtime, seed_everything
from lib.training import fit

SETTINGS = ("same_class", "different_class")
TARGETS = ("label_free", "contrastive_label_free", "corpus", "cocoa")
METHODS = ("integrated_gradients", "gradient_shap", "rise")
METRICS = ("contrastive_corpus_similarity", "corpus_majority_probability")
AUGMENTATIONS = ("crop", "rotation", "erasing", "contrast", "noise")
N_CLASSES = 10
PER_CLASS = 500  # MNIST-5k holds 500 images of each digit

Method = Literal["integrated_gradients", "gradient_shap", "rise"]


# ------------------------------------------------------------------ parameters
class CocoaData(Params):
    test_fraction: float = Field(gt=0, lt=1, description="stratified share of MNIST-5k held out: explicands, probe test")


class SimclrParams(Params):
    width: int = Field(ge=2, description="channels of the first of three conv blocks (doubled per block)")
    projection_dim: int = Field(ge=2)
    temperature: float = Field(gt=0, description="NT-Xent temperature tau")
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2, description="images per step; NT-Xent sees two views of each")
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    max_steps_per_epoch: int | None = Field(default=None, ge=1)


def _check_range(values: list[float], name: str) -> None:
    if not 0 < values[0] <= values[1] <= 1:
        raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= 1, got {values}")


class AugmentParams(Params):
    crop_scale: list[float] = Field(min_length=2, max_length=2, description="area fraction of the resized crop")
    rotation_degrees: float = Field(ge=0, le=180)
    erase_prob: float = Field(ge=0, le=1)
    erase_scale: list[float] = Field(min_length=2, max_length=2, description="area fraction of the erased rectangle")
    contrast: float = Field(ge=0, le=1)
    brightness: float = Field(ge=0, le=1)
    noise_std: float = Field(ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentParams:
        _check_range(self.crop_scale, "crop_scale")
        _check_range(self.erase_scale, "erase_scale")
        return self


class ProbeParams(Params):
    regularisation: float = Field(gt=0, description="inverse L2 strength, scikit-learn's C")
    max_iter: int = Field(ge=10)


class AttributionParams(Params):
    ig_steps: int = Field(ge=2, description="Integrated Gradients: integration steps")
    gradshap_samples: int = Field(ge=1, description="GradientShap: samples per explicand")
    gradshap_stdev: float = Field(ge=0, description="GradientShap: input noise, pixels in [0, 1]")
    rise_masks: int = Field(ge=1)
    rise_grid: int = Field(ge=2, description="RISE: coarse mask grid s x s")
    rise_p: float = Field(gt=0, le=1, description="RISE: probability a grid cell is kept")
    batch_size: int = Field(ge=1, description="images per encoder call in RISE and the removal curves")


class BenchmarkParams(Params):
    n_seeds: int = Field(ge=2, description="repetitions with a new corpus class, corpus, foil and explicands")
    n_explicands: int = Field(ge=1, description="per seed and setting")
    corpus_size: int = Field(ge=1)
    foil_size: int = Field(ge=1, description="explanation foil; the evaluation foil is a second, disjoint draw")
    methods: list[Method] = Field(min_length=1)
    blur_sigma: float = Field(gt=0, description="removal baseline: Gaussian blur of the explicand, pixels")
    curve_steps: int = Field(ge=2, description="steps of the insertion and deletion curves")


class AugmentationStudyParams(Params):
    n_images: int = Field(ge=1)
    foil_size: int = Field(ge=1)
    method: Method


class SceneParams(Params):
    size: int = Field(ge=28, description="canvas side in pixels")
    n_train: int = Field(ge=N_CLASSES)
    n_test: int = Field(ge=1)
    n_strokes: int = Field(ge=0, description="distractor strokes per scene")
    stroke_width: float = Field(gt=0)
    crowded_other_digits: int = Field(ge=1, description="digits of other classes added to the crowded test scenes")


class ClipParams(Params):
    width: int = Field(ge=2, description="channels of the first of four conv blocks")
    epochs: int = Field(ge=1)
    groups_per_batch: int = Field(ge=1, description="a batch holds this many groups of the ten digits")
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    init_temperature: float = Field(gt=0, description="initial CLIP temperature (learned)")
    max_steps_per_epoch: int | None = Field(default=None, ge=1)


class LocalisationParams(Params):
    n_scenes: int = Field(ge=1, description="test scenes explained")
    methods: list[Method] = Field(min_length=1)
    blur_sigma: float = Field(gt=0)


class CocoaParams(Params):
    seed: int
    device: str
    data: CocoaData
    simclr: SimclrParams
    augment: AugmentParams
    probe: ProbeParams
    attribution: AttributionParams
    benchmark: BenchmarkParams
    augmentation: AugmentationStudyParams
    scenes: SceneParams
    clip: ClipParams
    localisation: LocalisationParams

    @model_validator(mode="after")
    def _sizes_fit_mnist5k(self) -> CocoaParams:
        test_per_class = round(self.data.test_fraction * PER_CLASS)
        train_per_class = PER_CLASS - test_per_class
        b = self.benchmark
        if b.n_explicands > test_per_class or b.corpus_size > train_per_class:
            raise ValueError(
                f"benchmark.n_explicands ({b.n_explicands}) must be at most {test_per_class} and corpus_size "
                f"({b.corpus_size}) at most {train_per_class} with data.test_fraction {self.data.test_fraction}"
            )
        if 2 * b.foil_size > (N_CLASSES - 1) * train_per_class:
            raise ValueError(f"benchmark.foil_size ({b.foil_size}) x 2 exceeds the other classes' training images")
        if self.localisation.n_scenes > self.scenes.n_test:
            raise ValueError(f"localisation.n_scenes ({self.localisation.n_scenes}) exceeds scenes.n_test")
        return self


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class Digits:
    """MNIST-5k split by class-stratified hold-out; images (N, 1, 28, 28) in [0, 1]."""

    train: MnistDataset
    test: MnistDataset


def load_digits(cfg: CocoaParams, data_dir: str | os.PathLike = "data") -> Digits:
    """MNIST-5k with ``data.test_fraction`` of every digit held out (seeded by ``seed``)."""
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = validation_split(labels, np.arange(len(labels)), cfg.data.test_fraction, seed=cfg.seed)
    return Digits(MnistDataset(images[train_idx], labels[train_idx]), MnistDataset(images[test_idx], labels[test_idx]))


@dataclass(frozen=True)
class SceneSets:
    """Single-digit scenes for training (training digits) and testing (test digits), and crowded test scenes
    in which the named digit shares the canvas with digits of other classes."""

    train: DigitScenes
    test: DigitScenes
    crowded: DigitScenes


def make_scene_sets(digits: Digits, cfg: CocoaParams) -> SceneSets:
    """The three scene sets, each from its own seed, so that both notebooks rebuild the same scenes."""
    s = cfg.scenes
    common = dict(size=s.size, n_strokes=s.n_strokes, stroke_width=s.stroke_width)
    train = (digits.train.images[:, 0].numpy(), digits.train.labels.numpy())
    test = (digits.test.images[:, 0].numpy(), digits.test.labels.numpy())
    return SceneSets(
        train=make_scenes(*train, s.n_train, seed=cfg.seed, **common),
        test=make_scenes(*test, s.n_test, seed=cfg.seed + 1, **common),
        crowded=make_scenes(*test, s.n_test, n_other_digits=s.crowded_other_digits, seed=cfg.seed + 2, **common),
    )


# ------------------------------------------------------------------ SimCLR encoder and probe
class SimCLR(nn.Module):
    """Encoder h (the representation explained) and projection head g (what NT-Xent sees): x -> g(h(x))."""

    def __init__(self, width: int, projection_dim: int):
        super().__init__()
        self.encoder = conv_encoder(in_chans=1, width=width, n_blocks=3)
        dim = self.encoder.out_dim
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def two_views(x: Tensor, cfg: AugmentParams) -> Tensor:
    """Two independent SimCLR views of a batch, stacked: (B, ...) -> (2B, ...)."""
    settings = cfg.model_dump()
    return torch.cat([aug.simclr_view(x, **settings), aug.simclr_view(x, **settings)])


def example_views(images: Tensor, cfg: AugmentParams, n_views: int, seed: int) -> list[Tensor]:
    """``n_views`` random SimCLR views of each image, for showing what the encoder is trained to equate."""
    generator = torch.Generator().manual_seed(seed)
    return [aug.simclr_view(images, **cfg.model_dump(), generator=generator) for _ in range(n_views)]


def simclr_loss(temperature: float) -> Callable[[Tensor, Tensor], Tensor]:
    """NT-Xent over the projections of :func:`two_views`' stacked batch; labels are ignored."""
    return lambda z, _labels: nt_xent(*z.float().chunk(2), temperature=temperature)


def train_simclr(cfg: CocoaParams, digits: Digits, progress: bool = True) -> tuple[SimCLR, list[dict]]:
    """SimCLR (Chen et al. 2020) on the training digits, labels unused; the last epoch is kept."""
    rt = runtime(cfg.device)
    generator = seed_everything(cfg.seed)
    s = cfg.simclr
    model = rt.prepare(SimCLR(s.width, s.projection_dim))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loader = DataLoader(digits.train, batch_size=s.batch_size, shuffle=True, drop_last=True, generator=generator)
    result = fit(
        model, simclr_loss(s.temperature), lambda epoch: loader, optimizer,
        epochs=s.epochs, runtime=rt, max_steps_per_epoch=s.max_steps_per_epoch, progress=progress,
        augment=lambda x: two_views(x, cfg.augment),
    )
    model.load_state_dict(result.best_state)
    return model.eval(), result.history


def save_simclr(path: str | os.PathLike, model: SimCLR, history: list[dict], cfg: CocoaParams) -> None:
    """Safetensors weights with the parameters and training history as metadata."""
    save_weights(path, model.state_dict(), {"params": cfg.model_dump(), "history": history})


def load_simclr(path: str | os.PathLike) -> tuple[SimCLR, dict]:
    """A SimCLR model (eval mode) and its metadata from :func:`save_simclr`'s file."""
    state, meta = load_weights(path)
    s = CocoaParams.model_validate(meta["params"]).simclr
    model = SimCLR(s.width, s.projection_dim)
    model.load_state_dict(state)
    return model.eval(), meta


def representations(encoder: nn.Module, images: Tensor, rt: Runtime) -> Tensor:
    """h(images) on the runtime's device, without gradients: (N, ...) -> (N, D)."""
    return encode(encoder.eval(), rt.batch(images))


def fit_probe(features: Tensor, labels: Tensor, cfg: ProbeParams) -> nn.Linear:
    """Multinomial logistic regression (scikit-learn) on standardised features, as one linear layer.

    With the scaler's mean mu and scale s, and the classifier's (W, b) on
    (h - mu) / s, the layer computes logits = W' h + b' with W' = W / s and
    b' = b - W' mu, so softmax(layer(h)) equals ``predict_proba``.
    """
    x, y = features.double().cpu().numpy(), labels.cpu().numpy()
    scaler = StandardScaler().fit(x)
    # One BLAS thread: the problem is tiny, and threads waiting on a busy CPU make it ten times slower.
    with threadpool_limits(1):
        classifier = LogisticRegression(C=cfg.regularisation, max_iter=cfg.max_iter).fit(scaler.transform(x), y)
    if list(classifier.classes_) != list(range(N_CLASSES)):
        raise ValueError(f"the probe needs every digit in its training labels, got {classifier.classes_}")
    weight = classifier.coef_ / scaler.scale_
    layer = nn.Linear(x.shape[1], N_CLASSES)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(classifier.intercept_ - weight @ scaler.mean_))
    return layer.eval()


def probe_accuracy(encoder: nn.Module, probe: nn.Module, split: MnistDataset, rt: Runtime) -> float:
    """Share of ``split`` whose probe prediction on h(x) is the label."""
    features = representations(encoder, split.images, rt)
    with torch.no_grad():
        predicted = probe.to(features.device)(features).argmax(dim=1).cpu()
    return float((predicted == split.labels).float().mean())


def save_probe(path: str | os.PathLike, probe: nn.Linear, metadata: dict) -> None:
    """The probe's weight (10, D) and bias (10,) as safetensors."""
    save_weights(path, probe.state_dict(), metadata)


def load_probe(path: str | os.PathLike) -> tuple[nn.Linear, dict]:
    """The probe (eval mode) and its metadata from :func:`save_probe`'s file."""
    state, meta = load_weights(path)
    probe = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    probe.load_state_dict(state)
    return probe.eval(), meta


class ClassProbability(nn.Module):
    """The probe's probability of one class: x -> softmax(probe(h(x)))[:, cls], (B, ...) -> (B,)."""

    def __init__(self, encoder: nn.Module, probe: nn.Module, cls: int):
        super().__init__()
        self.encoder, self.probe, self.cls = encoder, probe, cls

    def forward(self, x: Tensor) -> Tensor:
        return self.probe(self.encoder(x)).softmax(dim=1)[:, self.cls]


# ------------------------------------------------------------------ attribution
def attribute(target: nn.Module, method: str, x: Tensor, baseline: Tensor, cfg: AttributionParams, seed: int) -> Tensor:
    """Attributions (B, C, H, W) of the scalar ``target`` at ``x`` with the removal ``baseline`` (e.g. a blur).

    Integrated Gradients integrates from the baseline to x; GradientShap draws
    points between them with input noise (captum; its randomness comes from the
    global generators); RISE removes masked pixels to the baseline, its masks
    drawn from ``seed`` so that every target of one explicand sees the same masks.
    RISE's map S is the mean score of the masked images that keep a pixel, about
    f(x) / 2 everywhere plus small differences; it is returned centred, S - mean(S),
    so that its positive part marks the pixels that raise the score (rankings are
    unchanged).
    """
    a = cfg
    if method == "integrated_gradients":
        return IntegratedGradients(target).attribute(x, baselines=baseline, n_steps=a.ig_steps)
    if method == "gradient_shap":
        return GradientShap(target).attribute(x, baselines=baseline, n_samples=a.gradshap_samples, stdevs=a.gradshap_stdev)
    if method == "rise":
        return _centred_rise(target, x, baseline, cfg, seed)
    raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")


def _centred_rise(forward: Callable[[Tensor], Tensor], x: Tensor, baseline: Tensor, cfg: AttributionParams,
                  seed: int) -> Tensor:
    """RISE maps with masks drawn from ``seed``, each centred on its mean (see :func:`attribute`).

    (B, C, H, W) for a scalar ``forward``, (T, B, C, H, W) for one returning T scores per image.
    """
    a = cfg
    saliency = RISE(forward).attribute(
        x, baselines=baseline, n_masks=a.rise_masks, grid=a.rise_grid, p=a.rise_p, batch_size=a.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    return saliency - saliency.mean(dim=(-3, -2, -1), keepdim=True)


def attribute_targets(
    targets: dict[str, nn.Module], method: str, x: Tensor, baseline: Tensor, cfg: AttributionParams, seed: int
) -> dict[str, Tensor]:
    """:func:`attribute` for every target of one explicand, {name: (B, C, H, W)}.

    RISE scores all targets on the same masked images, so when the targets
    share their explicand encoder (as the four targets of an explicand do) the
    images are encoded once for all of them, ``score(h(masked))`` per target;
    the maps equal those of one :func:`attribute` call per target. Gradient
    methods explain one target at a time.
    """
    shareable = all(hasattr(t, "explicand_network") for t in targets.values())
    if method != "rise" or not shareable or len({id(t.explicand_network()) for t in targets.values()}) != 1:
        return {name: attribute(t, method, x, baseline, cfg, seed) for name, t in targets.items()}
    first = next(iter(targets.values()))

    def scores(images: Tensor) -> Tensor:
        h = first.explicand_representation(images)
        return torch.stack([t.score(h) for t in targets.values()], dim=1)

    return dict(zip(targets, _centred_rise(scores, x, baseline, cfg, seed), strict=True))


def explicand_targets(
    encoder: nn.Module, explicand_repr: Tensor, foil_repr: Tensor, shared: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    """The four targets for one explicand: its own representation (1, D) makes the label-free pair."""
    return {
        "label_free": LabelFreeImportance(encoder, explicand_repr),
        "contrastive_label_free": ContrastiveLabelFree(encoder, foil_repr, explicand_repr),
        **shared,
    }


# ------------------------------------------------------------------ benchmark (paper Sec. 4)
@dataclass(frozen=True)
class Task:
    """One seed x setting: explicands (n, 1, H, W), corpus, explanation foil and evaluation foil images."""

    seed: int
    setting: str
    corpus_class: int
    explicand_class: int
    explicands: Tensor
    corpus: Tensor
    foil: Tensor
    eval_foil: Tensor


def sample_tasks(digits: Digits, cfg: BenchmarkParams, seed: int, base_seed: int = 0) -> list[Task]:
    """The two settings of one seed: a random corpus class c (training images), foils from the other classes,
    explicands (test images) of class c (``same_class``) or of a random other class (``different_class``)."""
    rng = np.random.default_rng([base_seed, seed])
    train_y, test_y = digits.train.labels.numpy(), digits.test.labels.numpy()
    corpus_class = int(rng.integers(N_CLASSES))
    other_class = int(rng.choice(np.setdiff1d(np.arange(N_CLASSES), [corpus_class])))
    corpus = rng.choice(np.flatnonzero(train_y == corpus_class), cfg.corpus_size, replace=False)
    foils = rng.choice(np.flatnonzero(train_y != corpus_class), 2 * cfg.foil_size, replace=False)
    train = digits.train.images
    tasks = []
    for setting, cls in zip(SETTINGS, (corpus_class, other_class), strict=True):
        explicands = rng.choice(np.flatnonzero(test_y == cls), cfg.n_explicands, replace=False)
        tasks.append(Task(
            seed, setting, corpus_class, cls, digits.test.images[explicands], train[corpus],
            train[foils[: cfg.foil_size]], train[foils[cfg.foil_size :]],
        ))
    return tasks


def explain_task(encoder: nn.Module, task: Task, cfg: CocoaParams, rt: Runtime) -> dict[tuple[str, str], Tensor]:
    """Attributions {(target, method): (n, 1, H, W)} of every explicand of a task."""
    corpus_repr = representations(encoder, task.corpus, rt)
    foil_repr = representations(encoder, task.foil, rt)
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus_repr),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus_repr, foil_repr),
    }
    explicands = rt.batch(task.explicands)
    baselines = blur_baseline(explicands, cfg.benchmark.blur_sigma)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in range(len(explicands)):
        x, b = explicands[i : i + 1], baselines[i : i + 1]
        targets = explicand_targets(encoder, representations(encoder, x, rt), foil_repr, shared)
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=i) for m in cfg.benchmark.methods}
        for name, method in product(targets, cfg.benchmark.methods):
            maps.setdefault((name, method), []).append(explained[method][name].detach())
    return {key: torch.cat(values) for key, values in maps.items()}


def evaluation_metrics(encoder: nn.Module, probe: nn.Module, task: Task, rt: Runtime) -> dict[str, nn.Module]:
    """The two scores the removal curves follow: contrastive corpus similarity against the evaluation foil
    (not the foil the attributions saw) and the probe's probability of the corpus class."""
    corpus_repr = representations(encoder, task.corpus, rt)
    eval_foil_repr = representations(encoder, task.eval_foil, rt)
    return {
        "contrastive_corpus_similarity": ContrastiveCorpusSimilarity(encoder, corpus_repr, eval_foil_repr),
        "corpus_majority_probability": ClassProbability(encoder, probe.to(rt.device), task.corpus_class),
    }


def evaluate_task(
    encoder: nn.Module, probe: nn.Module, task: Task, maps: dict[tuple[str, str], Tensor], cfg: CocoaParams, rt: Runtime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Insertion and deletion curves of every ranking (plus a random one), both metrics.

    Returns (AUCs, one row per target x method x metric x curve, averaged over the
    explicands; mean curves, one row per step). All rankings of all explicands go
    through :func:`insertion_deletion_curves` as one batch of repeated explicands.
    """
    generator = torch.Generator().manual_seed(2 * task.seed + SETTINGS.index(task.setting))
    explicands = rt.batch(task.explicands)
    rankings = {**maps, ("random", "random"): random_attribution(explicands, generator)}
    keys, k, n = list(rankings), len(rankings), len(explicands)
    inputs, attributions = explicands.repeat(k, 1, 1, 1), torch.cat([rankings[key] for key in keys])
    baselines = blur_baseline(inputs, cfg.benchmark.blur_sigma)
    aucs, curves = [], []
    for metric, score in evaluation_metrics(encoder, probe, task, rt).items():
        result = insertion_deletion_curves(
            score, inputs, attributions, baselines, cfg.benchmark.curve_steps, cfg.attribution.batch_size
        )
        fractions = result.fractions.cpu()
        for curve in ("insertion", "deletion"):
            auc = getattr(result, f"{curve}_auc").reshape(k, n).mean(dim=1).cpu()
            mean_curve = getattr(result, curve).reshape(k, n, -1).mean(dim=1).cpu()
            for j, (target, method) in enumerate(keys):
                row = _task_row(task) | {"target": target, "method": method, "metric": metric, "curve": curve}
                aucs.append(row | {"auc": float(auc[j])})
                curves += [row | {"fraction": float(f), "score": float(v)} for f, v in zip(fractions, mean_curve[j], strict=True)]
    return pd.DataFrame(aucs), pd.DataFrame(curves)


def _task_row(task: Task) -> dict:
    return {
        "seed": task.seed, "setting": task.setting,
        "corpus_class": task.corpus_class, "explicand_class": task.explicand_class,
    }


@dataclass(frozen=True)
class Benchmark:
    """AUCs and mean curves (tidy frames), and the first explicand's attributions of each task of seed 0."""

    aucs: pd.DataFrame
    curves: pd.DataFrame
    examples: dict[str, tuple[Tensor, dict[tuple[str, str], Tensor]]]


def run_benchmark(
    encoder: nn.Module, probe: nn.Module, digits: Digits, cfg: CocoaParams, rt: Runtime, progress: bool = True
) -> Benchmark:
    """Every seed x setting: explain, then score the rankings (paper Sec. 4.1)."""
    encoder = rt.prepare(encoder).eval()
    tasks = [t for s in range(cfg.benchmark.n_seeds) for t in sample_tasks(digits, cfg.benchmark, s, cfg.seed)]
    aucs, curves, examples = [], [], {}
    for task in tqdm(tasks, desc="benchmark", disable=not progress):
        maps = explain_task(encoder, task, cfg, rt)
        auc, curve = evaluate_task(encoder, probe, task, maps, cfg, rt)
        aucs.append(auc)
        curves.append(curve)
        if task.seed == 0:
            examples[task.setting] = (task.explicands[0].cpu(), {key: m[0].cpu() for key, m in maps.items()})
    return Benchmark(pd.concat(aucs, ignore_index=True), pd.concat(curves, ignore_index=True), examples)


def summarise(aucs: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC over seeds and the half-width of its 95% Student-t interval,
    per setting x metric x target x method x curve."""
    keys = ["setting", "metric", "target", "method", "curve"]
    rows = []
    for key, group in aucs.groupby(keys, sort=False):
        mean, half = mean_ci(group.sort_values("seed")["auc"].to_numpy())
        rows.append(dict(zip(keys, key, strict=True)) | {"mean": float(mean), "ci95": float(half), "n_seeds": len(group)})
    return pd.DataFrame(rows)


def _random_under_every_method(frame: pd.DataFrame) -> pd.DataFrame:
    """The random ranking's rows (method "random") repeated under each attribution method of ``frame``."""
    random = frame[frame.target == "random"]
    methods = [m for m in METHODS if m in set(frame.method)]
    return pd.concat([frame[frame.target != "random"], *(random.assign(method=m) for m in methods)], ignore_index=True)


def auc_table(summary: pd.DataFrame, setting: str, metric: str) -> pd.DataFrame:
    """The paper's table for one setting and metric: rows targets (and the random ranking, repeated under every
    method), columns method x curve, cells "mean ± 95% half-width" over seeds."""
    rows = _random_under_every_method(summary[(summary.setting == setting) & (summary.metric == metric)])
    cells = rows.assign(cell=[f"{m:.3f} ± {h:.3f}" for m, h in zip(rows["mean"], rows["ci95"], strict=True)])
    table = cells.pivot(index="target", columns=["method", "curve"], values="cell")
    methods = [m for m in METHODS if m in set(rows.method)]
    order = [t for t in (*TARGETS, "random") if t in table.index]
    return table.loc[order, [(m, c) for m in methods for c in ("insertion", "deletion")]]


def cocoa_advantage(aucs: pd.DataFrame) -> pd.DataFrame:
    """COCOA's AUC against every other target's, paired by seed: mean and 95% half-width of the advantage.

    The advantage is cocoa - other for insertion (higher is better) and
    other - cocoa for deletion (lower is better), so it is positive where COCOA
    wins; one row per setting x metric x method x curve x other target.
    """
    keys = ["seed", "setting", "metric", "method", "curve"]
    aucs = _random_under_every_method(aucs)
    paired = aucs[aucs.target == "cocoa"].merge(aucs[aucs.target != "cocoa"], on=keys, suffixes=("_cocoa", ""))
    sign = np.where(paired.curve == "insertion", 1.0, -1.0)
    paired = paired.assign(advantage=sign * (paired.auc_cocoa - paired.auc))
    rows = []
    for key, group in paired.groupby(["setting", "metric", "method", "curve", "target"], sort=False):
        mean, half = mean_ci(group.sort_values("seed").advantage.to_numpy())
        names = dict(zip(["setting", "metric", "method", "curve", "other"], key, strict=True))
        rows.append(names | {"advantage": float(mean), "ci95": float(half)})
    return pd.DataFrame(rows)


def benchmark_summary(aucs: pd.DataFrame) -> str:
    """One sentence per setting x metric: in how many method x curve columns COCOA beats every other target
    and the random ranking on average, and in how many the paired 95% interval of every advantage excludes 0."""
    lines = []
    for (setting, metric), rows in cocoa_advantage(aucs).groupby(["setting", "metric"], sort=False):
        columns = rows.groupby(["method", "curve"])
        wins = sum(bool((c.advantage > 0).all()) for _, c in columns)
        clear = sum(bool((c.advantage - c.ci95 > 0).all()) for _, c in columns)
        lines.append(
            f"{setting}, {metric.replace('_', ' ')}: COCOA beats every other target and the random ranking in {wins} "
            f"of {columns.ngroups} method x curve columns, by a margin whose paired 95% interval excludes zero in {clear}."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ augmentation study (paper Sec. 5.1)
def augment_one(name: str, x: Tensor, cfg: AugmentParams, generator: torch.Generator) -> Tensor:
    """One SimCLR augmentation alone, at its training strength."""
    if name == "crop":
        return aug.random_resized_crop(x, tuple(cfg.crop_scale), generator=generator)
    if name == "rotation":
        return aug.random_rotation(x, cfg.rotation_degrees, generator)
    if name == "erasing":
        return aug.random_erasing(x, 1.0, tuple(cfg.erase_scale), generator)
    if name == "contrast":
        return aug.random_contrast(x, cfg.contrast, cfg.brightness, generator)
    if name == "noise":
        return aug.gaussian_noise(x, cfg.noise_std, generator)
    raise ValueError(f"unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")


@dataclass(frozen=True)
class AugmentationStudy:
    """Originals (n, 1, H, W); per augmentation the views and their COCOA attributions; the similarities."""

    originals: Tensor
    views: dict[str, Tensor]
    attributions: dict[str, Tensor]
    similarity: pd.DataFrame


def augmentation_study(encoder: nn.Module, digits: Digits, cfg: CocoaParams, rt: Runtime) -> AugmentationStudy:
    """Explain each augmented view x' of an image x with corpus {x} and a foil of random training digits:
    the attribution shows what of x' keeps it close to x; f(x') itself says how close it stays."""
    s = cfg.augmentation
    rng = np.random.default_rng([cfg.seed, 5])
    encoder = rt.prepare(encoder).eval()
    originals = rt.batch(digits.test.images[rng.choice(len(digits.test), s.n_images, replace=False)])
    foil_repr = representations(encoder, digits.train.images[rng.choice(len(digits.train), s.foil_size, replace=False)], rt)
    generator = torch.Generator().manual_seed(cfg.seed)
    views, maps, rows = {}, {}, []
    for name in AUGMENTATIONS:
        views[name] = augment_one(name, originals, cfg.augment, generator)
        attributions = []
        for i in range(s.n_images):
            target = ContrastiveCorpusSimilarity(encoder, representations(encoder, originals[i : i + 1], rt), foil_repr)
            x = views[name][i : i + 1]
            baseline = blur_baseline(x, cfg.benchmark.blur_sigma)
            attributions.append(attribute(target, s.method, x, baseline, cfg.attribution, seed=i).detach().cpu())
            with torch.no_grad():
                rows.append({"image": i, "augmentation": name, "similarity": float(target(x))})
        maps[name] = torch.cat(attributions)
    return AugmentationStudy(originals.cpu(), {k: v.cpu() for k, v in views.items()}, maps, pd.DataFrame(rows))


def augmentation_summary(similarity: pd.DataFrame) -> str:
    """How close the views stay: the share with f > 0 (closer to the original than to the foil),
    and the mean f per augmentation."""
    means = similarity.groupby("augmentation", sort=False).similarity.mean()
    return (
        f"{100 * (similarity.similarity > 0).mean():.0f}% of the views are closer to their original than to random digits "
        f"(f > 0); mean f by augmentation: {', '.join(f'{k} {v:.2f}' for k, v in means.items())}. "
        f"The encoder is most invariant to {means.idxmax()} and least to {means.idxmin()}."
    )


# ------------------------------------------------------------------ image-text model (paper Sec. 5.2)
def build_image_encoder(cfg: ClipParams, dim: int) -> nn.Sequential:
    """Four conv blocks (56 px -> 4 x 4), global pooling, a linear map into the text space (D = ``dim``)."""
    backbone = conv_encoder(in_chans=1, width=cfg.width, n_blocks=4)
    return nn.Sequential(backbone, nn.Linear(backbone.out_dim, dim))


class GroupedClipLoss(nn.Module):
    """CLIP's symmetric loss on groups of ten scenes, one of each digit, against the frozen caption embeddings.

    A batch of B = 10 G scenes is G groups of ten; with the caption embeddings T
    (10, D) and labels y, the loss is mean_g clip_loss(I_g, T[y_g], exp(t)), and
    the logit scale exp(t) is learned (:class:`lib.losses.clip.LogitScale`). Ten
    captions only: two scenes of one digit in a group would share a caption and
    make its row of the similarity matrix ask for two answers.
    """

    def __init__(self, caption_embeddings: Tensor, init_temperature: float):
        super().__init__()
        self.register_buffer("captions", caption_embeddings.detach().clone())
        self.logit_scale = LogitScale(init_temperature)

    def forward(self, image_emb: Tensor, labels: Tensor) -> Tensor:
        texts = self.captions[labels]
        scale = self.logit_scale()
        groups = zip(image_emb.float().split(N_CLASSES), texts.split(N_CLASSES), strict=True)
        return torch.stack([clip_loss(images, captions, scale) for images, captions in groups]).mean()


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
    cfg: CocoaParams, scenes: DigitScenes, caption_embeddings: Tensor, progress: bool = True
) -> tuple[nn.Sequential, GroupedClipLoss, list[dict]]:
    """The image encoder aligned with the frozen caption embeddings (the text tower stays locked, as in LiT,
    Zhai et al., CVPR 2022, with the roles swapped); the last epoch is kept."""
    rt = runtime(cfg.device)
    generator = seed_everything(cfg.seed)
    c = cfg.clip
    encoder = rt.prepare(build_image_encoder(c, caption_embeddings.shape[1]))
    loss = GroupedClipLoss(caption_embeddings, c.init_temperature).to(rt.device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *loss.parameters()], lr=c.lr, weight_decay=c.weight_decay)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in grouped_batches(scenes.labels, c.groups_per_batch, generator):
            yield scenes.images[idx], scenes.labels[idx]

    result = fit(
        encoder, loss, batches, optimizer, epochs=c.epochs, runtime=rt, max_steps_per_epoch=c.max_steps_per_epoch,
        progress=progress,
        # Shift the canvas by up to a tenth of its side: new placements each epoch against over-fitting.
        augment=lambda x: random_affine(x, degrees=0.0, translate=0.1),
    )
    encoder.load_state_dict(result.best_state)
    return encoder.eval(), loss, result.history


def save_image_text(
    path: str | os.PathLike, encoder: nn.Module, loss: GroupedClipLoss, history: list[dict], cfg: CocoaParams
) -> None:
    """The image encoder's weights; parameters, history and the learned logit scale as metadata."""
    save_weights(path, encoder.state_dict(), {
        "params": cfg.model_dump(), "history": history, "logit_scale": loss.logit_scale().item(),
    })


def load_image_text(path: str | os.PathLike) -> tuple[nn.Sequential, dict]:
    """The image encoder (eval mode) and its metadata from :func:`save_image_text`'s file."""
    state, meta = load_weights(path)
    cfg = CocoaParams.model_validate(meta["params"])
    encoder = build_image_encoder(cfg.clip, state["1.weight"].shape[0])
    encoder.load_state_dict(state)
    return encoder.eval(), meta


def save_captions(path: str | os.PathLike, captions: list[str], embeddings: Tensor) -> None:
    """The caption embeddings (10, D), computed once, with the captions as metadata."""
    save_weights(path, {"embeddings": embeddings}, {"captions": captions})


def load_captions(path: str | os.PathLike) -> tuple[list[str], Tensor]:
    """(captions, embeddings (10, D)) from :func:`save_captions`'s file."""
    tensors, meta = load_weights(path)
    return meta["captions"], tensors["embeddings"]


def zero_shot_accuracy(encoder: nn.Module, caption_embeddings: Tensor, scenes: DigitScenes, rt: Runtime) -> float:
    """Share of scenes whose most cosine-similar caption names their digit."""
    images = F.normalize(representations(encoder, scenes.images, rt), dim=1)
    predicted = (images @ F.normalize(caption_embeddings.to(images), dim=1).T).argmax(dim=1).cpu()
    return float((predicted == scenes.labels).float().mean())


# ------------------------------------------------------------------ zero-shot localisation
def caption_targets(encoder: nn.Module, captions: Tensor, label: int, explicand_repr: Tensor) -> dict[str, nn.Module]:
    """Targets for one scene: corpus = its digit's caption, foil = the other nine captions.

    The corpus and foil are text embeddings; the explicands go through the image
    encoder (the ``explicand_encoder`` of COCOA's targets, Sec. 5.2).
    """
    corpus, foil = captions[label : label + 1], captions[torch.arange(N_CLASSES) != label]
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus, explicand_encoder=encoder),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus, foil, explicand_encoder=encoder),
    }
    return explicand_targets(encoder, explicand_repr, foil, shared)


@dataclass(frozen=True)
class Localisation:
    """Scores per scene x target x method (tidy, with the scene set's name) and the maps {(target, method): (n, 1, S, S)}."""

    scores: pd.DataFrame
    maps: dict[tuple[str, str], Tensor]


def localise(
    encoder: nn.Module, caption_embeddings: Tensor, scenes: DigitScenes, name: str, cfg: CocoaParams, rt: Runtime,
    progress: bool = True,
) -> Localisation:
    """Explain the first ``localisation.n_scenes`` scenes of a set; score every map against the named digit's box."""
    encoder = rt.prepare(encoder).eval()
    captions = caption_embeddings.to(rt.device)
    n = cfg.localisation.n_scenes
    images = rt.batch(scenes.images[:n])
    baselines = blur_baseline(images, cfg.localisation.blur_sigma)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in tqdm(range(n), desc=f"localisation ({name})", disable=not progress):
        x, b = images[i : i + 1], baselines[i : i + 1]
        targets = caption_targets(encoder, captions, int(scenes.labels[i]), representations(encoder, x, rt))
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=i) for m in cfg.localisation.methods}
        for target_name, method in product(targets, cfg.localisation.methods):
            maps.setdefault((target_name, method), []).append(explained[method][target_name].detach().cpu())
    stacked = {key: torch.cat(values) for key, values in maps.items()}
    stacked["random", "random"] = random_attribution(images.cpu(), torch.Generator().manual_seed(cfg.seed))
    return Localisation(localisation_scores(stacked, scenes, n).assign(scenes=name), stacked)


def localisation_scores(maps: dict[tuple[str, str], Tensor], scenes: DigitScenes, n: int) -> pd.DataFrame:
    """Per scene x (target, method): pointing-game hit and mass in the named digit's box, and whether the
    map's maximum lies on another digit instead (never, in single-digit scenes)."""
    boxes, others = scenes.boxes[:n], scenes.other_boxes[:n]
    frames = []
    for (target, method), m in maps.items():
        on_other = torch.zeros(n, dtype=torch.bool)
        for k in range(others.shape[1]):
            on_other |= pointing_game(m, others[:, k])
        frames.append(pd.DataFrame({
            "scene": np.arange(n), "target": target, "method": method,
            "pointing_game": pointing_game(m, boxes).float().numpy(), "mass_in_box": mass_in_box(m, boxes).numpy(),
            "points_at_other_digit": on_other.float().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def box_share(scenes: DigitScenes, n: int) -> float:
    """Mean share of the canvas inside the named digit's box: a uniform random map's expected mass in the box."""
    size = scenes.images.shape[-1]
    return float(box_masks(scenes.boxes[:n], size, size).float().mean())


LOCALISATION_SCORES = ("pointing_game", "mass_in_box", "points_at_other_digit")


def summarise_localisation(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% Student-t half-width over scenes of each score, per scene set x target x method."""
    rows = []
    for (scenes, target, method), group in scores.groupby(["scenes", "target", "method"], sort=False):
        row = {"scenes": scenes, "target": target, "method": method, "n_scenes": len(group)}
        for score in LOCALISATION_SCORES:
            mean, half = mean_ci(group[score].to_numpy())
            row |= {score: float(mean), f"{score}_ci95": float(half)}
        rows.append(row)
    return pd.DataFrame(rows)


def localisation_summary(summary: pd.DataFrame, shares: dict[str, float]) -> str:
    """A sentence per scene set x method: COCOA's pointing game and mass in box against the best other target
    and chance (the box's share of the canvas)."""
    lines = []
    for (scenes, method), rows in summary[summary.target != "random"].groupby(["scenes", "method"], sort=False):
        by = rows.set_index("target")
        best = by.drop(index="cocoa").pointing_game.idxmax()
        lines.append(
            f"{scenes} scenes, {method}: COCOA's maximum lies in the named digit's box in "
            f"{100 * by.loc['cocoa', 'pointing_game']:.0f}% of scenes (best other target, {best}: "
            f"{100 * by.loc[best, 'pointing_game']:.0f}%), with {100 * by.loc['cocoa', 'mass_in_box']:.0f}% "
            f"of its positive mass in the box (chance: {100 * shares[scenes]:.0f}%)."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ results
def save_results(
    out_dir: str | os.PathLike,
    cfg: CocoaParams,
    aucs: pd.DataFrame,
    localisation: pd.DataFrame,
    augmentation: pd.DataFrame,
    extra: dict[str, float],
) -> None:
    """metrics.json (nested means and 95% half-widths, plus ``extra`` numbers) and the tables as CSV."""
    out_dir = Path(out_dir)
    summary = summarise(aucs)
    benchmark: dict = {}
    for row in summary.itertuples():
        cell = benchmark.setdefault(row.setting, {}).setdefault(row.metric, {}).setdefault(row.target, {})
        cell.setdefault(row.method, {})[row.curve] = {"mean": row.mean, "ci95": row.ci95}
    local: dict = {}
    for row in localisation.itertuples():
        local.setdefault(row.scenes, {}).setdefault(row.method, {})[row.target] = {
            score: {"mean": getattr(row, score), "ci95": getattr(row, f"{score}_ci95")} for score in LOCALISATION_SCORES
        }
    write_json(out_dir / "metrics.json", {
        "benchmark": benchmark,
        "localisation": local,
        "augmentation_similarity": augmentation.groupby("augmentation", sort=False).similarity.mean().to_dict(),
        "n_seeds": cfg.benchmark.n_seeds,
        "n_explicands": cfg.benchmark.n_explicands,
        "n_scenes": cfg.localisation.n_scenes,
        **extra,
    })
    tables = out_dir / "tables"
    write_text(tables / "benchmark_auc.csv", aucs.to_csv(index=False, float_format="%.5f"))
    write_text(tables / "benchmark_summary.csv", summary.to_csv(index=False, float_format="%.5f"))
    write_text(tables / "cocoa_advantage.csv", cocoa_advantage(aucs).to_csv(index=False, float_format="%.5f"))
    for setting, metric in product(SETTINGS, METRICS):
        write_text(tables / f"table_{setting}_{metric}.csv", auc_table(summary, setting, metric).to_csv())
    write_text(tables / "localisation.csv", localisation.to_csv(index=False, float_format="%.4f"))
    write_text(tables / "augmentation_similarity.csv", augmentation.to_csv(index=False, float_format="%.4f"))
