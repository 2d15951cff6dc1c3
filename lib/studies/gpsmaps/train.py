"""Training of one gpsmaps training (a variant, SimCLR or the supervised bound) on the loop, :func:`lib.training.fit`.

Variants (:data:`~lib.studies.gpsmaps.params.VARIANTS`) set weights to zero:
``full`` keeps ``a, b, c`` of params.yaml; ``no_geo``, ``no_reconstruction``
and ``no_clustering`` drop one term; ``dino`` drops all three. A term with
weight zero is not computed. ``simclr`` and ``supervised``
(:mod:`lib.studies.gpsmaps.model`) train the same encoder on the same batches.

DINO in its working regime (Caron et al., Sec. 3.1 and App. B), on the loop:

* AdamW with a linear learning-rate warm-up and a cosine to 0
  (:func:`lib.training.warmup_cosine`), no weight decay on norms and biases
  (:func:`lib.training.param_groups`);
* :class:`FreezeLastLayer` - the head's last layer gets no update in the
  first ``freeze_last_layer_epochs`` epochs (its gradients are dropped);
* :class:`TeacherEMA` - after each optimiser step, ``theta_t <- lambda theta_t
  + (1 - lambda) theta_s`` with ``lambda`` on a cosine from its start to 1 over
  the run's steps; the start is set for the run's number of steps so that the
  teacher keeps ``teacher_init_share`` of its initialisation
  (:func:`lib.losses.dino.momentum_for_share`); the teacher keeps its own
  batch-norm statistics;
* :class:`TeacherTemperature` - the epoch whose teacher temperature the DINO
  loss uses (its linear warm-up, then constant);
* :class:`CollapseIndicators` - after each epoch, the teacher's entropy, the
  entropy of its batch mean and the spread of its embeddings on one fixed
  batch of maps (Caron et al., Sec. 5.3), with the momentum and temperature;
* :class:`EmbeddingSnapshots` - after the epochs of ``snapshot_epochs`` and
  the last, every map's teacher and student embedding (the budget curve reads
  the intermediate ones: checkpoints of one run, whose schedules were set for
  its full length).

Every training sees the same batches: the order of the maps, their views and
the reconstruction's hidden blocks are drawn per epoch from ``(seed, epoch)``,
so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lib.data.map_views import MultiCropConfig, multi_crop
from lib.losses.dino import (
    collapse_indicators,
    momentum_for_share,
    teacher_temperature_schedule,
    update_teacher,
)
from lib.losses.reconstruction import random_block_mask
from lib.models.backbone import band_statistics
from lib.runtime import Runtime
from lib.studies.gpsmaps.data import GeoTargets, MapSet
from lib.studies.gpsmaps.model import (
    AUXILIARY,
    ContrastiveNet,
    GpsMapsNet,
    SupervisedNet,
    balanced_weights,
)
from lib.studies.gpsmaps.params import (
    TRAININGS,
    VARIANTS,
    GpsMapsLoss,
    GpsMapsTrainParams,
)
from lib.training import (
    Callback,
    StepState,
    cosine_value,
    fit,
    param_groups,
    run_fingerprint,
    to_device,
    unwrap,
    warmup_cosine,
    wrap_ddp,
)


def variant_loss(loss: GpsMapsLoss, variant: str) -> GpsMapsLoss:
    """The loss settings of ``variant``: the weights it drops set to zero."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    drop = {"full": (), "no_geo": ("geo_weight",), "no_reconstruction": ("reconstruction_weight",),
            "no_clustering": ("clustering_weight",),
            "dino": ("geo_weight", "reconstruction_weight", "clustering_weight")}[variant]
    return loss.model_copy(update={name: 0.0 for name in drop})


def resize_maps(images: torch.Tensor, size: int) -> torch.Tensor:
    """Maps (N, 3, H, H) at ``size`` px (antialiased area resampling): the scale the encoders train on."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class FreezeLastLayer(Callback):
    """In the first ``epochs`` epochs, the student head's last layer gets no gradient, hence no update
    (not even weight decay: AdamW skips parameters without one), as DINO's ``cancel_gradients_last_layer``."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_after_backward(self, state: StepState) -> None:
        if state.epoch < self.epochs:
            for p in unwrap(state.model).student.head.last_layer.parameters():
                p.grad = None


class TeacherEMA(Callback):
    """After each step, the teacher's EMA of the student with this step's momentum (module docstring); the
    teacher's batch-norm statistics stay its own."""

    def __init__(self, start: float, end: float = 1.0):
        self.start, self.end = start, end
        self.momentum = start

    def on_step(self, state: StepState) -> None:
        net = unwrap(state.model)
        # Steps 0 .. N - 1: the last step's momentum is ``end`` exactly.
        self.momentum = cosine_value(self.start, self.end, state.global_step, max(state.total_steps - 1, 1))
        update_teacher(net.student, net.teacher, self.momentum, copy_buffers=False)


