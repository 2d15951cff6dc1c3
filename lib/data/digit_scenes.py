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

__all__ = ["DigitScenes", "EmbeddedScenes", "make_embedded_scenes", "make_scenes", "part_correspondence", "place_digits"]


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


@dataclass(frozen=True)
class EmbeddedScenes:
    """Scenes (N, 1, S, S) in [0, 1], one per source digit in the given order; the digit alone as placed
    (``digit`` (N, 1, S, S), no clutter), its ``mask`` (N, S, S) (placed ink >= the threshold), its tight
    ``boxes`` (N, 4) (top, left, bottom, right; end exclusive), ``labels`` (N,), and its pose: ``centres``
    (N, 2) (row, column) in scene pixels, ``scales`` (N,) and ``angles`` (N,) in degrees."""

    images: Tensor
    digit: Tensor
    mask: Tensor
    boxes: Tensor
    labels: Tensor
    centres: Tensor
    scales: Tensor
    angles: Tensor

    def __len__(self) -> int:
        return len(self.labels)


def place_digits(digits: Tensor, size: int, centres: Tensor, scales: Tensor, angles: Tensor) -> Tensor:
    """Each digit (N, h, w) rotated by ``angles`` (degrees), scaled by ``scales`` and centred
    at ``centres`` (row, column) of a blank ``size`` x ``size`` canvas; (N, 1, size, size), bilinear.

    A scene pixel p (its centre at p + 1/2) shows the digit at
    ``q = R(angle)^T (p + 1/2 - centre) / scale + (h / 2, w / 2)``, zero outside the digit's frame, with
    ``R(angle) = [[cos, sin], [-sin, cos]]`` acting on (row, column): a digit point at offset o from the
    frame's centre lands at ``centre + scale R(angle) o`` (:func:`part_correspondence`).
    """
    _, h, w = digits.shape
    theta = torch.deg2rad(angles.to(torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    axis = torch.arange(size, dtype=torch.float32) + 0.5
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    dr = rows[None] - centres[:, 0, None, None].float()
    dc = cols[None] - centres[:, 1, None, None].float()
    scale = scales.float()[:, None, None]
    # (row, col) with rows pointing down: the inverse rotation maps the scene offset back into the digit frame
    q_row = (cos[:, None, None] * dr - sin[:, None, None] * dc) / scale + h / 2
    q_col = (sin[:, None, None] * dr + cos[:, None, None] * dc) / scale + w / 2
    grid = torch.stack([q_col / w * 2 - 1, q_row / h * 2 - 1], dim=-1)  # grid_sample's (x, y), align_corners=False
    out = torch.nn.functional.grid_sample(digits.float()[:, None], grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out.clamp(0.0, 1.0)


def make_embedded_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    size: int = 40,
    scale: tuple[float, float] = (0.6, 1.0),
    degrees: float = 30.0,
    n_strokes: int = 6,
    stroke_length: tuple[float, float] = (8.0, 20.0),
    stroke_width: float = 1.5,
    mask_threshold: float = 0.25,
    seed: int = 0,
) -> EmbeddedScenes:
    """One scene per digit of ``digits`` (N, h, w), grey levels in [0, 1], in order (scene i holds digit i).

    Each digit is rotated by U(-degrees, degrees), scaled by U(scale) and centred
    uniformly where its whole ink stays inside the canvas: with r the largest
    distance of an ink pixel's corner from the digit's centre, times the scale,
    the centre is uniform in [r, size - r] along both axes. Then ``n_strokes``
    distractor segments as in :func:`make_scenes`; the scene is the pixel-wise
    maximum. The same seed gives the same scenes.
    """
    digits, labels = np.asarray(digits, np.float32), np.asarray(labels)
    n, h, w = digits.shape
    if len(labels) != n:
        raise ValueError(f"{n} digits but {len(labels)} labels")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    ink = _ink_boxes(digits)
    # the ink box's farthest corner from the frame's centre bounds every ink pixel at any rotation
    reach = np.hypot(np.maximum(h / 2 - ink[:, 0], ink[:, 2] - h / 2), np.maximum(w / 2 - ink[:, 1], ink[:, 3] - w / 2))
    rng = np.random.default_rng(seed)
    scales = rng.uniform(scale[0], scale[1], n)
    angles = rng.uniform(-degrees, degrees, n)
    radius = reach * scales
    if (2 * radius > size).any():
        raise ValueError(f"canvas size {size} cannot hold a digit of reach {2 * radius.max():.1f} px; "
                         "use a larger canvas or smaller scales")
    centres = radius[:, None] + rng.uniform(0, 1, (n, 2)) * (size - 2 * radius)[:, None]
    digit = place_digits(torch.from_numpy(digits), size, torch.from_numpy(centres), torch.from_numpy(scales),
                         torch.from_numpy(angles))
    clutter = torch.from_numpy(_strokes(rng, n, size, n_strokes, stroke_length, stroke_width))[:, None]
    mask = digit[:, 0] >= mask_threshold
    if not mask.flatten(1).any(dim=1).all():
        raise ValueError(f"a placed digit has no pixel >= mask_threshold {mask_threshold}")
    return EmbeddedScenes(
        images=torch.maximum(digit, clutter), digit=digit, mask=mask, boxes=_mask_boxes(mask),
        labels=torch.as_tensor(labels, dtype=torch.int64), centres=torch.from_numpy(centres).float(),
        scales=torch.from_numpy(scales).float(), angles=torch.from_numpy(angles).float(),
    )


def part_correspondence(digits: np.ndarray, first: EmbeddedScenes, second: EmbeddedScenes, grid: int,
                        threshold: float = 0.25) -> Tensor:
    """Which grid cells of two scenes of the same digits show the same part of the digit: (P, grid², grid²) bool.

    ``first`` and ``second`` place the same ``digits`` (P, h, w) (scene p of each
    holds digit p, in two poses). Each ink pixel q of digit p (grey level >=
    ``threshold``) lands at ``c + s R(angle) (q + 1/2 - (h/2, w/2))`` in a scene
    (the forward map of :func:`place_digits`, R as there); cell i of the first scene and cell
    j of the second correspond when some ink pixel lands in both, cells taken
    row-major on a ``grid x grid`` partition of the scene.
    """
    digits = np.asarray(digits, np.float32)
    n, h, w = digits.shape
    if len(first) != n or len(second) != n:
        raise ValueError(f"{n} digits but scenes of {len(first)} and {len(second)}")
    out = torch.zeros(n, grid * grid, grid * grid, dtype=torch.bool)
    for p in range(n):
        rows, cols = np.nonzero(digits[p] >= threshold)
        offsets = np.stack([rows + 0.5 - h / 2, cols + 0.5 - w / 2], axis=1)
        cells = [_cell_of(scenes, p, offsets, grid) for scenes in (first, second)]
        out[p, cells[0], cells[1]] = True
    return out


def _cell_of(scenes: EmbeddedScenes, p: int, offsets: np.ndarray, grid: int) -> np.ndarray:
    """Row-major grid cell of the scene points that digit-frame ``offsets`` (K, 2) map to in scene p."""
    theta = np.deg2rad(float(scenes.angles[p]))
    rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    points = scenes.centres[p].numpy() + float(scenes.scales[p]) * offsets @ rotation.T
    size = scenes.images.shape[-1]
    cell = np.clip((points * grid / size).astype(int), 0, grid - 1)
    return cell[:, 0] * grid + cell[:, 1]


def _mask_boxes(mask: Tensor) -> Tensor:
    """(top, left, bottom, right) of each mask (N, S, S), end exclusive."""
    return torch.from_numpy(_ink_boxes(mask.numpy()).astype(np.int64))


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
