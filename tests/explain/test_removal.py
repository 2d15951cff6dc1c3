"""Insertion/deletion curves, blur baseline and random floor."""


import numpy as np
import pytest
import torch

from lib.explain.removal import (
    blur_baseline,
    insertion_deletion_curves,
    random_attribution,
)

SIZE = (16, 16)


@pytest.fixture(scope="module")
def toy():
    """A linear model that reads a known square with positive weights."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.zeros(1, *SIZE, dtype=torch.float64)
    weights[0, 4:10, 5:11] = torch.rand(6, 6, generator=generator, dtype=torch.float64) + 0.5

    def model(images):
        return (images * weights).sum(dim=(1, 2, 3))

    inputs = torch.rand(3, 2, *SIZE, generator=generator, dtype=torch.float64)
    inputs[:, :, 4:10, 5:11] += 1.0
    baselines = blur_baseline(inputs, sigma=2.0)
    oracle = (inputs - baselines) * weights  # each pixel's exact contribution
    return model, inputs, baselines, oracle


def test_curves_start_and_end_at_the_original_and_the_baseline(toy):
    model, inputs, baselines, oracle = toy
    curves = insertion_deletion_curves(model, inputs, oracle, baselines, n_steps=10)
    assert curves.insertion.shape == curves.deletion.shape == (3, 11)
    assert curves.insertion_auc.shape == curves.deletion_auc.shape == (3,)
    n_pixels = SIZE[0] * SIZE[1]
    expected_fractions = [round(step * n_pixels / 10) / n_pixels for step in range(11)]
    assert curves.fractions.tolist() == pytest.approx(expected_fractions)
    torch.testing.assert_close(curves.deletion[:, 0], model(inputs))
    torch.testing.assert_close(curves.deletion[:, -1], model(baselines))
    torch.testing.assert_close(curves.insertion[:, 0], model(baselines))
    torch.testing.assert_close(curves.insertion[:, -1], model(inputs))


def test_oracle_beats_random_and_reversed_rankings(toy):
    model, inputs, baselines, oracle = toy
    candidates = {
        "oracle": oracle,
        "random": random_attribution(inputs, torch.Generator().manual_seed(1)),
        "reversed": -oracle,
    }
    curves = {
        name: insertion_deletion_curves(model, inputs, attributions, baselines, n_steps=16)
        for name, attributions in candidates.items()
    }
    for worse in ("random", "reversed"):
        assert (curves["oracle"].insertion_auc > curves[worse].insertion_auc).all()
        assert (curves["oracle"].deletion_auc < curves[worse].deletion_auc).all()
    assert (curves["random"].insertion_auc > curves["reversed"].insertion_auc).all()


def test_curves_match_a_step_by_step_reference(toy):
    """One explicand, built pixel by pixel from the definition."""
    model, inputs, baselines, oracle = toy
    n_steps, (height, width) = 7, SIZE
    curves = insertion_deletion_curves(model, inputs, oracle, baselines, n_steps, batch_size=5)
    ranking = oracle[1].sum(dim=0).flatten().argsort(descending=True, stable=True)
    for step in range(n_steps + 1):
        count = round(step * height * width / n_steps)
        switched = torch.zeros(height * width, dtype=torch.bool)
        switched[ranking[:count]] = True
        switched = switched.reshape(1, height, width)
        deleted = torch.where(switched, baselines[1], inputs[1])
        inserted = torch.where(switched, inputs[1], baselines[1])
        torch.testing.assert_close(curves.deletion[1, step], model(deleted[None])[0])
        torch.testing.assert_close(curves.insertion[1, step], model(inserted[None])[0])
    expected_auc = np.trapezoid(curves.insertion[1].numpy(), curves.fractions.numpy())
    assert curves.insertion_auc[1].item() == pytest.approx(expected_auc)


def test_blur_baseline_keeps_shape_and_constants():
    images = torch.full((2, 3, 10, 12), 0.25)
    for sigma in (0.5, 3.0, 20.0):  # the largest kernel is capped by the image size
        blurred = blur_baseline(images, sigma)
        assert blurred.shape == images.shape
        torch.testing.assert_close(blurred, images)
    noisy = torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(2))
    assert blur_baseline(noisy, 2.0).std() < noisy.std()


def test_random_attribution_is_seeded_and_shared_over_channels():
    inputs = torch.zeros(2, 3, 5, 5, dtype=torch.float64)
    first = random_attribution(inputs, torch.Generator().manual_seed(3))
    assert first.shape == inputs.shape and first.dtype == inputs.dtype
    torch.testing.assert_close(first[:, 0], first[:, 2])
    torch.testing.assert_close(random_attribution(inputs, torch.Generator().manual_seed(3)), first)


def test_several_scores_of_one_forward_equal_one_call_per_score(toy):
    model, inputs, baselines, oracle = toy

    def two(images):  # (M,) -> (M, 2): the model and its square
        score = model(images)
        return torch.stack([score, score**2], dim=1)

    both = insertion_deletion_curves(two, inputs, oracle, baselines, n_steps=5, batch_size=7)
    for t, single in enumerate((model, lambda images: model(images) ** 2)):
        alone = insertion_deletion_curves(single, inputs, oracle, baselines, n_steps=5, batch_size=7)
        for name in ("insertion", "deletion", "insertion_auc", "deletion_auc"):
            torch.testing.assert_close(getattr(both, name)[t], getattr(alone, name))
    assert both.insertion.shape == (2, 3, 6) and both.deletion_auc.shape == (2, 3)
