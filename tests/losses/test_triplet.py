"""Triplet margin loss over index triplets against torch's nn.TripletMarginLoss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.losses.triplet import triplet_margin_loss


def test_triplet_loss_matches_nn_triplet_margin_loss_on_the_gathered_rows():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    a, p, n = (torch.randint(10, (25,), generator=g) for _ in range(3))
    for margin in (0.1, 0.5, 5.0):
        ours = triplet_margin_loss(z, a, p, n, margin)
        reference = nn.TripletMarginLoss(margin=margin, p=2)(z[a], z[p], z[n])
        torch.testing.assert_close(ours, reference)
        (g_ours,) = torch.autograd.grad(ours, z)
        (g_ref,) = torch.autograd.grad(reference, z)
        torch.testing.assert_close(g_ours, g_ref)


def test_triplet_loss_is_zero_when_every_negative_is_far_beyond_the_margin():
    z = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0]])
    one = torch.tensor([0])
    assert float(triplet_margin_loss(z, one, one + 1, one + 2, margin=5.0)) == 0.0
    assert float(triplet_margin_loss(z, one, one + 2, one + 1, margin=5.0)) == pytest.approx(14.9, abs=1e-4)
    with pytest.raises(ValueError, match="margin"):
        triplet_margin_loss(z, one, one, one, margin=0.0)
    with pytest.raises(ValueError, match="index tensors"):
        triplet_margin_loss(z, one, torch.tensor([0, 1]), one, margin=1.0)

