"""The COCOA study's data: MNIST-5k held out by class, and digit scenes for the image-text model."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lib.data.digit_scenes import DigitScenes, make_scenes
from lib.data.mnist import MnistDataset, load_mnist5k, validation_split
from lib.data.splits import Split
from lib.explain.localisation import box_masks
from lib.studies.cocoa.params import CocoaCommon

#: Key of the validation split among a repetition's derived seeds.
VAL_STREAM = 7


def load_digits(cfg: CocoaCommon, seed: int, data_dir: str | os.PathLike = "data") -> Split[MnistDataset]:
    """MNIST-5k with ``data.test_fraction`` of every digit held out (test) and ``data.val_fraction`` of the rest
    set aside for validation (every training's plateau); the fit part trains the models and supplies the corpora
    and foils. Images (N, 1, 28, 28) in [0, 1]. Repetition ``seed`` has its own split, drawn from ``seed``."""
    images, labels = load_mnist5k(data_dir)
    train_idx, test_idx = validation_split(labels, np.arange(len(labels)), cfg.data.test_fraction, seed=seed)
    fit_idx, val_idx = validation_split(labels, train_idx, cfg.data.val_fraction, seed=derived_seed(seed, VAL_STREAM))
    return Split(*(MnistDataset(images[idx], labels[idx]) for idx in (fit_idx, val_idx, test_idx)))


@dataclass(frozen=True)
class SceneSets:
    """Single-digit scenes for training (fit digits), validation (validation digits) and testing (test digits),
    and crowded test scenes in which the named digit shares the canvas with digits of other classes."""

    train: DigitScenes
    val: DigitScenes
    test: DigitScenes
    crowded: DigitScenes


def make_scene_sets(digits: Split[MnistDataset], cfg: CocoaCommon, seed: int) -> SceneSets:
    """The four scene sets of repetition ``seed``, each from its own stream of that seed, so that both
    notebooks rebuild the same scenes."""
    s = cfg.scenes
    train, val, test = ((part.images[:, 0].numpy(), part.labels.numpy()) for part in (digits.fit, digits.val, digits.test))
    return SceneSets(
        train=make_scenes(*train, s.n_train, seed=derived_seed(seed, 0), **scene_style(cfg)),
        val=make_scenes(*val, s.n_val, seed=derived_seed(seed, 8), **scene_style(cfg)),
        test=make_scenes(*test, s.n_test, seed=derived_seed(seed, 1), **scene_style(cfg)),
        crowded=make_scenes(*test, s.n_test, n_other_digits=s.crowded_other_digits, seed=derived_seed(seed, 2),
                            **scene_style(cfg)),
    )


def scene_style(cfg: CocoaCommon) -> dict:
    """The keyword arguments of :func:`lib.data.digit_scenes.make_scenes` that every scene set shares."""
    s = cfg.scenes
    return {"size": s.size, "n_strokes": s.n_strokes, "stroke_width": s.stroke_width}


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


def named_digit_masks(digits: Split[MnistDataset], cfg: CocoaCommon, seed: int) -> dict[str, Tensor]:
    """The named digit's pixels in each test scene, {"single": (N, S, S), "crowded": (N, S, S)} boolean: where the
    class evidence of the scene's caption lies, pixel by pixel.

    :func:`lib.data.digit_scenes.make_scenes` places the digits before it draws the strokes, so the same call
    without strokes places the same digits at the same places; the named digit's mask is that rendering's ink
    inside the named digit's box (the boxes of a scene never touch). The boxes of both renderings are compared,
    and a difference is an error rather than a wrong mask.
    """
    s = cfg.scenes
    test = (digits.test.images[:, 0].numpy(), digits.test.labels.numpy())
    style = scene_style(cfg) | {"n_strokes": 0}
    masks = {}
    for name, key, others in (("single", 1, 0), ("crowded", 2, s.crowded_other_digits)):
        with_strokes = make_scenes(*test, s.n_test, n_other_digits=others, seed=derived_seed(seed, key), **scene_style(cfg))
        bare = make_scenes(*test, s.n_test, n_other_digits=others, seed=derived_seed(seed, key), **style)
        if not torch.equal(bare.boxes, with_strokes.boxes):
            raise RuntimeError("the scenes without strokes place their digits elsewhere: make_scenes no longer draws "
                               "the placement before the strokes, so the digit masks cannot be rebuilt this way")
        inside = box_masks(bare.boxes, s.size, s.size)
        masks[name] = (bare.images[:, 0] > 0) & inside
    return masks
