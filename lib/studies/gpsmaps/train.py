"""Training of one gpsmaps variant on the compendium's loop, :func:`lib.training.fit`.

Variants (:data:`~lib.studies.gpsmaps.params.VARIANTS`) set weights to zero:
``full`` keeps ``a, b, c`` of params.yaml; ``no_geo``, ``no_reconstruction``
and ``no_clustering`` drop one term; ``dino`` drops all three. A term with
weight zero is not computed.

The student, the teacher and the loss are one module
(:class:`~lib.studies.gpsmaps.model.GpsMapsNet`, its ``forward`` the step's
loss and each term's value), so ``fit`` applies autocast, channels-last, DDP,
resume and progress to it. DINO's schedules are callbacks of the loop:

* :class:`TeacherEMA` - after each optimiser step, ``theta_t <- lambda theta_t
  + (1 - lambda) theta_s`` with ``lambda`` on a cosine from
  ``loss.teacher_momentum`` at the first step to 1 at the last
  (Caron et al., Sec. 3.1);
* :class:`TeacherTemperature` - the epoch whose teacher temperature the DINO
  loss uses (its linear warm-up, then constant), set after each step for the
  next one;
* :class:`CollapseIndicators` - after each epoch, the teacher's entropy, the
  entropy of its batch mean and the spread of its embeddings on one fixed
  batch of maps (Caron et al., Sec. 5.3), with the momentum and temperature.

Every variant sees the same batches: the order of the maps, their views and
the reconstruction's hidden blocks are drawn per epoch from ``(seed, epoch)``,
so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from lib.data.map_views import MultiCropConfig, multi_crop
from lib.losses.dino import collapse_indicators, teacher_temperature_schedule, update_teacher
from lib.losses.reconstruction import random_block_mask
from lib.models.backbone import band_statistics
from lib.runtime import Runtime
from lib.studies.gpsmaps.data import GeoTargets, MapSet
from lib.studies.gpsmaps.model import GpsMapsNet
from lib.studies.gpsmaps.params import VARIANTS, GpsMapsLoss, GpsMapsTrainParams
from lib.training import Callback, StepState, cosine_value, fit, run_fingerprint, unwrap, wrap_ddp


def variant_loss(loss: GpsMapsLoss, variant: str) -> GpsMapsLoss:
    """The loss settings of ``variant``: the weights it drops set to zero."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    drop = {"full": (), "no_geo": ("geo_weight",), "no_reconstruction": ("reconstruction_weight",),
            "no_clustering": ("clustering_weight",),
            "dino": ("geo_weight", "reconstruction_weight", "clustering_weight")}[variant]
    return loss.model_copy(update={name: 0.0 for name in drop})


class TeacherEMA(Callback):
    """After each step, the teacher's EMA of the student with this step's momentum (module docstring)."""

    def __init__(self, start: float, end: float = 1.0):
        self.start, self.end = start, end
        self.momentum = start

    def on_step(self, state: StepState) -> None:
        net = unwrap(state.model)
        # Steps 0 .. N - 1: the last step's momentum is ``end`` exactly.
        self.momentum = cosine_value(self.start, self.end, state.global_step, max(state.total_steps - 1, 1))
        update_teacher(net.student, net.teacher, self.momentum)


