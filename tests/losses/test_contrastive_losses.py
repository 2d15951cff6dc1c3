"""NT-Xent and CLIP losses against loops written from the papers' formulas."""

import math

import pytest
import torch

from lib.losses.clip import GroupedClipLoss, LogitScale, clip_loss
from lib.losses.ntxent import nt_xent


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u @ v / (u.norm() * v.norm())


def naive_nt_xent(z1, z2, temperature):
    """SimCLR Algorithm 1, one anchor at a time."""
    z = torch.cat([z1, z2])
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(
            torch.exp(cosine(z[i], z[k]) / temperature) for k in range(2 * n) if k != i
        )
        total = total - torch.log(torch.exp(cosine(z[i], z[j]) / temperature) / denominator)
    return total / (2 * n)


def naive_clip(image, text, scale):
    """CLIP Fig. 3, row by row and column by column."""
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    n = len(image)

    def cross_entropy(queries, keys):
        terms = []
        for i in range(n):
            denominator = sum(torch.exp(scale * queries[i] @ keys[k]) for k in range(n))
            terms.append(-torch.log(torch.exp(scale * queries[i] @ keys[i]) / denominator))
        return sum(terms) / n

    return (cross_entropy(image, text) + cross_entropy(text, image)) / 2


@pytest.mark.parametrize(("n", "dim", "temperature"), [(1, 3, 0.5), (4, 8, 0.1), (7, 5, 1.0)])
def test_nt_xent_matches_the_formula(n, dim, temperature):
    generator = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(2, n, dim, dtype=torch.float64, generator=generator)
    loss = nt_xent(z1, z2, temperature)
    assert loss.shape == ()
    torch.testing.assert_close(loss, naive_nt_xent(z1, z2, temperature))
    torch.testing.assert_close(nt_xent(z2, z1, temperature), loss)


def test_nt_xent_single_pair_has_zero_loss_and_gradients_flow():
    """With N = 1 the positive is the only other view."""
    z1, z2 = torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1, z2)
    torch.testing.assert_close(loss, torch.zeros((), dtype=torch.float64))
    z1, z2 = torch.randn(2, 5, 4, dtype=torch.float64).unbind()
    z1.requires_grad_()
    nt_xent(z1, z2).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize(("n", "dim", "scale"), [(1, 3, 1.0), (5, 8, 1 / 0.07), (9, 4, 3.0)])
def test_clip_loss_matches_the_formula_and_is_symmetric(n, dim, scale):
    generator = torch.Generator().manual_seed(n)
    image, text = torch.randn(2, n, dim, dtype=torch.float64, generator=generator)
    loss = clip_loss(image, text, scale)
    assert loss.shape == ()
    torch.testing.assert_close(loss, naive_clip(image, text, scale))
    torch.testing.assert_close(clip_loss(text, image, scale), loss)


def test_clip_loss_rewards_aligned_pairs():
    embeddings = torch.eye(6, dtype=torch.float64)
    assert clip_loss(embeddings, embeddings, 100.0) < 1e-6
    shuffled = embeddings.roll(1, dims=0)
    assert clip_loss(embeddings, shuffled, 100.0) > 10.0


def test_learnable_logit_scale():
    scale = LogitScale()
    torch.testing.assert_close(scale(), torch.tensor(1 / 0.07))
    image, text = torch.randn(2, 4, 3)
    clip_loss(image, text, scale()).backward()
    assert scale.log_scale.grad is not None
    with torch.no_grad():
        scale.log_scale.fill_(math.log(1000.0))
    assert scale().item() == pytest.approx(100.0)


def test_grouped_clip_loss_is_the_mean_of_clip_losses_over_groups():
    generator = torch.Generator().manual_seed(0)
    captions = torch.randn(4, 6, generator=generator)
    images = torch.randn(12, 6, generator=generator)
    labels = torch.cat([torch.randperm(4, generator=generator) for _ in range(3)])  # 3 groups, each class once
    loss = GroupedClipLoss(captions, init_temperature=0.1)
    scale = loss.logit_scale()
    expected = sum(clip_loss(images[g * 4 : (g + 1) * 4], captions[labels[g * 4 : (g + 1) * 4]], scale) for g in range(3)) / 3
    torch.testing.assert_close(loss(images, labels), expected)
    loss(images, labels).backward()
    assert loss.logit_scale.log_scale.grad is not None  # the temperature is learned
    with pytest.raises(ValueError, match="whole groups of 4"):
        loss(images[:10], labels[:10])
