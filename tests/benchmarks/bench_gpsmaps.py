"""Benchmark of a gpsmaps training step: the method's overhead over its backbone.

Times one training step of each variant of :mod:`lib.studies.gpsmaps.train`
at the default parameters of params.yaml (a batch of 64 synthetic 64 px maps:
multi-crop views, student and teacher, the terms the variant keeps, AdamW,
the teacher's EMA) and, on the same views, the bare student encoder's
forward and backward with a dummy loss. Prints views per second and the ratio
step / bare backbone: what DINO's head and teacher, the views and the
auxiliary terms cost on top of the network. The backbone's time is the median
of ``REPEATS`` batches after a warm-up one; a variant's is the mean step of a
one-epoch run of ``1 + REPEATS`` steps (warm-up and the once-per-epoch collapse
indicators included, so its ratio is an upper bound). CPU, the machine's threads.

Run with ``python tests/benchmarks/bench_gpsmaps.py`` (``make bench``).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import torch
import yaml

from lib.data.map_views import multi_crop
from lib.params import validate
from lib.runtime import runtime
from lib.studies.gpsmaps.data import GeoTargets, MapSet
from lib.studies.gpsmaps.model import MapEncoder
from lib.studies.gpsmaps.params import VARIANTS, GpsMapsTrainParams
from lib.studies.gpsmaps.train import train_variant

REPEATS = 3


def _maps(n: int, size: int, seed: int = 0) -> tuple[MapSet, GeoTargets]:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32))
    table = pd.DataFrame({"place": "bench", "kept": True, "holdout": False, "geo_train": True}, index=range(n))
    targets = GeoTargets(torch.randn(n), torch.from_numpy(rng.integers(0, 4, n)), torch.randn(n, 2), 0.0, 1.0)
    return MapSet(images, np.zeros((n, size, size), np.uint8), table), targets


def _config(steps: int) -> GpsMapsTrainParams:
    raw = yaml.safe_load(open("params.yaml"))["gpsmaps"]
    raw = {k: raw[k] for k in GpsMapsTrainParams.model_fields}
    raw["train"] = {**raw["train"], "epochs": 1, "max_steps_per_epoch": steps}
    return validate("gpsmaps", raw, GpsMapsTrainParams)


def main() -> None:
    rt = runtime("cpu")
    cfg = _config(1 + REPEATS)
    batch = cfg.train.batch_size
    maps, targets = _maps(batch * (1 + REPEATS), 64)
    n_views = cfg.views.n_global + cfg.views.n_local

    # The bare backbone: forward and backward of the student encoder on the same views.
    encoder = MapEncoder(cfg.model.width, cfg.model.embedding_dim)
    generator = torch.Generator().manual_seed(0)
    times = []
    for k in range(1 + REPEATS):
        views = multi_crop(maps.images[k * batch:(k + 1) * batch], cfg.views, generator)
        start = time.perf_counter()
        sum(encoder(v).square().mean() for v in views).backward()
        times.append(time.perf_counter() - start)
    bare = statistics.median(times[1:])
    print(f"bare backbone, forward + backward: {batch * n_views / bare:7.0f} views/s ({bare * 1e3:.0f} ms per batch)")
    for variant in VARIANTS:
        result = train_variant(cfg, variant, maps, targets, rt)
        # train_variant times the whole epoch (with the collapse indicators); per step, the epoch's mean.
        step = result.seconds / (1 + REPEATS)
        print(f"{variant:<18} training step:  {batch * n_views / step:7.0f} views/s ({step * 1e3:.0f} ms per batch), "
              f"x{step / bare:.2f} the bare backbone")


if __name__ == "__main__":
    main()
