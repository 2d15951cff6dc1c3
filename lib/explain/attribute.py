"""One call for the attribution methods the studies compare: Integrated Gradients,
GradientShap (captum) and RISE (:mod:`lib.explain.rise`).

Each takes any scalar target (an ``nn.Module`` or function mapping a batch to
one score per image, like COCOA's targets in :mod:`lib.explain.cocoa`) and
returns attributions shaped like the input; the settings are any object with
the attributes of :class:`AttributionSettings` (a study's parameter model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from captum.attr import GradientShap, IntegratedGradients
from torch import Tensor, nn

from lib.explain.rise import RISE

METHODS = ("integrated_gradients", "gradient_shap", "rise")


class AttributionSettings(Protocol):
    """The settings of the three methods."""

    ig_steps: int  # Integrated Gradients: integration steps
    gradshap_samples: int  # GradientShap: samples per explicand
    gradshap_stdev: float  # GradientShap: input noise
    rise_masks: int  # RISE: masks per explicand
    rise_grid: int  # RISE: coarse mask grid s x s
    rise_p: float  # RISE: probability that a grid cell is kept
    batch_size: int  # RISE: masked images per forward pass


def attribute(target: nn.Module, method: str, x: Tensor, baseline: Tensor, settings: AttributionSettings, seed: int) -> Tensor:
    """Attributions (B, C, H, W) of the scalar ``target`` at ``x`` with the removal ``baseline`` (e.g. a blur).

    Integrated Gradients integrates from the baseline to x; GradientShap draws
    points between them with input noise (captum; its randomness comes from the
    global generators); RISE removes masked pixels to the baseline, its masks
    drawn from ``seed`` so that every target of one explicand sees the same masks.
    RISE's map S is the mean score of the masked images that keep a pixel, about
    f(x) / 2 everywhere plus small differences; it is returned centred, S - mean(S),
    so that its positive part marks the pixels that raise the score (rankings are
    unchanged).
    """
    a = settings
    if method == "integrated_gradients":
        return IntegratedGradients(target).attribute(x, baselines=baseline, n_steps=a.ig_steps)
    if method == "gradient_shap":
        return GradientShap(target).attribute(x, baselines=baseline, n_samples=a.gradshap_samples, stdevs=a.gradshap_stdev)
    if method == "rise":
        return _centred_rise(target, x, baseline, settings, seed)
    raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")


def _centred_rise(forward: Callable[[Tensor], Tensor], x: Tensor, baseline: Tensor, settings: AttributionSettings,
                  seed: int) -> Tensor:
    """RISE maps with masks drawn from ``seed``, each centred on its mean (see :func:`attribute`).

    (B, C, H, W) for a scalar ``forward``, (T, B, C, H, W) for one returning T scores per image.
    """
    a = settings
    saliency = RISE(forward).attribute(
        x, baselines=baseline, n_masks=a.rise_masks, grid=a.rise_grid, p=a.rise_p, batch_size=a.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    return saliency - saliency.mean(dim=(-3, -2, -1), keepdim=True)


def attribute_targets(
    targets: dict[str, nn.Module], method: str, x: Tensor, baseline: Tensor, settings: AttributionSettings, seed: int
) -> dict[str, Tensor]:
    """:func:`attribute` for every target of one batch of explicands, {name: (B, C, H, W)}.

    When the T targets share their explicand encoder h (as the four targets of an
    explicand do, each ``score(h(x))``), the images are encoded once for all of them:

    * RISE scores all targets on the same masked images, ``score_t(h(masked))``;
      the maps equal those of one :func:`attribute` call per target;
    * the gradient methods explain the T targets as one batch of T copies of the
      explicands, copy t scored by target t: the forward ``g(z) = [score_1(h(z)),
      ..., score_T(h(z))]`` (N, T) is differentiated at row r for its own target
      (captum's per-example ``target``). Rows do not interact (an encoder in eval
      mode), so the gradient of row r is that of its own target alone and Integrated
      Gradients equals the per-target call up to rounding, in one forward and one
      backward pass instead of T; GradientShap draws its noise and interpolation
      points for each copy, as T separate calls would.

    Targets of different encoders are explained one at a time.
    """
    shareable = all(hasattr(t, "explicand_network") for t in targets.values())
    if not shareable or len({id(t.explicand_network()) for t in targets.values()}) != 1:
        return {name: attribute(t, method, x, baseline, settings, seed) for name, t in targets.items()}
    first = next(iter(targets.values()))

    def scores(images: Tensor) -> Tensor:
        h = first.explicand_representation(images)
        return torch.stack([t.score(h) for t in targets.values()], dim=1)

    if method == "rise":
        return dict(zip(targets, _centred_rise(scores, x, baseline, settings, seed), strict=True))
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
    n_targets, batch = len(targets), len(x)
    copies = x.repeat(n_targets, *([1] * (x.dim() - 1)))  # copy t of explicand b at row t * B + b
    baselines = baseline.expand_as(x).repeat(n_targets, *([1] * (x.dim() - 1)))
    which = torch.arange(n_targets).repeat_interleave(batch).tolist()
    a = settings
    if method == "integrated_gradients":
        maps = IntegratedGradients(scores).attribute(copies, baselines=baselines, target=which, n_steps=a.ig_steps)
    else:
        maps = GradientShap(scores).attribute(copies, baselines=baselines, target=which, n_samples=a.gradshap_samples,
                                              stdevs=a.gradshap_stdev)
    return dict(zip(targets, maps.reshape(n_targets, batch, *x.shape[1:]), strict=True))
