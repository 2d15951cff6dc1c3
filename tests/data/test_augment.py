"""Batched augmentations: shapes, seeds and what each keeps."""

import numpy as np
import torch

from lib.data.augment import aerial_augment, random_affine


def test_random_affine_keeps_shape_background_and_is_seeded():
    x = torch.zeros(6, 1, 28, 28) - 0.5
    x[:, :, 10:18, 10:18] = 2.0
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y = random_affine(x, degrees=8, translate=0.08, generator=gen())
    assert y.shape == x.shape
    assert torch.equal(y, random_affine(x, degrees=8, translate=0.08, generator=gen()))
    # pixels moved in from outside take the background value; the square moves but keeps its mass
    assert torch.allclose(y[:, :, 0, 0], torch.full((6, 1), -0.5), atol=1e-5)
    assert not torch.allclose(y, x)
    mass = lambda t: (t + 0.5).sum(dim=(1, 2, 3))  # noqa: E731
    assert torch.allclose(mass(y), mass(x), rtol=0.1)
    # no transform at all: the identity
    assert torch.allclose(random_affine(x, degrees=0, translate=0), x, atol=1e-5)


def test_aerial_augmentation_without_crop_or_jitter_is_a_symmetry_of_the_square():
    x = torch.rand(32, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    views = aerial_augment(x, crop_min=1.0, jitter=0.0, generator=torch.Generator().manual_seed(1))
    symmetries = [x.rot90(k, dims=(2, 3)) for k in range(4)]
    symmetries += [s.flip(3) for s in symmetries]
    matched = [min(float((view - s[i]).abs().max()) for s in symmetries) for i, view in enumerate(views)]
    assert max(matched) < 1e-5
    assert len({int(np.argmin([float((v - s[i]).abs().max()) for s in symmetries])) for i, v in enumerate(views)}) > 4

    jittered = aerial_augment(x, crop_min=0.5, jitter=0.3)
    assert jittered.shape == x.shape and torch.isfinite(jittered).all()
