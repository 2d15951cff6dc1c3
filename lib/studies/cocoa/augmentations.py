"""COCOA's augmentation study (paper Sec. 5.1): what of an augmented view keeps it close to its original?

Each augmented view x' of an image x is explained with corpus {x} and a foil
of random training digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from lib.data import digit_augment as aug
from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.explain.attribute import attribute
from lib.explain.cocoa import ContrastiveCorpusSimilarity
from lib.explain.removal import blur_baseline
from lib.runtime import Runtime
from lib.studies.cocoa.params import AugmentParams, CocoaEvalParams
from lib.studies.cocoa.simclr import representations

AUGMENTATIONS = ("crop", "rotation", "erasing", "contrast", "noise")


def augment_one(name: str, x: Tensor, cfg: AugmentParams, generator: torch.Generator) -> Tensor:
    """One SimCLR augmentation alone, at its training strength."""
    if name == "crop":
        return aug.random_resized_crop(x, tuple(cfg.crop_scale), generator=generator)
    if name == "rotation":
        return aug.random_rotation(x, cfg.rotation_degrees, generator)
    if name == "erasing":
        return aug.random_erasing(x, 1.0, tuple(cfg.erase_scale), generator)
    if name == "contrast":
        return aug.random_contrast(x, cfg.contrast, cfg.brightness, generator)
    if name == "noise":
        return aug.gaussian_noise(x, cfg.noise_std, generator)
    raise ValueError(f"unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")


@dataclass(frozen=True)
class AugmentationStudy:
    """Originals (n, 1, H, W); per augmentation the views and their COCOA attributions; the similarities."""

    originals: Tensor
    views: dict[str, Tensor]
    attributions: dict[str, Tensor]
    similarity: pd.DataFrame


def augmentation_study(encoder: nn.Module, digits: Split[MnistDataset], cfg: CocoaEvalParams, rt: Runtime) -> AugmentationStudy:
    """Explain each augmented view x' of an image x with corpus {x} and a foil of random training digits:
    the attribution shows what of x' keeps it close to x; f(x') itself says how close it stays."""
    s = cfg.augmentation
    rng = np.random.default_rng([cfg.seed, 5])
    encoder = rt.prepare(encoder).eval()
    originals = rt.batch(digits.test.images[rng.choice(len(digits.test), s.n_images, replace=False)])
    foil_repr = representations(encoder, digits.fit.images[rng.choice(len(digits.fit), s.foil_size, replace=False)], rt)
    generator = torch.Generator().manual_seed(cfg.seed)
    views, maps, rows = {}, {}, []
    for name in AUGMENTATIONS:
        views[name] = augment_one(name, originals, cfg.augment, generator)
        attributions = []
        for i in range(s.n_images):
            target = ContrastiveCorpusSimilarity(encoder, representations(encoder, originals[i : i + 1], rt), foil_repr)
            x = views[name][i : i + 1]
            baseline = blur_baseline(x, cfg.benchmark.blur_sigma)
            attributions.append(attribute(target, s.method, x, baseline, cfg.attribution, seed=i).detach().cpu())
            with torch.no_grad():
                rows.append({"image": i, "augmentation": name, "similarity": float(target(x))})
        maps[name] = torch.cat(attributions)
    return AugmentationStudy(originals.cpu(), {k: v.cpu() for k, v in views.items()}, maps, pd.DataFrame(rows))


def augmentation_summary(similarity: pd.DataFrame) -> str:
    """How close the views stay: the share with f > 0 (closer to the original than to the foil),
    and the mean f per augmentation."""
    means = similarity.groupby("augmentation", sort=False).similarity.mean()
    return (
        f"{100 * (similarity.similarity > 0).mean():.0f}% of the views are closer to their original than to random digits "
        f"(f > 0); mean f by augmentation: {', '.join(f'{k} {v:.2f}' for k, v in means.items())}. "
        f"The encoder is most invariant to {means.idxmax()} and least to {means.idxmin()}."
    )
