"""Training of one gpsmaps variant: student steps, teacher EMA, per-epoch losses and collapse indicators.

Variants (:data:`~lib.studies.gpsmaps.params.VARIANTS`) set weights to zero:
``full`` keeps ``a, b, c`` of params.yaml; ``no_geo``, ``no_reconstruction``
and ``no_clustering`` drop one term; ``dino`` drops all three. A term with
weight zero is not computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib.data.map_views import multi_crop
from lib.losses.dino import (
    DinoLoss,
    collapse_indicators,
    momentum_schedule,
    teacher_temperature_schedule,
    update_teacher,
)
from lib.models.backbone import band_statistics
from lib.runtime import Runtime
from lib.studies.gpsmaps.data import GeoTargets, MapSet
from lib.studies.gpsmaps.model import GpsMapsNet, geo_loss, reconstruction_loss
from lib.studies.gpsmaps.params import VARIANTS, GpsMapsLoss, GpsMapsTrainParams


def variant_loss(loss: GpsMapsLoss, variant: str) -> GpsMapsLoss:
    """The loss settings of ``variant``: the weights it drops set to zero."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    drop = {"full": (), "no_geo": ("geo_weight",), "no_reconstruction": ("reconstruction_weight",),
            "no_clustering": ("clustering_weight",),
            "dino": ("geo_weight", "reconstruction_weight", "clustering_weight")}[variant]
    return loss.model_copy(update={name: 0.0 for name in drop})


@dataclass
class TrainResult:
    net: GpsMapsNet
    history: pd.DataFrame  # one row per epoch: each loss term, teacher entropy, embedding std, momentum, tau_t
    seconds: float


def train_variant(cfg: GpsMapsTrainParams, variant: str, maps: MapSet, targets: GeoTargets,
                  runtime: Runtime) -> TrainResult:
    """Train ``variant`` on the kept maps (every place); the geo tasks see only ``geo_train`` labels."""
    import time

    start = time.perf_counter()
    loss_cfg = variant_loss(cfg.loss, variant)
    torch.manual_seed(cfg.seed)
    kept = np.flatnonzero(maps.table["kept"].to_numpy(bool))
    band_mean, band_std = band_statistics(maps.images[torch.as_tensor(kept)])
    net = GpsMapsNet(cfg.model, loss_cfg, band_mean, band_std).to(runtime.device)
    n = len(kept)
    batch = min(cfg.train.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    if cfg.train.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    epochs = cfg.train.epochs
    momenta = momentum_schedule(epochs, steps_per_epoch, start=cfg.loss.teacher_momentum, end=1.0)
    temperatures = teacher_temperature_schedule(epochs, warmup_temp=cfg.loss.teacher_warmup_temperature,
                                                temp=cfg.loss.teacher_temperature,
                                                warmup_epochs=cfg.loss.teacher_warmup_epochs)
    dino = DinoLoss(cfg.model.head_out, temperatures, cfg.loss.student_temperature,
                    cfg.loss.center_momentum).to(runtime.device)
    optimizer = torch.optim.AdamW(net.trainable(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    order_rng = np.random.default_rng(cfg.seed)
    images = maps.images
    rows = []
    step = 0
    for epoch in range(epochs):
        net.train()
        totals: dict[str, float] = {}
        order = kept[order_rng.permutation(n)]
        for k in range(steps_per_epoch):
            idx = torch.as_tensor(order[k * batch:(k + 1) * batch])
            x = images[idx].to(runtime.device)
            views = [v.to(runtime.device) for v in multi_crop(images[idx], cfg.views, generator)]
            n_global = cfg.views.n_global
            student_out = [net.student.head(net.student.encoder(v)) for v in views]
            with torch.no_grad():
                teacher_out = [net.teacher.head(net.teacher.encoder(v)) for v in views[:n_global]]
            terms = {"dino": dino(student_out, teacher_out, epoch)}
            z = None
            if loss_cfg.geo_weight or loss_cfg.reconstruction_weight or loss_cfg.clustering_weight:
                z = net.student.encoder(x)
            if loss_cfg.geo_weight:
                terms["geo"] = geo_loss(net, z, targets.price[idx].to(z.device),
                                        targets.density_cluster[idx].to(z.device), targets.coords[idx].to(z.device))
            if loss_cfg.reconstruction_weight:
                terms["reconstruction"] = reconstruction_loss(net, z, x, cfg.loss.hidden_fraction, generator)
            if loss_cfg.clustering_weight:
                with torch.no_grad():
                    z_teacher = net.teacher.encoder(x)
                terms["clustering"] = net.clusters(z, z_teacher)
            weights = {"dino": 1.0, "geo": loss_cfg.geo_weight, "reconstruction": loss_cfg.reconstruction_weight,
                       "clustering": loss_cfg.clustering_weight}
            total = sum(weights[name] * value for name, value in terms.items())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            update_teacher(net.student, net.teacher, float(momenta[min(step, len(momenta) - 1)]))
            step += 1
            for name, value in {**terms, "total": total}.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        # Collapse indicators on one fixed batch of kept maps, in eval mode.
        net.eval()
        with torch.no_grad():
            probe = images[torch.as_tensor(kept[: min(256, n)])].to(runtime.device)
            z_t = net.teacher.encoder(probe)
            indicators = collapse_indicators(net.teacher.head(z_t), dino.center, dino.teacher_temperature(epoch), z_t)
        rows.append({"epoch": epoch + 1, **{f"loss_{k}": v / steps_per_epoch for k, v in totals.items()},
                     **{k: float(v) for k, v in indicators.items()},
                     "teacher_momentum": float(momenta[min(step - 1, len(momenta) - 1)]),
                     "teacher_temperature": dino.teacher_temperature(epoch)})
    return TrainResult(net, pd.DataFrame(rows), time.perf_counter() - start)

