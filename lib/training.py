"""One training loop for every study: plain PyTorch, explicit device, resumable.

``fit`` runs epochs of steps; one step is

    schedules -> forward under autocast -> loss -> backward -> callbacks
    -> gradient clipping -> optimizer.step() -> callbacks

Then the epoch is scored on validation data, the best weights are kept
(model selection on validation data only), callbacks see the epoch, the run
stops early at a validation plateau if asked to, and a checkpoint is written
so that an interrupted run resumes where it stopped. A tqdm bar shows progress.

Every option has a neutral default that leaves the loop's operations and
random draws as they were without it, so adding an option to one study does
not move another study's numbers.

Checkpoints hold only tensors, numbers, strings and lists (the random
generators' states included) and are read with ``torch.load(weights_only=True)``:
a checkpoint found in a shared folder cannot run code when it is loaded. A
run resumed from its checkpoint gives the bytes an uninterrupted run gives.

Under ``torchrun`` (DistributedDataParallel) the same loop runs in every
process: :func:`distributed` sets up the process group (NCCL on CUDA, gloo on
CPU), the model is wrapped in DDP, and only rank 0 validates, shows progress
and writes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from lib.io import atomic_path
from lib.runtime import Runtime
from lib.timing import phase

#: Where :func:`checkpoint_path` puts a run's checkpoints (git-ignored, not a DVC output).
CHECKPOINTS = Path("checkpoints")

#: A schedule maps (global step, total steps) to a multiplier of the base value.
Schedule = Callable[[int, "int | None"], float]


@dataclass
class FitResult:
    """What a run of :func:`fit` leaves behind."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    last_epoch: int = -1  # the last epoch trained (fewer than ``epochs`` after a plateau)
    stopped_at_plateau: bool = False


