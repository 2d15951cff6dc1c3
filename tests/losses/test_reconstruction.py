"""Masked reconstruction loss and block masks (lib.losses.reconstruction)."""

import pytest
import torch

from lib.losses.reconstruction import masked_reconstruction_loss, random_block_mask


def naive_masked_mse(pred, target, hidden) -> float:
    """Sum of squared errors over hidden pixels and channels, divided by their count."""
    batch, channels, height, width = pred.shape
    total, count = 0.0, 0
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                if hidden[b, h, w]:
                    for c in range(channels):
                        total += (pred[b, c, h, w].item() - target[b, c, h, w].item()) ** 2
                        count += 1
    return total / count


def example(seed=0, shape=(2, 3, 5, 6)):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.rand(shape, generator=gen, dtype=torch.float64)
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    hidden = torch.rand(shape[0], *shape[2:], generator=gen) < 0.4
    return pred, target, hidden


@pytest.mark.parametrize("seed, shape", [(0, (2, 3, 5, 6)), (1, (1, 1, 4, 4)), (2, (3, 2, 7, 3))])
def test_matches_naive_loop(seed, shape):
    pred, target, hidden = example(seed, shape)
    assert hidden.any()
    expected = naive_masked_mse(pred, target, hidden)
    got = masked_reconstruction_loss(pred, target, hidden).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # (B, 1, H, W) masks are accepted too.
    assert masked_reconstruction_loss(pred, target, hidden[:, None]).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_only_hidden_pixels_count():
    pred, target, hidden = example()
    reference = masked_reconstruction_loss(pred, target, hidden).item()
    b, h, w = hidden.logical_not().nonzero()[0].tolist()
    visible_changed = pred.clone()
    visible_changed[b, :, h, w] = float("inf")
    assert masked_reconstruction_loss(visible_changed, target, hidden).item() == reference
    b, h, w = hidden.nonzero()[0].tolist()
    hidden_changed = pred.clone()
    hidden_changed[b, 1, h, w] += 0.5
    assert masked_reconstruction_loss(hidden_changed, target, hidden).item() != reference


def test_gradient_is_zero_on_visible_pixels():
    pred, target, hidden = example(3)
    pred[~hidden[:, None].expand_as(pred)] = float("nan")  # not even NaN leaks in
    pred.requires_grad_(True)
    loss = masked_reconstruction_loss(pred, target, hidden)
    loss.backward()
    assert torch.isfinite(loss)
    visible = ~hidden[:, None].expand_as(pred)
    assert (pred.grad[visible] == 0).all()
    n_entries = hidden.sum() * pred.shape[1]
    expected = 2 * (pred - target)[~visible] / n_entries
    assert torch.allclose(pred.grad[~visible], expected.detach(), rtol=1e-12)


def test_errors_name_the_shapes():
    pred, target, hidden = example()
    with pytest.raises(ValueError, match=r"pred \(2, 3, 5, 6\) and target \(2, 3, 5, 5\)"):
        masked_reconstruction_loss(pred, target[..., :5], hidden)
    message = r"hidden_mask \(2, 5, 5\) must be \(B, H, W\) = \(2, 5, 6\)"
    with pytest.raises(ValueError, match=message):
        masked_reconstruction_loss(pred, target, hidden[..., :5])
    with pytest.raises(ValueError, match=r"no pixel is hidden in mask \(2, 5, 6\)"):
        masked_reconstruction_loss(pred, target, torch.zeros_like(hidden))
    with pytest.raises(ValueError, match="must be bool"):
        masked_reconstruction_loss(pred, target, hidden.float())


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_block_mask_fraction_and_blocks(fraction):
    mask = random_block_mask(16, 64, 64, fraction, torch.Generator().manual_seed(0))
    assert mask.shape == (16, 64, 64) and mask.dtype == torch.bool
    # 8 x 8 cells of 8 x 8 pixels: every image hides round(64 f) whole cells.
    per_image = mask.float().mean(dim=(1, 2))
    assert torch.allclose(per_image, torch.full((16,), round(64 * fraction) / 64))
    cells = mask.view(16, 8, 8, 8, 8)  # (b, cell row, y, cell col, x)
    assert (cells.all(dim=(2, 4)) | ~cells.any(dim=(2, 4))).all()
    # The hidden cells differ between images.
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 16


def test_block_mask_uneven_sizes_and_determinism():
    gen = torch.Generator().manual_seed(1)
    mask = random_block_mask(200, 60, 50, 0.3, gen, block=7)
    assert mask.shape == (200, 60, 50)
    assert mask.float().mean().item() == pytest.approx(0.3, abs=0.03)
    # At least one block even for a tiny fraction.
    assert random_block_mask(5, 16, 16, 1e-4, gen).flatten(1).any(dim=1).all()
    assert random_block_mask(2, 8, 8, 1.0, gen).all()
    first = random_block_mask(4, 32, 32, 0.5, torch.Generator().manual_seed(7))
    again = random_block_mask(4, 32, 32, 0.5, torch.Generator().manual_seed(7))
    other = random_block_mask(4, 32, 32, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_block_mask_errors():
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="hidden_fraction"):
            random_block_mask(2, 8, 8, bad)
    with pytest.raises(ValueError, match=r"got \(0, 8, 8\)"):
        random_block_mask(0, 8, 8, 0.5)
