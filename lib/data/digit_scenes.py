"""Digit scenes: one MNIST digit pasted at a random place on a larger canvas among distractor strokes.

COCOA's zero-shot localisation (Lin et al., ICLR 2023, Sec. 5.2) explains the
similarity between an image and a caption and asks whether the attribution
falls on the object the caption names. A digit scene makes the object and its
bounding box known exactly: the box is the smallest one holding every
non-zero pixel of the pasted digit. The strokes are straight anti-aliased line
segments anywhere on the canvas (they may cross the digit), so "where is the
ink" does not answer "where is the digit".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DigitScenes", "make_scenes"]


@dataclass(frozen=True)
class DigitScenes:
    """Scenes (N, 1, S, S) in [0, 1]; the named digit's labels (N,) and boxes (N, 4) as (top, left, bottom, right),
    end exclusive; the other digits' labels (N, K) and boxes (N, K, 4) (K = 0 for single-digit scenes)."""

    images: Tensor
    labels: Tensor
    boxes: Tensor
    other_labels: Tensor
    other_boxes: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def make_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    n_scenes: int,
    size: int = 56,
    n_strokes: int = 3,
    stroke_length: tuple[float, float] = (8.0, 20.0),
    stroke_width: float = 1.5,
    n_other_digits: int = 0,
    seed: int = 0,
) -> DigitScenes:
    """Paste ``n_scenes`` digits drawn from ``digits`` (M, h, w), grey levels in [0, 1], on ``size`` x ``size`` canvases.

    Each scene takes a random digit (without replacement while there are enough)
    and places its top-left corner uniformly in [0, size - h] x [0, size - w].
    ``n_other_digits`` further digits of other classes go to uniform places too;
    the digits of a scene whose boxes touch are all placed again until none do.
    Then ``n_strokes`` segments of length U(stroke_length) px,
    uniform direction, centre uniform on the canvas and intensity U(0.5, 1): a
    pixel at distance d from a segment gets ``clip(stroke_width / 2 + 1/2 - d, 0, 1)``
    of its intensity. The scene is the pixel-wise maximum of all of these; the
    same seed gives the same scenes.
    """
    digits, labels = np.asarray(digits), np.asarray(labels)
    _, h, w = digits.shape
    if size < max(h, w):
        raise ValueError(f"canvas size {size} is smaller than the digits ({h} x {w})")
    rng = np.random.default_rng(seed)
    ink = _ink_boxes(digits)
    sources = [rng.choice(len(digits), n_scenes, replace=n_scenes > len(digits))]
    sources += [_other_class(rng, labels, labels[sources[0]]) for _ in range(n_other_digits)]
    corners, boxes = _place_apart(rng, [ink[source] for source in sources], size - h, size - w)
    canvas = np.zeros((n_scenes, size, size), np.float32)
    for source, corner in zip(sources, corners, strict=True):
        for i, (top, left) in enumerate(corner):
            patch = canvas[i, top : top + h, left : left + w]  # a view: maximum writes into the canvas
            np.maximum(patch, digits[source[i]], out=patch)
    images = np.maximum(canvas, _strokes(rng, n_scenes, size, n_strokes, stroke_length, stroke_width))
    return DigitScenes(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.as_tensor(labels[sources[0]], dtype=torch.int64),
        boxes=torch.from_numpy(boxes[0].astype(np.int64)),
        other_labels=torch.from_numpy(np.array([labels[s] for s in sources[1:]], np.int64).reshape(-1, n_scenes).T),
        other_boxes=torch.from_numpy(np.array(boxes[1:], np.int64).reshape(-1, n_scenes, 4).transpose(1, 0, 2)),
    )


def _corners(rng: np.random.Generator, n: int, max_top: int, max_left: int) -> np.ndarray:
    return np.stack([rng.integers(0, max_top + 1, n), rng.integers(0, max_left + 1, n)], axis=1)


def _shift(boxes: np.ndarray, corners: np.ndarray) -> np.ndarray:
    return boxes + np.concatenate([corners, corners], axis=1)


def _other_class(rng: np.random.Generator, labels: np.ndarray, named: np.ndarray) -> np.ndarray:
    """One random digit per scene whose label differs from the named digit's."""
    choice = rng.integers(0, len(labels), len(named))
    while (same := labels[choice] == named).any():
        choice[same] = rng.integers(0, len(labels), int(same.sum()))
    return choice


def _place_apart(
    rng: np.random.Generator, inks: list[np.ndarray], max_top: int, max_left: int, tries: int = 200
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Corners (n, 2) and boxes (n, 4) of each digit with ink boxes ``inks[k]`` (n, 4), no two boxes touching.

    All digits of a scene whose boxes touch are placed again, until none do.
    """
    corners = [_corners(rng, len(ink), max_top, max_left) for ink in inks]
    for _ in range(tries):
        boxes = [_shift(ink, corner) for ink, corner in zip(inks, corners, strict=True)]
        clash = np.zeros(len(inks[0]), bool)
        for j, k in itertools.combinations(range(len(boxes)), 2):
            clash |= _touch(boxes[j], boxes[k])
        if not clash.any():
            return corners, boxes
        for corner in corners:
            corner[clash] = _corners(rng, int(clash.sum()), max_top, max_left)
    raise ValueError(f"could not place the digits apart in {tries} tries; use a larger canvas")


def _touch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether boxes (n, 4) overlap or lie less than one pixel apart."""
    return (a[:, 0] <= b[:, 2]) & (b[:, 0] <= a[:, 2]) & (a[:, 1] <= b[:, 3]) & (b[:, 1] <= a[:, 3])


def _ink_boxes(digits: np.ndarray) -> np.ndarray:
    """(top, left, bottom, right) of the non-zero pixels of each digit (M, h, w), end exclusive."""
    rows, cols = digits.any(axis=2), digits.any(axis=1)
    if not rows.any(axis=1).all():
        raise ValueError("a digit image is blank: no bounding box")
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    bottom = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    right = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    return np.stack([top, left, bottom, right], axis=1)


def _strokes(
    rng: np.random.Generator, n: int, size: int, k: int, length: tuple[float, float], width: float
) -> np.ndarray:
    """The maximum over ``k`` anti-aliased segments per scene, (n, size, size) in [0, 1]."""
    out = np.zeros((n, size, size), np.float32)
    pixels = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1).astype(np.float32)
    for _ in range(k):
        centre = rng.uniform(0, size - 1, (n, 2))
        angle = rng.uniform(0, np.pi, n)
        half = rng.uniform(*length, n)[:, None] / 2 * np.stack([np.sin(angle), np.cos(angle)], axis=1)
        start, direction = (centre - half).astype(np.float32), (2 * half).astype(np.float32)
        offset = pixels[None] - start[:, None, None]  # (n, S, S, 2); segment: start + t direction, t in [0, 1]
        t = np.einsum("nijc,nc->nij", offset, direction) / (direction**2).sum(axis=1)[:, None, None]
        t = np.clip(t, 0, 1)
        distance = np.linalg.norm(offset - t[..., None] * direction[:, None, None], axis=-1)
        intensity = rng.uniform(0.5, 1.0, n)[:, None, None]
        out = np.maximum(out, intensity * np.clip(width / 2 + 0.5 - distance, 0, 1))
    return out.astype(np.float32)