class TeacherTemperature(Callback):
    """After each step, the epoch of the next step in the net's ``epoch`` buffer, which the DINO loss reads
    its teacher temperature from (warm-up per epoch as DINO's)."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch

    def on_step(self, state: StepState) -> None:
        unwrap(state.model).epoch.fill_((state.global_step + 1) // self.steps_per_epoch)


class CollapseIndicators(Callback):
    """After each epoch, the teacher's collapse indicators on ``probe`` (fixed maps, eval mode) in the record,
    with the last step's teacher momentum, the epoch's teacher temperature and the weights a, b, c."""

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
        for name in net.active:
            record[f"weight_{name}"] = net.weight(name)


class EmbeddingSpread(Callback):
    """After each epoch, the spread of the encoder's unit embeddings of ``probe`` (trainings without a teacher)."""

    def __init__(self, probe: torch.Tensor, runtime: Runtime):
        self.probe, self.runtime = probe, runtime

    def on_epoch(self, state: StepState, record: dict) -> None:
        net = unwrap(state.model)
        was_training = net.training
        net.eval()
        z = net.embed(self.runtime.batch(self.probe)).double()
        net.train(was_training)
        record["embedding_std"] = float(F.normalize(z, dim=1).std(dim=0).mean())


class EmbeddingSnapshots(Callback):
    """After each epoch of ``epochs`` (from 1; the last is always taken), every map's teacher and student
    embedding (eval mode), as float32 CPU tensors in ``snapshots[epoch] = (teacher, student)``."""

    def __init__(self, images: torch.Tensor, epochs: Sequence[int], last: int, runtime: Runtime, batch_size: int = 256):
        self.images, self.epochs, self.runtime, self.batch_size = images, {*epochs, last}, runtime, batch_size
        self.snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def on_epoch(self, state: StepState, record: dict) -> None:
        if state.epoch + 1 not in self.epochs:
            return
        net = unwrap(state.model)
        was_training = net.training
        net.eval()
        with torch.no_grad(), self.runtime.autocast():
            pairs = [(net.embed(x).float().cpu(), net.student_embed(x).float().cpu())
                     for x in (self.runtime.batch(chunk) for chunk in self.images.split(self.batch_size))]
        net.train(was_training)
        self.snapshots[state.epoch + 1] = (torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))


