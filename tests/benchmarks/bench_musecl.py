"""Benchmark of MuseCL: region-embedding throughput of the full model, and the text cache's saving.

* **Regions per second** of the full model at the default parameters of
  params.yaml: a region's aerial image through the aerial encoder, its street
  views through the street-view encoder (mean over views), both standardised
  and fused by the attention - against the aerial encoder alone on the same
  regions (the ratio is what the street views and the fusion add). Synthetic
  images of the defaults' sizes, random weights (throughput does not depend
  on them); the median of ``REPEATS`` passes after a warm-up one.
* **Text embeddings**, cached vs recomputed: the POI texts of a generated
  city's size embedded by the packaged MiniLM into an empty cache, then the
  same texts again from the filled cache (a rerun of ``musecl_text``); the
  ratio is the time a rerun saves.
* **The aerial encoder's training step** (triplets of regions drawn from a
  POI-similarity matrix, their distinct images augmented by the dihedral
  symmetries and encoded once, the triplet loss, AdamW) at the default
  parameters, on synthetic regions, against the bare ResNet-10's forward and
  backward on the same images in the same run (:mod:`step_timing`).

Run with ``python tests/benchmarks/bench_musecl.py`` (``make bench``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from step_timing import bare_seconds, report, short_fits  # this folder is on the path of a script run

from lib.data.semantic_pairs import PairSampler
from lib.eval.encode import encode
from lib.models.backbone import TileEmbedder
from lib.models.fusion import AdditiveAttentionFusion
from lib.models.text import TextEmbeddingCache
from lib.params import validate
from lib.runtime import runtime
from lib.studies.musecl import train
from lib.studies.musecl.params import MuseclTrainParams

REPEATS = 3
N_REGIONS, N_VIEWS, N_TEXTS = 750, 4, 2000


def _config() -> MuseclTrainParams:
    raw = yaml.safe_load(open("params.yaml"))["musecl"]
    return validate("musecl", {k: raw[k] for k in MuseclTrainParams.model_fields}, MuseclTrainParams)


def _median_seconds(fn) -> float:
    times = []
    for _ in range(1 + REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def regions_per_second(cfg: MuseclTrainParams) -> None:
    px, dim, batch = cfg.data.image_px, cfg.model.embedding_dim, cfg.inference_batch_size
    g = torch.Generator().manual_seed(0)
    aerial = torch.rand(N_REGIONS, 4, px, px, generator=g)
    street = torch.rand(N_REGIONS, N_VIEWS, 3, px, px, generator=g)
    aerial_encoder = TileEmbedder(4, cfg.model.width, dim).eval()
    street_encoder = TileEmbedder(3, cfg.model.width, dim).eval()
    fusion = AdditiveAttentionFusion(dim, cfg.fusion.hidden).eval()

    def aerial_only():
        with torch.no_grad():
            return encode(aerial_encoder, aerial, batch)

    def full_model():
        with torch.no_grad():
            a = encode(aerial_encoder, aerial, batch)
            s = encode(street_encoder, street.reshape(-1, 3, px, px), batch).reshape(N_REGIONS, N_VIEWS, dim).mean(1)
            modal = torch.stack([(m - m.mean(0)) / m.std(0).clamp_min(1e-6) for m in (a, s)], dim=1)
            return fusion(modal)

    reference, full = _median_seconds(aerial_only), _median_seconds(full_model)
    print(f"aerial encoder alone: {N_REGIONS / reference:8.0f} regions/s ({px} px)")
    print(f"full model (aerial + {N_VIEWS} street views + fusion): {N_REGIONS / full:8.0f} regions/s, "
          f"x{full / reference:.2f} the aerial encoder's time")


def text_cache() -> None:
    rng = np.random.default_rng(0)
    words = ["grand", "budget", "bakery", "cafe", "market", "school", "by the water", "quiet", "busy", "plain"]
    texts = [" ".join(rng.choice(words, 6)) + f" no. {i}" for i in range(N_TEXTS)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "minilm.npz"
        start = time.perf_counter()
        TextEmbeddingCache(path).embed(texts)
        recomputed = time.perf_counter() - start
        start = time.perf_counter()
        cache = TextEmbeddingCache(path)
        cache.embed(texts)
        cached = time.perf_counter() - start
        assert cache.n_encoded == 0
    print(f"{N_TEXTS} POI texts: recomputed {recomputed:.1f} s ({N_TEXTS / recomputed:.0f} texts/s, model load "
          f"included), from the cache {cached:.2f} s: x{recomputed / cached:.0f} faster")


def training_step(cfg: MuseclTrainParams) -> None:
    px = cfg.data.image_px
    rng = np.random.default_rng(0)
    aerial = torch.from_numpy(rng.random((N_REGIONS, 4, px, px), dtype=np.float32))
    profiles = rng.random((N_REGIONS, 8))  # POI-category shares of each region: a cosine similarity between them
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    sampler = PairSampler(profiles @ profiles.T, cfg.pairs.top_k)
    with short_fits() as runs:
        train.train_triplet_encoder(lambda idx, generator: aerial[torch.as_tensor(idx)], aerial, sampler,
                                    np.arange(N_REGIONS), cfg.model, cfg.visual, train.symmetries, runtime(cfg.device),
                                    seed=0, progress=False)
    run = runs[0]
    images = run.batch[0]
    backbone = run.model.backbone
    bare = bare_seconds(backbone, list(backbone.parameters()), images, run.runtime)
    report("MuseCL aerial encoder (triplets)", run.median_step_s, bare, f"{len(images)} regions of {px} px")


def main() -> None:
    torch.manual_seed(0)
    cfg = _config()
    regions_per_second(cfg)
    text_cache()
    training_step(cfg)


if __name__ == "__main__":
    main()
