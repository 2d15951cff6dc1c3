"""Coordinate encoders: baselines that embed a place from its coordinates alone.

* :func:`normalise_coordinates` - (lon, lat) or (easting, northing) mapped
  linearly from the box ``bounds`` = (x_min, y_min, x_max, y_max) to [-1, 1]^2:
  x' = 2 (x - x_min) / (x_max - x_min) - 1, likewise y'.
* :class:`RandomFourierFeatures` - Gaussian random Fourier features
  (Rahimi & Recht, NeurIPS 2007; Tancik et al., NeurIPS 2020) at several
  scales, as in GeoCLIP's and SatCLIP's location encoders. For each scale
  sigma_s, a fixed matrix B_s (m, d) with entries ~ N(0, sigma_s^-2), drawn
  once from ``seed`` and kept as a buffer, and

      phi(x) = [cos(2 pi B_1 x), sin(2 pi B_1 x), ..., cos(2 pi B_S x), sin(2 pi B_S x)],

  2 m S features with ||phi(x)||^2 = m S. Since E_b[cos(2 pi b.(x - y))] =
  exp(-2 pi^2 |x - y|^2 / sigma^2) for b ~ N(0, sigma^-2 I),

      phi(x) . phi(y) / (m S) -> (1/S) sum_s exp(-2 pi^2 |x - y|^2 / sigma_s^2),

  the mean of Gaussian kernels of length scales sigma_s / (2 pi): a small
  sigma resolves fine detail, a large one only coarse position.
* :class:`CoordinateMLP` - an MLP (Linear-ReLU blocks, then Linear) from the
  normalised coordinates, or from their random Fourier features, to an
  embedding of ``embed_dim``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CoordinateMLP", "RandomFourierFeatures", "normalise_coordinates"]


def normalise_coordinates(coordinates: Tensor | np.ndarray, bounds: Sequence[float]) -> Tensor | np.ndarray:
    """Coordinates (..., 2) as (x, y) mapped from ``bounds`` = (x_min, y_min, x_max, y_max) to [-1, 1].

    Works on tensors and arrays alike and returns the same kind; points
    outside the box map outside [-1, 1].
    """
    if len(bounds) != 4:
        raise ValueError(f"bounds must be (x_min, y_min, x_max, y_max), got {bounds}")
    x_min, y_min, x_max, y_max = (float(b) for b in bounds)
    if not (x_min < x_max and y_min < y_max):
        raise ValueError(f"bounds must have x_min < x_max and y_min < y_max, got {tuple(bounds)}")
    if coordinates.shape[-1] != 2:
        raise ValueError(f"coordinates must be (..., 2) as (x, y), got shape {tuple(coordinates.shape)}")
    low, span = [x_min, y_min], [x_max - x_min, y_max - y_min]
    if isinstance(coordinates, Tensor):
        dtype = coordinates.dtype if coordinates.is_floating_point() else torch.get_default_dtype()
        low_t, span_t = (torch.tensor(v, dtype=dtype, device=coordinates.device) for v in (low, span))
        return 2 * (coordinates.to(dtype) - low_t) / span_t - 1
    return 2 * (np.asarray(coordinates, dtype=np.float64) - low) / np.asarray(span) - 1


class RandomFourierFeatures(nn.Module):
    """phi(x) = [cos(2 pi B_s x), sin(2 pi B_s x)]_s, B_s ~ N(0, sigma_s^-2) fixed (module docstring).

    Args:
        in_dim: d, the coordinates' dimension (2 for normalised (x, y)).
        n_frequencies: m, rows of each B_s.
        sigmas: the scales sigma_s, in the coordinates' units.
        seed: seed of the draw of B.
    Input (..., d); output (..., 2 m S), S = len(sigmas): per scale its m
    cosines then its m sines.
    """

    def __init__(self, in_dim: int = 2, n_frequencies: int = 64, sigmas: Sequence[float] = (1.0,), seed: int = 0):
        super().__init__()
        if in_dim < 1 or n_frequencies < 1:
            raise ValueError(f"in_dim and n_frequencies must be >= 1, got {in_dim} and {n_frequencies}")
        if not sigmas or any(not s > 0 for s in sigmas):
            raise ValueError(f"sigmas must be one or more positive scales, got {sigmas}")
        self.in_dim, self.n_frequencies, self.sigmas = in_dim, n_frequencies, tuple(float(s) for s in sigmas)
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randn(len(self.sigmas), n_frequencies, in_dim, generator=generator, dtype=torch.float64)
        frequencies = draws / torch.tensor(self.sigmas, dtype=torch.float64)[:, None, None]
        # (S m, d): the scales' B_s stacked; a buffer, so it moves with .to() and is saved, but is not trained.
        self.register_buffer("frequencies", frequencies.reshape(-1, in_dim).to(torch.get_default_dtype()))

    @property
    def out_features(self) -> int:
        return 2 * self.n_frequencies * len(self.sigmas)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x must be (..., {self.in_dim}), got shape {tuple(x.shape)}")
        # Phases need full precision: no bf16 autocast here.
        with torch.autocast(device_type=x.device.type, enabled=False):
            phase = 2 * math.pi * x.to(self.frequencies.dtype) @ self.frequencies.T  # (..., S m)
        s, m = len(self.sigmas), self.n_frequencies
        phase = phase.unflatten(-1, (s, m))
        return torch.cat([phase.cos(), phase.sin()], dim=-1).flatten(-2)


class CoordinateMLP(nn.Module):
    """An MLP location encoder: coordinates (..., in_dim) -> embedding (..., embed_dim).

    With ``encoding`` (e.g. a :class:`RandomFourierFeatures`) the MLP reads
    ``encoding(x)``, else the coordinates themselves. ``n_hidden`` blocks of
    Linear(hidden_dim) + ReLU, then a Linear to ``embed_dim``.
    """

    def __init__(self, embed_dim: int, hidden_dim: int = 256, n_hidden: int = 2, in_dim: int = 2,
                 encoding: nn.Module | None = None):
        super().__init__()
        if embed_dim < 1 or hidden_dim < 1 or n_hidden < 0:
            raise ValueError(
                f"need embed_dim >= 1, hidden_dim >= 1, n_hidden >= 0, got {embed_dim}, {hidden_dim}, {n_hidden}"
            )
        self.encoding = encoding if encoding is not None else nn.Identity()
        width = encoding.out_features if encoding is not None else in_dim
        layers: list[nn.Module] = []
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        layers.append(nn.Linear(width, embed_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.encoding(x))
