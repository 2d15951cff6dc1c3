"""COCOA's zero-shot localisation (paper Sec. 5.2).

COCOA with corpus = the caption of the scene's digit and foil = the other
captions, scored by the pointing game and the attribution mass inside the
digit's box, on held-out single-digit scenes and on *crowded* ones where a
digit of another class shares the canvas (there, "where is a digit" no longer
answers "where is the digit the caption names").
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.data.digit_scenes import DigitScenes
from lib.eval.intervals import mean_ci
from lib.explain.attribute import attribute_targets
from lib.explain.cocoa import ContrastiveCorpusSimilarity, CorpusSimilarity
from lib.explain.localisation import box_masks, mass_in_box, pointing_game
from lib.explain.removal import blur_baseline, random_attribution
from lib.runtime import Runtime
from lib.studies.cocoa.benchmark import explicand_targets
from lib.studies.cocoa.params import N_CLASSES, CocoaEvalParams
from lib.studies.cocoa.simclr import representations


def caption_targets(encoder: nn.Module, captions: Tensor, label: int, explicand_repr: Tensor) -> dict[str, nn.Module]:
    """Targets for one scene: corpus = its digit's caption, foil = the other nine captions.

    The corpus and foil are text embeddings; the explicands go through the image
    encoder (the ``explicand_encoder`` of COCOA's targets, Sec. 5.2).
    """
    corpus, foil = captions[label : label + 1], captions[torch.arange(N_CLASSES) != label]
    shared = {
        "corpus": CorpusSimilarity(encoder, corpus, explicand_encoder=encoder),
        "cocoa": ContrastiveCorpusSimilarity(encoder, corpus, foil, explicand_encoder=encoder),
    }
    return explicand_targets(encoder, explicand_repr, foil, shared)


@dataclass(frozen=True)
class Localisation:
    """Scores per scene x target x method (tidy, with the scene set's name) and the maps {(target, method): (n, 1, S, S)}."""

    scores: pd.DataFrame
    maps: dict[tuple[str, str], Tensor]


def localise(
    encoder: nn.Module, caption_embeddings: Tensor, scenes: DigitScenes, name: str, cfg: CocoaEvalParams, rt: Runtime,
    progress: bool = True,
) -> Localisation:
    """Explain the first ``localisation.n_scenes`` scenes of a set; score every map against the named digit's box."""
    encoder = rt.prepare(encoder).eval()
    captions = caption_embeddings.to(rt.device)
    n = cfg.localisation.n_scenes
    images = rt.batch(scenes.images[:n])
    baselines = blur_baseline(images, cfg.localisation.blur_sigma)
    maps: dict[tuple[str, str], list[Tensor]] = {}
    for i in tqdm(range(n), desc=f"localisation ({name})", disable=not progress):
        x, b = images[i : i + 1], baselines[i : i + 1]
        targets = caption_targets(encoder, captions, int(scenes.labels[i]), representations(encoder, x, rt))
        explained = {m: attribute_targets(targets, m, x, b, cfg.attribution, seed=i) for m in cfg.localisation.methods}
        for target_name, method in product(targets, cfg.localisation.methods):
            maps.setdefault((target_name, method), []).append(explained[method][target_name].detach().cpu())
    stacked = {key: torch.cat(values) for key, values in maps.items()}
    stacked["random", "random"] = random_attribution(images.cpu(), torch.Generator().manual_seed(cfg.seed))
    return Localisation(localisation_scores(stacked, scenes, n).assign(scenes=name), stacked)


def localisation_scores(maps: dict[tuple[str, str], Tensor], scenes: DigitScenes, n: int) -> pd.DataFrame:
    """Per scene x (target, method): pointing-game hit and mass in the named digit's box, and whether the
    map's maximum lies on another digit instead (never, in single-digit scenes)."""
    boxes, others = scenes.boxes[:n], scenes.other_boxes[:n]
    frames = []
    for (target, method), m in maps.items():
        on_other = torch.zeros(n, dtype=torch.bool)
        for k in range(others.shape[1]):
            on_other |= pointing_game(m, others[:, k])
        frames.append(pd.DataFrame({
            "scene": np.arange(n), "target": target, "method": method,
            "pointing_game": pointing_game(m, boxes).float().numpy(), "mass_in_box": mass_in_box(m, boxes).numpy(),
            "points_at_other_digit": on_other.float().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def box_share(scenes: DigitScenes, n: int) -> float:
    """Mean share of the canvas inside the named digit's box: a uniform random map's expected mass in the box."""
    size = scenes.images.shape[-1]
    return float(box_masks(scenes.boxes[:n], size, size).float().mean())


LOCALISATION_SCORES = ("pointing_game", "mass_in_box", "points_at_other_digit")


def summarise_localisation(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% Student-t half-width over scenes of each score, per scene set x target x method."""
    rows = []
    for (scenes, target, method), group in scores.groupby(["scenes", "target", "method"], sort=False):
        row = {"scenes": scenes, "target": target, "method": method, "n_scenes": len(group)}
        for score in LOCALISATION_SCORES:
            mean, half = mean_ci(group[score].to_numpy())
            row |= {score: float(mean), f"{score}_ci95": float(half)}
        rows.append(row)
    return pd.DataFrame(rows)


def localisation_summary(summary: pd.DataFrame, shares: dict[str, float]) -> str:
    """A sentence per scene set x method: COCOA's pointing game and mass in box against the best other target
    and chance (the box's share of the canvas)."""
    lines = []
    for (scenes, method), rows in summary[summary.target != "random"].groupby(["scenes", "method"], sort=False):
        by = rows.set_index("target")
        best = by.drop(index="cocoa").pointing_game.idxmax()
        lines.append(
            f"{scenes} scenes, {method}: COCOA's maximum lies in the named digit's box in "
            f"{100 * by.loc['cocoa', 'pointing_game']:.0f}% of scenes (best other target, {best}: "
            f"{100 * by.loc[best, 'pointing_game']:.0f}%), with {100 * by.loc['cocoa', 'mass_in_box']:.0f}% "
            f"of its positive mass in the box (chance: {100 * shares[scenes]:.0f}%)."
        )
    return "\n".join(lines)
