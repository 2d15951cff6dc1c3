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
from lib.eval.intervals import comparison_cell
from lib.explain.attribute import attribute
from lib.explain.cocoa import ContrastiveCorpusSimilarity
from lib.explain.removal import blur_baseline
from lib.runtime import Runtime
from lib.studies.cocoa.data import derived_seed, seed_global_draws
from lib.studies.cocoa.params import AugmentParams, CocoaEvalParams
from lib.studies.cocoa.simclr import representations
from lib.studies.cocoa.stats import over_seeds, per_seed
from lib.timing import phase

#: The range of the contrastive corpus similarity, a difference of two mean cosines.
SIMILARITY_BOUNDS = (-2.0, 2.0)

AUGMENTATIONS = ("crop", "rotation", "erasing", "contrast", "noise")
#: Key of the augmentation study's draws among a repetition's derived seeds.
STREAM = 6


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


@phase("evaluate")
def augmentation_study(
    encoder: nn.Module, digits: Split[MnistDataset], cfg: CocoaEvalParams, seed: int, rt: Runtime
) -> AugmentationStudy:
    """Explain each augmented view x' of an image x with corpus {x} and a foil of random training digits:
    the attribution shows what of x' keeps it close to x; f(x') itself says how close it stays.
    Images, foil, views and RISE masks are drawn from repetition ``seed``."""
    s = cfg.augmentation
    rng = np.random.default_rng(derived_seed(seed, STREAM))
    encoder = rt.prepare(encoder).eval()
    originals = rt.batch(digits.test.images[rng.choice(len(digits.test), s.n_images, replace=False)])
    foil_repr = representations(encoder, digits.fit.images[rng.choice(len(digits.fit), s.foil_size, replace=False)], rt)
    generator = torch.Generator().manual_seed(derived_seed(seed, STREAM, 0))
    views, maps, rows = {}, {}, []
    for name in AUGMENTATIONS:
        views[name] = augment_one(name, originals, cfg.augment, generator)
        attributions = []
        for i in range(s.n_images):
            target = ContrastiveCorpusSimilarity(encoder, representations(encoder, originals[i : i + 1], rt), foil_repr)
            x = views[name][i : i + 1]
            baseline = blur_baseline(x, cfg.benchmark.blur_sigma)
            draw = derived_seed(seed, STREAM, 1, AUGMENTATIONS.index(name), i)
            seed_global_draws(draw)
            attributions.append(attribute(target, s.method, x, baseline, cfg.attribution, seed=draw).detach().cpu())
            with torch.no_grad():
                rows.append({"seed": seed, "image": i, "augmentation": name, "similarity": float(target(x))})
        maps[name] = torch.cat(attributions)
    return AugmentationStudy(originals.cpu(), {k: v.cpu() for k, v in views.items()}, maps, pd.DataFrame(rows))


def summarise_augmentation(similarity: pd.DataFrame) -> pd.DataFrame:
    """Per augmentation: the mean over seeds of the per-seed mean contrastive corpus similarity f(x') of the
    views to their originals, with its 95 % interval (resampling seeds and their views)."""
    return over_seeds(similarity, ["augmentation"], "similarity", SIMILARITY_BOUNDS)


def augmentation_summary(similarity: pd.DataFrame) -> str:
    """How close the views stay: the share with f > 0 (closer to the original than to the foil), the mean f
    per augmentation over seeds, and whether the seeds tell the most from the least preserving augmentation
    (:func:`lib.eval.intervals.comparison_cell` of their per-seed means)."""
    summary = summarise_augmentation(similarity).set_index("augmentation")
    means = summary["mean"]
    cells = ", ".join(f"{k} {cell.format(digits=2)}" for k, cell in summary["cell"].items())
    by_seed = per_seed(similarity, ["augmentation"], "similarity").pivot(index="seed", columns="augmentation",
                                                                         values="similarity")
    most, least = means.idxmax(), means.idxmin()
    comparison = comparison_cell(by_seed[most].to_numpy(), by_seed[least].to_numpy(), a=most, b=least,
                                 bounds=SIMILARITY_BOUNDS)
    verdict = (f"the seeds support {most} keeping views closer than {least} "
               f"(paired difference {comparison.format()})"
               if comparison.supported else
               f"the seeds do not tell {most} (highest mean) from {least} (lowest) apart")
    return (
        f"{100 * (similarity.similarity > 0).mean():.0f}% of the views are closer to their original than to random digits "
        f"(f > 0); mean f by augmentation over {similarity.seed.nunique()} seeds: {cells}; {verdict}."
    )
