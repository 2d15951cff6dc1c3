"""Additive attention fusion: weights on the simplex, identical inputs pass through, modalities interchangeable."""

from __future__ import annotations

import pytest
import torch

from lib.models.fusion import AdditiveAttentionFusion


def test_weights_are_positive_and_sum_to_one_and_match_the_formula():
    torch.manual_seed(0)
    fusion = AdditiveAttentionFusion(dim=6, hidden=5)
    e = torch.randn(4, 3, 6)
    fused, weights = fusion(e, return_weights=True)
    assert weights.shape == (4, 3) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(4))
    W, b, u = fusion.project.weight, fusion.project.bias, fusion.score.weight[0]
    for i in range(4):
        scores = torch.stack([u @ torch.tanh(W @ e[i, m] + b) for m in range(3)])
        alpha = torch.softmax(scores, 0)
        torch.testing.assert_close(weights[i], alpha)
        torch.testing.assert_close(fused[i], (alpha[:, None] * e[i]).sum(0))


def test_identical_inputs_return_the_input_and_swapping_modalities_swaps_weights():
    torch.manual_seed(1)
    fusion = AdditiveAttentionFusion(dim=8)
    x = torch.randn(5, 8)
    torch.testing.assert_close(fusion(torch.stack([x, x, x], dim=1)), x)
    e = torch.randn(5, 2, 8)
    fused, w = fusion(e, return_weights=True)
    fused_swapped, w_swapped = fusion(e.flip(1), return_weights=True)
    torch.testing.assert_close(fused_swapped, fused)
    torch.testing.assert_close(w_swapped, w.flip(1))


def test_gradients_reach_the_attention_and_bad_shapes_fail():
    fusion = AdditiveAttentionFusion(dim=4)
    fusion(torch.randn(3, 2, 4)).pow(2).sum().backward()
    assert fusion.project.weight.grad is not None and fusion.score.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="modalities, 4"):
        fusion(torch.randn(3, 4))
