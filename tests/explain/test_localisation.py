"""Localisation scores of attribution maps (lib.explain.localisation): pointing game, mass in the box."""

import pytest
import torch

from lib.explain.localisation import box_masks, mass_in_box, mass_in_mask, pointing_game


def test_pointing_game_and_mass_in_box_on_hand_made_maps():
    boxes = torch.tensor([[2, 2, 5, 5], [2, 2, 5, 5], [0, 0, 2, 2]])
    maps = torch.zeros(3, 8, 8)
    maps[0, 3, 3], maps[0, 7, 7] = 3.0, 1.0  # peak inside; 3 of 4 units of mass inside
    maps[1, 3, 3], maps[1, 6, 6] = 1.0, 2.0  # peak outside; 1 of 3 inside
    maps[1, 0, 0] = -5.0  # negative attribution: ignored by the mass
    maps[2] = -1.0  # nothing positive
    assert pointing_game(maps, boxes).tolist() == [True, False, True]  # ties: the first pixel, (0, 0), is in box 3
    torch.testing.assert_close(mass_in_box(maps, boxes), torch.tensor([0.75, 1 / 3, 0.0]))
    channels = torch.stack([maps, torch.zeros_like(maps)], dim=1)  # (N, C, H, W) is summed over channels
    torch.testing.assert_close(mass_in_box(channels, boxes), mass_in_box(maps, boxes))
    assert box_masks(boxes, 8, 8).sum(dim=(1, 2)).tolist() == [9, 9, 4]


def test_uniform_maps_put_the_box_share_of_their_mass_in_the_box():
    boxes = torch.tensor([[0, 0, 4, 8]])
    torch.testing.assert_close(mass_in_box(torch.ones(1, 8, 8), boxes), torch.tensor([0.5]))


def test_box_masks_against_a_loop():
    boxes = torch.tensor([[1, 2, 4, 7], [0, 0, 1, 1], [3, 3, 3, 5]])  # (top, left, bottom, right), bottom/right open
    masks = box_masks(boxes, 6, 8)
    for mask, (top, left, bottom, right) in zip(masks, boxes.tolist(), strict=True):
        for r in range(6):
            for c in range(8):
                assert bool(mask[r, c]) == (top <= r < bottom and left <= c < right)


def test_mass_in_mask_against_a_loop_over_pixels():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 1, 7, 9, generator=generator)
    maps[3] = -1.0  # no positive mass at all
    masks = torch.rand(4, 7, 9, generator=generator) > 0.6
    expected = []
    for m, mask in zip(maps[:, 0], masks, strict=True):
        inside = total = 0.0
        for i in range(7):
            for j in range(9):
                value = max(float(m[i, j]), 0.0)
                total += value
                inside += value if mask[i, j] else 0.0
        expected.append(inside / total if total > 0 else 0.0)
    torch.testing.assert_close(mass_in_mask(maps, masks), torch.tensor(expected), rtol=1e-5, atol=1e-7)
    box = torch.tensor([[1, 2, 5, 6]] * 4)
    torch.testing.assert_close(mass_in_box(maps, box), mass_in_mask(maps, box_masks(box, 7, 9)))
    with pytest.raises(ValueError, match="boolean"):
        mass_in_mask(maps, masks.float())