@dataclass
class StepState:
    """What a :class:`Callback` sees.

    In ``on_after_backward`` and ``on_step``, ``step`` is the step's index in
    its epoch and ``global_step`` its index in the run (the value the schedules
    saw); ``loss`` and ``logs`` are the step's. In ``on_epoch``, ``step`` is the
    number of steps the epoch ran, ``global_step`` the number run so far, and
    ``loss`` and ``logs`` are the epoch's means.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int
    step: int
    global_step: int
    total_steps: int | None
    loss: float
    logs: dict[str, float]


class Callback:
    """Hooks into :func:`fit`; every hook is a no-op, subclass and override what you need.

    A callback's own state is not checkpointed: keep what must survive a resume
    in the model (e.g. a teacher as a submodule of the trained module).
    """

    def on_after_backward(self, state: StepState) -> None:
        """After ``loss.backward()``, before clipping and the step (e.g. cancel some gradients)."""

    def on_step(self, state: StepState) -> None:
        """After ``optimizer.step()`` (e.g. a teacher's exponential moving average)."""

    def on_epoch(self, state: StepState, record: dict) -> None:
        """After validation, before model selection; may add keys to ``record``."""


@phase("train")  # the stage's time budget (lib.timing.time_budget)
def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    batches: Callable[[int], Iterable],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    runtime: Runtime,
    validate: Callable[[nn.Module], float] | None = None,
    checkpoint: str | os.PathLike | None = None,
    max_steps_per_epoch: int | None = None,
    progress: bool = True,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    forward: Callable[[nn.Module, Any], torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]] | None = None,
    steps_per_epoch: int | None = None,
    lr_schedule: Schedule | None = None,
    wd_schedule: Schedule | None = None,
    clip_grad_norm: float | None = None,
    callbacks: Sequence[Callback] = (),
    patience: int | None = None,
    min_delta: float = 0.0,
    fingerprint: str | None = None,
    generators: Sequence[torch.Generator | Any] = (),
) -> FitResult:
    """Train ``model`` and return the weights of its best validation epoch.

    Args:
        model: the network, already on ``runtime.device`` (DDP-wrapped when distributed);
            with ``forward``, a module holding every part that learns (e.g. an ``nn.ModuleDict``).
        loss_fn: ``loss_fn(model(x), y)`` -> scalar, for (x, y) batches; unused with ``forward``.
            An ``nn.Module`` loss (a learned margin, a temperature) is checkpointed with the model.
        batches: ``batches(epoch)`` yields that epoch's batches, so samplers can be re-seeded
            per epoch (DistributedSampler.set_epoch).
        validate: ``validate(model) -> score``, higher is better, run on rank 0 after each epoch;
            without it the last epoch is kept.
        checkpoint: a file to resume from if it exists and to rewrite after each epoch; a finished
            run's file gives its result back without training.
        max_steps_per_epoch: cap on steps per epoch (smoke runs).
        augment: a batched augmentation of x, applied on the device before the forward pass.
        forward: ``forward(model, batch) -> loss`` or ``(loss, {name: scalar})``, in place of
            ``loss_fn(model(x), y)``: models of several parts and batches of any nesting of
            tuples, lists and dicts (moved by :func:`to_device`). The epoch's mean of each
            logged term joins the history record.
        steps_per_epoch: steps per epoch for the schedules when ``batches(epoch)`` has no ``len``
            (default: ``len(batches(0))``); capped by ``max_steps_per_epoch``.
        lr_schedule: ``lr_schedule(global_step, total_steps)`` multiplies each parameter group's
            base learning rate at every step (:func:`warmup_cosine`); records get ``lr``.
        wd_schedule: the same for the base weight decay; records get ``weight_decay``.
        clip_grad_norm: clip the gradients' total 2-norm to this value before each step.
        callbacks: :class:`Callback` objects, called in order.
        patience: stop when the validation score has not improved on its best by more than
            ``min_delta`` for ``patience`` epochs; ``epochs`` is then the maximum.
        fingerprint: a string naming the run (e.g. JSON of the config and seed, :func:`run_fingerprint`),
            stored in the checkpoint; a checkpoint with another fingerprint is not resumed
            (a warning says so) and is overwritten.
        generators: the data pipeline's random state beyond the global generators, checkpointed
            with those: a DataLoader's or sampler's own ``torch.Generator``, or any object with
            ``get_state() -> Tensor`` and ``set_state(Tensor)`` (e.g. a sampler that reorders itself).

    Raises:
        FloatingPointError: the loss is NaN or infinite (naming the epoch and the step).
    """
    if forward is None and loss_fn is None:
        raise ValueError("fit needs loss_fn (for (x, y) batches) or forward")
    if forward is not None and augment is not None:
        raise ValueError("augment applies to (x, y) batches; with forward, augment inside forward")
    if patience is not None and (validate is None or patience < 1):
        raise ValueError(f"early stopping needs validate and patience >= 1, got patience={patience}")
    rank = dist.get_rank() if dist.is_initialized() else 0
    scheduled = lr_schedule is not None or wd_schedule is not None
    total_steps = None
    if scheduled or steps_per_epoch is not None:
        total_steps = epochs * _steps_per_epoch(batches, steps_per_epoch, max_steps_per_epoch)
    for group in optimizer.param_groups if scheduled else ():  # the values the schedules multiply
        group.setdefault("base_lr", group["lr"])
        group.setdefault("base_weight_decay", group.get("weight_decay", 0.0))

    result = FitResult(best_state=_state(model), best_epoch=-1, best_score=-math.inf)
    run = _Run()
    if checkpoint is not None and Path(checkpoint).exists():
        run = _resume(Path(checkpoint), model, loss_fn, optimizer, result, fingerprint, generators) or run
    if result.stopped_at_plateau:
        return result

    for epoch in range(run.next_epoch, epochs):
        model.train()
        losses, logged = [], {}
        steps = _take(batches(epoch), max_steps_per_epoch)
        # a refresh every 10 s keeps rendered notebooks readable (each refresh is an output line there)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False, mininterval=10)
        for step, batch in enumerate(bar):
            if scheduled:
                _schedule(optimizer, lr_schedule, wd_schedule, run.global_step, total_steps)
            loss, logs = _loss(model, loss_fn, forward, augment, batch, runtime)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the loss is {value} at epoch {epoch}, step {step} (global step {run.global_step}); "
                    "try a lower learning rate, clip_grad_norm, or check the inputs of that batch")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state = StepState(model, optimizer, epoch, step, run.global_step, total_steps, value, logs)
            for callback in callbacks:
                callback.on_after_backward(state)
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
            optimizer.step()
            for callback in callbacks:
                callback.on_step(state)
            run.global_step += 1
            losses.append(value)
            for name, term in logs.items():
                logged.setdefault(name, []).append(term)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)  # shown at the bar's next refresh (mininterval)

        record = {"epoch": epoch, "loss": sum(losses) / max(len(losses), 1)}
        record.update({name: sum(terms) / len(terms) for name, terms in logged.items()})
        if lr_schedule is not None:
            record["lr"] = optimizer.param_groups[0]["lr"]
        if wd_schedule is not None:
            record["weight_decay"] = optimizer.param_groups[0]["weight_decay"]
        if validate is not None and rank == 0:
            model.eval()
            record["val_score"] = float(validate(model))
        means = {name: record[name] for name in logged}
        for callback in callbacks:
            callback.on_epoch(StepState(model, optimizer, epoch, len(losses), run.global_step, total_steps,
                                        record["loss"], means), record)
        score = record.get("val_score", float(epoch))
        if rank == 0 and score > result.best_score:
            result.best_state, result.best_epoch, result.best_score = _state(model), epoch, score
        result.history.append(record)
        result.last_epoch = epoch
        if patience is not None:
            result.stopped_at_plateau = _broadcast_flag(run.plateau(score, min_delta) >= patience and rank == 0, runtime)
        if progress and rank == 0:
            tqdm.write(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        run.next_epoch = epoch + 1
        if checkpoint is not None:
            rng = _gathered_rng_states(generators)  # every process's generators, for rank 0 to write
            if rank == 0:
                _save_checkpoint(Path(checkpoint), model, loss_fn, optimizer, result, run, rng, fingerprint)
        if dist.is_initialized():
            dist.barrier()
        if result.stopped_at_plateau:
            break
    return result


def _loss(model, loss_fn, forward, augment, batch, runtime: Runtime) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss and its logged terms (the forward pass under autocast)."""
    if forward is None:
        x, y = batch
        x, y = runtime.batch(x), y.to(runtime.device)
        if augment is not None:
            x = augment(x)
        with runtime.autocast():
            return loss_fn(model(x), y), {}
    batch = to_device(batch, runtime)
    with runtime.autocast():
        out = forward(model, batch)
    loss, logs = out if isinstance(out, tuple) else (out, {})
    reserved = {"epoch", "loss", "lr", "weight_decay", "val_score"} & set(logs)
    if reserved:
        raise ValueError(f"forward logged {sorted(reserved)}: names the history record uses itself")
    return loss, {name: float(term.detach() if isinstance(term, torch.Tensor) else term) for name, term in logs.items()}


def _steps_per_epoch(batches: Callable[[int], Iterable], given: int | None, cap: int | None) -> int:
    if given is None:
        try:
            given = len(batches(0))
        except TypeError:
            raise ValueError("the schedules need the number of steps per epoch and batches(0) has no len(); "
                             "pass steps_per_epoch") from None
    return given if cap is None else min(given, cap)


def _schedule(optimizer, lr_schedule, wd_schedule, global_step: int, total_steps: int) -> None:
    for group in optimizer.param_groups:
        if lr_schedule is not None:
            group["lr"] = group["base_lr"] * lr_schedule(global_step, total_steps)
        if wd_schedule is not None:
            group["weight_decay"] = group["base_weight_decay"] * wd_schedule(global_step, total_steps)


@dataclass
class _Run:
    """Where a run stands, beyond the result: checkpointed with it."""

    next_epoch: int = 0
    global_step: int = 0
    plateau_best: float = -math.inf
    stale_epochs: int = 0

    def plateau(self, score: float, min_delta: float) -> int:
        """Epochs since the score last beat its best by more than ``min_delta``."""
        if score > self.plateau_best + min_delta:
            self.plateau_best, self.stale_epochs = score, 0
        else:
            self.stale_epochs += 1
        return self.stale_epochs


def _broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's decision, for every process (only rank 0 validates)."""
    if not dist.is_initialized():
        return flag
    device = runtime.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def _take(batches: Iterable, n: int | None) -> Iterator:
    for i, batch in enumerate(batches):
        if n is not None and i >= n:
            return
        yield batch


def to_device(batch: Any, runtime: Runtime) -> Any:
    """A batch of any nesting of tuples, lists and dicts on the runtime's device.

    4-D floating tensors (image batches) go through ``runtime.batch`` (channels-last
    where the runtime uses it); other tensors are moved as they are; anything else
    (strings, numbers) is left alone.
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 4 and batch.is_floating_point():
            return runtime.batch(batch)
        return batch.to(runtime.device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, runtime) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(value, runtime) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, runtime) for value in batch)
    return batch


# ------------------------------------------------------------------ schedules and parameter groups
def cosine_value(start: float, end: float, step: int, total: int) -> float:
    """Half a cosine from ``start`` (step 0) to ``end`` (step ``total``), held at the ends:

        v(t) = end + (start - end) (1 + cos(pi t / total)) / 2,   t = clamp(step, 0, total)

    (DINO's schedule of the teacher momentum, 0.996 -> 1, and of the weight decay.)
    """
    if total <= 0:
        raise ValueError(f"cosine_value needs total > 0, got {total}")
    t = min(max(step, 0), total)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t / total))


def warmup_cosine(warmup_steps: int, final: float = 0.0) -> Schedule:
    """A learning-rate multiplier: linear warm-up, then a cosine decay to ``final``.

        m(s) = (s + 1) / W                                  for s < W
        m(s) = cosine_value(1, final, s - W, T - W)         for W <= s < T

    with W = ``warmup_steps`` and T the run's total steps (DINO, Caron et al.
    2021, and nanoGPT schedule their learning rates this way; the first step
    already moves, and a run shorter than W stays in the warm-up).
    """
    if warmup_steps < 0 or final < 0:
        raise ValueError(f"warmup_cosine needs warmup_steps >= 0 and final >= 0, got {warmup_steps}, {final}")

    def schedule(step: int, total_steps: int | None) -> float:
        if total_steps is None:
            raise ValueError("warmup_cosine needs the run's total steps (fit's steps_per_epoch)")
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return cosine_value(1.0, final, step - warmup_steps, max(total_steps - warmup_steps, 1))

    return schedule


def param_groups(model_or_named_params: nn.Module | Iterable[tuple[str, nn.Parameter]],
                 weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: weight decay on matrices and kernels, none on biases and norms.

    Parameters with at most one dimension (biases, normalisation scales and
    shifts, learned scalars) are not decayed, as in nanoGPT and DINO: pulling
    an offset or a gain towards zero does not limit what the network can fit,
    it only biases its outputs. Frozen parameters (``requires_grad=False``)
    are left out, a parameter named twice counts once, empty groups are dropped.
    """
    named = model_or_named_params
    if isinstance(named, nn.Module):
        named = named.named_parameters()
    decay, no_decay, seen = [], [], set()
    for _, param in named:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


# ------------------------------------------------------------------ checkpoints
def checkpoint_path(run_name: str, seed: int) -> Path:
    """``checkpoints/<run_name>/seed_<seed>.pt``, relative to the working directory (the compendium's root
    in a stage). The folder is git-ignored and no DVC output, so DVC's removal of a stage's outputs before
    a rerun leaves it; :func:`clear_checkpoints` removes a run's checkpoints once its stage succeeded."""
    return _run_dir(run_name) / f"seed_{seed}.pt"


def clear_checkpoints(run_name: str) -> None:
    """Delete ``checkpoints/<run_name>/`` (and parent folders left empty), e.g. when the stage succeeded."""
    folder = _run_dir(run_name)
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == Path(".") or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _run_dir(run_name: str) -> Path:
    name = Path(run_name)
    if not run_name or name.is_absolute() or ".." in name.parts:
        raise ValueError(f"run name {run_name!r} must be a relative path without '..' (e.g. 'diml/margin_global')")
    return CHECKPOINTS / name


def run_fingerprint(config: Mapping[str, Any], data: Iterable[torch.Tensor | np.ndarray] = (),
                    code: Iterable[str] = ()) -> str:
    """A run's fingerprint for :func:`fit`: JSON of ``config`` (sorted keys), a SHA-256 of the ``data``
    arrays' bytes, and a SHA-256 of the source files of the ``code`` modules and every ``lib`` module they
    import (so a checkpoint of other data or of other code is not resumed)."""
    digest = hashlib.sha256()
    for array in data:
        array = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array))
    parts = {"config": dict(config), "data": digest.hexdigest()}
    modules = set(code)
    if modules:
        from lib.stage import module_dependencies  # the static import graph dvc.yaml's deps come from

        root = Path(__file__).resolve().parent.parent
        source = hashlib.sha256()
        for path in module_dependencies(modules, root):
            source.update(path.encode() + b"\0" + (root / path).read_bytes())
        parts["code"] = source.hexdigest()
    return json.dumps(parts, sort_keys=True, default=str)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def _save_checkpoint(path: Path, model, loss_fn, optimizer, result: FitResult, run: _Run, rng: list[dict],
                     fingerprint: str | None) -> None:
    state = {
        "fingerprint": fingerprint,
        "model": unwrap(model).state_dict(),
        "loss_fn": loss_fn.state_dict() if isinstance(loss_fn, nn.Module) else None,
        "optimizer": optimizer.state_dict(),
        "next_epoch": run.next_epoch,
        "global_step": run.global_step,
        "plateau_best": run.plateau_best,
        "stale_epochs": run.stale_epochs,
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "history": result.history,
        "last_epoch": result.last_epoch,
        "stopped_at_plateau": result.stopped_at_plateau,
        "rng": rng,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, model, loss_fn, optimizer, result: FitResult, fingerprint: str | None,
            generators: Sequence[Any]) -> _Run | None:
    """Restore a run from ``path``; None (start afresh) when the checkpoint's fingerprint is another."""
    try:
        # weights_only: tensors, numbers, strings and containers only; a pickled object raises instead of running
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file, or one that is not a checkpoint of this loop
        raise RuntimeError(f"cannot resume from checkpoint {path}: {err}; delete it to start afresh") from err
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        warnings.warn(f"checkpoint {path} belongs to another run (its fingerprint differs): training from "
                      "the start, and the checkpoint will be overwritten", RuntimeWarning, stacklevel=2)
        return None
    try:
        unwrap(model).load_state_dict(state["model"])
        if isinstance(loss_fn, nn.Module):
            loss_fn.load_state_dict(state["loss_fn"])
        optimizer.load_state_dict(state["optimizer"])
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank < len(state["rng"]):  # resumed with more processes: the new ones keep their seeds
            _set_rng_state(state["rng"][rank], generators)
    except Exception as err:  # a checkpoint of another model or optimizer
        raise RuntimeError(f"cannot resume from checkpoint {path}: {err}; delete it to start afresh") from err
    result.best_state = copy.deepcopy(state["best_state"])
    result.best_epoch, result.best_score = state["best_epoch"], state["best_score"]
    result.history = list(state["history"])
    result.last_epoch, result.stopped_at_plateau = state["last_epoch"], state["stopped_at_plateau"]
    return _Run(state["next_epoch"], state["global_step"], state["plateau_best"], state["stale_epochs"])


def _gathered_rng_states(generators: Sequence[Any]) -> list[dict]:
    """Every process's random states, by rank (one entry without a process group)."""
    state = _rng_state(generators)
    if not dist.is_initialized():
        return [state]
    states: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def _rng_state(generators: Sequence[Any]) -> dict:
    """Every generator that decides batches and augmentations (samplers use NumPy's), as tensors and
    plain numbers (what ``torch.load(weights_only=True)`` reads)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "generators": [g.get_state() for g in generators],
    }


def _set_rng_state(state: dict, generators: Sequence[Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if len(state["generators"]) != len(generators):
        raise ValueError(f"the checkpoint holds {len(state['generators'])} data generators, fit was given {len(generators)}")
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


# ------------------------------------------------------------------ several processes
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
