"""Encode a dataset: a forward function over chunks of inputs, without gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lib.runtime import Runtime
from lib.timing import phase


@phase("evaluate")
@torch.no_grad()
def encode(forward: Callable[[Tensor], Tensor], inputs: Tensor, batch_size: int = 256,
           runtime: Runtime | None = None) -> Tensor:
    """``forward`` of ``inputs`` (N, ...) in chunks of ``batch_size``, concatenated: (N, ...).

    With ``runtime``, each chunk goes to its device in its memory format and runs
    under its autocast, and the outputs come back to the CPU as float32 (for
    NumPy and scikit-learn). Without, chunks are used as they are and the
    outputs stay where ``forward`` puts them. Put modules in ``eval()`` mode
    first: batch statistics would couple the items of a chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = []
    for chunk in inputs.split(batch_size):
        if runtime is None:
            outputs.append(forward(chunk))
        else:
            with runtime.autocast():
                outputs.append(forward(runtime.batch(chunk)).float().cpu())
    return torch.cat(outputs)


def encode_numpy(module: torch.nn.Module, inputs: Tensor, batch_size: int, runtime: Runtime) -> np.ndarray:
    """``module`` (moved to the runtime's device, in eval mode) over ``inputs`` (N, ...) in chunks: float64 NumPy (N, ...).

    For probes with NumPy and scikit-learn: :func:`encode` with the runtime's
    device, memory format and autocast, outputs back on the CPU.
    """
    module = module.to(runtime.device).eval()
    return encode(module, inputs, batch_size=batch_size, runtime=runtime).numpy().astype(np.float64)
