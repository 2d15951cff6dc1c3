"""The COCOA study's data: MNIST-5k held out by class, and digit scenes for the image-text model."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lib.data.digit_scenes import DigitScenes, make_scenes
from lib.data.mnist import MnistDataset, load_mnist5k, validation_split
from lib.data.splits import Split
from lib.studies.cocoa.params import CocoaCommon


def load_digits(cfg: CocoaCommon, data_dir: str | os.PathLike = "data") -> Split[MnistDataset]:
    """MNIST-5k with ``data.test_fraction`` of every digit held out (seeded by ``seed``); no validation part.
    Images (N, 1, 28, 28) in [0, 1]."""
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = validation_split(labels, np.arange(len(labels)), cfg.data.test_fraction, seed=cfg.seed)
    return Split(fit=MnistDataset(images[train_idx], labels[train_idx]), val=None,
                 test=MnistDataset(images[test_idx], labels[test_idx]))


@dataclass(frozen=True)
class SceneSets:
    """Single-digit scenes for training (training digits) and testing (test digits), and crowded test scenes
    in which the named digit shares the canvas with digits of other classes."""

    train: DigitScenes
    test: DigitScenes
    crowded: DigitScenes


def make_scene_sets(digits: Split[MnistDataset], cfg: CocoaCommon) -> SceneSets:
    """The three scene sets, each from its own seed, so that both notebooks rebuild the same scenes."""
    s = cfg.scenes
    common = dict(size=s.size, n_strokes=s.n_strokes, stroke_width=s.stroke_width)
    train = (digits.fit.images[:, 0].numpy(), digits.fit.labels.numpy())
    test = (digits.test.images[:, 0].numpy(), digits.test.labels.numpy())
    return SceneSets(
        train=make_scenes(*train, s.n_train, seed=cfg.seed, **common),
        test=make_scenes(*test, s.n_test, seed=cfg.seed + 1, **common),
        crowded=make_scenes(*test, s.n_test, n_other_digits=s.crowded_other_digits, seed=cfg.seed + 2, **common),
    )
