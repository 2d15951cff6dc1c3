"""Training steps against their bare backbone: what a study's step costs beyond the network it trains.

A study's training function is run as it is (its data, augmentations, loss,
optimiser, callbacks), but every :func:`lib.training.fit` it calls is cut to
one epoch of ``1 + REPEATS`` steps, without validation or checkpoints
(:func:`short_fits`). A callback stamps the end of each step; a step's time
is the gap between two stamps (so it includes drawing the batch, moving it to
the device and augmenting it), and the first step, a warm-up, is left out.
On the first batch of the same run the bare backbone's forward and backward
(a sum-of-squares loss on its output) are timed (:func:`bare_seconds`); the
printed ratio, step / bare backbone, does not move with the machine's speed
the way either time does. Medians of ``REPEATS``.

Used by the ``bench_*.py`` scripts of the studies (``make bench``); prints only.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import lib.training
from lib.training import Callback, to_device

REPEATS = 4


class StepStamps(Callback):
    """``perf_counter`` at the end of every step (after the optimiser's step and the other callbacks' work)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step(self, state) -> None:
        self.stamps.append(time.perf_counter())


@dataclass
class FitRun:
    """One shortened ``fit`` call: its model, runtime, first batch and step times (warm-up left out)."""

    model: nn.Module
    runtime: Any
    batch: Any
    step_s: list[float] = field(default_factory=list)

    @property
    def median_step_s(self) -> float:
        if not self.step_s:
            raise RuntimeError("the run made fewer than two steps: nothing to time after the warm-up")
        return statistics.median(self.step_s)


@contextlib.contextmanager
def short_fits(steps: int = 1 + REPEATS) -> Iterator[list[FitRun]]:
    """Within the block, every ``fit`` of ``lib`` (in every module that imported it) trains one epoch of
    ``steps`` steps, without validation, checkpoint or early stopping, and is recorded as a :class:`FitRun`."""
    real = lib.training.fit
    runs: list[FitRun] = []

    def timed_fit(model, loss_fn, batches, optimizer, **options):
        stamps = StepStamps()
        first: list = []

        def recorded(epoch: int):
            for batch in batches(epoch):
                if not first:
                    first.append(batch)
                yield batch

        options.update(epochs=1, max_steps_per_epoch=steps, steps_per_epoch=steps, validate=None, checkpoint=None,
                       patience=None, progress=False, callbacks=(*options.get("callbacks", ()), stamps))
        result = real(model, loss_fn, recorded, optimizer, **options)
        gaps = [b - a for a, b in zip(stamps.stamps, stamps.stamps[1:])]
        runs.append(FitRun(model, options["runtime"], first[0] if first else None, gaps))
        return result

    patched = [m for m in list(sys.modules.values()) if getattr(m, "fit", None) is real]
    for module in patched:
        module.fit = timed_fit
    try:
        yield runs
    finally:
        for module in patched:
            module.fit = real


def bare_seconds(forward: Callable[[torch.Tensor], torch.Tensor], parameters: Sequence[nn.Parameter],
                 inputs: torch.Tensor, runtime, repeats: int = REPEATS) -> float:
    """Median seconds of ``forward(inputs)`` and the backward of a sum-of-squares loss, after a warm-up."""
    inputs = to_device(inputs, runtime)
    times = []
    for _ in range(1 + repeats):
        for p in parameters:
            p.grad = None
        start = time.perf_counter()
        with runtime.autocast():
            out = forward(inputs)
        out.float().square().mean().backward()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def report(name: str, step_s: float, bare_s: float, what: str) -> None:
    print(f"{name:<34} step {step_s * 1e3:7.1f} ms, bare backbone {bare_s * 1e3:7.1f} ms ({what}): "
          f"x{step_s / bare_s:.2f}")
