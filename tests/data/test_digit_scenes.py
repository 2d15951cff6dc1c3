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


# ---------------------------------------------------------------- DIML's embedded set
def test_embedded_scenes_keep_each_digit_inside_with_a_tight_mask_box_and_are_seeded():
    from lib.data.digit_scenes import make_embedded_scenes

    digits, labels = blocks(24, seed=1)
    scenes = make_embedded_scenes(digits, labels, size=40, scale=(0.6, 1.0), degrees=30, n_strokes=4, seed=5)
    assert scenes.images.shape == (24, 1, 40, 40) and len(scenes) == 24
    assert torch.equal(scenes.labels, torch.as_tensor(labels))  # scene i holds digit i
    # the digit's whole ink is inside the canvas: the placed digit keeps the source's ink mass times scale^2
    ink_mass = torch.from_numpy(digits).sum(dim=(1, 2))
    torch.testing.assert_close(scenes.digit.sum(dim=(1, 2, 3)), ink_mass * scenes.scales**2, rtol=0.03, atol=0.5)
    # the scene is the maximum of digit and clutter; the mask is the digit's own ink, its box tight
    assert (scenes.images >= scenes.digit).all() and (scenes.images <= 1).all()
    for mask, (top, left, bottom, right) in zip(scenes.mask, scenes.boxes.tolist(), strict=True):
        assert mask.any() and not mask[:top].any() and not mask[bottom:].any()
        assert not mask[:, :left].any() and not mask[:, right:].any()
        assert mask[top].any() and mask[bottom - 1].any() and mask[:, left].any() and mask[:, right - 1].any()
    again = make_embedded_scenes(digits, labels, size=40, n_strokes=4, scale=(0.6, 1.0), degrees=30, seed=5)
    other = make_embedded_scenes(digits, labels, size=40, n_strokes=4, scale=(0.6, 1.0), degrees=30, seed=6)
    torch.testing.assert_close(scenes.images, again.images)
    assert not torch.equal(scenes.images, other.images)


def test_embedded_scenes_refuse_a_canvas_too_small_for_the_digits():
    import pytest

    from lib.data.digit_scenes import make_embedded_scenes

    digits, labels = blocks(4)
    with pytest.raises(ValueError, match="cannot hold a digit"):
        make_embedded_scenes(digits, labels, size=12, scale=(1.0, 1.0))


def test_place_digits_moves_a_pixel_where_the_forward_map_says():
    """A lit block of the digit lands at c + s R(angle) (q + 1/2 - (h/2, w/2)), R = [[cos, sin], [-sin, cos]] on
    (row, column), the map part_correspondence uses, for rotations of 0 and 90 degrees (exact sampling)."""
    from lib.data.digit_scenes import place_digits

    digit = torch.zeros(1, 28, 28)
    digit[0, 6:8, 20:22] = 1.0  # a 2x2 block, centre (7, 21) in pixel coordinates, offset (-7, +7) from (14, 14)
    for angle, expected in ((0.0, (13.0, 27.0)), (90.0, (27.0, 27.0)), (-90.0, (13.0, 13.0))):
        placed = place_digits(digit, 40, torch.tensor([[20.0, 20.0]]), torch.tensor([1.0]), torch.tensor([angle]))[0, 0]
        rows, cols = torch.nonzero(placed > 0.5, as_tuple=True)
        assert (rows.float().mean().item() + 0.5, cols.float().mean().item() + 0.5) == expected


def test_part_correspondence_links_the_cells_that_show_the_same_ink():
    from lib.data.digit_scenes import make_embedded_scenes, part_correspondence

    digits, labels = blocks(6, seed=2)
    first = make_embedded_scenes(digits, labels, size=40, n_strokes=0, seed=1)
    second = make_embedded_scenes(digits, labels, size=40, n_strokes=0, seed=2)
    truth = part_correspondence(digits, first, second, grid=4)
    assert truth.shape == (6, 16, 16) and truth.any(dim=(1, 2)).all()
    # a cell corresponds to something only where the digit's mask touches it
    for scenes, axis in ((first, 2), (second, 1)):
        touched = scenes.mask.reshape(6, 4, 10, 4, 10).any(dim=4).any(dim=2).reshape(6, 16)
        assert not (truth.any(dim=axis) & ~touched).any()
    # the same pose twice: a cell corresponds to itself
    same = part_correspondence(digits, first, first, grid=4)
    assert same.diagonal(dim1=1, dim2=2)[same.any(dim=2)].all()
