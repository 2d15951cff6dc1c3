"""SimCLR augmentations of digits (lib.data.digit_augment): identities at neutral settings, seeded views in
range, erasing to the background."""

import torch

from lib.data import digit_augment as aug

# cocoa's augmentation settings of its smoke profile, as plain keywords.
SETTINGS = {"crop_scale": (0.5, 1.0), "rotation_degrees": 15.0, "erase_prob": 0.5, "erase_scale": (0.05, 0.2),
            "contrast": 0.4, "brightness": 0.2, "noise_std": 0.05}


def test_crop_of_the_whole_image_is_the_identity():
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(aug.random_resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x)


def test_views_are_seeded_in_range_and_differ_between_draws():
    x = torch.rand(4, 1, 28, 28)
    a = aug.simclr_view(x, **SETTINGS, generator=torch.Generator().manual_seed(1))
    b = aug.simclr_view(x, **SETTINGS, generator=torch.Generator().manual_seed(1))
    c = aug.simclr_view(x, **SETTINGS, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, c)


def test_neutral_settings_of_each_transform_leave_the_digits_as_they_are():
    x = torch.rand(4, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(aug.random_rotation(x, 0.0, g), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(aug.random_contrast(x, 0.0, 0.0, g), x)
    torch.testing.assert_close(aug.gaussian_noise(x, 0.0, g), x)
    # Contrast and brightness as stated: m + c (x - m) + b, clipped to [0, 1].
    half = aug.random_contrast(torch.full((1, 1, 2, 2), 0.5), 0.5, 0.0, g)
    torch.testing.assert_close(half, torch.full((1, 1, 2, 2), 0.5))  # a flat image has no deviation to scale


def test_erasing_sets_a_rectangle_to_the_background():
    x = torch.ones(5, 1, 20, 20)
    x[:, :, 0, 0] = 0.0  # the background level
    erased = aug.random_erasing(x, p=1.0, scale=(0.1, 0.1), generator=torch.Generator().manual_seed(0))
    zeros = (erased[:, 0] == 0).sum(dim=(1, 2)) - 1
    assert torch.all((zeros >= 20) & (zeros <= 60))  # about 10% of 400 pixels, rounded to a rectangle
    torch.testing.assert_close(aug.random_erasing(x, p=0.0), x)