class TeacherTemperature(Callback):
    """After each step, the epoch of the next step in the net's ``epoch`` buffer, which the DINO loss reads
    its teacher temperature from (warm-up per epoch as DINO's)."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch

    def on_step(self, state: StepState) -> None:
        unwrap(state.model).epoch.fill_((state.global_step + 1) // self.steps_per_epoch)


class CollapseIndicators(Callback):
    """After each epoch, the teacher's collapse indicators on ``probe`` (fixed maps, eval mode) in the record,
    with the last step's teacher momentum and the epoch's teacher temperature."""

    def __init__(self, probe: torch.Tensor, runtime: Runtime, ema: TeacherEMA):
        self.probe, self.runtime, self.ema = probe, runtime, ema

    def on_epoch(self, state: StepState, record: dict) -> None:
        net = unwrap(state.model)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            z = net.teacher.encoder(self.runtime.batch(self.probe))
            tau_t = net.dino.teacher_temperature(state.epoch)
            record.update(collapse_indicators(net.teacher.head(z), net.dino.center, tau_t, z))
        net.train(was_training)
        record["teacher_momentum"] = float(self.ema.momentum)
        record["teacher_temperature"] = float(tau_t)


def map_batches(maps: MapSet, rows: np.ndarray, targets: GeoTargets, views: MultiCropConfig,
                hidden_fraction: float, batch_size: int, steps_per_epoch: int, seed: int,
                rank: int = 0, world_size: int = 1) -> Callable[[int], Iterator[dict]]:
    """``batches(epoch)`` for :func:`lib.training.fit`: ``steps_per_epoch`` batches of ``batch_size`` maps.

    Each epoch shuffles ``rows`` and draws every view and hidden block from
    its own generator, seeded by ``(seed, epoch)``. Under DDP the epoch's
    ``world_size * steps_per_epoch`` batches are dealt in turn, each process
    taking its ``steps_per_epoch``. A batch is the dict
    :meth:`GpsMapsNet.forward` reads.
    """
    rows = np.asarray(rows)
    if len(rows) < batch_size * steps_per_epoch * world_size:
        raise ValueError(f"{len(rows)} maps cannot fill {steps_per_epoch} steps of {batch_size} maps in each of "
                         f"{world_size} processes")

    def batches(epoch: int) -> Iterator[dict]:
        rng = np.random.default_rng([seed, epoch])
        order = rows[rng.permutation(len(rows))]
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        for k in range(steps_per_epoch * world_size):
            idx = torch.as_tensor(order[k * batch_size:(k + 1) * batch_size])
            x = maps.images[idx]
            # Every process draws every batch's views, so the generator stays in step; each keeps its own.
            crops = multi_crop(x, views, generator)
            hidden = random_block_mask(x.shape[0], x.shape[2], x.shape[3], hidden_fraction, generator=generator)
            if k % world_size != rank:
                continue
            yield {"image": x, "views": crops, "hidden": hidden, "price": targets.price[idx],
                   "density_cluster": targets.density_cluster[idx], "coords": targets.coords[idx]}

    return batches


@dataclass
class TrainResult:
    net: GpsMapsNet
    history: pd.DataFrame  # one row per epoch: each loss term, the collapse indicators, momentum, tau_t
    seconds: float


def train_variant(cfg: GpsMapsTrainParams, variant: str, maps: MapSet, targets: GeoTargets,
                  runtime: Runtime, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                  callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``variant`` on the kept maps (every place); the geo tasks see only ``geo_train`` labels.

    ``checkpoint``: a file :func:`lib.training.fit` resumes from and rewrites after each epoch (none by default);
    ``callbacks`` run after the study's own (the teacher's EMA and temperature, the collapse indicators).
    Under ``torchrun`` each process trains on its share of every epoch's batches (DDP averages the gradients).
    """
    start = time.perf_counter()
    loss_cfg = variant_loss(cfg.loss, variant)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(cfg.seed)
    kept = np.flatnonzero(maps.table["kept"].to_numpy(bool))
    band_mean, band_std = band_statistics(maps.images[torch.as_tensor(kept)])
    epochs = cfg.train.epochs
    temperatures = teacher_temperature_schedule(epochs, warmup_temp=cfg.loss.teacher_warmup_temperature,
                                                temp=cfg.loss.teacher_temperature,
                                                warmup_epochs=cfg.loss.teacher_warmup_epochs)
    net = runtime.prepare(GpsMapsNet(cfg.model, loss_cfg, cfg.views.n_global, temperatures, band_mean, band_std))
    n = len(kept)
    batch = min(cfg.train.batch_size, n)
    steps = max(1, n // (batch * world_size))  # per process; the last partial batch is dropped
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    batches = map_batches(maps, kept, targets, cfg.views, cfg.loss.hidden_fraction, batch, steps, cfg.seed,
                          rank, world_size)
    ema = TeacherEMA(cfg.loss.teacher_momentum)
    probe = maps.images[torch.as_tensor(kept[: min(256, n)])]
    model = wrap_ddp(net, runtime)
    optimizer = torch.optim.AdamW(net.trainable(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    # A checkpoint resumes only a run of the same variant, parameters, maps and code.
    fingerprint = None if checkpoint is None else run_fingerprint(
        {"variant": variant, "params": cfg.model_dump(mode="json")}, data=(maps.images,), code=(__name__,))
    result = fit(model, None, batches, optimizer, epochs=epochs, runtime=runtime, checkpoint=checkpoint,
                 progress=progress, forward=lambda m, b: m(b), steps_per_epoch=steps, fingerprint=fingerprint,
                 callbacks=(ema, TeacherTemperature(steps), CollapseIndicators(probe, runtime, ema), *callbacks))
    return TrainResult(net, history_frame(result.history), time.perf_counter() - start)


def history_frame(history: list[dict]) -> pd.DataFrame:
    """``fit``'s per-epoch records as a table: ``epoch`` from 1, the total loss as ``loss_total``."""
    table = pd.DataFrame(history).rename(columns={"loss": "loss_total"})
    table["epoch"] = table["epoch"] + 1
    return table
