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

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["DigitScenes", "make_scenes"]


@dataclass(frozen=True)
class DigitScenes:
    """Scenes (N, 1, S, S) in [0, 1], digit labels (N,) and boxes (N, 4) as (top, left, bottom, right), end exclusive."""

    images: Tensor
    labels: Tensor
    boxes: Tensor

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
    seed: int = 0,
) -> DigitScenes:
    """Paste ``n_scenes`` digits drawn from ``digits`` (M, h, w), uint8 0-255, onto ``size`` x ``size`` canvases.

    Each scene takes a random digit (without replacement while there are enough),
    places its top-left corner uniformly in [0, size - h] x [0, size - w], and draws
    ``n_strokes`` segments of length U(stroke_length) px, uniform direction, centre
    uniform on the canvas and intensity U(0.5, 1). A pixel at distance d from a
    segment gets ``clip(stroke_width / 2 + 1/2 - d, 0, 1)`` of its intensity; the
    scene is the pixel-wise maximum of the digit and the strokes. The same seed
    gives the same scenes.
    """
    digits = np.asarray(digits)
    _, h, w = digits.shape
    if size < max(h, w):
        raise ValueError(f"canvas size {size} is smaller than the digits ({h} x {w})")
    rng = np.random.default_rng(seed)
    source = rng.choice(len(digits), n_scenes, replace=n_scenes > len(digits))
    corners = np.stack([rng.integers(0, size - h + 1, n_scenes), rng.integers(0, size - w + 1, n_scenes)], axis=1)
    canvas = np.zeros((n_scenes, size, size), np.float32)
    for i, (top, left) in enumerate(corners):
        canvas[i, top : top + h, left : left + w] = digits[source[i]] / 255.0
    boxes = _ink_boxes(digits[source]) + np.concatenate([corners, corners], axis=1)
    strokes = _strokes(rng, n_scenes, size, n_strokes, stroke_length, stroke_width)
    images = np.maximum(canvas, strokes)
    return DigitScenes(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.as_tensor(np.asarray(labels)[source], dtype=torch.int64),
        boxes=torch.from_numpy(boxes.astype(np.int64)),
    )


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
