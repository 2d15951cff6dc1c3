"""Coordinate encoders: normalisation, random Fourier features against the Gaussian kernel, the MLP."""

import math

import numpy as np
import pytest
import torch

from lib.models.location import (
    CoordinateMLP,
    RandomFourierFeatures,
    normalise_coordinates,
)

HELSINKI = (24.78, 60.13, 25.25, 60.30)  # (lon_min, lat_min, lon_max, lat_max)


def test_normalise_coordinates_maps_the_box_to_minus_one_one_for_tensors_and_arrays():
    corners = [[24.78, 60.13], [25.25, 60.30], [25.015, 60.215]]
    expected = [[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]
    as_array = normalise_coordinates(np.array(corners), HELSINKI)
    as_tensor = normalise_coordinates(torch.tensor(corners, dtype=torch.float64)[None], HELSINKI)
    assert isinstance(as_array, np.ndarray) and isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_array, expected, atol=1e-12)
    assert as_tensor.shape == (1, 3, 2) and as_tensor.dtype == torch.float64
    np.testing.assert_allclose(as_tensor[0].numpy(), expected, atol=1e-12)
    # x and y have their own ranges: a point at the x-centre and y-top
    np.testing.assert_allclose(normalise_coordinates(np.array([25.015, 60.30]), HELSINKI), [0.0, 1.0], atol=1e-12)


def test_normalise_coordinates_errors_name_bounds_or_shape():
    with pytest.raises(ValueError, match="x_min < x_max"):
        normalise_coordinates(np.zeros((2, 2)), (1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="bounds must be"):
        normalise_coordinates(np.zeros((2, 2)), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        normalise_coordinates(torch.zeros(4, 3), HELSINKI)


def test_fourier_features_shapes_layout_and_constant_norm():
    rff = RandomFourierFeatures(in_dim=2, n_frequencies=16, sigmas=(0.1, 1.0, 10.0), seed=0)
    x = torch.rand(3, 5, 2) * 2 - 1
    phi = rff(x)
    assert rff.out_features == 96 and phi.shape == (3, 5, 96)
    torch.testing.assert_close((phi**2).sum(-1), torch.full((3, 5), 48.0))
    # per scale: its 16 cosines, then its 16 sines, of 2 pi B_s x
    b = rff.frequencies  # (3 * 16, 2)
    phase = 2 * math.pi * x @ b.T
    for s in range(3):
        rows = slice(16 * s, 16 * (s + 1))
        torch.testing.assert_close(phi[..., 32 * s:32 * s + 16], phase[..., rows].cos())
        torch.testing.assert_close(phi[..., 32 * s + 16:32 * (s + 1)], phase[..., rows].sin())
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        rff(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="sigmas"):
        RandomFourierFeatures(sigmas=(1.0, 0.0))


def test_frequencies_have_standard_deviation_one_over_sigma():
    rff = RandomFourierFeatures(n_frequencies=20_000, sigmas=(0.5, 4.0), seed=1)
    b = rff.frequencies.reshape(2, 20_000, 2)
    np.testing.assert_allclose(b.std(dim=1).numpy(), [[2.0, 2.0], [0.25, 0.25]], rtol=0.03)
    np.testing.assert_allclose(b.mean(dim=1).numpy(), 0.0, atol=0.05)


@pytest.mark.parametrize("sigmas", [(1.0,), (0.5, 2.0)])
def test_inner_products_approximate_the_mean_gaussian_kernel(sigmas):
    m = 20_000
    rff = RandomFourierFeatures(n_frequencies=m, sigmas=sigmas, seed=2)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(40, 2))
    # partners at distances that span the kernels from near 1 to near 0
    y = x + rng.normal(size=(40, 2)) * np.linspace(0.01, 0.4, 40)[:, None]
    approx = (rff(torch.from_numpy(x).float()) * rff(torch.from_numpy(y).float())).sum(-1) / (m * len(sigmas))
    d2 = ((x - y) ** 2).sum(1)
    kernel = np.mean([np.exp(-2 * math.pi**2 * d2 / s**2) for s in sigmas], axis=0)
    np.testing.assert_allclose(approx.numpy(), kernel, atol=0.025)
    assert kernel.min() < 0.3 and kernel.max() > 0.95
    # the other common convention, exp(-|x - y|^2 / (2 sigma^2)), is not what these features approximate
    assert np.abs(approx.numpy() - np.mean([np.exp(-d2 / (2 * s**2)) for s in sigmas], axis=0)).max() > 0.2


def test_fourier_features_are_seeded_buffers_not_parameters():
    one, same, other = (RandomFourierFeatures(n_frequencies=8, sigmas=(1.0, 0.1), seed=s) for s in (3, 3, 4))
    assert torch.equal(one.frequencies, same.frequencies) and not torch.allclose(one.frequencies, other.frequencies)
    assert list(one.parameters()) == [] and "frequencies" in one.state_dict()
    x = torch.rand(6, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = one(x)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, one(x))


def test_coordinate_mlp_over_raw_coordinates_or_fourier_features():
    torch.manual_seed(0)
    raw = CoordinateMLP(embed_dim=32, hidden_dim=64, n_hidden=2)
    assert raw(torch.rand(10, 2)).shape == (10, 32)
    assert sum(isinstance(m, torch.nn.Linear) for m in raw.modules()) == 3
    rff = RandomFourierFeatures(n_frequencies=16, sigmas=(0.05, 0.5), seed=0)
    encoder = CoordinateMLP(embed_dim=8, hidden_dim=32, n_hidden=1, encoding=rff)
    x = torch.rand(7, 2, requires_grad=True)
    embedding = encoder(x)
    assert embedding.shape == (7, 8) and encoder.mlp[0].in_features == 64
    embedding.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters()) and x.grad is not None
    assert "encoding.frequencies" in encoder.state_dict()
    assert CoordinateMLP(embed_dim=4, n_hidden=0)(torch.rand(3, 2)).shape == (3, 4)
    with pytest.raises(ValueError, match="embed_dim"):
        CoordinateMLP(embed_dim=0)
