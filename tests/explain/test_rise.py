"""RISE: masks, normalisation, a model with a known answer, determinism."""

import torch

from lib.explain.rise import RISE

SIZE = (32, 32)
REGION = torch.zeros(SIZE, dtype=torch.bool)
REGION[8:16, 12:20] = True


def region_sum(images: torch.Tensor) -> torch.Tensor:
    """f(x) = sum of all channels inside REGION: (M, C, H, W) -> (M,)."""
    return (images * REGION).sum(dim=(1, 2, 3))


def test_masks_are_soft_unbiased_and_full_when_every_cell_is_kept():
    generator = torch.Generator().manual_seed(0)
    grids, offsets = RISE.sample_grids(3000, 7, 0.3, SIZE, generator)
    masks = RISE.masks_from_grids(grids, offsets, SIZE)
    assert masks.shape == (3000, *SIZE)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.01
    assert ((masks > 0) & (masks < 1)).any()
    full = RISE.masks_from_grids(torch.ones_like(grids[:5]), offsets[:5], SIZE)
    torch.testing.assert_close(full, torch.ones(5, *SIZE))


def test_saliency_concentrates_on_the_region_the_model_reads():
    inputs = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1)) + 0.5
    saliency = RISE(region_sum).attribute(
        inputs,
        n_masks=1000,
        grid=8,
        p=0.5,
        batch_size=250,
        generator=torch.Generator().manual_seed(2),
    )
    assert saliency.shape == inputs.shape and saliency.dtype == inputs.dtype
    torch.testing.assert_close(saliency[:, 0], saliency[:, 2])  # same map on every channel
    for explicand in saliency[:, 0]:
        assert explicand[REGION].mean() > 1.1 * explicand[~REGION].mean()
        # The most salient pixels lie in the region or within one grid cell of it.
        near = torch.zeros(SIZE, dtype=torch.bool)
        near[4:20, 8:24] = True
        top = explicand.flatten().topk(int(REGION.sum())).indices
        assert near.flatten()[top].all()
        assert REGION.flatten()[top].float().mean() > 0.75


def test_constant_model_gets_its_value_everywhere():
    """The 1 / (N p) normalisation: f = c gives S ~ c at every pixel."""
    inputs = torch.zeros(1, 1, *SIZE, dtype=torch.float64)
    saliency = RISE(lambda images: torch.full((len(images),), 3.0)).attribute(
        inputs, n_masks=2000, grid=7, p=0.4, generator=torch.Generator().manual_seed(3)
    )
    assert saliency.dtype == torch.float64
    assert abs(saliency.mean().item() - 3.0) < 0.05
    assert (saliency - 3.0).abs().max() < 0.5


def test_baseline_fills_the_removed_pixels():
    """With baseline == input nothing changes under masking: S = f(x) E[M] / p."""
    inputs = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(4))
    rise = RISE(region_sum)
    grids, offsets = RISE.sample_grids(200, 7, 0.5, SIZE, torch.Generator().manual_seed(5))
    mask_mean = RISE.masks_from_grids(grids, offsets, SIZE).mean(dim=0)
    saliency = rise.attribute(
        inputs,
        baselines=inputs,
        n_masks=200,
        grid=7,
        p=0.5,
        generator=torch.Generator().manual_seed(5),
    )
    expected = region_sum(inputs)[:, None, None] * mask_mean / 0.5
    torch.testing.assert_close(saliency[:, 0], expected)


def test_seeded_runs_repeat_whatever_the_batching():
    inputs = torch.rand(3, 2, *SIZE, generator=torch.Generator().manual_seed(6))
    rise = RISE(region_sum)

    def run(seed, batch_size):
        return rise.attribute(
            inputs,
            n_masks=48,
            grid=4,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
        )

    first = run(7, 30)
    torch.testing.assert_close(run(7, 30), first, rtol=0, atol=0)
    torch.testing.assert_close(run(7, 1000), first)
    torch.testing.assert_close(run(7, 1), first)
    assert not torch.allclose(run(8, 30), first)


def test_several_outputs_share_masks_and_equal_separate_runs():
    inputs = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(9))
    outputs = [region_sum, lambda x: x.mean(dim=(1, 2, 3)), lambda x: -x[:, 0, :4].sum(dim=(1, 2))]

    def run(forward):
        return RISE(forward).attribute(inputs, n_masks=40, grid=4, batch_size=16, generator=torch.Generator().manual_seed(3))

    stacked = run(lambda x: torch.stack([f(x) for f in outputs], dim=1))
    assert stacked.shape == (3, *inputs.shape)
    for t, forward in enumerate(outputs):
        torch.testing.assert_close(stacked[t], run(forward), rtol=1e-5, atol=1e-6)


def test_scores_of_the_wrong_shape_are_rejected():
    import pytest

    with pytest.raises(ValueError, match=r"\(M,\) or \(M, T\) scores for M = 8 images, got shape \(8, 2, 1\)"):
        RISE(lambda x: torch.zeros(len(x), 2, 1)).attribute(torch.rand(1, 1, 8, 8), n_masks=8, grid=2, batch_size=8)
