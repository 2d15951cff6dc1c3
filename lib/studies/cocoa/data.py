"""The COCOA study's data: MNIST-5k held out by class, and digit scenes for the image-text model."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from lib.data.digit_scenes import DigitScenes, make_scenes
from lib.data.mnist import MnistDataset, load_mnist5k, validation_split
from lib.data.splits import Split
from lib.studies.cocoa.params import CocoaCommon


def load_digits(cfg: CocoaCommon, seed: int, data_dir: str | os.PathLike = "data") -> Split[MnistDataset]:
    """MNIST-5k with ``data.test_fraction`` of every digit held out; no validation part.
    Images (N, 1, 28, 28) in [0, 1]. Repetition ``seed`` has its own hold-out, drawn from ``seed``."""
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = validation_split(labels, np.arange(len(labels)), cfg.data.test_fraction, seed=seed)
    return Split(fit=MnistDataset(images[train_idx], labels[train_idx]), val=None,
                 test=MnistDataset(images[test_idx], labels[test_idx]))


@dataclass(frozen=True)
class SceneSets:
    """Single-digit scenes for training (training digits) and testing (test digits), and crowded test scenes
    in which the named digit shares the canvas with digits of other classes."""

    train: DigitScenes
    test: DigitScenes
    crowded: DigitScenes


def make_scene_sets(digits: Split[MnistDataset], cfg: CocoaCommon, seed: int) -> SceneSets:
    """The three scene sets of repetition ``seed``, each from its own stream of that seed, so that both
    notebooks rebuild the same scenes."""
    s = cfg.scenes
    common = dict(size=s.size, n_strokes=s.n_strokes, stroke_width=s.stroke_width)
    train = (digits.fit.images[:, 0].numpy(), digits.fit.labels.numpy())
    test = (digits.test.images[:, 0].numpy(), digits.test.labels.numpy())
    return SceneSets(
        train=make_scenes(*train, s.n_train, seed=derived_seed(seed, 0), **common),
        test=make_scenes(*test, s.n_test, seed=derived_seed(seed, 1), **common),
        crowded=make_scenes(*test, s.n_test, n_other_digits=s.crowded_other_digits, seed=derived_seed(seed, 2), **common),
    )


def derived_seed(seed: int, *keys: int) -> int:
    """An integer seed of its own for the draw named by ``keys`` in repetition ``seed`` (numpy's SeedSequence:
    distinct keys give independent streams, where ``seed + key`` would reuse seed s + 1's streams in seed s).
    The number of keys is part of the entropy: SeedSequence alone maps [s, k] and [s, k, 0] to the same state."""
    return int(np.random.SeedSequence([seed, len(keys), *keys]).generate_state(1)[0])


def seed_global_draws(draw: int) -> None:
    """Seed the global torch and NumPy generators with ``draw``: captum's GradientShap draws its input noise
    from torch's and its interpolation points from NumPy's."""
    torch.manual_seed(draw)
    np.random.seed(draw % 2**32)
