"""One training loop for every study: plain PyTorch, explicit device, resumable.

``fit`` runs epochs of (forward under autocast, loss, backward, step), shows a
tqdm progress bar, evaluates a validation score after each epoch and keeps the
best weights (model selection on validation data only), and checkpoints after
each epoch so an interrupted run resumes where it stopped.

Under ``torchrun`` (DistributedDataParallel) the same loop runs in every
process: :func:`distributed` sets up the process group (NCCL on CUDA, gloo on
CPU), the model is wrapped in DDP, and only rank 0 shows progress and writes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from lib.io import atomic_path
from lib.runtime import Runtime


@dataclass
class FitResult:
    """What a run of :func:`fit` leaves behind."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    runtime: Runtime,
    validate: Callable[[nn.Module], float] | None = None,
    checkpoint: str | os.PathLike | None = None,
    max_steps_per_epoch: int | None = None,
    progress: bool = True,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` and return the weights of its best validation epoch.

    Args:
        model: the network, already on ``runtime.device`` (DDP-wrapped when distributed).
        loss_fn: ``loss_fn(model(x), y)`` -> scalar.
        batches: ``batches(epoch)`` yields (x, y) batches for that epoch, so samplers
            can be re-seeded per epoch (DistributedSampler.set_epoch).
        validate: ``validate(model) -> score``, higher is better, run on rank 0 after
            each epoch; without it the last epoch is kept.
        checkpoint: a file to resume from if it exists and to rewrite after each epoch.
        max_steps_per_epoch: cap on steps per epoch (smoke runs).
        augment: a batched augmentation applied on the device before the forward pass.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = FitResult(best_state=_state(model), best_epoch=-1, best_score=-math.inf)
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        start = _resume(Path(checkpoint), model, optimizer, result)

    for epoch in range(start, epochs):
        model.train()
        losses = []
        steps = _take(batches(epoch), max_steps_per_epoch)
        # a refresh every 10 s keeps rendered notebooks readable (each refresh is an output line there)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False, mininterval=10)
        for x, y in bar:
            x, y = runtime.batch(x), y.to(runtime.device)
            if augment is not None:
                x = augment(x)
            with runtime.autocast():
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")

        record = {"epoch": epoch, "loss": sum(losses) / max(len(losses), 1)}
        if validate is not None and rank == 0:
            model.eval()
            record["val_score"] = float(validate(model))
        score = record.get("val_score", float(epoch))
        if rank == 0 and score > result.best_score:
            result.best_state, result.best_epoch, result.best_score = _state(model), epoch, score
        result.history.append(record)
        if progress and rank == 0:
            tqdm.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if checkpoint is not None and rank == 0:
            _save_checkpoint(Path(checkpoint), model, optimizer, result, epoch + 1)
        if dist.is_initialized():
            dist.barrier()
    return result


def _take(batches: Iterable, n: int | None) -> Iterator:
    for i, batch in enumerate(batches):
        if n is not None and i >= n:
            return
        yield batch


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def _save_checkpoint(path: Path, model, optimizer, result: FitResult, next_epoch: int) -> None:
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "next_epoch": next_epoch,
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "history": result.history,
        "rng": _rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, model, optimizer, result: FitResult) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except Exception as err:  # a checkpoint of another model or a damaged file
        raise RuntimeError(f"cannot resume from checkpoint {path}: {err}; delete it to start afresh") from err
    _set_rng_state(state["rng"])
    result.best_state = copy.deepcopy(state["best_state"])
    result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
    result.history = list(state["history"])
    return int(state["next_epoch"])


def _rng_state() -> dict:
    """Every generator that decides batches and augmentations (samplers use NumPy's)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@contextlib.contextmanager
def distributed(runtime: Runtime) -> Iterator[tuple[int, int]]:
    """Join the process group that ``torchrun`` describes; yield (rank, world_size).

    Without torchrun's environment (a single process, e.g. inside a notebook)
    this is a no-op yielding (0, 1).
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        yield 0, 1
        return
    backend = "nccl" if runtime.device.type == "cuda" else "gloo"
    if runtime.device.type == "cuda":
        torch.cuda.set_device(runtime.device)
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, runtime: Runtime) -> nn.Module:
    """DistributedDataParallel when a process group is up, the model itself otherwise."""
    if not dist.is_initialized():
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
