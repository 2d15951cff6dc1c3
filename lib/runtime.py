"""One run-time policy for every stage: device, precision, seeds, determinism.

The same code path runs everywhere; only the device differs:

* CUDA if present (bf16 autocast, channels-last memory format),
* else Apple MPS,
* else the CPU (float32, channels-last, deterministic algorithms).

Channels-last lets oneDNN's convolutions skip their layout conversions on
the CPU too: a training step of the studies' small CNNs takes 15-35 % less
time on this compendium's 2-core reference machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from lib.cpu import PORTABLE_X86_KERNELS, portable_cpu_kernels  # noqa: F401  (re-exported; the runner reads lib.cpu)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA (bf16), a no-op elsewhere."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device, channels-last where that is faster."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move an input batch to the device in the model's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def select_device(preference: str = "auto") -> torch.device:
    """CUDA > MPS > CPU for ``"auto"``; otherwise the named device, checked."""
    if preference == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={preference!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={preference!r} requested but MPS is not available")
    return device


def runtime(preference: str = "auto") -> Runtime:
    """The run-time policy for this machine (see the module docstring)."""
    device = select_device(preference)
    on_cuda = device.type == "cuda"
    return Runtime(
        device=device,
        autocast_dtype=torch.bfloat16 if on_cuda else None,
        channels_last=device.type in ("cuda", "cpu"),
    )


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order.

    With ``deterministic`` the CPU path uses deterministic algorithms so two
    runs of a stage give identical numbers; on CUDA, cuDNN autotuning is
    switched off and cuBLAS gets the workspace setting it needs.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    _record_run_state(seed)
    return generator


def determinism_flags() -> dict[str, bool | str | None]:
    """The settings that decide whether a run is repeatable, as torch reports them now."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "num_threads": torch.get_num_threads(),
    }


def _record_run_state(seed: int) -> None:
    """Append the seed and :func:`determinism_flags` to the stage runner's run-state file, if any.

    :mod:`lib.stage` names the file in ``LIB_RUN_STATE`` for the notebook's
    kernel (and the processes it starts), so the run manifest records what the
    run actually set rather than what it was meant to set.
    """
    path = os.environ.get("LIB_RUN_STATE")
    if not path:
        return
    line = json.dumps({"seed": int(seed), "pid": os.getpid(), "flags": determinism_flags()})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