def map_batches(maps: MapSet, rows: np.ndarray, targets: GeoTargets, views: MultiCropConfig,
                hidden_fraction: float, batch_size: int, steps_per_epoch: int, seed: int,
                rank: int = 0, world_size: int = 1) -> Callable[[int], Iterator[dict]]:
    """``batches(epoch)`` for :func:`lib.training.fit`: ``steps_per_epoch`` batches of ``batch_size`` maps.

    Each epoch shuffles ``rows`` and draws every view and hidden block from
    its own generator, seeded by ``(seed, epoch)``. Under DDP the epoch's
    ``world_size * steps_per_epoch`` batches are dealt in turn, each process
    taking its ``steps_per_epoch``. A batch is the dict
    :meth:`GpsMapsNet.terms` reads: views of one size stacked, so each size is one forward pass.
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
            size = views.global_size
            hidden = random_block_mask(x.shape[0], size, size, hidden_fraction, generator=generator)
            if k % world_size != rank:
                continue
            yield {"global": torch.stack(crops[:views.n_global]),
                   "local": torch.stack(crops[views.n_global:]) if views.n_local else None,
                   "hidden": hidden, "price": targets.price[idx], "density_cluster": targets.density_cluster[idx],
                   "coords": targets.coords[idx], "outcomes": targets.outcomes[idx]}

    return batches


@dataclass
class TrainResult:
    net: torch.nn.Module
    history: pd.DataFrame  # one row per epoch: each loss term, the indicators, momentum, tau_t, weights
    seconds: float
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # epoch -> embeddings
    weights: dict[str, float] = field(default_factory=dict)  # a, b, c as applied


def build_net(cfg: GpsMapsTrainParams, training: str, n_outcomes: int, steps_per_epoch: int, band_mean, band_std):
    """The module of ``training`` (a variant, ``simclr`` or ``supervised``), untrained."""
    if training == "simclr":
        return ContrastiveNet(cfg.model, cfg.loss.simclr_temperature, band_mean, band_std)
    if training == "supervised":
        return SupervisedNet(cfg.model, n_outcomes, band_mean, band_std)
    temperatures = teacher_temperature_schedule(cfg.train.epochs, warmup_temp=cfg.loss.teacher_warmup_temperature,
                                                temp=cfg.loss.teacher_temperature,
                                                warmup_epochs=min(cfg.loss.teacher_warmup_epochs, cfg.train.epochs))
    return GpsMapsNet(cfg.model, variant_loss(cfg.loss, training), cfg.views.n_global, temperatures, band_mean, band_std)


def train_variant(cfg: GpsMapsTrainParams, variant: str, maps: MapSet, targets: GeoTargets,
                  runtime: Runtime, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                  callbacks: Sequence[Callback] = (), seed: int | None = None) -> TrainResult:
    """Train ``variant`` (any of :data:`TRAININGS`) with ``seed`` (default ``cfg.seed``) on the kept maps of
    every place; the geo tasks see only ``geo_train`` labels, the supervised bound only its outcomes there.

    ``checkpoint``: a file :func:`lib.training.fit` resumes from and rewrites after each epoch (none by default);
    ``callbacks`` run after the study's own. Under ``torchrun`` each process trains on its share of every
    epoch's batches (DDP averages the gradients).
    """
    if variant not in TRAININGS:
        raise ValueError(f"unknown training {variant!r}; expected one of {TRAININGS}")
    start = time.perf_counter()
    seed = cfg.seed if seed is None else seed
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(seed)
    kept = np.flatnonzero(maps.table["kept"].to_numpy(bool))
    rows = kept
    if variant == "supervised":
        rows = np.intersect1d(kept, np.flatnonzero(maps.table["geo_train"].to_numpy(bool)))
    band_mean, band_std = band_statistics(maps.images[torch.as_tensor(kept)])
    n = len(rows)
    batch = min(cfg.train.batch_size, n)
    steps = max(1, n // (batch * world_size))  # per process; the last partial batch is dropped
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    epochs = cfg.train.epochs
    net = runtime.prepare(build_net(cfg, variant, targets.outcomes.shape[1], steps, band_mean, band_std))
    batches = map_batches(maps, rows, targets, cfg.views, cfg.loss.hidden_fraction, batch, steps, seed,
                          rank, world_size)
    probe = resize_maps(maps.images[torch.as_tensor(kept[: min(256, len(kept))])], cfg.views.global_size)
    everything = resize_maps(maps.images, cfg.views.global_size)
    snapshots = EmbeddingSnapshots(everything, cfg.train.snapshot_epochs, epochs, runtime)
    own: list[Callback] = []
    weights: dict[str, float] = {}
    if net.has_teacher:
        if cfg.loss.weight_rule == "balanced" and net.active:
            weights = balanced_weights(net, to_device(next(iter(batches(0))), runtime),
                                       {name: float(net.weights[k]) for k, name in enumerate(AUXILIARY)})
        else:
            weights = {name: net.weight(name) for name in net.active}
        total = epochs * steps
        start_momentum = cfg.loss.teacher_momentum
        if start_momentum is None:
            start_momentum = momentum_for_share(total, cfg.loss.teacher_init_share) if total > 1 else 0.0
        ema = TeacherEMA(start_momentum)
        own = [FreezeLastLayer(cfg.loss.freeze_last_layer_epochs), ema, TeacherTemperature(steps),
               CollapseIndicators(probe, runtime, ema)]
    else:
        own = [EmbeddingSpread(probe, runtime)]
    model = wrap_ddp(net, runtime)
    optimizer = torch.optim.AdamW(param_groups(net.trainable(), cfg.train.weight_decay), lr=cfg.train.lr)
    # A checkpoint resumes only a run of the same training, seed, parameters, maps and code.
    fingerprint = None if checkpoint is None else run_fingerprint(
        {"variant": variant, "seed": seed, "params": cfg.model_dump(mode="json")}, data=(maps.images,),
        code=(__name__,))
    result = fit(model, None, batches, optimizer, epochs=epochs, runtime=runtime, checkpoint=checkpoint,
                 progress=progress, forward=lambda m, b: m(b), steps_per_epoch=steps, fingerprint=fingerprint,
                 lr_schedule=warmup_cosine(cfg.train.warmup_epochs * steps),
                 callbacks=(*own, snapshots, *callbacks))
    history = history_frame(result.history)
    history["step"] = history["epoch"] * steps
    return TrainResult(net, history, time.perf_counter() - start, snapshots.snapshots, weights)


def history_frame(history: list[dict]) -> pd.DataFrame:
    """``fit``'s per-epoch records as a table: ``epoch`` from 1, the total loss as ``loss_total``."""
    table = pd.DataFrame(history).rename(columns={"loss": "loss_total"})
    table["epoch"] = table["epoch"] + 1
    return table
