"""SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020): an encoder, its projection head, and how they train.

Each image x of a batch of B is augmented twice, ``t(x)`` and ``t'(x)``; the
encoder h and the projection head g (an MLP with one hidden ReLU layer,
Sec. 2.1) map every view to z = g(h(t(x))), and NT-Xent
(:func:`lib.losses.contrastive.nt_xent`) asks each view to find its twin
among the 2B:

    z = g(h([t(x); t'(x)]))          (2B, P): one forward pass over both views
    L = nt_xent(z[:B], z[B:], tau)

Both views go through the network in one batch, so batch normalisation sees
the 2B views together, as in the paper's global BN. After training the head
is dropped: h(x) is the representation that probes read and explainers
explain.

* :class:`SimCLR` - x -> g(h(x)), with ``encoder`` (h) and ``head`` (g) as
  attributes (their names are the keys of the saved weights).
* :func:`fit_simclr` - trains it with :func:`lib.training.fit`: ``view``
  draws one random augmentation of a batch on the device, :func:`two_views`
  stacks two, and labels are ignored. Every option of ``fit`` passes
  through (checkpoint and fingerprint for resuming a seed, validation,
  schedules).

cocoa trains its digit encoder this way and musecl its aerial-image baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lib.losses.contrastive import nt_xent
from lib.runtime import Runtime
from lib.training import FitResult, fit

__all__ = ["SimCLR", "fit_simclr", "simclr_loss", "two_views"]


class SimCLR(nn.Module):
    """Encoder h (the representation) and projection head g (what NT-Xent sees): x -> g(h(x)).

    ``encoder`` maps (B, ...) to (B, ``encoder_dim``); the head is
    Linear(encoder_dim, encoder_dim) - ReLU - Linear(encoder_dim, ``projection_dim``).
    """

    def __init__(self, encoder: nn.Module, encoder_dim: int, projection_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(encoder_dim, encoder_dim), nn.ReLU(),
                                  nn.Linear(encoder_dim, projection_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def two_views(x: Tensor, view: Callable[[Tensor], Tensor]) -> Tensor:
    """Two independent draws of ``view`` of a batch, stacked: (B, ...) -> (2B, ...), first draw first."""
    return torch.cat([view(x), view(x)])


def simclr_loss(temperature: float) -> Callable[[Tensor, Tensor], Tensor]:
    """NT-Xent over the projections of :func:`two_views`' stacked batch, in float32; the labels are ignored."""
    return lambda z, _labels: nt_xent(*z.float().chunk(2), temperature=temperature)


def fit_simclr(
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    optimizer: torch.optim.Optimizer,
    *,
    view: Callable[[Tensor], Tensor],
    temperature: float,
    epochs: int,
    runtime: Runtime,
    checkpoint: str | os.PathLike | None = None,
    fingerprint: str | None = None,
    **fit_options: Any,
) -> FitResult:
    """Train a :class:`SimCLR` ``model`` (already on the runtime's device) by NT-Xent on two views per image.

    Args:
        batches: ``batches(epoch)`` yields (images, anything) pairs, as :func:`lib.training.fit` takes them;
            the second element is moved to the device and otherwise ignored (SimCLR uses no labels).
        view: one random augmentation of a batch already on the device (B, ...) -> (B, ...).
        temperature: NT-Xent's tau.
        checkpoint, fingerprint: resume an interrupted run (a file per run and seed,
            :func:`lib.training.checkpoint_path`), unless the stored fingerprint differs.
        fit_options: any other keyword of :func:`lib.training.fit` (``max_steps_per_epoch``, ``progress``,
            ``validate``, schedules, ``callbacks``, ``patience``).

    Returns ``fit``'s result: without ``validate`` the last epoch's weights are the best state.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return fit(model, simclr_loss(temperature), batches, optimizer, epochs=epochs, runtime=runtime,
               augment=lambda x: two_views(x, view), checkpoint=checkpoint, fingerprint=fingerprint, **fit_options)
