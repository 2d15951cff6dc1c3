"""Digit scenes (lib.data.digit_scenes): digits pasted on a larger canvas with tight boxes, other digits kept
apart, distractor strokes, all seeded."""

import numpy as np
import torch

from lib.data.digit_scenes import make_scenes
from lib.explain.localisation import box_masks


def blocks(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28 x 28 "digits": one filled rectangle each, of a random place, size and grey level in (0.3, 1];
    labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    top, left = rng.integers(2, 12, (2, n))[:, :, None, None]
    bottom, right = top + rng.integers(5, 14, (n, 1, 1)), left + rng.integers(3, 14, (n, 1, 1))
    rows, cols = np.arange(28)[:, None], np.arange(28)[None, :]
    ink = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return (ink * rng.uniform(0.3, 1.0, (n, 1, 1))).astype(np.float32), np.arange(n) % 10


def test_scene_boxes_hold_exactly_the_digits_ink():
    digits, labels = blocks(30)
    scenes = make_scenes(digits, labels, n_scenes=12, size=48, n_strokes=0, seed=3)
    images = scenes.images[:, 0]
    inside = box_masks(scenes.boxes, 48, 48)
    assert scenes.images.shape == (12, 1, 48, 48) and scenes.other_boxes.shape == (12, 0, 4)
    assert not (images[~inside] > 0).any()  # no ink outside the box ...
    for image, (top, left, bottom, right) in zip(images, scenes.boxes.tolist(), strict=True):
        box = image[top:bottom, left:right]
        # ... and the box is tight: ink on each of its four edges.
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
    assert (images.flatten(1).amax(dim=1) > 0).all()


def test_crowded_scenes_keep_the_other_digit_apart_and_of_another_class():
    digits, labels = blocks(40)
    scenes = make_scenes(digits, labels, n_scenes=20, size=56, n_strokes=0, n_other_digits=1, seed=0)
    named = box_masks(scenes.boxes, 56, 56)
    other = box_masks(scenes.other_boxes[:, 0], 56, 56)
    assert not (named & other).any()
    assert (scenes.other_labels[:, 0] != scenes.labels).all()
    assert not (scenes.images[:, 0][~(named | other)] > 0).any()


def test_scenes_are_seeded():
    digits, labels = blocks(30)
    first, again = (make_scenes(digits, labels, 6, size=40, n_strokes=3, seed=7) for _ in range(2))
    other = make_scenes(digits, labels, 6, size=40, n_strokes=3, seed=8)
    torch.testing.assert_close(first.images, again.images)
    assert torch.equal(first.boxes, again.boxes) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
