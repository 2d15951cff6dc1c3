"""The model-randomisation sanity check of attribution maps (Adebayo et al., "Sanity Checks for Saliency
Maps", NeurIPS 2018).

An attribution that explains the *model* must change when the model's learned
weights are replaced by random ones. The check explains the same inputs with the
trained network and with a copy whose parameters are re-drawn at random, and
measures how similar the two maps are; a similarity near 1 means the method
shows the input (edges, ink), not what the network learned.

* :func:`randomised_copy` - a deep copy of a network with every parameter tensor
  re-drawn from a normal distribution with that tensor's own mean and standard
  deviation, truncated to its own [min, max] (the randomisation of COCOA's
  reference code, ``--randomize-model``); buffers (BatchNorm's running statistics)
  are kept.
* :func:`cascading_randomisation` - the check's cascading form (Adebayo et al.,
  Sec. 3.1): copies in which the layers are randomised one after another from the
  top (output) down, so copy k has the top k layers random and every layer below
  trained; a layer keeps the same random draw in every copy that randomises it,
  and the last copy (all layers) equals :func:`randomised_copy` of the same seed.
* :func:`rank_correlation` - Spearman's rank correlation between two maps per
  input, of the signed maps or of their absolute values (Adebayo et al. report both).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn

__all__ = ["cascading_randomisation", "randomised_copy", "rank_correlation"]


def randomised_copy(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """A copy of ``module`` with random weights of the trained weights' scale; ``module`` is left unchanged.

    Each parameter tensor ``w`` with at least two distinct values is replaced by
    i.i.d. draws from N(mean(w), std(w)^2) truncated to [min(w), max(w)] (by
    inverse-CDF sampling with ``generator``, so a seed fixes the copy). A tensor
    whose values are all equal (or of one element) has no spread to draw from and
    is kept. Buffers are copied unchanged.
    """
    return cascading_randomisation(module, [[""]], generator)[0]


def cascading_randomisation(module: nn.Module, layers: Sequence[Sequence[str]], generator: torch.Generator) -> list[nn.Module]:
    """Copies of ``module`` randomised layer by layer from the top; ``module`` is left unchanged.

    ``layers`` lists the layers from the top (output) down, each a group of submodule names (a conv block's
    convolution and normalisation, say; ``""`` names the whole module). Copy k (k = 1 .. L) has the parameters of
    ``layers[0] .. layers[k - 1]`` re-drawn as in :func:`randomised_copy` and every other parameter trained.
    Each parameter is drawn once, in the order of ``module.named_parameters()``, and keeps that draw in every
    copy that randomises it (the randomisation accumulates, as in Adebayo et al.'s cascade), so with groups
    covering every parameter the last copy is :func:`randomised_copy` of the same generator. Buffers are copied
    unchanged.
    """
    names = [name for name, _ in module.named_modules()]
    unknown = [layer for group in layers for layer in group if layer not in names]
    if unknown or not layers:
        raise ValueError(f"layers must be non-empty groups of submodule names of the module, unknown: {unknown}")
    level: dict[str, int] = {}  # parameter name -> index of the first group (from the top) that holds it
    for k, group in enumerate(layers):
        for layer in group:
            for name, _ in module.get_submodule(layer).named_parameters():
                level.setdefault(f"{layer}.{name}" if layer else name, k)
    draws = {}
    for name, param in module.named_parameters():
        w = param.detach().double().cpu()
        if name in level and w.numel() >= 2 and float(w.max()) != float(w.min()):
            draws[name] = _truncated_normal(w.mean(), w.std(), w.min(), w.max(), w.shape, generator)
    copies = []
    for k in range(1, len(layers) + 1):
        randomised = copy.deepcopy(module)
        with torch.no_grad():
            for name, param in randomised.named_parameters():
                if name in draws and level[name] < k:
                    param.copy_(draws[name].to(param))
        copies.append(randomised)
    return copies


def _truncated_normal(mean: Tensor, std: Tensor, low: Tensor, high: Tensor, shape: torch.Size,
                      generator: torch.Generator) -> Tensor:
    """Draws from N(mean, std^2) restricted to [low, high]: u ~ U(Phi(a), Phi(b)), x = mean + std * Phi^-1(u)."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    a, b = normal.cdf((low - mean) / std), normal.cdf((high - mean) / std)
    u = a + (b - a) * torch.rand(shape, generator=generator, dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    x = mean + std * normal.icdf(u.clamp(eps, 1 - eps))
    return x.clamp(low, high)


def rank_correlation(a: Tensor | np.ndarray, b: Tensor | np.ndarray, absolute: bool = False) -> np.ndarray:
    """Spearman's rank correlation between ``a[i]`` and ``b[i]`` over their pixels, per input.

    Shapes: (N, ...) and (N, ...) -> (N,). The pixels of each map are ranked
    (ties get their average rank) and the Pearson correlation of the ranks is
    returned; ``absolute=True`` ranks |a| and |b|. A constant map has no ranking:
    its correlation is NaN.
    """
    a, b = (np.asarray(t.detach().cpu() if isinstance(t, Tensor) else t, float) for t in (a, b))
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must share one shape (N, ...), got {a.shape} and {b.shape}")
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra, rb = (r - r.mean(axis=1, keepdims=True) for r in (rankdata(a, axis=1), rankdata(b, axis=1)))
    norm = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=1) / np.where(norm > 0, norm, 1.0), np.nan)
