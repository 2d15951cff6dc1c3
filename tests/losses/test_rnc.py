"""Tests of the Rank-N-Contrast loss (Zha et al., NeurIPS 2023) in lib.losses.rnc."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib.losses.rnc import RnCLoss, rnc_loss


def naive_rnc(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """The RnC loss of Zha et al. (Sec. 3) written as the literal triple loop, in float64 numpy."""
    n = labels.shape[0]
    if features.dim() == 3:
        features = torch.cat([features[:, 0], features[:, 1]])
    v = features.detach().double().numpy()
    y = labels.reshape(n, -1).double().numpy()
    y = np.concatenate([y, y])  # view i and view i + n show image i
    n_views = len(v)

    def s(i, k):
        return -math.sqrt(float(((v[i] - v[k]) ** 2).sum())) / temperature

    def d(i, k):
        return float(np.abs(y[i] - y[k]).sum())

    total = 0.0
    for i in range(n_views):
        for j in range(n_views):
            if j == i:
                continue
            denominator = sum(
                math.exp(s(i, k))
                for k in range(n_views)
                if k != i and d(i, k) >= d(i, j)
            )
            total += -math.log(math.exp(s(i, j)) / denominator)
    return total / (n_views * (n_views - 1))


@pytest.mark.parametrize(
    "label_shape, layout, temperature",
    [
        ((7,), "n2d", 2.0),
        ((7,), "2nd", 0.5),
        ((7, 3), "n2d", 1.0),
        ((7, 2, 2), "2nd", 3.0),
        ((1,), "n2d", 2.0),
    ],
)
def test_matches_naive_triple_loop_with_ties(label_shape, layout, temperature):
    gen = torch.Generator().manual_seed(sum(label_shape) + len(layout))
    n = label_shape[0]
    # Small integer labels force many ties in label distance.
    labels = torch.randint(0, 3, label_shape, generator=gen).double()
    features = torch.randn(n, 2, 5, generator=gen, dtype=torch.float64)
    if layout == "2nd":
        features = torch.cat([features[:, 0], features[:, 1]])
    got = rnc_loss(features, labels, temperature=temperature).item()
    assert got == pytest.approx(naive_rnc(features, labels, temperature), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    label_dim=st.integers(1, 3),
    n_label_values=st.integers(1, 4),
    temperature=st.floats(0.05, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_naive_property(n, label_dim, n_label_values, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_label_values, (n, label_dim), generator=gen).double() / 3
    features = torch.randn(n, 2, 4, generator=gen, dtype=torch.float64)
    got = rnc_loss(features, labels, temperature=temperature).item()
    assert got == pytest.approx(naive_rnc(features, labels, temperature), rel=1e-10)


def test_layouts_agree():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(9, 2, 6, generator=gen, dtype=torch.float64)
    labels = torch.rand(9, generator=gen, dtype=torch.float64)
    stacked = torch.cat([features[:, 0], features[:, 1]])
    assert rnc_loss(features, labels).item() == pytest.approx(
        rnc_loss(stacked, labels).item(), rel=1e-14
    )


def test_invariant_to_permuting_images_and_views():
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(16, 2, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (16, 2), generator=gen).double()
    perm = torch.randperm(16, generator=gen)
    reference = rnc_loss(features, labels).item()
    assert rnc_loss(features[perm], labels[perm]).item() == pytest.approx(reference, rel=1e-12)
    assert rnc_loss(features.flip(1), labels).item() == pytest.approx(reference, rel=1e-12)


def test_gradients_finite_with_duplicates_and_large_scale():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(8, 1, 4, generator=gen)
    # Identical views give exact zero distances off the diagonal.
    features = (base.repeat(1, 2, 1) * 1e4).requires_grad_(True)
    labels = torch.arange(8.0)
    loss = rnc_loss(features, labels, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0


def test_ordered_features_beat_shuffled():
    gen = torch.Generator().manual_seed(4)
    labels = torch.rand(32, generator=gen) * 10
    direction = torch.randn(16, generator=gen)
    ordered = labels[:, None, None] * direction + 0.05 * torch.randn(32, 2, 16, generator=gen)
    shuffled = ordered[torch.randperm(32, generator=gen)]
    assert rnc_loss(ordered, labels) < rnc_loss(shuffled, labels)


def test_temperature_scaling_and_module():
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(10, 2, 3, generator=gen, dtype=torch.float64)
    labels = torch.rand(10, generator=gen, dtype=torch.float64)
    # s_ij = -||v_i - v_j|| / tau, so dividing the features by tau is the same as tau.
    assert rnc_loss(features, labels, temperature=0.7).item() == pytest.approx(
        rnc_loss(features / 0.7, labels, temperature=1.0).item(), rel=1e-12
    )
    assert RnCLoss().temperature == 2.0
    module = RnCLoss(temperature=0.7)
    assert module(features, labels).item() == rnc_loss(features, labels, 0.7).item()
    assert "temperature=0.7" in repr(module)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            rnc_loss(features, labels, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            RnCLoss(bad)


def test_integer_labels_do_not_wrap():
    gen = torch.Generator().manual_seed(6)
    features = torch.randn(6, 2, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 250, 3, 7, 7, 255])
    expected = rnc_loss(features, labels.double()).item()
    assert rnc_loss(features, labels.to(torch.uint8)).item() == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(
    "features_shape, labels_shape, message",
    [
        ((4, 3, 5), (4,), r"two views in dim 1"),
        ((5, 2, 5), (4,), r"n=5 images but labels have 4"),
        ((7, 5), (4,), r"7 rows but labels have n=4 images \(expected 8 rows\)"),
        ((4,), (4,), r"must be \(n, 2, d\) or \(2n, d\)"),
        ((4, 2, 1, 5), (4,), r"must be \(n, 2, d\) or \(2n, d\)"),
        ((0, 2, 5), (0,), r"empty batch"),
        ((2, 5), (), r"batch dimension"),
    ],
)
def test_shape_errors_are_named(features_shape, labels_shape, message):
    with pytest.raises(ValueError, match=message):
        rnc_loss(torch.zeros(features_shape), torch.zeros(labels_shape))
